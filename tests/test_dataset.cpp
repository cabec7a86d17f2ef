// Pre-tokenized datasets (train/dataset.h): the .npy headers, writing and the memory-mapped
// reader, the document split, unpacked windows against Corpus's, the packing rules, determinism,
// one epoch covering every training document once, and malformed directories.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/rng.h"
#include "error_of.h"
#include "io/checkpoint.h"
#include "train/data.h"
#include "train/dataset.h"

using namespace origami;
namespace fs = std::filesystem;

namespace {

fs::path tmproot() {
  return fs::temp_directory_path() / ("origami_test_dataset_" + std::to_string(::getpid()));
}
// Removes every test's directory at the end.
struct Cleanup : ::testing::Environment {
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(tmproot(), ec);
  }
};
const auto* const kCleanup = ::testing::AddGlobalTestEnvironment(new Cleanup);

std::string tmpdir(const std::string& name) {
  auto p = tmproot() / name;
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}
void write_bytes(const std::string& path, const std::string& b) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << b;
}

// Random documents of 0 (skipped by the writer) to 3*S tokens in [2, vocab).
std::vector<std::vector<int32_t>> random_docs(int n, int64_t S, int64_t vocab, uint64_t seed) {
  std::vector<std::vector<int32_t>> docs(static_cast<size_t>(n));
  const uint64_t key = rng_key(seed, 77);
  uint64_t c = 0;
  for (auto& d : docs) {
    const auto len = static_cast<int64_t>(rng_bits(key, c++) % static_cast<uint64_t>(3 * S + 1));
    for (int64_t i = 0; i < len; ++i)
      d.push_back(static_cast<int32_t>(2 + rng_bits(key, c++) % static_cast<uint64_t>(vocab - 2)));
  }
  // The shapes the rules single out: one-token documents and lengths around S.
  docs[0] = {5};
  docs[1] = std::vector<int32_t>(static_cast<size_t>(S - 1), 6);      // S with its EOS
  docs[2] = std::vector<int32_t>(static_cast<size_t>(S), 7);          // S+1: a lone-EOS piece
  docs[3] = std::vector<int32_t>(static_cast<size_t>(2 * S + 3), 8);  // three pieces
  return docs;
}

using test::error_of;

struct Sample {
  std::vector<int64_t> in, tg, pos;
  bool operator==(const Sample&) const = default;
};
Sample packed(const Dataset& ds, int64_t i, int64_t S, bool eval = false) {
  Sample s{std::vector<int64_t>(S), std::vector<int64_t>(S), std::vector<int64_t>(S)};
  if (eval)
    ds.packed_eval(i, S, s.in.data(), s.tg.data(), s.pos.data());
  else
    ds.packed_sample(i, S, s.in.data(), s.tg.data(), s.pos.data());
  return s;
}

}  // namespace

TEST(Npy, HeaderRoundTrip) {
  for (const int64_t n : {int64_t{0}, int64_t{1}, int64_t{12345}, INT64_MAX}) {
    const std::string h = npy_header("<u2", n);
    ASSERT_EQ(h.size(), 128u);
    EXPECT_EQ(h.back(), '\n');
    const NpyHeader p = parse_npy_header(h, "x.npy");
    EXPECT_EQ(p.descr, "<u2");
    EXPECT_FALSE(p.fortran_order);
    EXPECT_EQ(p.shape, std::vector<int64_t>{n});
    EXPECT_EQ(p.data_offset, 128);
  }
  // What numpy writes in other versions and orders (2.0: a 4-byte length; double quotes; 2-D).
  std::string d = "{\"shape\": (2, 3), \"fortran_order\": True, \"descr\": \"<f4\"}\n";
  std::string v2 = std::string("\x93NUMPY\x02\x00", 8);
  for (int k = 0; k < 4; ++k) v2.push_back(static_cast<char>((d.size() >> (8 * k)) & 0xFF));
  const NpyHeader p = parse_npy_header(v2 + d, "y.npy");
  EXPECT_EQ(p.descr, "<f4");
  EXPECT_TRUE(p.fortran_order);
  EXPECT_EQ(p.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(p.data_offset, static_cast<int64_t>(12 + d.size()));

  const std::string good = npy_header("<i8", 3);
  EXPECT_NE(error_of([&] {
              parse_npy_header("\x93NUMPZ" + good.substr(6), "a.npy");
            }).find("a.npy: not a .npy file (bad magic)"),
            std::string::npos);
  EXPECT_NE(
      error_of([&] { parse_npy_header(good.substr(0, 60), "b.npy"); }).find("b.npy: truncated"),
      std::string::npos);
  std::string bad = good;
  bad[6] = '\x07';
  EXPECT_NE(error_of([&] { parse_npy_header(bad, "c.npy"); }).find("unsupported .npy format"),
            std::string::npos);
  bad = good;
  bad.replace(bad.find("'shape'"), 7, "'shapf'");
  EXPECT_NE(error_of([&] { parse_npy_header(bad, "d.npy"); }).find("d.npy: malformed .npy header"),
            std::string::npos);
  bad = good;
  bad.replace(bad.find("False"), 5, "Nope!");
  EXPECT_NE(error_of([&] { parse_npy_header(bad, "e.npy"); }).find("True or False"),
            std::string::npos);
}

TEST(Dataset, WriteAndRead) {
  const std::string dir = tmpdir("rw");
  const std::vector<std::vector<int32_t>> docs = {{3, 4, 5}, {}, {9}, {7, 7, 2, 8}, {6, 6}};
  const PrepareSummary s = prepare_from_token_docs(dir, docs, 10, 1, {"tok.model", "", 9, {"a"}});
  EXPECT_EQ(s.documents, 4);  // the empty one skipped
  EXPECT_EQ(s.tokens, 4 + 2 + 5 + 3);
  EXPECT_EQ(s.min_len, 2);
  EXPECT_EQ(s.median_len, 3);  // of 4, 2, 5, 3: the lower middle
  EXPECT_EQ(s.max_len, 5);
  EXPECT_EQ(s.dtype, "<u2");
  EXPECT_EQ(s.max_token_id, 9);
  for (const auto& e : fs::directory_iterator(dir))
    EXPECT_NE(e.path().filename().string().rfind(".tmp", 0), 0u) << e.path();

  const auto m = nlohmann::json::parse(read_bytes(dir + "/manifest.json"));
  EXPECT_EQ(m["format"], "origami-dataset-1");
  EXPECT_EQ(m["documents"], 4);
  EXPECT_EQ(m["tokens"], 14);
  EXPECT_EQ(m["eos_id"], 1);
  EXPECT_EQ(m["vocab_size"], 10);
  EXPECT_EQ(m["dtype"], "<u2");
  EXPECT_EQ(m["tokens_sha256"], sha256_file(dir + "/tokens.npy"));
  EXPECT_EQ(m["sources"], nlohmann::json::array({"a"}));
  EXPECT_EQ(read_bytes(dir + "/tokens.npy").size(), 128u + 14 * 2);

  Dataset ds0 = Dataset::open(dir, 0.25);
  Dataset ds = std::move(ds0);  // movable: the mapping goes with it
  EXPECT_EQ(ds.documents(), 4);
  EXPECT_EQ(ds.tokens(), 14);
  EXPECT_EQ(ds.eos_id(), 1);
  EXPECT_EQ(ds.vocab_used(), 10);
  EXPECT_EQ(ds.vocab_size(), 10);
  EXPECT_EQ(ds.document(0), (std::vector<int64_t>{3, 4, 5, 1}));
  EXPECT_EQ(ds.document(1), (std::vector<int64_t>{9, 1}));
  EXPECT_EQ(ds.document(2), (std::vector<int64_t>{7, 7, 2, 8, 1}));
  EXPECT_EQ(ds.document(3), (std::vector<int64_t>{6, 6, 1}));
  EXPECT_EQ(ds.offsets(), (std::vector<int64_t>{0, 4, 6, 11, 14}));
  EXPECT_EQ(ds.train_documents(), 3);
  EXPECT_EQ(ds.eval_documents(), 1);
  EXPECT_EQ(ds.train_tokens(), 11);
  EXPECT_NO_THROW(ds.verify());

  // A vocabulary over 65536 ids: <u4.
  const std::string big = tmpdir("u4");
  const PrepareSummary s4 = prepare_from_token_docs(big, {{70000, 3}, {65536}}, 100000, 99999);
  EXPECT_EQ(s4.dtype, "<u4");
  Dataset d4 = Dataset::open(big, 0.5);
  EXPECT_EQ(d4.document(0), (std::vector<int64_t>{70000, 3, 99999}));
  EXPECT_EQ(d4.document(1), (std::vector<int64_t>{65536, 99999}));
  EXPECT_EQ(d4.vocab_used(), 100000);
  EXPECT_NO_THROW(d4.verify());
}

TEST(Dataset, Split) {
  const std::string dir = tmpdir("split");
  std::vector<std::vector<int32_t>> docs;
  for (int i = 0; i < 100; ++i) docs.push_back({2 + i % 5});
  prepare_from_token_docs(dir, docs, 10, 0);
  EXPECT_EQ(Dataset::open(dir).eval_documents(), 5);
  EXPECT_EQ(Dataset::open(dir, 0.001).eval_documents(), 1);  // at least one held out
  EXPECT_EQ(Dataset::open(dir, 0.999).train_documents(), 1);
  EXPECT_NE(error_of([&] { Dataset::open(dir, 0); }).find("eval_fraction"), std::string::npos);
  EXPECT_NE(error_of([&] { Dataset::open(dir, 1); }).find("eval_fraction"), std::string::npos);
  const std::string one = tmpdir("one");
  prepare_from_token_docs(one, {{4, 5, 6}}, 10, 0);
  EXPECT_NE(error_of([&] { Dataset::open(one); }).find("at least one must be held out"),
            std::string::npos);
}

TEST(Dataset, WindowsMatchCorpus) {
  const std::string dir = tmpdir("windows");
  const auto docs = random_docs(60, 16, 500, 3);
  prepare_from_token_docs(dir, docs, 500, 1);
  const Dataset ds = Dataset::open(dir, 0.1);
  std::vector<int32_t> train;
  for (int64_t i = 0; i < ds.train_tokens(); ++i)
    train.push_back(static_cast<int32_t>(ds.token(i)));
  const Corpus c = Corpus::from_tokens(train, 0.0);
  ASSERT_EQ(c.train_size(), ds.train_tokens());
  const int64_t S = 32;
  std::vector<int64_t> a(S), b(S), x(S), y(S);
  for (const uint64_t seed : {1ull, 7ull})
    for (int64_t idx : {0, 1, 5, 1000}) {
      ds.train_window(seed, idx, S, a.data(), b.data());
      c.train_sample(seed, idx, S, x.data(), y.data());
      EXPECT_EQ(a, x);
      EXPECT_EQ(b, y);
    }
  // Held-out windows: consecutive, non-overlapping, wrapping, over the held-out tokens.
  const int64_t n_eval = ds.tokens() - ds.train_tokens();
  ASSERT_EQ(ds.eval_windows(S), (n_eval - 1) / S);
  for (int64_t j : {int64_t{0}, int64_t{1}, ds.eval_windows(S)}) {
    ds.eval_window(j, S, a.data(), b.data());
    const int64_t start = ds.train_tokens() + (j % ds.eval_windows(S)) * S;
    for (int64_t i = 0; i < S; ++i) {
      EXPECT_EQ(a[i], ds.token(start + i));
      EXPECT_EQ(b[i], ds.token(start + i + 1));
    }
  }
  EXPECT_NE(error_of([&] {
              ds.train_window(1, 0, ds.train_tokens(), a.data(), b.data());
            }).find("longer than the training split"),
            std::string::npos);
}

// The rules on a hand-built held-out split (its documents stay in order). S = 4, EOS = 1:
//   A = 10..15 + EOS (7 tokens: pieces of 4 and 3), B = 20 + EOS, C = 30 31 + EOS.
TEST(Dataset, PackingRules) {
  const std::string dir = tmpdir("rules");
  prepare_from_token_docs(dir, {{2, 3}, {4}, {5, 6, 7}, {10, 11, 12, 13, 14, 15}, {20}, {30, 31}},
                          100, 1);
  Dataset ds = Dataset::open(dir, 0.5);
  ASSERT_EQ(ds.eval_documents(), 3);
  EXPECT_NE(error_of([&] { packed(ds, 0, 4); }).find("plan_packing"), std::string::npos);
  ds.plan_packing(1, 4);
  const int64_t E = 1, X = -1;
  const std::vector<Sample> want = {
      {{10, 11, 12, 13}, {11, 12, 13, 14}, {0, 1, 2, 3}},  // A's first piece fills a sequence
      {{14, 15, E, E}, {15, E, X, X}, {0, 1, 2, 0}},       // its second; B does not fit: padding
      {{20, E, E, E}, {E, X, X, X}, {0, 1, 0, 1}},         // B; C does not fit
      {{30, 31, E, E}, {31, E, X, X}, {0, 1, 2, 0}},       // C, the last padded
  };
  ASSERT_EQ(ds.packed_eval_count(4), 4);
  for (int64_t j = 0; j < 9; ++j)
    EXPECT_EQ(packed(ds, j, 4, true), want[j % 4]) << "sequence " << j;
  EXPECT_EQ(ds.packing_stats(true).sequences, 4);
  EXPECT_EQ(ds.packing_stats(true).pieces, 4);
  EXPECT_EQ(ds.packing_stats(true).split_documents, 1);
  EXPECT_EQ(ds.packing_stats(true).tokens, 12);
  EXPECT_DOUBLE_EQ(ds.packing_stats(true).padding_fraction, 0.25);
  EXPECT_NE(error_of([&] { packed(ds, 0, 8); }).find("made for S=4"), std::string::npos);
  // S = 1: every token its own piece; the target still the document's next token.
  ds.plan_packing(1, 1);
  ASSERT_EQ(ds.packed_eval_count(1), 7 + 2 + 3);
  EXPECT_EQ(packed(ds, 0, 1, true), (Sample{{10}, {11}, {0}}));
  EXPECT_EQ(packed(ds, 6, 1, true), (Sample{{E}, {X}, {0}}));
  EXPECT_EQ(packed(ds, 7, 1, true), (Sample{{20}, {E}, {0}}));
  EXPECT_DOUBLE_EQ(ds.packing_stats(true).padding_fraction, 0);
}

// A document longer than S fills what is left of the current sequence first (no padding before
// it); one of at most S that does not fit starts the next sequence.
TEST(Dataset, LongDocumentFillsTheSequenceFirst) {
  const std::string dir = tmpdir("fill");
  prepare_from_token_docs(dir, {{9}, {2, 3}, {10, 11, 12, 13, 14, 15}, {9}}, 100, 1);
  Dataset ds = Dataset::open(dir, 0.75);
  ASSERT_EQ(ds.eval_documents(), 3);
  ds.plan_packing(1, 4);
  const int64_t E = 1, X = -1;
  const std::vector<Sample> want = {
      {{2, 3, E, 10}, {3, E, X, 11}, {0, 1, 2, 0}},        // D1 whole; D2's first piece, one slot
      {{11, 12, 13, 14}, {12, 13, 14, 15}, {0, 1, 2, 3}},  // D2's second piece: S
      {{15, E, 9, E}, {E, X, E, X}, {0, 1, 0, 1}},         // D2's rest; D3 fits
  };
  ASSERT_EQ(ds.packed_eval_count(4), 3);
  for (int64_t j = 0; j < 3; ++j) EXPECT_EQ(packed(ds, j, 4, true), want[j]) << "sequence " << j;
  EXPECT_DOUBLE_EQ(ds.packing_stats(true).padding_fraction, 0);
  EXPECT_EQ(ds.packing_stats(true).split_documents, 1);
}

// First fit: a document that does not fit the newest sequence goes into an older one with room
// (two sequences, no padding, where filling in order would pad three).
TEST(Dataset, FirstFitFillsOlderSequences) {
  const std::string dir = tmpdir("firstfit");
  prepare_from_token_docs(dir, {{9}, {2, 3}, {4, 5}, {6}, {7}}, 100, 1);
  Dataset ds = Dataset::open(dir, 0.8);
  ASSERT_EQ(ds.eval_documents(), 4);
  ds.plan_packing(1, 5);
  const int64_t E = 1, X = -1;
  ASSERT_EQ(ds.packed_eval_count(5), 2);
  EXPECT_EQ(packed(ds, 0, 5, true), (Sample{{2, 3, E, 6, E}, {3, E, X, E, X}, {0, 1, 2, 0, 1}}));
  EXPECT_EQ(packed(ds, 1, 5, true), (Sample{{4, 5, E, 7, E}, {5, E, X, E, X}, {0, 1, 2, 0, 1}}));
  EXPECT_DOUBLE_EQ(ds.packing_stats(true).padding_fraction, 0);
}

// One epoch of packed sequences holds every training document exactly once, cut into pieces that
// each start at position 0 and chain their targets through the document: checked with every
// token id unique (so each token names its document and place), whatever order first fit emits
// the pieces in; the held-out documents likewise.
TEST(Dataset, PackedEpochCoversEveryTrainingDocumentOnce) {
  const int64_t S = 16;
  const std::string dir = tmpdir("epoch");
  auto docs = random_docs(200, S, 300, 11);
  int32_t next = 2;  // 1 is the EOS
  for (auto& d : docs)
    for (auto& t : d) t = next++;
  prepare_from_token_docs(dir, docs, next, 1);
  Dataset ds = Dataset::open(dir);
  // token id -> (document, index in it); the EOS is recognised by its target (-1)
  std::map<int64_t, std::pair<int64_t, int64_t>> where;
  for (int64_t d = 0; d < ds.documents(); ++d) {
    const auto doc = ds.document(d);
    for (size_t k = 0; k + 1 < doc.size(); ++k) where[doc[k]] = {d, static_cast<int64_t>(k)};
  }
  // Checks the pieces of samples [0, n) (eval: held-out) and returns, per document, the indices
  // covered in the order met.
  const auto cover = [&](int64_t n, bool eval,
                         int64_t* pad) -> std::map<int64_t, std::vector<int64_t>> {
    std::map<int64_t, std::vector<int64_t>> seen;
    std::vector<int64_t> pending;  // documents whose piece ended just before their EOS
    for (int64_t i = 0; i < n; ++i) {
      const Sample s = packed(ds, i, S, eval);
      const int64_t fill = ds.packed_fill(i, S, eval);
      EXPECT_GT(fill, 0);
      int64_t doc = -1, at = -1;  // the current piece's document and index
      for (int64_t k = 0; k < S; ++k) {
        if (k >= fill) {  // padding
          EXPECT_EQ(s.in[k], ds.eos_id());
          EXPECT_EQ(s.tg[k], -1);
          EXPECT_EQ(s.pos[k], k - fill);
          ++*pad;
          continue;
        }
        if (s.in[k] == ds.eos_id()) {  // a document's last token: its target ignored
          EXPECT_EQ(s.tg[k], -1);
          if (s.pos[k] > 0) {
            seen[doc].push_back(at + 1);
          } else {  // a lone-EOS piece: a document whose last piece ended before its EOS
            EXPECT_FALSE(pending.empty());
            if (pending.empty()) return {};
            const int64_t d = pending.front();
            pending.erase(pending.begin());
            seen[d].push_back(static_cast<int64_t>(ds.document(d).size()) - 1);
          }
          doc = -1;
          continue;
        }
        const auto [d, idx] = where.at(s.in[k]);
        if (s.pos[k] == 0) {  // a piece starts
          doc = d;
        } else {
          EXPECT_EQ(d, doc) << "a piece holds one document";
          EXPECT_EQ(idx, at + 1) << "a piece is consecutive";
          EXPECT_EQ(s.pos[k], s.pos[k - 1] + 1);
        }
        at = idx;
        seen[d].push_back(idx);
        const auto doc_tokens = ds.document(d);
        EXPECT_EQ(s.tg[k], doc_tokens[static_cast<size_t>(idx + 1)])
            << "the target is the document's next token";
        if (s.tg[k] == ds.eos_id() && (k + 1 == fill || s.pos[k + 1] == 0)) pending.push_back(d);
      }
    }
    return seen;
  };
  for (const uint64_t seed : {1ull, 2ull}) {
    ds.plan_packing(seed, S);
    const int64_t n = ds.packed_count(S);
    const PackingStats& st = ds.packing_stats();
    EXPECT_EQ(st.sequences, n);
    EXPECT_EQ(st.tokens, ds.train_tokens());
    int64_t pad = 0;
    const auto seen = cover(n, false, &pad);
    EXPECT_DOUBLE_EQ(st.padding_fraction, static_cast<double>(pad) / static_cast<double>(n * S));
    EXPECT_EQ(static_cast<int64_t>(seen.size()), ds.train_documents());
    EXPECT_TRUE(seen.size() > 0);
    for (const auto& [d, idx] : seen) {
      ASSERT_LT(d, ds.train_documents());
      std::vector<int64_t> all(static_cast<size_t>(ds.document(d).size()));
      for (size_t k = 0; k < all.size(); ++k) all[k] = static_cast<int64_t>(k);
      std::vector<int64_t> got = idx;
      std::sort(got.begin(), got.end());
      EXPECT_EQ(got, all) << "document " << d << " once, whole";
    }
    for (int64_t i = 0; i < n; ++i)
      EXPECT_EQ(packed(ds, i + n, S), packed(ds, i, S));  // the next epoch repeats the plan
  }
  int64_t pad = 0;
  const auto seen = cover(ds.packed_eval_count(S), true, &pad);
  EXPECT_EQ(static_cast<int64_t>(seen.size()), ds.eval_documents());
  for (const auto& [d, idx] : seen) EXPECT_GE(d, ds.train_documents());
}

TEST(Dataset, Determinism) {
  const int64_t S = 32;
  const std::string dir = tmpdir("det");
  prepare_from_token_docs(dir, random_docs(300, S, 1000, 5), 1000, 1);
  Dataset a = Dataset::open(dir), b = Dataset::open(dir);
  a.plan_packing(42, S);
  b.plan_packing(7, S);
  b.plan_packing(42, S);  // no state left from the plan before
  ASSERT_EQ(a.packed_count(S), b.packed_count(S));
  int differ = 0;
  Dataset c = Dataset::open(dir);
  c.plan_packing(43, S);
  for (int64_t i = 0; i < a.packed_count(S); ++i) {
    EXPECT_EQ(packed(a, i, S), packed(b, i, S));
    if (i < c.packed_count(S) && !(packed(a, i, S) == packed(c, i, S))) ++differ;
  }
  EXPECT_GT(differ, a.packed_count(S) / 2) << "another seed, another order";
  // Any order of reads gives the same samples.
  EXPECT_EQ(packed(a, 17, S), packed(b, 17, S));
  std::vector<int64_t> x(S), y(S), u(S), v(S);
  a.train_window(9, 123, S, x.data(), y.data());
  b.train_window(9, 123, S, u.data(), v.data());
  EXPECT_EQ(x, u);
  EXPECT_EQ(y, v);
}

TEST(Dataset, Errors) {
  const std::string dir = tmpdir("errors");
  auto make = [&] { prepare_from_token_docs(dir, {{2, 3, 4}, {5, 6}, {7}}, 10, 1); };
  auto open_error = [&] { return error_of([&] { Dataset::open(dir, 0.4); }); };

  EXPECT_NE(
      error_of([&] { Dataset::open(tmpdir("empty")); }).find("empty/manifest.json: cannot open"),
      std::string::npos);
  make();
  const std::string tokens = dir + "/tokens.npy", docs = dir + "/docs.npy";
  const std::string good = read_bytes(tokens), good_docs = read_bytes(docs);

  std::string b = good;
  b[1] = 'X';
  write_bytes(tokens, b);
  std::string e = open_error();
  EXPECT_NE(e.find(tokens + ": not a .npy file (bad magic)"), std::string::npos) << e;

  write_bytes(tokens, good.substr(0, good.size() - 1));
  e = open_error();
  EXPECT_NE(e.find(tokens + ": truncated"), std::string::npos) << e;
  write_bytes(tokens, good.substr(0, 50));
  e = open_error();
  EXPECT_NE(e.find(tokens + ": truncated .npy header"), std::string::npos) << e;
  write_bytes(tokens, good + "xx");
  EXPECT_NE(open_error().find("bytes after the array"), std::string::npos);
  write_bytes(tokens, npy_header("<u4", 9) + std::string(36, '\0'));
  EXPECT_NE(open_error().find("dtype '<u4' but the manifest says '<u2'"), std::string::npos);
  write_bytes(tokens, npy_header("<u2", 8) + std::string(16, '\0'));
  EXPECT_NE(open_error().find("shape (8,) but the manifest says 9 tokens"), std::string::npos);
  fs::remove(tokens);
  EXPECT_NE(open_error().find(tokens + ": cannot open"), std::string::npos);

  // A changed token: open is fine (nothing read), verify names the file.
  b = good;
  b[128] = 5;
  write_bytes(tokens, b);
  EXPECT_NE(error_of([&] { Dataset::open(dir, 0.4).verify(); }).find(tokens + ": sha256"),
            std::string::npos);
  b[128 + 2 * 3] = 5;  // document 0's EOS replaced
  write_bytes(tokens, b);
  EXPECT_NE(error_of([&] { Dataset::open(dir, 0.4).verify(); }).find("does not end with"),
            std::string::npos);
  write_bytes(tokens, good);

  std::string d = good_docs;
  d[128 + 8] = 9;  // offset 1 past offset 2
  write_bytes(docs, d);
  EXPECT_NE(open_error().find(docs + ": document 1 is empty or its offsets decrease"),
            std::string::npos);
  write_bytes(docs, good_docs.substr(0, good_docs.size() - 8));
  EXPECT_NE(open_error().find(docs + ": truncated"), std::string::npos);
  write_bytes(docs, good_docs);

  const std::string manifest = dir + "/manifest.json";
  const std::string good_m = read_bytes(manifest);
  write_bytes(manifest, "{\"format\": \"origami-dataset-1\", ");
  EXPECT_NE(open_error().find(manifest + ": not valid JSON"), std::string::npos);
  write_bytes(manifest, "{\"format\": \"something-else\"}");
  EXPECT_NE(open_error().find(manifest + ": not an origami dataset manifest"), std::string::npos);
  auto m = nlohmann::json::parse(good_m);
  m.erase("tokens");
  write_bytes(manifest, m.dump());
  EXPECT_NE(open_error().find(manifest + ": \"tokens\" is missing"), std::string::npos);
  write_bytes(manifest, good_m);
  EXPECT_NO_THROW(Dataset::open(dir, 0.4).verify());

  // Writing: a token outside the vocabulary fails and leaves no manifest (the old one removed)
  // and no temporary files.
  EXPECT_NE(error_of([&] {
              prepare_from_token_docs(dir, {{2}, {10}}, 10, 1);
            }).find("id 10 outside [0, 10)"),
            std::string::npos);
  EXPECT_FALSE(fs::exists(manifest));
  for (const auto& f : fs::directory_iterator(dir))
    EXPECT_NE(f.path().filename().string().rfind(".tmp", 0), 0u) << f.path();
  EXPECT_NE(error_of([&] {
              prepare_from_token_docs(dir, {{}, {}}, 10, 1);
            }).find("no documents"),
            std::string::npos);
  EXPECT_NE(error_of([&] { prepare_from_token_docs(dir, {{2}}, 10, 10); }).find("end-of-document"),
            std::string::npos);
}

// numpy reads the files (mmap_mode='r') and our reader reads numpy's; skipped without numpy.
TEST(Dataset, NumpyCompatible) {
  if (std::system("/usr/bin/python3 -c 'import numpy' 2>/dev/null") != 0)
    GTEST_SKIP() << "no numpy for /usr/bin/python3";
  const std::string dir = tmpdir("numpy");
  prepare_from_token_docs(dir, {{2, 3, 4}, {5, 6}, {7}, {300, 9}}, 1000, 1);
  const std::string out = dir + "/py.txt";
  const std::string py =
      "import numpy as np, sys; d = sys.argv[1]; "
      "t = np.load(d + '/tokens.npy', mmap_mode='r'); o = np.load(d + '/docs.npy', mmap_mode='r'); "
      "open(d + '/py.txt', 'w').write(f'{t.dtype.str} {t.shape} {list(map(int, t))} "
      "{o.dtype.str} {list(map(int, o))}'); "
      "np.save(d + '/tokens.npy', np.array(t, dtype=np.uint16))";  // numpy's own header
  ASSERT_EQ(std::system(("/usr/bin/python3 -c \"" + py + "\" " + dir).c_str()), 0);
  EXPECT_EQ(read_bytes(out),
            "<u2 (12,) [2, 3, 4, 1, 5, 6, 1, 7, 1, 300, 9, 1] <i8 [0, 4, 7, 9, 12]");
  const Dataset ds = Dataset::open(dir, 0.25);  // the file numpy wrote
  EXPECT_EQ(ds.document(3), (std::vector<int64_t>{300, 9, 1}));
  EXPECT_EQ(ds.document(0), (std::vector<int64_t>{2, 3, 4, 1}));
}
