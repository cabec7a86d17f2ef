#include "io/checkpoint.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <tuple>

#include "core/error.h"
#include "core/safetensors.h"
#include "kernels/kernels.h"

namespace origami {

namespace fs = std::filesystem;

std::string sha256_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(path, ": cannot open");
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  std::vector<char> buf(1 << 20);
  while (f) {
    f.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    EVP_DigestUpdate(ctx, buf.data(), static_cast<size_t>(f.gcount()));
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_DigestFinal_ex(ctx, md, &n);
  EVP_MD_CTX_free(ctx);
  static const char* hex = "0123456789abcdef";
  std::string s;
  for (unsigned i = 0; i < n; ++i) {
    s.push_back(hex[md[i] >> 4]);
    s.push_back(hex[md[i] & 15]);
  }
  return s;
}

namespace {
std::vector<std::pair<std::string, std::vector<int64_t>>> param_shapes(const ModelConfig& c) {
  std::vector<std::pair<std::string, std::vector<int64_t>>> v;
  ModelParams::make(c, [&](const std::string& n, std::vector<int64_t> s) {
    v.emplace_back(n, s);
    return Tensor();
  });
  return v;
}

nlohmann::json trainer_json(const TrainerState& st, const fs::path& dir) {
  nlohmann::json j = st.extra;
  j["schema_version"] = 1;
  j["step"] = st.step;
  j["consumed_samples"] = st.consumed_samples;
  j["sha256"] = {{"model.safetensors", sha256_file((dir / "model.safetensors").string())},
                 {"optimizer.safetensors", sha256_file((dir / "optimizer.safetensors").string())}};
  return j;
}

void publish(const fs::path& root, const fs::path& tmp, const std::string& name) {
  const fs::path final_dir = root / name;
  fsync_dir(tmp.string());
  if (!fs::exists(final_dir)) {
    fs::rename(tmp, final_dir);
  } else if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, final_dir.c_str(), RENAME_EXCHANGE) ==
             0) {
    // Re-saving a step: the new directory swapped into place in one step, so `latest` never
    // names a missing or partial step; tmp now holds the old one.
    fsync_dir(root.string());
    fs::remove_all(tmp);
  } else {
    // A filesystem without RENAME_EXCHANGE: the old step aside, the new one in, the old one
    // removed. A crash in between leaves `latest` naming a missing step; resuming then falls
    // back to the newest complete one (resolve).
    const fs::path old = root / (name + ".old");
    fs::remove_all(old);
    fs::rename(final_dir, old);
    fs::rename(tmp, final_dir);
    fsync_dir(root.string());
    fs::remove_all(old);
  }
  fsync_dir(root.string());
  write_file_atomic((root / "latest").string(), name + "\n");
}

// A file mapped read-write (shared), for the ranks to write their slices into.
struct Mapped {
  void* p = nullptr;
  size_t n = 0;
  Mapped(const std::string& path, size_t size) : n(size) {
    const int fd = ::open(path.c_str(), O_RDWR);
    if (fd < 0) fail(path, ": cannot open for writing");
    p = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ::close(fd);
    if (p == MAP_FAILED) fail(path, ": cannot map for writing");
  }
  // Flushes the writes to the file; an I/O error is an error (the blocks were allocated up front,
  // so a full disk cannot surface here as SIGBUS).
  void sync(const std::string& path) const {
    if (::msync(p, n, MS_SYNC) != 0)
      fail(path, ": writing the checkpoint failed: ", std::strerror(errno));
  }
  ~Mapped() { ::munmap(p, n); }
};

// A file of `size` bytes whose first bytes are `header`, every block allocated now: a full disk
// fails here, with a message, instead of as SIGBUS when the ranks write through their mappings.
void create_allocated(const std::string& path, const std::string& header, int64_t size) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) fail(path, ": cannot create: ", std::strerror(errno));
  int err = ::posix_fallocate(fd, 0, static_cast<off_t>(size));
  if (err == 0 &&
      ::pwrite(fd, header.data(), header.size(), 0) != static_cast<ssize_t>(header.size()))
    err = errno;
  ::close(fd);
  if (err)
    fail(path, ": cannot allocate the ", size, " bytes of the checkpoint: ", std::strerror(err));
}

nlohmann::json verified(const fs::path& p) {
  nlohmann::json j;
  try {
    std::ifstream f(p / "trainer.json");
    j = nlohmann::json::parse(f);
  } catch (const std::exception& e) {
    fail((p / "trainer.json").string(), ": not valid JSON: ", e.what());
  }
  if (!j.is_object() || j.value("schema_version", 0) != 1)
    fail((p / "trainer.json").string(), ": schema_version must be 1");
  for (const char* k : {"step", "consumed_samples"})
    if (!j.contains(k) || !j[k].is_number_integer() || j[k].get<int64_t>() < 0)
      fail((p / "trainer.json").string(), ": '", k, "' must be a non-negative integer, got ",
           j.contains(k) ? j[k].dump() : "nothing");
  if (!j.contains("sha256") || !j["sha256"].is_object())
    fail((p / "trainer.json").string(), ": no 'sha256' object (the files' checksums)");
  for (const char* file : {"model.safetensors", "optimizer.safetensors"}) {
    const std::string want = j["sha256"].value(file, "");
    const std::string have = sha256_file((p / file).string());
    if (want != have)
      fail((p / file).string(), ": sha256 mismatch (trainer.json says ", want, ", file is ", have,
           "): the checkpoint is corrupt");
  }
  return j;
}

// The step directories of a checkpoint root, newest first (step_N, not .tmp or .old).
std::vector<std::pair<int64_t, fs::path>> steps_of(const fs::path& root) {
  std::vector<std::pair<int64_t, fs::path>> v;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    const std::string n = e.path().filename().string();
    if (n.rfind("step_", 0) != 0 || !e.is_directory()) continue;
    const std::string num = n.substr(5);
    if (num.empty() || num.find_first_not_of("0123456789") != std::string::npos) continue;
    v.emplace_back(std::stoll(num), e.path());
  }
  std::sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  return v;
}

// `path`: a checkpoint root (its `latest`) or one step directory, verified (verified()). A root
// whose `latest` names a missing or corrupt step falls back to the newest complete step, with a
// warning; a step directory given directly is that step or an error.
std::pair<fs::path, nlohmann::json> resolve(const std::string& path) {
  const fs::path p(path);
  if (!fs::exists(p / "latest")) {
    if (!fs::exists(p / "trainer.json"))
      fail(path, ": not a checkpoint (no trainer.json, no 'latest')");
    return {p, verified(p)};
  }
  std::string name;
  std::ifstream(p / "latest") >> name;
  std::string why;
  try {
    if (!fs::exists(p / name / "trainer.json"))
      fail((p / "latest").string(), " names '", name, "', which is not a complete checkpoint");
    return {p / name, verified(p / name)};
  } catch (const Error& e) {
    why = e.what();
  }
  for (const auto& [step, dir] : steps_of(p)) {
    if (dir.filename() == name || !fs::exists(dir / "trainer.json")) continue;
    try {
      nlohmann::json j = verified(dir);
      std::fprintf(stderr, "origami: warning: %s; using %s, the newest complete step\n",
                   why.c_str(), dir.string().c_str());
      return {dir, std::move(j)};
    } catch (const Error&) {
    }
  }
  fail(why, " (and no other complete step in ", path, ")");
}
}  // namespace

void save_checkpoint_sharded(
    const std::string& dir, const TrainerState& st, const ModelConfig& c, int rank,
    const std::function<void()>& barrier,
    const std::function<void(ModelParams&, ModelParams&, ModelParams&)>& write, DType model_dt) {
  const std::string name = "step_" + std::to_string(st.step);
  const fs::path root(dir), tmp = root / (name + ".tmp");
  const auto shapes = param_shapes(c);
  const bool bf16 = model_dt == DType::bf16;
  std::vector<std::tuple<std::string, DType, std::vector<int64_t>>> mi, oi;
  for (const auto& [n, s] : shapes) mi.emplace_back(n, model_dt, s);
  for (const char* pre : {"exp_avg.", "exp_avg_sq.", "master."})
    if (bf16 || std::string(pre) != "master.")
      for (const auto& [n, s] : shapes) oi.emplace_back(pre + n, DType::f32, s);
  const StLayout ml = safetensors_layout(mi), ol = safetensors_layout(oi);
  const std::string mpath = (tmp / "model.safetensors").string(),
                    opath = (tmp / "optimizer.safetensors").string();
  if (rank == 0) {
    fs::create_directories(root);
    fs::remove_all(tmp);
    fs::create_directories(tmp);
    try {
      for (const auto& [path, L] : {std::pair{mpath, &ml}, std::pair{opath, &ol}})
        create_allocated(path, L->header, L->total);
    } catch (const Error&) {
      fs::remove_all(tmp);  // the previous checkpoint and `latest` stay as they were
      throw;
    }
  }
  barrier();
  {
    Mapped mf(mpath, static_cast<size_t>(ml.total)), of(opath, static_cast<size_t>(ol.total));
    size_t i = 0, k = 0;
    auto view = [](Mapped& m, int64_t off, std::vector<int64_t> s) {
      return Tensor::view(static_cast<char*>(m.p) + off, std::move(s), DType::f32);
    };
    ModelParams m = ModelParams::make(c, [&](const std::string&, std::vector<int64_t> s) {
      return view(of, ol.offsets[k++], std::move(s));
    });
    ModelParams v = ModelParams::make(c, [&](const std::string&, std::vector<int64_t> s) {
      return view(of, ol.offsets[k++], std::move(s));
    });
    ModelParams p = ModelParams::make(c, [&](const std::string&, std::vector<int64_t> s) {
      return bf16 ? view(of, ol.offsets[k++], std::move(s))  // the master weights
                  : view(mf, ml.offsets[i++], std::move(s));
    });
    write(p, m, v);
    mf.sync(mpath);
    of.sync(opath);
  }  // unmap
  barrier();
  if (rank == 0 && bf16) {  // the bf16 model file: the master weights rounded
    Mapped mf(mpath, static_cast<size_t>(ml.total)), of(opath, static_cast<size_t>(ol.total));
    const size_t first_master = 2 * shapes.size();
    for (size_t t = 0; t < shapes.size(); ++t) {
      const auto* src =
          reinterpret_cast<const float*>(static_cast<char*>(of.p) + ol.offsets[first_master + t]);
      auto* dst = reinterpret_cast<bfloat16*>(static_cast<char*>(mf.p) + ml.offsets[t]);
      int64_t n = 1;
      for (int64_t d : shapes[t].second) n *= d;
      cpu::convert<bfloat16, float>(dst, src, n);
    }
  }
  barrier();
  if (rank == 0) {
    try {
      write_file_atomic((tmp / "trainer.json").string(), trainer_json(st, tmp).dump(2) + "\n");
    } catch (const Error&) {
      fs::remove_all(tmp);
      throw;
    }
    publish(root, tmp, name);
  }
  barrier();
}

void prune_checkpoints(const std::string& dir, int64_t keep_last, int64_t current) {
  if (keep_last <= 0) return;
  int64_t kept = 0;
  for (const auto& [step, path] : steps_of(dir))
    if (step == current || kept < keep_last)
      ++kept;
    else
      fs::remove_all(path);
}

TrainerState read_checkpoint(
    const std::string& path, const ModelConfig& c,
    const std::function<void(const ModelParams&, const ModelParams&, const ModelParams&)>& read) {
  const auto [p, j] = resolve(path);
  SafeTensorsReader model((p / "model.safetensors").string());
  SafeTensorsReader opt((p / "optimizer.safetensors").string());
  std::set<std::string> seen_m, seen_o;
  auto from = [](const SafeTensorsReader& r, std::set<std::string>& seen,
                 const std::string& prefix) {
    return [&r, &seen, prefix](const std::string& n, std::vector<int64_t> s) {
      const std::string name = prefix + n;
      const StEntry& e = r.get(name);
      if (e.dtype != DType::f32 || e.shape != s)
        fail(r.path(), ": tensor '", name, "' has ", dtype_name(e.dtype), " ", shape_str(e.shape),
             ", expected F32 ", shape_str(s));
      seen.insert(name);
      return Tensor::view(const_cast<void*>(e.data), std::move(s), DType::f32);
    };
  };
  // A bf16 checkpoint: the weights are the master copy in the optimizer file; the model file's
  // bf16 tensors are checked (names and shapes) but not read.
  const bool master = opt.has("master.model.embed_tokens.weight");
  const ModelParams P = master ? ModelParams::make(c, from(opt, seen_o, "master."))
                               : ModelParams::make(c, from(model, seen_m, ""));
  const ModelParams M = ModelParams::make(c, from(opt, seen_o, "exp_avg."));
  const ModelParams V = ModelParams::make(c, from(opt, seen_o, "exp_avg_sq."));
  if (master)
    for (const auto& [n, s] : param_shapes(c)) {
      const StEntry& e = model.get(n);
      if (e.dtype != DType::bf16 || e.shape != s)
        fail(model.path(), ": tensor '", n, "' has ", dtype_name(e.dtype), " ", shape_str(e.shape),
             ", expected BF16 ", shape_str(s),
             " (a bf16 checkpoint: the optimizer file holds master weights)");
      seen_m.insert(n);
    }
  for (const auto& [n, e] : model.entries())
    if (!seen_m.count(n)) fail(model.path(), ": unknown tensor '", n, "'");
  for (const auto& [n, e] : opt.entries())
    if (!seen_o.count(n)) fail(opt.path(), ": unknown tensor '", n, "'");
  read(P, M, V);
  TrainerState st;
  st.step = j.at("step").get<int64_t>();
  st.consumed_samples = j.at("consumed_samples").get<int64_t>();
  st.extra = j;
  return st;
}

void save_checkpoint(const std::string& dir, const TrainerState& st, ModelParams& params,
                     ModelParams& exp_avg, ModelParams& exp_avg_sq, ModelParams* master) {
  const std::string name = "step_" + std::to_string(st.step);
  const fs::path root(dir), tmp = root / (name + ".tmp");
  fs::create_directories(root);
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  try {
    save_params(params, (tmp / "model.safetensors").string());
    SafeTensorsWriter w;
    exp_avg.for_each([&](const std::string& n, Tensor& t) { w.add("exp_avg." + n, t); });
    exp_avg_sq.for_each([&](const std::string& n, Tensor& t) { w.add("exp_avg_sq." + n, t); });
    if (master) master->for_each([&](const std::string& n, Tensor& t) { w.add("master." + n, t); });
    w.write((tmp / "optimizer.safetensors").string());
    write_file_atomic((tmp / "trainer.json").string(), trainer_json(st, tmp).dump(2) + "\n");
  } catch (const Error&) {
    fs::remove_all(tmp);  // a full disk: the previous checkpoint and `latest` stay as they were
    throw;
  }
  publish(root, tmp, name);
}

}  // namespace origami
