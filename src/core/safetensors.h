// safetensors (https://huggingface.co/docs/safetensors): 8-byte little-endian header length, a JSON
// header {name: {dtype, shape, data_offsets}}, then the raw little-endian data. Reading memory-maps
// the file and validates every entry before anything is used; writing is atomic (tmp + fsync +
// rename), so a failed write never leaves a half-written file under the final name.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "core/dtype.h"
#include "core/tensor.h"

namespace origami {

struct StEntry {
  DType dtype;
  std::vector<int64_t> shape;
  const void* data;
  size_t bytes;
};

// A reader of one safetensors file, or of a model HF wrote in several: a
// `model.safetensors.index.json` ({"weight_map": {name: file}}, files beside it), or a directory
// holding that index or a `model.safetensors`. Every file is memory-mapped and validated; the
// entries of all of them are one set (a name in two files, or listed in a file that lacks it, is an
// error naming both).
class SafeTensorsReader {
 public:
  explicit SafeTensorsReader(const std::string& path);
  ~SafeTensorsReader();
  SafeTensorsReader(const SafeTensorsReader&) = delete;
  SafeTensorsReader& operator=(const SafeTensorsReader&) = delete;

  bool has(const std::string& name) const { return entries_.count(name) > 0; }
  const StEntry& get(const std::string& name) const;
  const std::map<std::string, StEntry>& entries() const { return entries_; }
  const std::string& path() const { return path_; }
  // Copies `name` into t (host memory) after checking that dtype and shape match t's; a BF16
  // tensor read into an F32 one is widened (exactly): HF's usual torch_dtype bfloat16 checkpoints.
  void read_into(const std::string& name, Tensor& t) const;
  // A read-only view of `name` in the mapped file (alive as long as the reader), after the same
  // checks against dtype and shape: no copy, no tracked memory.
  Tensor view(const std::string& name, DType dt, const std::vector<int64_t>& shape) const;
  // Reads an integer tensor (I32 or I64) as int64 values.
  std::vector<int64_t> load_ints(const std::string& name, std::vector<int64_t>* shape) const;

 private:
  void open(const std::string& path);  // the constructor's work
  // Maps `file` and adds its entries; returns their names.
  std::vector<std::string> add_file(const std::string& file);
  void add_index(const std::string& index);
  std::string path_;
  std::vector<std::pair<void*, size_t>> maps_;
  std::map<std::string, StEntry> entries_;
};

// The header of a safetensors file (8-byte length + JSON, padded to 8) for entries in order, and
// each entry's byte offset from the start of the file.
struct StLayout {
  std::string header;
  std::vector<int64_t> offsets;
  int64_t total = 0;  // file size
};
StLayout safetensors_layout(
    const std::vector<std::tuple<std::string, DType, std::vector<int64_t>>>& items);

class SafeTensorsWriter {
 public:
  // The data must stay alive until write().
  void add(const std::string& name, DType dt, std::vector<int64_t> shape, const void* data);
  void add(const std::string& name, const Tensor& t) { add(name, t.dtype(), t.shape(), t.raw()); }
  void write(const std::string& path) const;  // atomic

 private:
  struct Item {
    std::string name;
    DType dt;
    std::vector<int64_t> shape;
    const void* data;
  };
  std::vector<Item> items_;
};

// Writes `bytes` to `path` atomically: path.tmp, fsync, rename, fsync of the directory.
void write_file_atomic(const std::string& path, const std::string& bytes);
void fsync_dir(const std::string& dir);

}  // namespace origami
