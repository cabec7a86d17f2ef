#include "kernels/meta.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <tuple>
#include <type_traits>

#include "core/device.h"
#include "core/error.h"
#include "core/memory.h"
#include "core/sim_clock.h"
#include "core/tensor.h"
#include "kernels/dispatch.h"

namespace origami::meta {
namespace {

Options g_opt;
std::atomic<uint64_t> g_next{0};

void* alloc(size_t bytes, Cat c) {
  MemTracker::get().note_alloc(bytes, c);
  // Distinct, 64-byte aligned, never dereferenced: 2^63 bytes of addresses.
  const uint64_t off = g_next.fetch_add((bytes + 127) / 64 * 64);
  return reinterpret_cast<void*>(kBit | (off & (kBit - 1)));
}
void release(void* p, size_t bytes, Cat c) {
  if (p) MemTracker::get().note_free(bytes, c);
}
// A memory-bound kernel's work for the simulated clock (core/sim_clock.h): the bytes it reads
// and writes once, and its exponentials.
sim::Work mem_work(double bytes, bool bf16, const char* name, double exps = 0) {
  sim::Work w;
  w.bytes = bytes;
  w.exps = exps;
  w.bf16 = bf16;
  w.name = name;
  return w;
}
// ... and a fixed-order sum's dependent additions (sim::Work::chain).
sim::Work chain_work(sim::Work w, double chain) {
  w.chain = chain;
  return w;
}
// Zeroing and copying device memory take the simulated clock's time for their bytes (written;
// read and written), as kernels do.
void charge(double bytes, const char* name) {
  if (sim::clock()) sim::kernel(mem_work(bytes, false, name));
}
void zero(void* p, size_t bytes) {
  if (!is_meta(p))
    std::memset(p, 0, bytes);
  else
    charge(static_cast<double>(bytes), "zero");
}
// Host to host copies; a host destination of a meta source reads zeros.
void copy(void* dst, const void* src, size_t bytes) {
  if (is_meta(dst) || is_meta(src)) charge(2.0 * static_cast<double>(bytes), "copy");
  if (is_meta(dst)) return;
  if (is_meta(src))
    std::memset(dst, 0, bytes);
  else
    std::memmove(dst, src, bytes);
}
void* host_alloc(size_t bytes) {
  void* p = std::malloc(bytes ? bytes : 1);
  ORIGAMI_CHECK(p, "meta device: host allocation of ", bytes, " bytes failed");
  return p;
}
void host_free(void* p) {
  std::free(p);
}
void sync() {}

const DeviceOps kOps{"meta",     alloc,     release, zero, copy,
                     host_alloc, host_free, sync,    true, nullptr};

// Visible (query, key) pairs of a query segment and a key segment under the causal mask: the sum
// over queries p of clamp(p - k.pos0 + 1, 0, k.len), in closed form.
double causal_pairs(int64_t qpos0, int64_t qlen, int64_t kpos0, int64_t klen) {
  const auto G = [klen](double x) {  // sum over a = 1..x of min(a, klen)
    if (x <= 0) return 0.0;
    const double L = static_cast<double>(klen);
    return x <= L ? x * (x + 1) / 2 : L * (L + 1) / 2 + (x - L) * L;
  };
  const double a0 = static_cast<double>(qpos0 - kpos0 + 1);
  return G(a0 + static_cast<double>(qlen) - 1) - G(a0 - 1);
}

// Visible pairs under document masks (QSeg::lo): per query row, the keys of the segment in
// [its document's start, its position].
double doc_pairs(const k::QSeg& q, int64_t kpos0, int64_t klen) {
  double n = 0;
  for (int64_t i = 0; i < q.len; ++i) {
    const int64_t a = std::max(q.lo[i], kpos0), b = std::min(q.pos0 + i, kpos0 + klen - 1);
    if (b >= a) n += static_cast<double>(b - a + 1);
  }
  return n;
}

// The pairs a call of a query and a key segment is charged (sim::AttnCharge): causal, dense, or
// causal after relabelling zigzag chunks as contiguous ones (each segment cut at chunk borders).
double charged_pairs(int64_t qpos0, int64_t qlen, int64_t kpos0, int64_t klen) {
  const sim::AttnCharge& a = sim::attn_charge();
  if (a.dense) return static_cast<double>(qlen) * static_cast<double>(klen);
  if (a.chunk <= 0) return causal_pairs(qpos0, qlen, kpos0, klen);
  const int64_t C = a.chunk, n = 2 * static_cast<int64_t>(a.sigma);
  const auto relabel = [&](int64_t p) {  // zigzag chunk c (rank min(c, n-1-c)) -> contiguous
    const int64_t c = p / C, o = p % C;
    const int64_t to = c < a.sigma ? 2 * c : 2 * (n - 1 - c) + 1;
    return to * C + o;
  };
  double pairs = 0;
  for (int64_t q = qpos0; q < qpos0 + qlen;) {
    const int64_t ql = std::min(qpos0 + qlen, (q / C + 1) * C) - q;
    for (int64_t k = kpos0; k < kpos0 + klen;) {
      const int64_t kl = std::min(kpos0 + klen, (k / C + 1) * C) - k;
      pairs += causal_pairs(relabel(q), ql, relabel(k), kl);
      k += kl;
    }
    q += ql;
  }
  return pairs;
}

// The flash-attention kernels: nothing computed, the CPU kernels' tiles held during the call
// (fp32; under bf16 with the widened Q, K, V tiles too); the simulated clock (core/sim_clock.h)
// is charged 4·d flops per visible pair and query head forward, 10·d backward.
template <bool Bwd, bool Bf16, class F>
struct Attn;
template <bool Bwd, bool Bf16, class... A>
struct Attn<Bwd, Bf16, void (*)(A...)> {
  static void call(A... a) {
    constexpr size_t n = sizeof...(A);
    auto args = std::forward_as_tuple(a...);
    const k::AttnShape sh = std::get<n - 2>(args);
    Tensor tiles = Tensor::empty_host({g_opt.threads, cpu::flash_attn_tile_elems(Bwd, sh.d, Bf16)},
                                      DType::f32, Cat::workspace);
    if (!sim::clock()) return;
    const k::QSeg* qs = std::get<n - 6>(args);
    const int nqs = std::get<n - 5>(args);
    const auto* ks = std::get<n - 4>(args);
    const int nks = std::get<n - 3>(args);
    double pairs = 0;
    for (int i = 0; i < nqs; ++i)
      for (int j = 0; j < nks; ++j)
        pairs += qs[i].lo ? doc_pairs(qs[i], ks[j].pos0, ks[j].len)
                          : charged_pairs(qs[i].pos0, qs[i].len, ks[j].pos0, ks[j].len);
    sim::Work w;
    w.kind = Bwd ? sim::Work::attn_bwd : sim::Work::attn_fwd;
    w.flops = pairs * sh.n_h * sh.d * (Bwd ? 10.0 : 4.0);
    w.m = pairs, w.n = sh.d;
    w.bf16 = Bf16;
    w.name = Bwd ? "flash_attn_bwd" : "flash_attn_fwd";
    sim::kernel(w);
  }
};

// A kernel that does nothing but charge the simulated clock the work `C` makes of its arguments
// (a GEMM's flops and bytes; a memory-bound kernel's bytes), returning a zero of its result type.
template <class F, class C>
struct Timed;
template <class R, class... A, class C>
struct Timed<R (*)(A...), C> {
  static R call(A... a) {
    if (sim::clock()) sim::kernel(C{}(a...));
    if constexpr (!std::is_void_v<R>) return R{};
  }
};
template <class F, class C>
void timed(F& f, C) {
  f = &Timed<F, C>::call;
}
sim::Work gemm_work(int64_t M, int64_t N, int64_t K, double ab_bytes, double c_bytes, bool bf16,
                    bool ta = false, bool tb = true) {
  sim::Work w;
  w.kind = sim::Work::gemm;
  w.m = static_cast<double>(M), w.n = static_cast<double>(N), w.k = static_cast<double>(K);
  w.ta = ta, w.tb = tb;
  w.flops = 2.0 * static_cast<double>(M) * static_cast<double>(N) * static_cast<double>(K);
  w.bytes = ab_bytes * static_cast<double>(M * K + N * K) + c_bytes * static_cast<double>(M * N);
  w.bf16 = bf16;
  w.name = "gemm";
  return w;
}
double D(int64_t n) {
  return static_cast<double>(n);
}

// The work of each kernel, E bytes an element (4: the fp32 table, 2: the bf16 one); the bytes
// each reads and writes once.
template <int E>
struct Costs {
  static constexpr bool bf = E == 2;
  static void fill(auto& t) {
    // (a row's sum of squares, and backward its dot product, is one dependent chain in double)
    timed(t.rmsnorm_fwd, [](auto, auto, auto, auto, auto, int64_t rows, int64_t h, auto...) {
      return chain_work(mem_work(3.0 * E * D(rows * h), bf, "rmsnorm_fwd"), D(rows * h));
    });
    timed(t.rmsnorm_apply, [](auto, auto, auto, int64_t rows, int64_t h) {
      return mem_work(2.0 * E * D(rows * h), bf, "rmsnorm_apply");
    });
    timed(t.rmsnorm_bwd, [](auto, auto, auto, auto, auto, auto, int64_t rows, int64_t h) {
      return chain_work(mem_work(4.0 * E * D(rows * h), bf, "rmsnorm_bwd"), D(rows * h));
    });
    timed(t.rope_fwd, [](auto, auto, auto, int64_t rows, int heads, int d, auto...) {
      return mem_work(2.0 * E * D(rows * heads * d), bf, "rope");
    });
    timed(t.swiglu_fwd, [](auto, auto, auto, int64_t n) {
      return mem_work(3.0 * E * D(n), bf, "swiglu_fwd", D(n));
    });
    timed(t.swiglu_bwd, [](auto, auto, auto, auto, auto, int64_t n) {
      return mem_work(5.0 * E * D(n), bf, "swiglu_bwd", D(n));
    });
    timed(t.add_inplace,
          [](auto, auto, int64_t n) { return mem_work(3.0 * E * D(n), bf, "add_inplace"); });
    timed(t.index_copy_rows, [](auto, auto, auto, auto, int64_t n, int64_t w) {
      return mem_work(2.0 * E * D(n * w), bf, "index_copy_rows");
    });
    timed(t.index_add_rows, [](auto, auto, auto, auto, int64_t n, int64_t w) {
      return mem_work((2.0 * 4 + E) * D(n * w), bf, "index_add_rows");
    });
  }
};

k::Table make_table() {
  k::Table t{};
  Costs<4>::fill(t);
  timed(t.gemm, [](k::Trans ta, k::Trans tb, int64_t M, int64_t N, int64_t K, auto...) {
    return gemm_work(M, N, K, 4, 4, false, ta == k::Trans::T, tb == k::Trans::T);
  });
  // As the GEMMs they are (kernels/cpu/gemm.cpp), C read and written (accumulating).
  timed(t.linear_fwd, [](auto, auto, auto, int64_t M, int64_t N, int64_t K, auto...) {
    return gemm_work(M, N, K, 4, 8, false, false, true);
  });
  timed(t.linear_bwd_x, [](auto, auto, auto, int64_t M, int64_t N, int64_t K) {
    return gemm_work(M, K, N, 4, 8, false, false, false);
  });
  timed(t.linear_bwd_w, [](auto, auto, auto, int64_t M, int64_t N, int64_t K) {
    return gemm_work(N, K, M, 4, 8, false, true, false);
  });
  timed(t.rope_bwd, [](auto, auto, auto, int64_t rows, int heads, int d, auto...) {
    return mem_work(8.0 * D(rows * heads * d), false, "rope_bwd");
  });
  timed(t.ce_init,
        [](auto, auto, auto, int64_t rows) { return mem_work(12.0 * D(rows), false, "ce_init"); });
  timed(t.ce_update, [](auto, auto, auto, auto, int64_t rows, int64_t vblk, auto...) {
    return mem_work(4.0 * D(rows * vblk), false, "ce_update", D(rows * vblk));
  });
  timed(t.ce_finish, [](auto, auto, auto, auto, int64_t rows, auto) {
    return mem_work(16.0 * D(rows), false, "ce_finish");
  });
  timed(t.ce_bwd, [](auto, auto, auto, int64_t rows, int64_t vblk, auto...) {
    return mem_work(8.0 * D(rows * vblk), false, "ce_bwd", D(rows * vblk));
  });
  timed(t.adamw_step, [](auto, auto, auto, auto, int64_t n, auto...) {
    sim::Work w = mem_work(28.0 * D(n), false, "adamw");
    w.updates = D(n);
    return w;
  });
  timed(t.sum_squares, [](auto, int64_t n) {
    return chain_work(mem_work(4.0 * D(n), false, "sum_squares"), D(n));
  });
  timed(t.scale_inplace,
        [](auto, int64_t n, auto) { return mem_work(8.0 * D(n), false, "scale_inplace"); });
  timed(t.attn_merge, [](auto, auto, auto, auto, int64_t rows, int n_h, int d, auto...) {
    return mem_work(4.0 * D(rows * n_h) * (3.0 * d + 3), false, "attn_merge", 3.0 * D(rows * n_h));
  });
  t.flash_attn_fwd = &Attn<false, false, decltype(t.flash_attn_fwd)>::call;
  t.flash_attn_bwd = &Attn<true, false, decltype(t.flash_attn_bwd)>::call;
  return t;
}
const k::Table kTable = make_table();

k::BTable make_bf16_table() {
  k::BTable t{};
  Costs<2>::fill(t);
  timed(t.gemm, [](k::Trans ta, k::Trans tb, int64_t M, int64_t N, int64_t K, float, auto, int64_t,
                   auto, int64_t, float beta, void*, DType ct, int64_t) {
    return gemm_work(M, N, K, 2, static_cast<double>(dtype_size(ct)) * (beta != 0 ? 2 : 1), true,
                     ta == k::Trans::T, tb == k::Trans::T);
  });
  timed(t.to_bf16, [](auto, auto, int64_t n) { return mem_work(6.0 * D(n), true, "to_bf16"); });
  timed(t.to_f32, [](auto, auto, int64_t n) { return mem_work(6.0 * D(n), true, "to_f32"); });
  timed(t.rmsnorm_fwd_res, [](auto, auto, auto, auto, auto, int64_t rows, int64_t h, auto) {
    return chain_work(mem_work(8.0 * D(rows * h), true, "rmsnorm_fwd"), D(rows * h));
  });
  timed(t.rmsnorm_bwd_res, [](auto, auto, auto, auto, auto, auto, int64_t rows, int64_t h) {
    return chain_work(mem_work(12.0 * D(rows * h), true, "rmsnorm_bwd"), D(rows * h));
  });
  timed(t.index_copy_rows_widen, [](auto, auto, auto, auto, int64_t n, int64_t w) {
    return mem_work(6.0 * D(n * w), true, "index_copy_rows");
  });
  t.flash_attn_fwd = &Attn<false, true, decltype(t.flash_attn_fwd)>::call;
  t.flash_attn_bwd = &Attn<true, true, decltype(t.flash_attn_bwd)>::call;
  t.flash_attn_fwd_wide = &Attn<false, true, decltype(t.flash_attn_fwd_wide)>::call;
  return t;
}
const k::BTable kBTable = make_bf16_table();

}  // namespace

void start(const Options& o) {
  g_opt = o;
  use_device(&kOps);
  k::install(&kTable);
  k::install_bf16(&kBTable);
}

void stop() {
  use_device(nullptr);
  k::install(nullptr);
  k::install_bf16(nullptr);
}

}  // namespace origami::meta
