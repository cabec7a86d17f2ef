// GPU rates of the CUDA backend, printed as a table and written as JSON (--json FILE):
//   copy GB/s (device to device, bytes read + written), the bf16 GEMM ceiling (8192³), GEMMs at
//   Llama-7B TSP shapes (D = 1 and 8) as a fraction of that ceiling, elementwise kernels' GB/s as a
//   fraction of copy, the parity-path attention (tiled cuBLASLt) forward/backward TFLOP/s, and one
//   transformer block forward at D = 1 with its MFU against the measured ceiling; with cuDNN, its
//   SDPA forward/backward as a fraction of the ceiling (whole sequences and the calls of a 7B rank
//   at D = 8) and the block again with cuDNN attention, at S = 8192 and 128K.
// Every number is the median of --reps timed runs after warm-ups, timed with CUDA events.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "cuda/kernels.h"
#include "cuda/runtime.h"
#ifdef ORIGAMI_WITH_CUDNN
#include "cuda/cudnn_sdpa.h"
#endif

using namespace origami;
using namespace origami::cuda;

namespace {

int g_reps = 10;

double median_ms(const std::function<void()>& f, int warm = 2) {
  for (int i = 0; i < warm; ++i) f();
  std::vector<double> t;
  Event a, b;
  for (int i = 0; i < g_reps; ++i) {
    a.record(current_stream());
    f();
    b.record(current_stream());
    t.push_back(b.ms_since(a));
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

template <class T>
DBuf<T> filled(int64_t n, float v) {
  DBuf<T> d(n, Cat::activations);
  std::vector<T> h(static_cast<size_t>(std::min<int64_t>(n, 1 << 20)));
  for (size_t i = 0; i < h.size(); ++i)
    h[i] = static_cast<T>(v * (static_cast<float>(i % 97) / 97.f - 0.5f));
  for (int64_t o = 0; o < n; o += static_cast<int64_t>(h.size())) {
    const int64_t c = std::min<int64_t>(static_cast<int64_t>(h.size()), n - o);
    ORIGAMI_CUDA_CHECK(cudaMemcpy(d.get() + o, h.data(), c * sizeof(T), cudaMemcpyHostToDevice));
  }
  return d;
}

struct Row {
  std::string group, name, unit;
  double value, ratio;  // ratio: to the ceiling (GEMM, MFU) or to copy (elementwise); <0: none
  double ms;
};
std::vector<Row> g_rows;

void add(const std::string& g, const std::string& n, const std::string& u, double v, double r,
         double ms) {
  g_rows.push_back({g, n, u, v, r, ms});
  char ratio[16] = "";
  if (r >= 0) std::snprintf(ratio, sizeof ratio, "%.3f", r);
  std::printf("%-12s %-44s %10.1f %-8s %8s %10.3f ms\n", g.c_str(), n.c_str(), v, u.c_str(), ratio,
              ms);
  std::fflush(stdout);
}

double gemm_tflops(int64_t M, int64_t N, int64_t K, double* ms_out) {
  auto A = filled<bf16>(M * K, 1.f), B = filled<bf16>(N * K, 1.f);
  auto C = filled<bf16>(M * N, 0.f);
  const double ms = median_ms([&] { linear_fwd<bf16>(C.get(), A.get(), B.get(), M, N, K); });
  *ms_out = ms;
  return 2.0 * M * N * K / (ms * 1e-3) / 1e12;
}

}  // namespace

int main(int argc, char** argv) {
  std::string json;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--json" && i + 1 < argc)
      json = argv[++i];
    else if (a == "--reps" && i + 1 < argc)
      g_reps = std::max(1, std::atoi(argv[++i]));
    else if (a == "--quick")
      quick = true;
    else if (a == "--help" || a == "-h") {
      std::printf(
          "usage: bench_gpu [--json FILE] [--reps N] [--quick]\n"
          "  --json FILE  also write every row as JSON\n"
          "  --reps N     timed repetitions per measurement, median reported (default 10)\n"
          "  --quick      small shapes only (a smoke run)\n");
      return 0;
    } else {
      std::fprintf(stderr, "bench_gpu: unknown argument '%s' (see --help)\n", a.c_str());
      return 2;
    }
  }
  if (device_count() == 0) {
    std::printf("SKIPPED: no CUDA device\n");
    return kSkipNoDevice;
  }
  const std::string dev = device_summary();
  std::printf("device: %s\n%-12s %-44s %10s %-8s %8s %13s\n", dev.c_str(), "group", "case", "value",
              "unit", "ratio", "median");

  // ---- copy ----
  const int64_t cn = quick ? (64 << 20) : (1LL << 30);  // bytes
  auto src = filled<char>(cn, 1.f), dst = filled<char>(cn, 0.f);
  double ms = median_ms([&] {
    ORIGAMI_CUDA_CHECK(
        cudaMemcpyAsync(dst.get(), src.get(), cn, cudaMemcpyDeviceToDevice, current_stream()));
  });
  const double copy_gbs = 2.0 * cn / (ms * 1e-3) / 1e9;
  add("copy", "device-to-device " + std::to_string(cn >> 20) + " MiB", "GB/s", copy_gbs, -1, ms);
  src.reset(), dst.reset();

  // ---- GEMM ----
  const int64_t big = quick ? 2048 : 8192;
  const double ceil = gemm_tflops(big, big, big, &ms);
  add("gemm", "bf16 " + std::to_string(big) + "^3 (ceiling)", "TFLOP/s", ceil, 1.0, ms);
  struct G {
    const char* name;
    int64_t M, N, K;
  };
  const int64_t M = quick ? 2048 : 16384;
  std::vector<G> shapes = {
      {"D=1 qkv   N=12288 K=4096", M, 12288, 4096},   {"D=1 o     N=4096  K=4096", M, 4096, 4096},
      {"D=1 gate+up N=22016 K=4096", M, 22016, 4096}, {"D=1 down  N=4096  K=11008", M, 4096, 11008},
      {"D=8 qkv   N=1536  K=4096", M, 1536, 4096},    {"D=8 o     N=4096  K=512", M, 4096, 512},
      {"D=8 gate+up N=2752 K=4096", M, 2752, 4096},   {"D=8 down  N=4096  K=1376", M, 4096, 1376}};
  for (auto& s : shapes) {
    const double t = gemm_tflops(s.M, s.N, s.K, &ms);
    add("gemm", std::string("M=") + std::to_string(s.M) + " " + s.name, "TFLOP/s", t, t / ceil, ms);
  }

  // ---- elementwise (bytes moved / time, against copy) ----
  {
    const int64_t rows = quick ? 2048 : 16384, h = 4096, ffn = 11008;
    auto x = filled<bf16>(rows * h, 1.f), w = filled<bf16>(h, 1.f), y = filled<bf16>(rows * h, 0);
    auto n = filled<bf16>(rows * h, 0);
    DBuf<float> rs(rows, Cat::activations);
    ms = median_ms(
        [&] { rmsnorm_fwd<bf16>(y.get(), n.get(), rs.get(), x.get(), w.get(), rows, h, 1e-5); });
    double gbs = 3.0 * rows * h * 2 / (ms * 1e-3) / 1e9;
    add("elementwise", "rmsnorm_fwd bf16 16384x4096 (x->y,n)", "GB/s", gbs, gbs / copy_gbs, ms);
    auto g = filled<bf16>(rows * ffn, 1.f), u = filled<bf16>(rows * ffn, 1.f),
         a = filled<bf16>(rows * ffn, 0);
    ms = median_ms([&] { swiglu_fwd<bf16>(a.get(), g.get(), u.get(), rows * ffn); });
    gbs = 3.0 * rows * ffn * 2 / (ms * 1e-3) / 1e9;
    add("elementwise", "swiglu_fwd bf16 16384x11008", "GB/s", gbs, gbs / copy_gbs, ms);
    auto da = filled<bf16>(rows * ffn, 1.f);
    ms = median_ms(
        [&] { swiglu_bwd<bf16>(g.get(), u.get(), da.get(), g.get(), u.get(), rows * ffn); });
    gbs = 5.0 * rows * ffn * 2 / (ms * 1e-3) / 1e9;
    add("elementwise", "swiglu_bwd bf16 16384x11008", "GB/s", gbs, gbs / copy_gbs, ms);
    const int64_t np = quick ? (16 << 20) : (256 << 20);
    auto p = filled<float>(np, 1.f), m = filled<float>(np, 0), v = filled<float>(np, 0);
    auto gr = filled<bf16>(np, 1.f);
    AdamW hp{1e-4};
    int64_t step = 1;
    ms = median_ms([&] { adamw_step<bf16>(p.get(), gr.get(), m.get(), v.get(), np, hp, step++); });
    gbs = (3.0 * 4 * 2 + 2) * np / (ms * 1e-3) / 1e9;
    add("elementwise", "adamw fp32 master, bf16 grad, 256M", "GB/s", gbs, gbs / copy_gbs, ms);
  }

  // ---- attention, parity path ----
  {
    const int d = 128;
    struct A {
      int64_t S;
      int nh, tile;
    };
    const int64_t s1 = quick ? 1024 : 4096, s2 = quick ? 2048 : 8192;
    std::vector<A> cases = {{s1, 32, 512},  {s2, 32, 256}, {s2, 32, 512},
                            {s2, 32, 1024}, {s2, 4, 512},  {s2, 4, 1024}};
    for (auto [S, nh, tile] : cases) {
      set_attention_tiles(tile, tile);
      const int64_t stride = int64_t(nh) * d;
      auto q = filled<bf16>(S * stride, 1.f), k = filled<bf16>(S * stride, 1.f),
           v = filled<bf16>(S * stride, 1.f), o = filled<bf16>(S * stride, 0),
           dq = filled<bf16>(S * stride, 0), dk = filled<bf16>(S * stride, 0),
           dv = filled<bf16>(S * stride, 0), dout = filled<bf16>(S * stride, 1.f);
      DBuf<float> lse(int64_t(nh) * S, Cat::activations);
      QSeg qs{0, 0, S};
      KvSeg<bf16> ks{k.get(), v.get(), stride, 0, S, dk.get(), dv.get()};
      const AttnShape sh{nh, nh, d};
      const float scale = 1.f / std::sqrt(float(d));
      const double flops = 2.0 * S * S * d * nh;  // causal: half of 4 S² d per head
      ms = median_ms(
          [&] {
            flash_attn_fwd<bf16>(o.get(), lse.get(), S, q.get(), stride, &qs, 1, &ks, 1, sh, scale);
          },
          1);
      const std::string name = "tiled bf16 S=" + std::to_string(S) +
                               " heads=" + std::to_string(nh) + " tile=" + std::to_string(tile);
      add("attention", name + " fwd", "TFLOP/s", flops / (ms * 1e-3) / 1e12, -1, ms);
      ms = median_ms(
          [&] {
            flash_attn_bwd<bf16>(dq.get(), dout.get(), q.get(), o.get(), stride, lse.get(), S, &qs,
                                 1, &ks, 1, sh, scale);
          },
          1);
      add("attention", name + " bwd", "TFLOP/s", 2.5 * flops / (ms * 1e-3) / 1e12, -1, ms);
    }
    set_attention_tiles(512, 512);
  }

#ifdef ORIGAMI_WITH_CUDNN
  // ---- attention, cuDNN SDPA (bf16): one call of sq rows against skv keys, shifted ----
  {
    const int d = 128;
    struct A {
      std::string what;
      int64_t sq, skv, shift;
      int nh;
    };
    const int64_t s2 = quick ? 2048 : 8192;
    std::vector<A> cases = {{"whole sequence", s2, s2, 0, 32}, {"whole sequence", s2, s2, 0, 4}};
    // Llama-7B at D = 8: 4 heads per call; zigzag chunk c = S/16, first chunk [0, c) and last
    // chunk against keys [0, S) (shift S - c).
    for (int64_t S : quick ? std::vector<int64_t>{32768} : std::vector<int64_t>{32768, 131072}) {
      cases.push_back(
          {"7B D=8 S=" + std::to_string(S / 1024) + "K first chunk", S / 16, S / 16, 0, 4});
      cases.push_back(
          {"7B D=8 S=" + std::to_string(S / 1024) + "K last chunk", S / 16, S, S - S / 16, 4});
    }
    for (const A& a : cases) {
      const int64_t stride = int64_t(a.nh) * d;
      auto q = filled<bf16>(a.sq * stride, 1.f), o = filled<bf16>(a.sq * stride, 0),
           dq = filled<bf16>(a.sq * stride, 0), dout = filled<bf16>(a.sq * stride, 1.f);
      auto k = filled<bf16>(a.skv * stride, 1.f), v = filled<bf16>(a.skv * stride, 1.f),
           dk = filled<bf16>(a.skv * stride, 0), dv = filled<bf16>(a.skv * stride, 0);
      DBuf<float> lse(int64_t(a.nh) * a.sq, Cat::activations);
      cudnn::SdpaDims sd;
      sd.hq = sd.hk = a.nh, sd.d = d, sd.sq = a.sq, sd.skv = a.skv;
      sd.q_stride = sd.kv_stride = stride, sd.lse_stride = a.sq;
      double pairs = 0;  // (query, key) pairs the causal mask keeps
      for (int64_t r = 0; r < a.sq; ++r) pairs += double(std::min(a.skv, a.shift + r + 1));
      const double flops = 4.0 * pairs * d * a.nh;
      const float scale = 1.f / std::sqrt(float(d));
      const std::string name = "cudnn " + a.what + " sq=" + std::to_string(a.sq) +
                               " skv=" + std::to_string(a.skv) + " heads=" + std::to_string(a.nh);
      ms = median_ms([&] {
        cudnn::sdpa_fwd(o.get(), lse.get(), q.get(), k.get(), v.get(), sd, scale, a.shift);
      });
      double tf = flops / (ms * 1e-3) / 1e12;
      add("sdpa", name + " fwd e" + std::to_string(cudnn::engine_of(cudnn::Dir::fwd, sd, a.shift)),
          "TFLOP/s", tf, tf / ceil, ms);
      // Backward deterministic (dQ written directly; the default), then with cuDNN's fp32 dQ
      // accumulator (faster engines, no fixed order) for comparison.
      for (bool det : {true, false}) {
        cudnn::set_deterministic(det);
        ms = median_ms([&] {
          cudnn::sdpa_bwd(dq.get(), dk.get(), dv.get(), dout.get(), q.get(), k.get(), v.get(),
                          o.get(), lse.get(), sd, scale, a.shift);
        });
        tf = 2.5 * flops / (ms * 1e-3) / 1e12;
        add("sdpa",
            name + " bwd " + (det ? "det" : "nondet") + " e" +
                std::to_string(cudnn::engine_of(cudnn::Dir::bwd, sd, a.shift)),
            "TFLOP/s", tf, tf / ceil, ms);
      }
      cudnn::set_deterministic(true);
    }
  }
#endif

  // ---- one Llama-7B block forward at D = 1 (MHA, h = 4096, ffn = 11008) ----
  struct BlockCase {
    int64_t S;
    bool cudnn;
  };
  std::vector<BlockCase> blocks = {{quick ? 2048 : 8192, false}};
#ifdef ORIGAMI_WITH_CUDNN
  blocks.push_back({quick ? 2048 : 8192, true});
  if (!quick) blocks.push_back({131072, true});
#endif
  for (auto [S, use_cudnn] : blocks) {
    const int64_t h = 4096, ffn = 11008;
    const int nh = 32, d = 128;
    auto x = filled<bf16>(S * h, 1.f), xn = filled<bf16>(S * h, 0), nbuf = filled<bf16>(S * h, 0);
    auto wqkv = filled<bf16>(3 * h * h, 0.02f), wo = filled<bf16>(h * h, 0.02f),
         wgu = filled<bf16>(2 * ffn * h, 0.02f), wd = filled<bf16>(h * ffn, 0.02f),
         wn = filled<bf16>(h, 1.f);
    auto qkv = filled<bf16>(S * 3 * h, 0), att = filled<bf16>(S * h, 0),
         gu = filled<bf16>(S * 2 * ffn, 0), act = filled<bf16>(S * ffn, 0);
    DBuf<float> rs(S, Cat::activations), lse(int64_t(nh) * S, Cat::activations);
    std::vector<float> cs(S * d / 2), sn(S * d / 2);
    cpu::rope_table<float>(cs.data(), sn.data(), S, d, 10000.0);
    DBuf<float> C(S * d / 2, Cat::weights), SN(S * d / 2, Cat::weights);
    to_device(C.get(), cs.data(), cs.size() * 4);
    to_device(SN.get(), sn.data(), sn.size() * 4);
    std::vector<int64_t> pos(S);
    for (int64_t i = 0; i < S; ++i) pos[i] = i;
    DBuf<int64_t> P(S, Cat::activations);
    to_device(P.get(), pos.data(), S * 8);
    const float scale = 1.f / std::sqrt(float(d));
    auto block = [&] {
      rmsnorm_fwd<bf16>(xn.get(), nbuf.get(), rs.get(), x.get(), wn.get(), S, h, 1e-5);
      linear_fwd<bf16>(qkv.get(), xn.get(), wqkv.get(), S, 3 * h, h);
      rope_fwd<bf16>(qkv.get(), 3 * h, P.get(), S, 2 * nh, d, C.get(), SN.get());  // q and k
      QSeg qs{0, 0, S};
      KvSeg<bf16> ks{qkv.get() + h, qkv.get() + 2 * h, 3 * h, 0, S};
#ifdef ORIGAMI_WITH_CUDNN
      if (use_cudnn)
        cudnn::attn_fwd(att.get(), lse.get(), S, qkv.get(), 3 * h, &qs, 1, &ks, 1, {nh, nh, d},
                        scale);
      else
#endif
        flash_attn_fwd<bf16>(att.get(), lse.get(), S, qkv.get(), 3 * h, &qs, 1, &ks, 1, {nh, nh, d},
                             scale);
      linear_fwd<bf16>(x.get(), att.get(), wo.get(), S, h, h, 1.f);  // residual: x += att Woᵀ
      rmsnorm_fwd<bf16>(xn.get(), nbuf.get(), rs.get(), x.get(), wn.get(), S, h, 1e-5);
      linear_fwd<bf16>(gu.get(), xn.get(), wgu.get(), S, ffn, h);                      // gate
      linear_fwd<bf16>(gu.get() + S * ffn, xn.get(), wgu.get() + ffn * h, S, ffn, h);  // up
      swiglu_fwd<bf16>(act.get(), gu.get(), gu.get() + S * ffn, S * ffn);
      linear_fwd<bf16>(x.get(), act.get(), wd.get(), S, h, ffn, 1.f);
    };
    ms = median_ms(block, 1);
    const double gemm_fl = 2.0 * S * h * (3 * h + h + 3 * ffn);
    const double attn_fl = 2.0 * S * S * d * nh;
    const double tf = (gemm_fl + attn_fl) / (ms * 1e-3) / 1e12;
    add("block",
        "7B block fwd D=1 S=" + std::to_string(S) + (use_cudnn ? " cuDNN attn" : " tiled attn") +
            " (MFU)",
        "TFLOP/s", tf, tf / ceil, ms);
  }

  if (!json.empty()) {
    std::ofstream f(json);
    f << "{\n  \"device\": \"" << dev << "\",\n  \"reps\": " << g_reps << ",\n  \"rows\": [\n";
    for (size_t i = 0; i < g_rows.size(); ++i) {
      const Row& r = g_rows[i];
      f << "    {\"group\": \"" << r.group << "\", \"case\": \"" << r.name
        << "\", \"value\": " << r.value << ", \"unit\": \"" << r.unit
        << "\", \"ratio\": " << r.ratio << ", \"median_ms\": " << r.ms << "}"
        << (i + 1 < g_rows.size() ? "," : "") << "\n";
    }
    f << "  ]\n}\n";
  }
  return 0;
}
