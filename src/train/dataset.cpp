#include "train/dataset.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <climits>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <utility>

#include "core/error.h"
#include "core/rng.h"
#include "core/safetensors.h"
#include "io/checkpoint.h"

namespace origami {

static_assert(std::endian::native == std::endian::little,
              "the dataset files are little-endian and read in place");

namespace fs = std::filesystem;

namespace {

constexpr const char* kFormat = "origami-dataset-1";
constexpr const char kMagic[] = "\x93NUMPY";
constexpr size_t kHeaderBytes = 128;         // what npy_header writes, for every n
constexpr uint64_t kShuffleStream = 0xD0C5;  // the training documents' order
constexpr uint64_t kWindowStream = 0xDA7A;   // Corpus::train_sample's

// A Python literal of a .npy header dict: {'key': value, ...} with string, bool and tuple values.
class DictParser {
 public:
  DictParser(std::string_view s, const std::string& path) : s_(s), path_(path) {}

  NpyHeader parse() {
    NpyHeader h;
    bool descr = false, fortran = false, shape = false;
    expect('{');
    for (;;) {
      ws();
      if (peek() == '}') break;
      const std::string key = str();
      expect(':');
      ws();
      if (key == "descr") {
        h.descr = str();
        descr = true;
      } else if (key == "fortran_order") {
        h.fortran_order = boolean();
        fortran = true;
      } else if (key == "shape") {
        h.shape = tuple();
        shape = true;
      } else {
        bad("unknown key '" + key + "'");
      }
      ws();
      if (peek() == ',') {
        ++i_;
        continue;
      }
      if (peek() != '}') bad("expected ',' or '}'");
    }
    if (!descr || !fortran || !shape) bad("it needs 'descr', 'fortran_order' and 'shape'");
    return h;
  }

 private:
  [[noreturn]] void bad(const std::string& what) const {
    fail(path_, ": malformed .npy header (", what, " at character ", i_, "): ", s_);
  }
  void ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n')) ++i_;
  }
  char peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  void expect(char c) {
    ws();
    if (peek() != c) bad(std::string("expected '") + c + "'");
    ++i_;
  }
  std::string str() {
    ws();
    const char q = peek();
    if (q != '\'' && q != '"') bad("expected a quoted string");
    const size_t end = s_.find(q, i_ + 1);
    if (end == std::string_view::npos) bad("unterminated string");
    std::string v(s_.substr(i_ + 1, end - i_ - 1));
    i_ = end + 1;
    return v;
  }
  bool boolean() {
    if (s_.substr(i_, 4) == "True") {
      i_ += 4;
      return true;
    }
    if (s_.substr(i_, 5) == "False") {
      i_ += 5;
      return false;
    }
    bad("expected True or False");
  }
  std::vector<int64_t> tuple() {
    std::vector<int64_t> v;
    expect('(');
    for (;;) {
      ws();
      if (peek() == ')') break;
      if (peek() < '0' || peek() > '9') bad("expected a dimension");
      int64_t d = 0;
      while (peek() >= '0' && peek() <= '9') {
        const int digit = s_[i_++] - '0';
        if (d > (INT64_MAX - digit) / 10) bad("dimension out of range");
        d = d * 10 + digit;
      }
      v.push_back(d);
      ws();
      if (peek() == ',')
        ++i_;
      else if (peek() != ')')
        bad("expected ',' or ')'");
    }
    ++i_;
    return v;
  }

  std::string_view s_;
  const std::string& path_;
  size_t i_ = 0;
};

int itemsize_of(const std::string& descr, const std::string& path) {
  if (descr == "<u2") return 2;
  if (descr == "<u4") return 4;
  fail(path, ": token dtype '", descr, "' (expected '<u2' or '<u4')");
}

}  // namespace

// --- .npy ---------------------------------------------------------------------------------------

std::string npy_header(const std::string& descr, int64_t n) {
  std::string dict =
      "{'descr': '" + descr + "', 'fortran_order': False, 'shape': (" + std::to_string(n) + ",), }";
  const size_t room = kHeaderBytes - 10 - 1;  // magic, version, length; the closing newline
  if (dict.size() > room) fail(".npy header too long: ", dict);
  dict.resize(room, ' ');
  dict.push_back('\n');
  std::string h(kMagic, 6);
  h.push_back('\x01');
  h.push_back('\x00');
  const uint16_t len = static_cast<uint16_t>(dict.size());
  h.push_back(static_cast<char>(len & 0xFF));
  h.push_back(static_cast<char>(len >> 8));
  return h + dict;
}

NpyHeader parse_npy_header(std::string_view b, const std::string& path) {
  if (b.size() < 10 || b.substr(0, 6) != std::string_view(kMagic, 6))
    fail(path, ": not a .npy file (bad magic)");
  const auto u8 = [&](size_t i) { return static_cast<uint64_t>(static_cast<unsigned char>(b[i])); };
  const unsigned major = static_cast<unsigned>(u8(6));
  size_t start = 0, len = 0;
  if (major == 1) {
    start = 10;
    len = u8(8) | u8(9) << 8;
  } else if (major == 2 || major == 3) {
    if (b.size() < 12) fail(path, ": truncated .npy header");
    start = 12;
    len = u8(8) | u8(9) << 8 | u8(10) << 16 | u8(11) << 24;
  } else {
    fail(path, ": unsupported .npy format version ", major, ".", u8(7));
  }
  if (start + len > b.size())
    fail(path, ": truncated .npy header (", b.size(), " bytes, the header needs ", start + len,
         ")");
  NpyHeader h = DictParser(b.substr(start, len), path).parse();
  h.data_offset = static_cast<int64_t>(start + len);
  return h;
}

// --- writing ------------------------------------------------------------------------------------

DatasetWriter::DatasetWriter(std::string dir, int64_t vocab_size, int32_t eos_id)
    : dir_(std::move(dir)), vocab_size_(vocab_size), eos_(eos_id) {
  if (vocab_size < 1 || vocab_size > (int64_t{1} << 32))
    fail("dataset vocab_size ", vocab_size, " must be in [1, 2^32]");
  if (eos_id < 0 || eos_id >= vocab_size)
    fail("end-of-document id ", eos_id, " must be in [0, vocab_size=", vocab_size, ")");
  itemsize_ = vocab_size <= 65536 ? 2 : 4;
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) fail(dir_, ": cannot create the directory: ", ec.message());
  const fs::path d(dir_);
  const fs::path manifest = d / "manifest.json";
  fs::remove(manifest, ec);  // a failure below must not leave an old manifest over new files
  if (ec) fail(manifest.string(), ": cannot remove the previous manifest: ", ec.message());
  fsync_dir(dir_);
  const std::string tmp = ".tmp-" + std::to_string(::getpid()) + "-";
  tmp_tokens_ = (d / (tmp + "tokens.npy")).string();
  f_ = std::fopen(tmp_tokens_.c_str(), "wb");
  if (!f_) fail(tmp_tokens_, ": cannot create: ", std::strerror(errno));
  const std::string h = npy_header(itemsize_ == 2 ? "<u2" : "<u4", 0);  // rewritten by finish
  buf_.assign(h.begin(), h.end());
}

DatasetWriter::~DatasetWriter() {
  if (f_) std::fclose(f_);
  if (!done_) {
    std::error_code ec;
    if (!tmp_tokens_.empty()) fs::remove(tmp_tokens_, ec);
  }
}

void DatasetWriter::flush() {
  if (buf_.empty()) return;
  if (std::fwrite(buf_.data(), 1, buf_.size(), f_) != buf_.size())
    fail(tmp_tokens_, ": write failed: ", std::strerror(errno));
  buf_.clear();
}

bool DatasetWriter::add(const int32_t* ids, int64_t n) {
  if (done_) fail(dir_, ": the dataset is already finished");
  if (n <= 0) return false;
  const auto put = [&](uint32_t v) {
    buf_.push_back(static_cast<unsigned char>(v));
    buf_.push_back(static_cast<unsigned char>(v >> 8));
    if (itemsize_ == 4) {
      buf_.push_back(static_cast<unsigned char>(v >> 16));
      buf_.push_back(static_cast<unsigned char>(v >> 24));
    }
  };
  for (int64_t i = 0; i < n; ++i) {
    const int64_t t = ids[i];
    if (t < 0 || t >= vocab_size_)
      fail(dir_, ": document ", documents(), " token ", i, ": id ", t, " outside [0, ", vocab_size_,
           ")");
    max_id_ = std::max(max_id_, t);
    put(static_cast<uint32_t>(t));
  }
  put(static_cast<uint32_t>(eos_));
  max_id_ = std::max<int64_t>(max_id_, eos_);
  off_.push_back(off_.back() + n + 1);
  if (buf_.size() >= (size_t{4} << 20)) flush();
  return true;
}

PrepareSummary DatasetWriter::finish(const DatasetSource& src) {
  if (done_) fail(dir_, ": the dataset is already finished");
  if (documents() == 0) fail(dir_, ": no documents to write (every input was empty)");
  const std::string descr = itemsize_ == 2 ? "<u2" : "<u4";
  const int64_t ntok = off_.back();
  flush();
  const std::string h = npy_header(descr, ntok);
  bool ok = std::fflush(f_) == 0 && std::fseek(f_, 0, SEEK_SET) == 0 &&
            std::fwrite(h.data(), 1, h.size(), f_) == h.size() && std::fflush(f_) == 0 &&
            ::fsync(::fileno(f_)) == 0;
  const int err = errno;
  ok = std::fclose(f_) == 0 && ok;
  f_ = nullptr;
  if (!ok) fail(tmp_tokens_, ": write failed: ", std::strerror(err ? err : errno));

  std::string docs = npy_header("<i8", static_cast<int64_t>(off_.size()));
  const size_t h0 = docs.size();
  docs.resize(h0 + off_.size() * 8);
  std::memcpy(docs.data() + h0, off_.data(), off_.size() * 8);

  PrepareSummary s;
  s.documents = documents();
  s.tokens = ntok;
  s.max_token_id = max_id_;
  s.dtype = descr;
  std::vector<int64_t> len(static_cast<size_t>(s.documents));
  for (size_t i = 0; i < len.size(); ++i) len[i] = off_[i + 1] - off_[i];
  const auto [mn, mx] = std::minmax_element(len.begin(), len.end());
  s.min_len = *mn;
  s.max_len = *mx;
  auto mid = len.begin() + static_cast<std::ptrdiff_t>((len.size() - 1) / 2);
  std::nth_element(len.begin(), mid, len.end());
  s.median_len = *mid;

  nlohmann::json j;
  j["format"] = kFormat;
  j["tokenizer"] = src.tokenizer;
  if (!src.tokenizer_sha256.empty()) j["tokenizer_sha256"] = src.tokenizer_sha256;
  if (src.tokenizer_vocab_size > 0) j["tokenizer_vocab_size"] = src.tokenizer_vocab_size;
  j["vocab_size"] = vocab_size_;
  j["eos_id"] = eos_;
  j["dtype"] = descr;
  j["documents"] = s.documents;
  j["tokens"] = s.tokens;
  j["max_token_id"] = s.max_token_id;
  j["tokens_sha256"] = sha256_file(tmp_tokens_);
  j["sources"] = src.sources;
  // tokens and offsets into place, the manifest last (each write_file_atomic: tmp, fsync, rename,
  // fsync of the directory)
  const fs::path d(dir_);
  fs::rename(tmp_tokens_, d / "tokens.npy");
  done_ = true;
  write_file_atomic((d / "docs.npy").string(), docs);
  write_file_atomic((d / "manifest.json").string(), j.dump(2) + "\n");
  return s;
}

PrepareSummary prepare_from_token_docs(const std::string& dir,
                                       const std::vector<std::vector<int32_t>>& docs,
                                       int64_t vocab_size, int32_t eos_id,
                                       const DatasetSource& src) {
  DatasetWriter w(dir, vocab_size, eos_id);
  for (const auto& d : docs) w.add(d);
  return w.finish(src);
}

// --- reading ------------------------------------------------------------------------------------

Dataset::Mapping::Mapping(Mapping&& o) noexcept
    : addr(std::exchange(o.addr, nullptr)), bytes(std::exchange(o.bytes, 0)) {}

Dataset::Mapping& Dataset::Mapping::operator=(Mapping&& o) noexcept {
  if (this != &o) {
    if (addr) ::munmap(addr, bytes);
    addr = std::exchange(o.addr, nullptr);
    bytes = std::exchange(o.bytes, 0);
  }
  return *this;
}

Dataset::Mapping::~Mapping() {
  if (addr) ::munmap(addr, bytes);
}

Dataset Dataset::open(const std::string& dir, double eval_fraction) {
  if (!(eval_fraction > 0 && eval_fraction < 1))
    fail("eval_fraction=", eval_fraction, " must be in (0, 1)");
  Dataset ds;
  ds.dir_ = dir;
  const fs::path d(dir);

  // The manifest.
  const std::string mpath = (d / "manifest.json").string();
  std::ifstream mf(mpath);
  if (!mf) fail(mpath, ": cannot open (no dataset here? `origami data prepare` writes one)");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(mf);
  } catch (const std::exception& e) {
    fail(mpath, ": not valid JSON: ", e.what());
  }
  if (!j.is_object() || !j.contains("format") || !j["format"].is_string() ||
      j["format"].get<std::string>() != kFormat)
    fail(mpath, ": not an origami dataset manifest (\"format\" must be \"", kFormat, "\")");
  const auto integer = [&](const char* key, int64_t lo, int64_t hi) {
    if (!j.contains(key) || !j[key].is_number_integer())
      fail(mpath, ": \"", key, "\" is missing or not an integer");
    const int64_t v = j[key].get<int64_t>();
    if (v < lo || v > hi) fail(mpath, ": \"", key, "\"=", v, " must be in [", lo, ", ", hi, "]");
    return v;
  };
  ds.vocab_size_ = integer("vocab_size", 1, int64_t{1} << 32);
  ds.eos_ =
      static_cast<int32_t>(integer("eos_id", 0, std::min<int64_t>(INT32_MAX, ds.vocab_size_ - 1)));
  const int64_t ndocs = integer("documents", 1, INT64_MAX / 16);
  ds.ntok_ = integer("tokens", ndocs, INT64_MAX / 16);
  if (!j.contains("dtype") || !j["dtype"].is_string()) fail(mpath, ": \"dtype\" is missing");
  ds.dtype_ = j["dtype"].get<std::string>();
  ds.itemsize_ = itemsize_of(ds.dtype_, mpath);
  if (ds.itemsize_ == 2 && ds.vocab_size_ > 65536)
    fail(mpath, ": vocab_size ", ds.vocab_size_, " does not fit dtype <u2");
  if (j.contains("max_token_id")) ds.max_id_ = integer("max_token_id", 0, ds.vocab_size_ - 1);
  if (j.contains("tokens_sha256") && j["tokens_sha256"].is_string())
    ds.tokens_sha256_ = j["tokens_sha256"].get<std::string>();

  // tokens.npy, mapped.
  const std::string tpath = (d / "tokens.npy").string();
  // A manifest without the checksum (not ours: prepare writes it): computed here, once, so a
  // checkpoint still names the tokens it trained on (train refuses a resume on other tokens).
  if (ds.tokens_sha256_.empty()) ds.tokens_sha256_ = sha256_file(tpath);
  const int fd = ::open(tpath.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(tpath, ": cannot open: ", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    fail(tpath, ": cannot stat: ", std::strerror(errno));
  }
  const auto size = static_cast<size_t>(st.st_size);
  if (size == 0) {
    ::close(fd);
    fail(tpath, ": empty file (not a .npy file)");
  }
  void* m = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  const int err = errno;
  ::close(fd);
  if (m == MAP_FAILED) fail(tpath, ": cannot map: ", std::strerror(err));
  ds.map_.addr = m;
  ds.map_.bytes = size;
  const NpyHeader th = parse_npy_header(std::string_view(static_cast<const char*>(m), size), tpath);
  if (th.descr != ds.dtype_)
    fail(tpath, ": dtype '", th.descr, "' but the manifest says '", ds.dtype_, "'");
  if (th.fortran_order) fail(tpath, ": fortran_order True (expected False)");
  if (th.shape.size() != 1) fail(tpath, ": a ", th.shape.size(), "-D array (expected 1-D)");
  if (th.shape[0] != ds.ntok_)
    fail(tpath, ": shape (", th.shape[0], ",) but the manifest says ", ds.ntok_, " tokens");
  const auto need = static_cast<size_t>(th.data_offset) +
                    static_cast<size_t>(ds.ntok_) * static_cast<size_t>(ds.itemsize_);
  if (size < need) fail(tpath, ": truncated (", size, " bytes; its header describes ", need, ")");
  if (size > need) fail(tpath, ": ", size - need, " bytes after the array (", need, " expected)");
  ds.data_ = static_cast<const unsigned char*>(m) + th.data_offset;

  // docs.npy, loaded.
  const std::string dpath = (d / "docs.npy").string();
  std::ifstream df(dpath, std::ios::binary);
  if (!df) fail(dpath, ": cannot open");
  const std::string bytes{std::istreambuf_iterator<char>(df), {}};
  const NpyHeader dh = parse_npy_header(bytes, dpath);
  if (dh.descr != "<i8") fail(dpath, ": dtype '", dh.descr, "' (expected '<i8')");
  if (dh.fortran_order) fail(dpath, ": fortran_order True (expected False)");
  if (dh.shape.size() != 1 || dh.shape[0] != ndocs + 1)
    fail(dpath, ": shape must be (", ndocs + 1, ",): documents+1 offsets");
  const size_t dneed = static_cast<size_t>(dh.data_offset) + static_cast<size_t>(ndocs + 1) * 8;
  if (bytes.size() != dneed)
    fail(dpath, bytes.size() < dneed ? ": truncated (" : ": wrong size (", bytes.size(),
         " bytes; its header describes ", dneed, ")");
  ds.off_.resize(static_cast<size_t>(ndocs + 1));
  std::memcpy(ds.off_.data(), bytes.data() + dh.data_offset, ds.off_.size() * 8);
  if (ds.off_.front() != 0) fail(dpath, ": the first offset is ", ds.off_.front(), ", not 0");
  for (int64_t i = 0; i < ndocs; ++i)
    if (ds.off_[static_cast<size_t>(i + 1)] <= ds.off_[static_cast<size_t>(i)])
      fail(dpath, ": document ", i, " is empty or its offsets decrease");
  if (ds.off_.back() != ds.ntok_)
    fail(dpath, ": the last offset is ", ds.off_.back(), ", not the ", ds.ntok_, " tokens");

  if (ds.max_id_ < 0) {  // an older manifest without max_token_id: one pass
    for (int64_t i = 0; i < ds.ntok_; ++i) ds.max_id_ = std::max(ds.max_id_, ds.token(i));
  }

  // The split: the last documents are held out.
  const int64_t n_eval =
      std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(ndocs) * eval_fraction));
  if (ndocs - n_eval < 1)
    fail(dir, ": ", ndocs, " document(s) with eval_fraction=", eval_fraction,
         ": at least one must be held out and one left to train on");
  ds.n_train_docs_ = ndocs - n_eval;
  return ds;
}

int64_t Dataset::token(int64_t i) const {
  const unsigned char* p = data_ + i * itemsize_;
  if (itemsize_ == 2) {
    uint16_t v;
    std::memcpy(&v, p, 2);
    return v;
  }
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

std::vector<int64_t> Dataset::document(int64_t d) const {
  if (d < 0 || d >= documents()) fail(dir_, ": no document ", d, " (", documents(), " documents)");
  std::vector<int64_t> v;
  for (int64_t i = off_[static_cast<size_t>(d)]; i < off_[static_cast<size_t>(d + 1)]; ++i)
    v.push_back(token(i));
  return v;
}

void Dataset::verify() const {
  const std::string tpath = (fs::path(dir_) / "tokens.npy").string();
  int64_t mx = 0;
  for (int64_t i = 0; i < ntok_; ++i) {
    const int64_t t = token(i);
    if (t >= vocab_size_)
      fail(tpath, ": token ", i, " is ", t, ", outside the vocabulary ", vocab_size_);
    mx = std::max(mx, t);
  }
  if (mx != max_id_) fail(tpath, ": the largest id is ", mx, ", the manifest says ", max_id_);
  for (int64_t d = 0; d < documents(); ++d)
    if (token(off_[static_cast<size_t>(d + 1)] - 1) != eos_)
      fail(tpath, ": document ", d, " does not end with the end-of-document id ", eos_);
  const std::string h = sha256_file(tpath);
  if (h != tokens_sha256_)
    fail(tpath, ": sha256 ", h, " but the manifest says ", tokens_sha256_, " (file changed?)");
}

// --- unpacked windows ---------------------------------------------------------------------------

void Dataset::train_window(uint64_t seed, int64_t index, int64_t S, int64_t* in,
                           int64_t* tg) const {
  const int64_t n = train_tokens();
  if (S < 1) fail("--seq=", S, " must be >= 1");
  const int64_t span = n - (S + 1);
  if (span < 0)
    fail("--seq=", S, " is longer than the training split of ", dir_, " (", n, " tokens)");
  const uint64_t key = rng_key(seed, kWindowStream);
  const int64_t start = static_cast<int64_t>(rng_bits(key, static_cast<uint64_t>(index)) %
                                             static_cast<uint64_t>(span + 1));
  for (int64_t i = 0; i < S; ++i) {
    in[i] = token(start + i);
    tg[i] = token(start + i + 1);
  }
}

int64_t Dataset::eval_windows(int64_t S) const {
  if (S < 1) fail("--seq=", S, " must be >= 1");
  return (ntok_ - train_tokens() - 1) / S;
}

void Dataset::eval_window(int64_t j, int64_t S, int64_t* in, int64_t* tg) const {
  const int64_t nw = eval_windows(S);
  if (nw <= 0)
    fail("--seq=", S, " is longer than the held-out split of ", dir_, " (", ntok_ - train_tokens(),
         " tokens)");
  if (j < 0) fail("held-out window ", j, " is negative");
  const int64_t start = train_tokens() + (j % nw) * S;
  for (int64_t i = 0; i < S; ++i) {
    in[i] = token(start + i);
    tg[i] = token(start + i + 1);
  }
}

// --- packing ------------------------------------------------------------------------------------

// First fit over the kOpen most recently opened sequences that are not full: a piece goes into
// the oldest with room for it, else opens a new one; past kOpen open sequences the oldest closes
// (its rest is padding). A document longer than S is split: its first piece fills what is left of
// the oldest open sequence (or is S long), then pieces of S, the rest placed like a short
// document. A sequence is emitted when it fills or closes, the rest in opening order at the end.
void Dataset::build_plan(Plan& p, const std::vector<int64_t>& order, int64_t S) const {
  constexpr size_t kOpen = 8;
  struct Open {
    std::vector<Piece> pieces;
    int64_t fill = 0;
  };
  p = Plan{};
  p.pieces.reserve(order.size() + static_cast<size_t>(ntok_ / S) + 1);
  p.seq_begin.push_back(0);
  std::deque<Open> open;
  int64_t pad = 0;
  const auto emit = [&](const Open& o) {
    p.pieces.insert(p.pieces.end(), o.pieces.begin(), o.pieces.end());
    p.seq_begin.push_back(static_cast<int64_t>(p.pieces.size()));
    pad += S - o.fill;
  };
  const auto place = [&](size_t k, const Piece& pc) {  // into open[k]; emitted once full
    open[k].pieces.push_back(pc);
    open[k].fill += pc.len;
    if (open[k].fill == S) {
      emit(open[k]);
      open.erase(open.begin() + static_cast<std::ptrdiff_t>(k));
    }
  };
  for (const int64_t d : order) {
    const int64_t b = off_[static_cast<size_t>(d)], e = off_[static_cast<size_t>(d + 1)];
    const bool split = e - b > S;
    if (split) ++p.stats.split_documents;
    for (int64_t s = b, len = 0; s < e; s += len) {
      len = std::min(S, e - s);
      size_t k = 0;
      if (split && s == b && !open.empty()) {  // the first piece fills the oldest open sequence
        len = S - open.front().fill;
      } else {
        while (k < open.size() && open[k].fill + len > S) ++k;
        if (k == open.size()) open.push_back({});
      }
      place(k, {s, static_cast<int32_t>(len), s + len == e});
      p.stats.tokens += len;
      if (open.size() > kOpen) {
        emit(open.front());
        open.pop_front();
      }
    }
  }
  for (const Open& o : open) emit(o);
  p.stats.sequences = static_cast<int64_t>(p.seq_begin.size()) - 1;
  p.stats.pieces = static_cast<int64_t>(p.pieces.size());
  p.stats.padding_fraction =
      p.stats.sequences ? static_cast<double>(pad) / static_cast<double>(p.stats.sequences * S) : 0;
}

void Dataset::plan_packing(uint64_t seed, int64_t S) {
  if (S < 1 || S > INT32_MAX) fail("--seq=", S, " must be in [1, ", INT32_MAX, "]");
  if (plan_S_ == S && plan_seed_ == seed) return;
  // The training documents in a seeded Fisher-Yates order; the held-out ones in order.
  std::vector<int64_t> order(static_cast<size_t>(n_train_docs_));
  for (int64_t i = 0; i < n_train_docs_; ++i) order[static_cast<size_t>(i)] = i;
  const uint64_t key = rng_key(seed, kShuffleStream);
  for (int64_t i = n_train_docs_ - 1; i > 0; --i) {
    const auto k = static_cast<int64_t>(rng_bits(key, static_cast<uint64_t>(i)) %
                                        static_cast<uint64_t>(i + 1));
    std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(k)]);
  }
  build_plan(train_plan_, order, S);
  order.resize(static_cast<size_t>(eval_documents()));
  for (int64_t i = 0; i < eval_documents(); ++i) order[static_cast<size_t>(i)] = n_train_docs_ + i;
  build_plan(eval_plan_, order, S);
  plan_S_ = S;
  plan_seed_ = seed;
}

const Dataset::Plan& Dataset::plan_for(bool eval, int64_t S) const {
  if (plan_S_ == 0) fail(dir_, ": packed samples need plan_packing(seed, S) first");
  if (S != plan_S_)
    fail(dir_, ": packed samples of S=", S, " but the packing plan was made for S=", plan_S_);
  return eval ? eval_plan_ : train_plan_;
}

void Dataset::fill_packed(const Plan& p, int64_t seq, int64_t S, int64_t* in, int64_t* tg,
                          int64_t* pos) const {
  int64_t slot = 0;
  for (int64_t k = p.seq_begin[static_cast<size_t>(seq)];
       k < p.seq_begin[static_cast<size_t>(seq + 1)]; ++k) {
    const Piece& pc = p.pieces[static_cast<size_t>(k)];
    for (int64_t i = 0; i < pc.len; ++i, ++slot) {
      in[slot] = token(pc.start + i);
      tg[slot] = i + 1 < pc.len ? token(pc.start + i + 1)
                 : pc.ends_doc  ? -1
                                : token(pc.start + pc.len);
      pos[slot] = i;
    }
  }
  for (int64_t i = 0; slot < S; ++i, ++slot) {
    in[slot] = eos_;
    tg[slot] = -1;
    pos[slot] = i;
  }
}

int64_t Dataset::packed_count(int64_t S) const {
  return plan_for(false, S).stats.sequences;
}

int64_t Dataset::packed_eval_count(int64_t S) const {
  return plan_for(true, S).stats.sequences;
}

void Dataset::packed_sample(int64_t index, int64_t S, int64_t* in, int64_t* tg,
                            int64_t* pos) const {
  const Plan& p = plan_for(false, S);
  if (index < 0) fail("sample index ", index, " is negative");
  fill_packed(p, index % p.stats.sequences, S, in, tg, pos);
}

void Dataset::packed_eval(int64_t j, int64_t S, int64_t* in, int64_t* tg, int64_t* pos) const {
  const Plan& p = plan_for(true, S);
  if (j < 0) fail("held-out sequence ", j, " is negative");
  fill_packed(p, j % p.stats.sequences, S, in, tg, pos);
}

Batch Dataset::packed_batch(int64_t first, int64_t B, int64_t S, bool eval) const {
  Batch b;
  b.B = B;
  b.S = S;
  b.inputs.resize(static_cast<size_t>(B * S));
  b.targets.resize(b.inputs.size());
  std::vector<int64_t> pos(b.inputs.size());
  for (int64_t i = 0; i < B; ++i) {
    int64_t* in = b.inputs.data() + i * S;
    int64_t* tg = b.targets.data() + i * S;
    if (eval)
      packed_eval(first + i, S, in, tg, pos.data() + i * S);
    else
      packed_sample(first + i, S, in, tg, pos.data() + i * S);
  }
  set_positions(b, std::move(pos), dir_);
  return b;
}

int64_t Dataset::packed_fill(int64_t index, int64_t S, bool eval) const {
  const Plan& p = plan_for(eval, S);
  if (index < 0) fail("sample index ", index, " is negative");
  const int64_t seq = index % p.stats.sequences;
  int64_t n = 0;
  for (int64_t k = p.seq_begin[static_cast<size_t>(seq)];
       k < p.seq_begin[static_cast<size_t>(seq + 1)]; ++k)
    n += p.pieces[static_cast<size_t>(k)].len;
  return n;
}

const PackingStats& Dataset::packing_stats(bool eval) const {
  if (plan_S_ == 0) fail(dir_, ": packing_stats needs plan_packing(seed, S) first");
  return eval ? eval_plan_.stats : train_plan_.stats;
}

}  // namespace origami
