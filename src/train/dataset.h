// Pre-tokenized datasets (issue 21): a directory written once by `origami data prepare` and read
// memory-mapped by training.
//
//   DIR/tokens.npy     1-D little-endian <u2 (vocab_size <= 65536) or <u4: every document's tokens,
//                      each document followed by one end-of-document token (eos_id)
//   DIR/docs.npy       1-D <i8, documents+1 offsets: document d = tokens[off[d], off[d+1]), its
//                      EOS included
//   DIR/manifest.json  {"format": "origami-dataset-1", tokenizer, tokenizer_sha256,
//                      tokenizer_vocab_size, vocab_size, eos_id, dtype, documents, tokens,
//                      max_token_id, tokens_sha256, sources}
//
// Plain numpy files: numpy.load(DIR + "/tokens.npy", mmap_mode="r") reads them. The manifest is
// renamed into place last, so a directory with a manifest holds a complete dataset.
//
// Reading: the last `eval_fraction` of the documents is held out. A training sample is addressed
// by its global sample index (tsp-spec §6) and is a pure function of (dataset, seed, S, index),
// so any layout, micro-batching or resume point reads the same tokens; either
//   - an unpacked window of S+1 consecutive tokens at a counter-based random start (exactly
//     Corpus::train_sample's scheme over the training documents' tokens), or
//   - a packed sequence: the training documents shuffled by the seed and placed in order, first
//     fit, into sequences of S slots: a document of at most S tokens whole, into the oldest of
//     the 8 most recent sequences with room (else a new one; the oldest of 9 open closes, its
//     rest padding); a longer one split, its first piece filling the oldest open sequence, then
//     pieces of S, the rest placed like a short document. Per slot:
//     in = the token; tg = the same document's next token (also across a piece boundary), -1 at the
//     document's last token (its EOS) and on padding; pos = position within the piece (0 at each
//     piece's start). Padding slots: in = eos_id, tg = -1, pos 0, 1, 2, ... from its first slot.
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "model/model.h"

namespace origami {

// --- .npy (format version 1.0 written; 1.0, 2.0 and 3.0 read) -------------------------------

struct NpyHeader {
  std::string descr;  // e.g. "<u2"
  bool fortran_order = false;
  std::vector<int64_t> shape;
  int64_t data_offset = 0;  // bytes before the array data
};
// The header of a 1-D array of n elements: magic, version 1.0, the dict padded with spaces to
// 128 bytes in all (64-byte aligned data; the same length for every n, so a writer can reserve it).
std::string npy_header(const std::string& descr, int64_t n);
// Parses the header at the start of `bytes` (a file's first bytes, at least the whole header);
// errors name `path`.
NpyHeader parse_npy_header(std::string_view bytes, const std::string& path);

// --- writing ----------------------------------------------------------------------------------

// What the manifest records about where the tokens came from (all optional).
struct DatasetSource {
  std::string tokenizer;         // the sentencepiece model's path
  std::string tokenizer_sha256;  // of its bytes
  int64_t tokenizer_vocab_size = 0;
  std::vector<std::string> sources;  // the input files
};

struct PrepareSummary {
  int64_t documents = 0, tokens = 0;                 // tokens: EOS included
  int64_t min_len = 0, median_len = 0, max_len = 0;  // document lengths, EOS included
  int64_t max_token_id = 0;
  std::string dtype;  // "<u2" or "<u4"
};

// Writes a dataset one document at a time: tokens stream into DIR/.tmp-<pid>-tokens.npy; finish()
// renames it into place, then writes docs.npy and, last, the manifest (atomically each). A
// manifest already in DIR is removed first, so a failure at any point leaves no manifest (and the
// destructor removes the temporary files).
class DatasetWriter {
 public:
  // Token ids must lie in [0, vocab_size); eos_id too.
  DatasetWriter(std::string dir, int64_t vocab_size, int32_t eos_id);
  ~DatasetWriter();
  DatasetWriter(const DatasetWriter&) = delete;
  DatasetWriter& operator=(const DatasetWriter&) = delete;

  // One document (its EOS is appended). An empty one is skipped (returns false).
  bool add(const int32_t* ids, int64_t n);
  bool add(const std::vector<int32_t>& ids) {
    return add(ids.data(), static_cast<int64_t>(ids.size()));
  }
  int64_t documents() const { return static_cast<int64_t>(off_.size()) - 1; }
  // Fails ("no documents") if nothing was added.
  PrepareSummary finish(const DatasetSource& src = {});

 private:
  void flush();
  std::string dir_, tmp_tokens_;
  int64_t vocab_size_;
  int32_t eos_;
  int itemsize_;
  std::FILE* f_ = nullptr;
  std::vector<unsigned char> buf_;
  std::vector<int64_t> off_{0};
  int64_t max_id_ = 0;
  bool done_ = false;
};

// The sentencepiece-free path: a dataset from given token documents (empty ones skipped).
PrepareSummary prepare_from_token_docs(const std::string& dir,
                                       const std::vector<std::vector<int32_t>>& docs,
                                       int64_t vocab_size, int32_t eos_id,
                                       const DatasetSource& src = {});

// --- reading ----------------------------------------------------------------------------------

struct PackingStats {
  int64_t sequences = 0;        // sequences of S slots in the plan (one epoch)
  int64_t pieces = 0;           // document pieces placed
  int64_t split_documents = 0;  // documents longer than S (cut into several pieces)
  int64_t tokens = 0;           // document slots (the rest is padding)
  double padding_fraction = 0;  // padding slots / (sequences * S)
};

class Dataset {
 public:
  // Reads the manifest and both headers (every field checked, errors name the file), maps
  // tokens.npy read-only and loads the offsets. eval_fraction in (0, 1): the last
  // max(1, floor(documents * eval_fraction)) documents are held out; at least one remains.
  static Dataset open(const std::string& dir, double eval_fraction = 0.05);
  Dataset(Dataset&&) noexcept = default;
  Dataset& operator=(Dataset&&) noexcept = default;
  Dataset(const Dataset&) = delete;
  Dataset& operator=(const Dataset&) = delete;

  const std::string& dir() const { return dir_; }
  const std::string& dtype() const { return dtype_; }
  int64_t documents() const { return static_cast<int64_t>(off_.size()) - 1; }
  int64_t tokens() const { return ntok_; }
  int64_t vocab_size() const { return vocab_size_; }  // the manifest's
  int64_t vocab_used() const { return max_id_ + 1; }  // 1 + the largest token id
  int32_t eos_id() const { return eos_; }
  const std::string& checksum() const { return tokens_sha256_; }  // the manifest's
  int64_t train_documents() const { return n_train_docs_; }
  int64_t eval_documents() const { return documents() - n_train_docs_; }
  int64_t train_tokens() const { return off_[static_cast<size_t>(n_train_docs_)]; }
  int64_t token(int64_t i) const;  // 0 <= i < tokens(), unchecked
  const std::vector<int64_t>& offsets() const { return off_; }
  std::vector<int64_t> document(int64_t d) const;  // its tokens, EOS included
  // Reads every token: the file's checksum against the manifest, an EOS ending every document,
  // the largest id. Throws naming the file.
  void verify() const;

  // Unpacked windows (Corpus's contract): training window for a global sample index at a
  // counter-based random start over the training documents' tokens; held-out window j
  // (consecutive, non-overlapping, wrapping) over the held-out documents' tokens.
  void train_window(uint64_t seed, int64_t index, int64_t S, int64_t* in, int64_t* tg) const;
  int64_t eval_windows(int64_t S) const;
  void eval_window(int64_t j, int64_t S, int64_t* in, int64_t* tg) const;

  // Packed documents. plan_packing computes the plans of both splits for (seed, S) (the held-out
  // documents stay in order; the seed shuffles the training ones); the packed calls below must
  // pass the same S. Training sample `index` is the plan's sequence index mod packed_count().
  void plan_packing(uint64_t seed, int64_t S);
  int64_t packed_count(int64_t S) const;
  void packed_sample(int64_t index, int64_t S, int64_t* in, int64_t* tg, int64_t* pos) const;
  // Packed samples [first, first + B) (held-out sequences with eval) as a batch with their
  // positions (document masks).
  Batch packed_batch(int64_t first, int64_t B, int64_t S, bool eval = false) const;
  int64_t packed_eval_count(int64_t S) const;
  void packed_eval(int64_t j, int64_t S, int64_t* in, int64_t* tg, int64_t* pos) const;
  // Document slots of packed training sample `index` (held-out sequence `index` with eval; the
  // first slots; the rest is padding).
  int64_t packed_fill(int64_t index, int64_t S, bool eval = false) const;
  const PackingStats& packing_stats(bool eval = false) const;

 private:
  Dataset() = default;
  struct Piece {
    int64_t start;  // token index
    int32_t len;
    bool ends_doc;  // the piece ends its document (its last slot's target is -1)
  };
  struct Plan {
    std::vector<Piece> pieces;
    std::vector<int64_t> seq_begin;  // sequences+1 indices into pieces
    PackingStats stats;
  };
  void build_plan(Plan& p, const std::vector<int64_t>& order, int64_t S) const;
  const Plan& plan_for(bool eval, int64_t S) const;
  void fill_packed(const Plan& p, int64_t seq, int64_t S, int64_t* in, int64_t* tg,
                   int64_t* pos) const;
  struct Mapping {  // a read-only mmap, unmapped by the destructor; movable
    void* addr = nullptr;
    size_t bytes = 0;
    Mapping() = default;
    Mapping(Mapping&& o) noexcept;
    Mapping& operator=(Mapping&& o) noexcept;
    ~Mapping();
  };

  std::string dir_, dtype_;
  Mapping map_;
  const unsigned char* data_ = nullptr;  // the array in the mapping
  int itemsize_ = 2;
  int64_t ntok_ = 0, vocab_size_ = 0, max_id_ = -1, n_train_docs_ = 0;
  int32_t eos_ = 0;
  std::string tokens_sha256_;  // the manifest's (or computed at open when it has none)
  std::vector<int64_t> off_;
  int64_t plan_S_ = 0;
  uint64_t plan_seed_ = 0;
  Plan train_plan_, eval_plan_;
};

}  // namespace origami
