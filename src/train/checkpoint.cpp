#include "train/checkpoint.h"

#include <openssl/evp.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "core/error.h"
#include "core/safetensors.h"

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

void save_checkpoint(const std::string& dir, const TrainerState& st, ModelParams& params,
                     ModelParams& exp_avg, ModelParams& exp_avg_sq) {
  const std::string name = "step_" + std::to_string(st.step);
  const fs::path root(dir), tmp = root / (name + ".tmp"), final_dir = root / name;
  fs::create_directories(root);
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  save_params(params, (tmp / "model.safetensors").string());
  SafeTensorsWriter w;
  exp_avg.for_each([&](const std::string& n, Tensor& t) { w.add("exp_avg." + n, t); });
  exp_avg_sq.for_each([&](const std::string& n, Tensor& t) { w.add("exp_avg_sq." + n, t); });
  w.write((tmp / "optimizer.safetensors").string());
  nlohmann::json j = st.extra;
  j["schema_version"] = 1;
  j["step"] = st.step;
  j["consumed_samples"] = st.consumed_samples;
  j["sha256"] = {{"model.safetensors", sha256_file((tmp / "model.safetensors").string())},
                 {"optimizer.safetensors", sha256_file((tmp / "optimizer.safetensors").string())}};
  write_file_atomic((tmp / "trainer.json").string(), j.dump(2) + "\n");
  fsync_dir(tmp.string());
  if (fs::exists(final_dir)) fs::remove_all(final_dir);
  fs::rename(tmp, final_dir);
  fsync_dir(root.string());
  write_file_atomic((root / "latest").string(), name + "\n");
}

TrainerState load_checkpoint(const std::string& path, ModelParams& params, ModelParams& exp_avg,
                             ModelParams& exp_avg_sq) {
  fs::path p(path);
  if (fs::exists(p / "latest")) {
    std::ifstream f(p / "latest");
    std::string name;
    f >> name;
    p /= name;
  }
  if (!fs::exists(p / "trainer.json"))
    fail(path, ": not a checkpoint (no trainer.json, no 'latest')");
  nlohmann::json j;
  try {
    std::ifstream f(p / "trainer.json");
    j = nlohmann::json::parse(f);
  } catch (const std::exception& e) {
    fail((p / "trainer.json").string(), ": not valid JSON: ", e.what());
  }
  if (j.value("schema_version", 0) != 1)
    fail((p / "trainer.json").string(), ": schema_version must be 1");
  for (const char* file : {"model.safetensors", "optimizer.safetensors"}) {
    const std::string want = j["sha256"].value(file, "");
    const std::string have = sha256_file((p / file).string());
    if (want != have)
      fail((p / file).string(), ": sha256 mismatch (trainer.json says ", want, ", file is ", have,
           "): the checkpoint is corrupt");
  }
  SafeTensorsReader model((p / "model.safetensors").string());
  load_params(params, model);
  SafeTensorsReader opt((p / "optimizer.safetensors").string());
  std::set<std::string> known;
  auto load = [&](const char* prefix, ModelParams& s) {
    s.for_each([&](const std::string& n, Tensor& t) {
      known.insert(prefix + n);
      opt.read_into(prefix + n, t);
    });
  };
  load("exp_avg.", exp_avg);
  load("exp_avg_sq.", exp_avg_sq);
  for (const auto& [n, e] : opt.entries())
    if (!known.count(n)) fail(opt.path(), ": unknown tensor '", n, "'");
  TrainerState st;
  st.step = j.at("step").get<int64_t>();
  st.consumed_samples = j.at("consumed_samples").get<int64_t>();
  st.extra = j;
  return st;
}

}  // namespace origami
