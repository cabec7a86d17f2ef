#include "core/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/device.h"

namespace origami {

namespace {
bool parse_dtype(const std::string& s, DType* dt) {
  static const std::pair<const char*, DType> names[] = {{"F32", DType::f32},
                                                        {"F64", DType::f64},
                                                        {"I32", DType::i32},
                                                        {"I64", DType::i64},
                                                        {"BF16", DType::bf16}};
  for (auto& [n, d] : names)
    if (s == n) {
      *dt = d;
      return true;
    }
  return false;
}
}  // namespace

SafeTensorsReader::SafeTensorsReader(const std::string& path) : path_(path) {
  try {
    open(path);
  } catch (...) {  // the destructor does not run for a constructor that throws
    for (auto& [m, n] : maps_) ::munmap(m, n);
    throw;
  }
}

void SafeTensorsReader::open(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    const fs::path index = fs::path(path) / "model.safetensors.index.json";
    const fs::path single = fs::path(path) / "model.safetensors";
    if (fs::exists(index, ec)) {
      add_index(index.string());
      return;
    }
    if (fs::exists(single, ec)) {
      add_file(single.string());
      return;
    }
    fail(path, ": a directory without model.safetensors.index.json or model.safetensors");
  }
  if (path.size() >= 5 && path.compare(path.size() - 5, 5, ".json") == 0)
    add_index(path);
  else
    add_file(path);
}

void SafeTensorsReader::add_index(const std::string& index) {
  std::ifstream in(index);
  if (!in) fail(index, ": cannot open: ", std::strerror(errno));
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    fail(index, ": not JSON: ", e.what());
  }
  if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
    fail(index,
         ": no \"weight_map\" object (an HF model.safetensors.index.json maps each tensor "
         "name to its file)");
  std::map<std::string, std::string> where;  // name -> file
  std::map<std::string, std::vector<std::string>> files;
  for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
    if (!it.value().is_string()) fail(index, ": weight_map['", it.key(), "'] is not a file name");
    where[it.key()] = it.value().get<std::string>();
    files[it.value().get<std::string>()];
  }
  const auto dir = std::filesystem::path(index).parent_path();
  for (auto& [file, names] : files) names = add_file((dir / file).string());
  for (const auto& [name, file] : where) {
    const auto& in_file = files[file];
    if (std::find(in_file.begin(), in_file.end(), name) == in_file.end())
      fail(index, ": weight_map puts '", name, "' in ", file, ", which does not hold it");
  }
}

std::vector<std::string> SafeTensorsReader::add_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) fail(path, ": cannot open: ", std::strerror(errno));
  struct stat st {};
  ::fstat(fd, &st);
  const auto size_ = static_cast<size_t>(st.st_size);
  if (size_ < 8) {
    ::close(fd);
    fail(path, ": truncated safetensors file (", size_,
         " bytes; the 8-byte header length is missing)");
  }
  void* map = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) fail(path, ": cannot map: ", std::strerror(errno));
  maps_.push_back({map, size_});
  const auto* base = static_cast<const unsigned char*>(map);
  std::vector<std::string> names;
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | base[i];
  if (n > size_ - 8)
    fail(path, ": malformed safetensors: header length ", n, " exceeds the file (", size_,
         " bytes)");
  nlohmann::json h;
  try {
    h = nlohmann::json::parse(reinterpret_cast<const char*>(base + 8),
                              reinterpret_cast<const char*>(base + 8 + n));
  } catch (const std::exception& e) {
    fail(path, ": malformed safetensors header (not JSON): ", e.what());
  }
  if (!h.is_object()) fail(path, ": malformed safetensors header: not a JSON object");
  const size_t data0 = 8 + n, data_size = size_ - data0;
  for (auto it = h.begin(); it != h.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    const auto& e = it.value();
    const std::string& name = it.key();
    if (!e.is_object() || !e.contains("dtype") || !e.contains("shape") ||
        !e.contains("data_offsets"))
      fail(path, ": malformed entry '", name, "': needs dtype, shape and data_offsets");
    StEntry se{};
    if (!e["dtype"].is_string() || !parse_dtype(e["dtype"].get<std::string>(), &se.dtype))
      fail(path, ": tensor '", name, "': unsupported dtype ", e["dtype"].dump(),
           " (supported: F32, F64, I32, I64, BF16)");
    if (!e["shape"].is_array()) fail(path, ": tensor '", name, "': shape must be an array");
    size_t numel = 1;
    for (auto& d : e["shape"]) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0)
        fail(path, ": tensor '", name, "': shape entries must be non-negative integers");
      se.shape.push_back(d.get<int64_t>());
      if (__builtin_mul_overflow(numel, static_cast<size_t>(d.get<int64_t>()), &numel) ||
          numel > (size_t(1) << 60))
        fail(path, ": tensor '", name, "': shape ", e["shape"].dump(),
             " has more elements than a file can hold");
    }
    const auto& off = e["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() ||
        !off[1].is_number_unsigned())
      fail(path, ": tensor '", name, "': data_offsets must be two non-negative integers");
    uint64_t b = off[0].get<uint64_t>(), en = off[1].get<uint64_t>();
    if (b > en || en > data_size)
      fail(path, ": tensor '", name, "': data_offsets [", b, ", ", en,
           "] lie outside the data section (", data_size, " bytes): truncated file?");
    if (en - b != numel * dtype_size(se.dtype))
      fail(path, ": tensor '", name, "': data_offsets span ", en - b, " bytes but shape ",
           shape_str(se.shape), " of ", dtype_name(se.dtype), " needs ",
           numel * dtype_size(se.dtype));
    se.data = base + data0 + b;
    se.bytes = en - b;
    if (entries_.count(name))
      fail(path, ": tensor '", name, "' is also in another file of ", path_);
    entries_[name] = std::move(se);
    names.push_back(name);
  }
  // No two tensors share bytes (a writer's bug or a crafted file: a write through one would
  // change the other).
  std::vector<std::pair<const char*, const std::string*>> spans;
  for (const auto& nm : names)
    if (entries_[nm].bytes) spans.emplace_back(static_cast<const char*>(entries_[nm].data), &nm);
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i) {
    const StEntry& prev = entries_[*spans[i - 1].second];
    if (static_cast<const char*>(prev.data) + prev.bytes > spans[i].first)
      fail(path, ": tensors '", *spans[i - 1].second, "' and '", *spans[i].second,
           "' overlap in the data section");
  }
  return names;
}

SafeTensorsReader::~SafeTensorsReader() {
  for (auto& [m, n] : maps_) ::munmap(m, n);
}

const StEntry& SafeTensorsReader::get(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) fail(path_, ": missing tensor '", name, "'");
  return it->second;
}

Tensor SafeTensorsReader::view(const std::string& name, DType dt,
                               const std::vector<int64_t>& shape) const {
  const StEntry& e = get(name);
  if (e.dtype != dt)
    fail(path_, ": tensor '", name, "' has dtype ", dtype_name(e.dtype), ", expected ",
         dtype_name(dt));
  if (e.shape != shape)
    fail(path_, ": tensor '", name, "' has shape ", shape_str(e.shape), ", expected ",
         shape_str(shape));
  return Tensor::view(const_cast<void*>(e.data), shape, dt);
}

void SafeTensorsReader::read_into(const std::string& name, Tensor& t) const {
  if (get(name).dtype == DType::bf16 && t.dtype() == DType::f32) {
    const Tensor v = view(name, DType::bf16, t.shape());
    const auto* src = static_cast<const bfloat16*>(v.raw());
    float* dst = t.data<float>();
    for (int64_t i = 0; i < v.numel(); ++i) dst[i] = to_float(src[i]);
    return;
  }
  const Tensor v = view(name, t.dtype(), t.shape());
  std::memcpy(t.raw(), v.raw(), static_cast<size_t>(v.numel()) * dtype_size(t.dtype()));
}

std::vector<int64_t> SafeTensorsReader::load_ints(const std::string& name,
                                                  std::vector<int64_t>* shape) const {
  const StEntry& e = get(name);
  size_t n = e.bytes / dtype_size(e.dtype);
  std::vector<int64_t> out(n);
  if (e.dtype == DType::i32) {
    for (size_t i = 0; i < n; ++i) {
      int32_t v;
      std::memcpy(&v, static_cast<const char*>(e.data) + 4 * i, 4);
      out[i] = v;
    }
  } else if (e.dtype == DType::i64) {
    std::memcpy(out.data(), e.data, e.bytes);
  } else {
    fail(path_, ": tensor '", name, "' has dtype ", dtype_name(e.dtype), ", expected I32 or I64");
  }
  if (shape) *shape = e.shape;
  return out;
}

void SafeTensorsWriter::add(const std::string& name, DType dt, std::vector<int64_t> shape,
                            const void* data) {
  items_.push_back({name, dt, std::move(shape), data});
}

StLayout safetensors_layout(
    const std::vector<std::tuple<std::string, DType, std::vector<int64_t>>>& items) {
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  std::vector<int64_t> rel;
  int64_t off = 0;
  for (const auto& [name, dt, shape] : items) {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    const int64_t bytes = n * static_cast<int64_t>(dtype_size(dt));
    h[name] = {{"dtype", dtype_name(dt)}, {"shape", shape}, {"data_offsets", {off, off + bytes}}};
    rel.push_back(off);
    off += bytes;
  }
  StLayout L;
  std::string hs = h.dump();
  while ((hs.size() + 8) % 8) hs.push_back(' ');
  const uint64_t n = hs.size();
  for (int i = 0; i < 8; ++i) L.header.push_back(static_cast<char>((n >> (8 * i)) & 0xFF));
  L.header += hs;
  for (int64_t r : rel) L.offsets.push_back(static_cast<int64_t>(L.header.size()) + r);
  L.total = static_cast<int64_t>(L.header.size()) + off;
  return L;
}

void SafeTensorsWriter::write(const std::string& path) const {
  std::vector<std::tuple<std::string, DType, std::vector<int64_t>>> meta;
  for (const auto& it : items_) meta.emplace_back(it.name, it.dt, it.shape);
  const StLayout L = safetensors_layout(meta);
  std::string out = L.header;
  out.reserve(static_cast<size_t>(L.total));
  for (const auto& it : items_) {
    size_t cnt = 1;
    for (auto d : it.shape) cnt *= static_cast<size_t>(d);
    const size_t at = out.size(), n = cnt * dtype_size(it.dt);
    out.resize(at + n);
    copy_bytes(out.data() + at, it.data, n);  // the tensor may live on a device
  }
  write_file_atomic(path, out);
}

void fsync_dir(const std::string& dir) {
  int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

void write_file_atomic(const std::string& path, const std::string& bytes) {
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) fail(path, ": cannot write: ", std::strerror(errno));
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t w = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (w < 0) {
      int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      fail(path, ": write failed: ", std::strerror(err));
    }
    done += static_cast<size_t>(w);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    ::unlink(tmp.c_str());
    fail(path, ": fsync failed: ", std::strerror(errno));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    fail(path, ": rename failed: ", std::strerror(errno));
  }
  auto slash = path.find_last_of('/');
  fsync_dir(slash == std::string::npos ? "." : path.substr(0, slash));
}

}  // namespace origami
