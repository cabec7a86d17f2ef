// oneDNN bf16 (cpu::gemm_bf16: bf16 inputs, fp32 accumulation, the matmul primitive the engines
// use under --dtype bf16) against fp32 dnnl_sgemm, on the 2048^3 peak shape and the GEMMs one
// training step of configs/small.json issues at T tokens per micro-batch (S = 1024 and 4096).
// Prints GFLOP/s (median of five after a warm-up), the bf16/fp32 ratio, and oneDNN's kernel.
#include <omp.h>
#include <oneapi/dnnl/dnnl.h>

#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>
#include <vector>

#include "common.h"
#include "kernels/kernels.h"

using origami::bfloat16;
using origami::DType;
using origami::bench::time_median;
using origami::cpu::Trans;

namespace {
// The CPU's model name and the bf16-relevant flags (AVX-512 BF16, AMX), from /proc/cpuinfo.
std::string machine() {
  std::ifstream in("/proc/cpuinfo");
  std::string line, model = "?";
  std::set<std::string> flags;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0 && model == "?") model = line.substr(line.find(':') + 2);
    if (line.rfind("flags", 0) == 0) {
      std::istringstream f(line.substr(line.find(':') + 1));
      for (std::string w; f >> w;)
        if (w == "avx512_bf16" || w.rfind("amx", 0) == 0) flags.insert(w);
    }
  }
  for (const auto& f : flags) model += " " + f;
  return model;
}
}  // namespace

int main() {
  struct Shape {
    std::string what;
    char ta, tb;
    int64_t M, N, K;
  };
  std::vector<Shape> shapes{{"peak 2048^3", 'N', 'N', 2048, 2048, 2048}};
  const int64_t h = 512, I = 1536, V = 8000, kv = 256;
  for (int64_t T : {1024, 4096}) {
    const std::string t = " T=" + std::to_string(T);
    shapes.push_back({"q/o fwd" + t, 'N', 'T', T, h, h});
    shapes.push_back({"k/v fwd" + t, 'N', 'T', T, kv, h});
    shapes.push_back({"gate/up fwd" + t, 'N', 'T', T, I, h});
    shapes.push_back({"down fwd" + t, 'N', 'T', T, h, I});
    shapes.push_back({"dX gate/up" + t, 'N', 'N', T, h, I});
    shapes.push_back({"dW gate/up" + t, 'T', 'N', I, h, T});
    shapes.push_back({"head chunk" + t, 'N', 'T', std::min<int64_t>(T, 262), V, h});
  }
  std::printf("machine: %s\nthreads: %d\n\n", machine().c_str(), omp_get_max_threads());
  std::printf(
      "| shape | M | N | K | fp32 sgemm GFLOP/s | bf16→fp32 GFLOP/s | bf16→bf16 GFLOP/s | "
      "bf16/fp32 | oneDNN kernel |\n|---|---|---|---|---|---|---|---|---|\n");
  for (const auto& s : shapes) {
    const int64_t lda = s.ta == 'N' ? s.K : s.M, ldb = s.tb == 'N' ? s.N : s.K;
    const Trans ta = s.ta == 'N' ? Trans::N : Trans::T, tb = s.tb == 'N' ? Trans::N : Trans::T;
    std::vector<float> a(s.M * s.K, 0.5f), b(s.K * s.N, 0.25f), c(s.M * s.N);
    std::vector<bfloat16> a16(a.size(), origami::to_bf16(0.5f)),
        b16(b.size(), origami::to_bf16(0.25f)), c16(c.size());
    auto f32 = [&] {
      dnnl_sgemm(s.ta, s.tb, s.M, s.N, s.K, 1.0f, a.data(), lda, b.data(), ldb, 0.0f, c.data(),
                 s.N);
    };
    auto to32 = [&] {
      origami::cpu::gemm_bf16(ta, tb, s.M, s.N, s.K, 1.0f, a16.data(), lda, b16.data(), ldb, 0.0f,
                              c.data(), DType::f32, s.N);
    };
    auto to16 = [&] {
      origami::cpu::gemm_bf16(ta, tb, s.M, s.N, s.K, 1.0f, a16.data(), lda, b16.data(), ldb, 0.0f,
                              c16.data(), DType::bf16, s.N);
    };
    f32();
    to32();
    to16();
    const double fl = 2.0 * s.M * s.N * s.K / 1e9;
    const double g32 = fl / time_median(5, f32), g1632 = fl / time_median(5, to32),
                 g1616 = fl / time_median(5, to16);
    std::printf("| %s | %lld | %lld | %lld | %.1f | %.1f | %.1f | %.2f | %s |\n", s.what.c_str(),
                (long long)s.M, (long long)s.N, (long long)s.K, g32, g1632, g1616, g1632 / g32,
                origami::cpu::gemm_bf16_impl(ta, tb, s.M, s.N, s.K, DType::f32).c_str());
  }
  return 0;
}
