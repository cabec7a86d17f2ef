#include "cli/data_cli.h"

#include <sentencepiece_processor.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "cli/args.h"
#include "core/error.h"
#include "io/checkpoint.h"
#include "model/model.h"
#include "parallel/sharded.h"
#include "train/dataset.h"

namespace origami {

namespace fs = std::filesystem;

namespace {

const char* kDataUsage =
    "usage: origami data <subcommand> [flags]   (origami data <subcommand> --help for its flags)\n"
    "\n"
    "subcommands:\n"
    "  prepare  tokenize text and JSON-lines files into a dataset directory (tokens.npy,\n"
    "           docs.npy, manifest.json: numpy files, memory-mapped by training)\n"
    "  info     describe a dataset directory: documents, tokens, the held-out split, the\n"
    "           packing of a sequence length (--seq), a full check of its files (--verify)\n";

// Splits argv into flags (for Args) and positional arguments: a flag not in `booleans` takes the
// next argument as its value unless written --flag=value; `--` ends the flags.
std::vector<std::string> split_positional(int argc, char** argv,
                                          const std::set<std::string>& booleans,
                                          std::vector<char*>& flags) {
  std::vector<std::string> pos;
  for (int i = 0; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--") {
      for (++i; i < argc; ++i) pos.emplace_back(argv[i]);
      break;
    }
    if (a.rfind("--", 0) != 0 && a != "-h") {
      pos.push_back(a);
      continue;
    }
    flags.push_back(argv[i]);
    const std::string name = a.substr(2);
    if (a != "-h" && a != "--help" && a.find('=') == std::string::npos && !booleans.count(name) &&
        i + 1 < argc)
      flags.push_back(argv[++i]);
  }
  return pos;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

class Tokenizer {
 public:
  explicit Tokenizer(const std::string& path) {
    const auto st = sp_.Load(path);
    if (!st.ok()) fail(path, ": cannot load the sentencepiece model: ", st.ToString());
  }
  const sentencepiece::SentencePieceProcessor& sp() const { return sp_; }
  // One line of text (no newline), appended to `out` (as Corpus::load: empty lines add nothing).
  void encode_line(const std::string& line, const std::string& where, std::vector<int32_t>& out) {
    if (line.empty()) return;
    ids_.clear();
    const auto s = sp_.Encode(line, &ids_);
    if (!s.ok()) fail(where, ": tokenizer failed: ", s.ToString());
    out.insert(out.end(), ids_.begin(), ids_.end());
  }
  // A text of several lines: each non-empty line encoded, the ids concatenated.
  void encode_text(const std::string& text, const std::string& where, std::vector<int32_t>& out) {
    size_t b = 0;
    while (b <= text.size()) {
      size_t e = text.find('\n', b);
      if (e == std::string::npos) e = text.size();
      encode_line(text.substr(b, e - b), where, out);
      b = e + 1;
    }
  }

 private:
  sentencepiece::SentencePieceProcessor sp_;
  std::vector<int> ids_;
};

int cmd_data_prepare(int argc, char** argv) {
  Args a("data prepare",
         "Tokenize FILE... (the arguments that are not flags; all of them after --) into a\n"
         "dataset directory: DIR/tokens.npy (every document's tokens, each followed by one\n"
         "end-of-document token; <u2 when the vocabulary has at most 65536 ids, else <u4),\n"
         "DIR/docs.npy (<i8 offsets: document d = tokens[off[d], off[d+1])) and\n"
         "DIR/manifest.json (counts, tokenizer checksum, sources). A FILE is one document,\n"
         "except a *.jsonl file: one JSON object per line whose \"text\" field is a document.\n"
         "Text is tokenized line by line as train's corpus is (empty lines skipped, ids\n"
         "concatenated); empty documents are skipped. The files are written under temporary\n"
         "names and renamed, the manifest last: a failed run leaves no manifest in DIR.\n"
         "numpy.load(DIR + '/tokens.npy', mmap_mode='r') reads the tokens.");
  a.flag("tokenizer", "", "sentencepiece model (e.g. data/tokenizer.model)", true);
  a.flag("out", "", "the dataset directory to write (created; a previous dataset is replaced)",
         true);
  a.flag("eos-id", "",
         "end-of-document token id, for a tokenizer that defines none (trained with "
         "--eos_id=-1, like data/tokenizer.model); may be >= the tokenizer's vocabulary (the "
         "dataset's vocab_size is then eos-id+1). With a tokenizer that has one, it must agree");
  a.flag("split-at", "",
         "PREFIX: in a text FILE, a line starting with PREFIX also starts a new document (e.g. "
         "'CHAPTER' makes data/moby_dick.txt one document per chapter; text before the first "
         "such line is a document of its own)");
  std::vector<char*> flags;
  const std::vector<std::string> files = split_positional(argc, argv, {}, flags);
  if (!a.parse(static_cast<int>(flags.size()), flags.data())) return 0;
  if (files.empty()) fail("origami data prepare: no input FILEs (see --help)");
  for (const auto& f : files) {
    std::error_code ec;
    if (!fs::exists(f, ec)) fail(f, ": cannot open (no such file)");
    if (!fs::is_regular_file(f, ec)) fail(f, ": cannot open (not a regular file)");
    if (!std::ifstream(f)) fail(f, ": cannot open");
  }
  const std::string tok_path = a.str("tokenizer"), out = a.str("out"), split = a.str("split-at");
  Tokenizer tk(tok_path);
  const int64_t pieces = tk.sp().GetPieceSize();
  int64_t eos = tk.sp().eos_id();
  if (eos >= 0) {
    if (a.given("eos-id") && a.i64("eos-id", 0) != eos)
      fail("--eos-id=", a.str("eos-id"), " but the tokenizer ", tok_path, " defines eos id ", eos);
  } else {
    if (!a.given("eos-id"))
      fail("the tokenizer ", tok_path,
           " defines no end-of-sequence id (trained with --eos_id=-1): give --eos-id N");
    eos = a.i64("eos-id", 0);
    if (eos > INT32_MAX) fail("--eos-id=", eos, " must be < 2^31");
    if (eos < pieces)
      std::fprintf(stderr,
                   "note: --eos-id %lld is the tokenizer's piece '%s'; it ends every document\n",
                   static_cast<long long>(eos), tk.sp().IdToPiece(static_cast<int>(eos)).c_str());
  }
  const int64_t vocab = std::max(pieces, eos + 1);

  DatasetSource src;
  src.tokenizer = tok_path;
  src.tokenizer_sha256 = sha256_file(tok_path);
  src.tokenizer_vocab_size = pieces;
  src.sources = files;
  DatasetWriter w(out, vocab, static_cast<int32_t>(eos));
  int64_t empty = 0;
  std::vector<int32_t> doc;
  for (const auto& f : files) {
    std::ifstream in(f);
    if (!in) fail(f, ": cannot open");
    std::string line;
    if (ends_with(f, ".jsonl")) {
      for (int64_t n = 1; std::getline(in, line); ++n) {
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        nlohmann::json j;
        try {
          j = nlohmann::json::parse(line);
        } catch (const nlohmann::json::exception& e) {
          fail(f, ": line ", n, ": not valid JSON (", e.what(), ")");
        }
        if (!j.is_object() || !j.contains("text"))
          fail(f, ": line ", n, ": missing \"text\" field");
        if (!j["text"].is_string()) fail(f, ": line ", n, ": \"text\" is not a string");
        doc.clear();
        tk.encode_text(j["text"].get<std::string>(), cat(f, ": line ", n), doc);
        if (!w.add(doc)) ++empty;
      }
    } else {
      doc.clear();
      bool text = false;  // a non-empty line since the document began (the text before a file's
                          // first --split-at line may be none: no document, not an empty one)
      while (std::getline(in, line)) {
        if (!split.empty() && line.compare(0, split.size(), split) == 0) {
          if (!w.add(doc) && text) ++empty;
          doc.clear();
          text = false;
        }
        text = text || line.find_first_not_of(" \t\r") != std::string::npos;
        tk.encode_line(line, f, doc);
      }
      if (!w.add(doc)) ++empty;
    }
    if (in.bad()) fail(f, ": read failed");
  }
  if (w.documents() == 0) fail("no documents: every input was empty (", files.size(), " file(s))");
  const PrepareSummary s = w.finish(src);
  std::printf(
      "data prepare: %lld documents, %lld tokens (%s, EOS %lld included), document length "
      "min/median/max %lld/%lld/%lld tokens%s -> %s\n",
      static_cast<long long>(s.documents), static_cast<long long>(s.tokens), s.dtype.c_str(),
      static_cast<long long>(eos), static_cast<long long>(s.min_len),
      static_cast<long long>(s.median_len), static_cast<long long>(s.max_len),
      empty ? cat(", ", empty, " empty skipped").c_str() : "", out.c_str());
  return 0;
}

std::vector<int> parse_ranks(const std::string& list) {
  std::vector<int> v;
  std::stringstream ss(list);
  for (std::string item; std::getline(ss, item, ',');) {
    char* end = nullptr;
    const long d = std::strtol(item.c_str(), &end, 10);
    if (item.empty() || *end || d < 1 || d > 4096)
      fail("--ranks=", list, ": each entry must be an integer in [1, 4096]");
    v.push_back(static_cast<int>(d));
  }
  return v;
}

// Attention work (visible query-key pairs) per rank of the packed training batches, for zigzag's
// deal and --balance documents', with the same chunk_owners the engines use.
void balance_table(const Dataset& ds, int64_t S, int64_t B, const std::vector<int>& ranks) {
  const int64_t nb = ds.packed_count(S) / B;
  if (nb < 1) fail("--micro-batch=", B, " exceeds the ", ds.packed_count(S), " packed sequences");
  std::printf("  attention work of %lld packed training batches of %lld x S=%lld (one epoch):\n",
              static_cast<long long>(nb), static_cast<long long>(B), static_cast<long long>(S));
  std::printf("  %6s  %10s  %20s  %20s\n", "ranks", "work/causal", "worst/mean zigzag",
              "worst/mean documents");
  std::printf("  %6s  %10s  %9s  %9s  %9s  %9s\n", "", "(mean)", "mean", "max", "mean", "max");
  for (const int D : ranks) {
    if (S % (2 * D)) fail("--seq=", S, " is not divisible by 2*", D);
    double frac = 0, imb[2][2] = {{0, 0}, {0, 0}};  // [deal][mean, max]
    for (int64_t i = 0; i < nb; ++i) {
      const Batch b = ds.packed_batch(i * B, B, S);
      const std::vector<double> work = chunk_work(b, D);
      double total = 0;
      for (double w : work) total += w;
      frac += total / (static_cast<double>(B) * static_cast<double>(S) * (S + 1) / 2);
      for (int m = 0; m < 2; ++m) {
        const std::vector<int> own = chunk_owners(b, D, m ? Balance::documents : Balance::zigzag);
        const Zigzag z{B, S, D, 0, nullptr, own.empty() ? nullptr : own.data()};
        double worst = 0;
        for (int q = 0; q < D; ++q) {
          double w = 0;
          for (int k = 0; k < 2; ++k)
            w += work[static_cast<size_t>(z.chunk_pos0_of(q, k) / z.chunk())];
          worst = std::max(worst, w);
        }
        const double r = worst / (total / D);
        imb[m][0] += r / static_cast<double>(nb);
        imb[m][1] = std::max(imb[m][1], r);
      }
    }
    std::printf("  %6d  %10.3f  %9.3f  %9.3f  %9.3f  %9.3f\n", D, frac / static_cast<double>(nb),
                imb[0][0], imb[0][1], imb[1][0], imb[1][1]);
  }
}

int cmd_data_info(int argc, char** argv) {
  Args a("data info",
         "origami data info DIR [flags]: describe the dataset in DIR (documents, tokens, the\n"
         "training and held-out split); with --seq the packing of both splits into sequences\n"
         "of S tokens (sequences, pieces, padding); with --verify a full read of the tokens\n"
         "(checksum, an EOS ending every document, the largest id).");
  a.flag("seq", "", "sequence length S to pack the documents into");
  a.flag("seed", "1", "seed of the training documents' order (as train's --seed)");
  a.flag("eval-fraction", "0.05", "the held-out fraction of the documents");
  a.boolean("verify", "read every token and check the files against the manifest");
  a.flag("ranks", "",
         "D[,D...] (with --seq): the attention work of the packed training batches on each of D "
         "ranks of a sequence axis, dealt by --balance zigzag and documents: worst rank over "
         "the mean, and the work document masks leave of the causal attention");
  a.flag("micro-batch", "1", "sequences per batch B for --ranks (the deal balances their sum)");
  std::vector<char*> flags;
  const std::vector<std::string> dirs = split_positional(argc, argv, {"verify"}, flags);
  if (!a.parse(static_cast<int>(flags.size()), flags.data())) return 0;
  if (dirs.size() != 1) fail("origami data info: give one dataset directory (see --help)");
  Dataset ds = Dataset::open(dirs[0], a.f64("eval-fraction", 0, 1, true));
  std::printf("%s: %lld documents, %lld tokens (%s), vocab_size %lld (ids used < %lld), eos %d\n",
              dirs[0].c_str(), static_cast<long long>(ds.documents()),
              static_cast<long long>(ds.tokens()), ds.dtype().c_str(),
              static_cast<long long>(ds.vocab_size()), static_cast<long long>(ds.vocab_used()),
              ds.eos_id());
  std::printf("  split: %lld training documents (%lld tokens), %lld held out (%lld tokens)\n",
              static_cast<long long>(ds.train_documents()),
              static_cast<long long>(ds.train_tokens()),
              static_cast<long long>(ds.eval_documents()),
              static_cast<long long>(ds.tokens() - ds.train_tokens()));
  if (a.given("seq")) {
    const int64_t S = a.i64("seq", 1);
    ds.plan_packing(static_cast<uint64_t>(a.i64("seed", 0)), S);
    for (bool ev : {false, true}) {
      const PackingStats& p = ds.packing_stats(ev);
      std::printf(
          "  packed S=%lld %s: %lld sequences, %lld pieces (%lld documents split), padding "
          "%.2f%%\n",
          static_cast<long long>(S), ev ? "held-out" : "training",
          static_cast<long long>(p.sequences), static_cast<long long>(p.pieces),
          static_cast<long long>(p.split_documents), 100.0 * p.padding_fraction);
    }
  }
  if (a.given("ranks")) {
    if (!a.given("seq")) fail("--ranks needs --seq");
    balance_table(ds, a.i64("seq", 1), a.i64("micro-batch", 1), parse_ranks(a.str("ranks")));
  }
  if (a.on("verify")) {
    ds.verify();
    std::printf("  verify: ok (sha256, EOS at every document end, ids)\n");
  }
  return 0;
}

}  // namespace

int cmd_data(int argc, char** argv) {
  const std::string sub = argc > 0 ? argv[0] : "";
  if (sub == "prepare") return cmd_data_prepare(argc - 1, argv + 1);
  if (sub == "info") return cmd_data_info(argc - 1, argv + 1);
  if (sub == "--help" || sub == "-h" || sub == "help") {
    std::fputs(kDataUsage, stdout);
    return 0;
  }
  std::fprintf(stderr, "%s%s",
               sub.empty() ? "" : ("origami data: unknown subcommand '" + sub + "'\n\n").c_str(),
               kDataUsage);
  return 2;
}

}  // namespace origami
