// RMSNorm, RoPE, SwiGLU, cross-entropy, AdamW and the reductions on the device. Grid-stride loops;
// each row reduction is one block with a fixed-order tree (cuda/common.cuh); column sums over rows
// (RMSNorm's dw, sum of squares) go through fixed per-chunk partials, never atomics.
#include <cmath>
#include <initializer_list>
#include <type_traits>

#include "cuda/common.cuh"
#include "cuda/kernels.h"

namespace origami::cuda {

namespace {

// Each elementwise kernel is written once over Vec<T, N>: N = 1 (any size, any alignment) or a
// 16-byte pack (8 bf16 or 4 floats: one load instruction per operand per thread), chosen by
// with_width when every pointer is 16-byte aligned and the length a multiple of the pack.
template <class T, int N>
struct alignas(sizeof(T) * N) Vec {
  T v[N];
};
template <class T>
constexpr int kPack = 16 / sizeof(T);

template <class T, class F>
void with_width(int64_t n, std::initializer_list<const void*> ptrs, F&& f) {
  bool pack = n % kPack<T> == 0;
  for (const void* p : ptrs) pack = pack && reinterpret_cast<uintptr_t>(p) % 16 == 0;
  if (pack)
    f(std::integral_constant<int, kPack<T>>{});
  else
    f(std::integral_constant<int, 1>{});
}

// ---- RMSNorm ----
// One block per row; the row is read twice (the second time from cache).
// x of type R: T's, or fp32 (a bf16 run's residual stream; then N = 1). y = w·n is formed from
// n as stored (rounded), as the CPU kernel does: a y recomputed from a saved n is the forward's.
template <class T, class R, int N>
__global__ void rmsnorm_fwd_k(T* y, T* n, float* rstd, const R* x, const T* w, int64_t h,
                              float eps) {
  using V = Vec<T, N>;
  using VR = Vec<R, N>;
  const int64_t r = blockIdx.x, nv = h / N;
  const VR* xr = reinterpret_cast<const VR*>(x + r * h);
  float ss = 0;
  for (int64_t i = threadIdx.x; i < nv; i += blockDim.x) {
    const VR v = xr[i];
#pragma unroll
    for (int j = 0; j < N; ++j) {
      const float f = ld(&v.v[j]);
      ss += f * f;
    }
  }
  ss = block_sum(ss);
  const float rs = rsqrtf(ss / static_cast<float>(h) + eps);
  if (threadIdx.x == 0) rstd[r] = rs;
  const V* wv = reinterpret_cast<const V*>(w);
  V* yr = reinterpret_cast<V*>(y + r * h);
  V* nr = n ? reinterpret_cast<V*>(n + r * h) : nullptr;
  for (int64_t i = threadIdx.x; i < nv; i += blockDim.x) {
    const VR v = xr[i];
    const V wi = wv[i];
    V yo, no;
#pragma unroll
    for (int j = 0; j < N; ++j) {
      st(&no.v[j], ld(&v.v[j]) * rs);
      st(&yo.v[j], ld(&wi.v[j]) * ld(&no.v[j]));
    }
    yr[i] = yo;
    if (nr) nr[i] = no;
  }
}

template <class T>
__global__ void rmsnorm_apply_k(T* y, const T* n, const T* w, int64_t rows, int64_t h) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < rows * h;
       e += int64_t(gridDim.x) * blockDim.x)
    st(y + e, ld(w + e % h) * ld(n + e));
}

// dx, dy of type R: T's or fp32 (a bf16 run's residual gradient).
template <class T, class R>
__global__ void rmsnorm_bwd_dx_k(R* dx, const R* dy, const T* n, const T* w, const float* rstd,
                                 int64_t h) {
  const int64_t r = blockIdx.x;
  const T* nr = n + r * h;
  const R* dyr = dy + r * h;
  float dot = 0;
  for (int64_t i = threadIdx.x; i < h; i += blockDim.x) dot += ld(w + i) * ld(dyr + i) * ld(nr + i);
  const float c = block_sum(dot) / static_cast<float>(h);
  const float rs = rstd[r];
  for (int64_t i = threadIdx.x; i < h; i += blockDim.x) {
    R* p = dx + r * h + i;
    st(p, ld(p) + rs * (ld(w + i) * ld(dyr + i) - ld(nr + i) * c));
  }
}

// partial[chunk, i] = Σ_{rows of chunk} dy·n, chunk = blockIdx.y
template <class T, class R>
__global__ void colsum_dy_n_k(float* partial, const R* dy, const T* n, int64_t rows, int64_t h,
                              int64_t rows_per) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= h) return;
  const int64_t r0 = blockIdx.y * rows_per, r1 = min(rows, r0 + rows_per);
  float s = 0;
  for (int64_t r = r0; r < r1; ++r) s += ld(dy + r * h + i) * ld(n + r * h + i);
  partial[blockIdx.y * h + i] = s;
}

template <class G>
__global__ void colsum_finish_k(G* dw, const float* partial, int64_t chunks, int64_t h) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= h) return;
  float s = 0;
  for (int64_t c = 0; c < chunks; ++c) s += partial[c * h + i];
  st(dw + i, ld(dw + i) + s);
}

// ---- RoPE ----
template <class T>
__global__ void rope_k(T* x, int64_t stride, const int64_t* pos, int64_t rows, int n_heads,
                       int half, const float* cos, const float* sin, float sign) {
  const int64_t total = rows * n_heads * half;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int i = static_cast<int>(e % half);
    const int64_t rh = e / half;
    const int hd = static_cast<int>(rh % n_heads);
    const int64_t r = rh / n_heads;
    const int64_t p = pos[r];
    const float c = cos[p * half + i], s = sign * sin[p * half + i];
    T* v = x + r * stride + static_cast<int64_t>(hd) * 2 * half;
    const float a = ld(v + i), b = ld(v + i + half);
    st(v + i, a * c - b * s);
    st(v + i + half, b * c + a * s);
  }
}

// ---- SwiGLU ----
template <class T, int N>
__global__ void swiglu_fwd_k(Vec<T, N>* a, const Vec<T, N>* g, const Vec<T, N>* u, int64_t nv) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < nv;
       e += int64_t(gridDim.x) * blockDim.x) {
    const Vec<T, N> gv = g[e], uv = u[e];
    Vec<T, N> av;
#pragma unroll
    for (int j = 0; j < N; ++j) {
      const float gj = ld(&gv.v[j]);
      st(&av.v[j], gj / (1.f + expf(-gj)) * ld(&uv.v[j]));
    }
    a[e] = av;
  }
}

template <class T, int N>
__global__ void swiglu_bwd_k(Vec<T, N>* dg, Vec<T, N>* du, const Vec<T, N>* da, const Vec<T, N>* g,
                             const Vec<T, N>* u, int64_t nv) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < nv;
       e += int64_t(gridDim.x) * blockDim.x) {
    const Vec<T, N> gv = g[e], uv = u[e], dv = da[e];
    Vec<T, N> dgv, duv;
#pragma unroll
    for (int j = 0; j < N; ++j) {
      const float gj = ld(&gv.v[j]), uj = ld(&uv.v[j]), d = ld(&dv.v[j]);
      const float s = 1.f / (1.f + expf(-gj));
      st(&dgv.v[j], d * uj * s * (1.f + gj * (1.f - s)));
      st(&duv.v[j], d * gj * s);
    }
    dg[e] = dgv, du[e] = duv;
  }
}

// ---- cross-entropy ----
__global__ void ce_init_k(float* m, float* l, float* zt, int64_t rows) {
  for (int64_t r = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; r < rows;
       r += int64_t(gridDim.x) * blockDim.x)
    m[r] = -INFINITY, l[r] = 0, zt[r] = 0;
}

template <class T>
__global__ void ce_update_k(float* m, float* l, float* zt, const T* z, int64_t vblk, int64_t v0,
                            int64_t nv, const int64_t* target) {
  const int64_t r = blockIdx.x;
  const int64_t t = target[r];
  if (t < 0) return;  // uniform over the block: no barrier is skipped by part of it
  const T* zr = z + r * vblk;
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < nv; j += blockDim.x) mx = fmaxf(mx, ld(zr + j));
  mx = block_max(mx);
  float s = 0;
  for (int64_t j = threadIdx.x; j < nv; j += blockDim.x) s += expf(ld(zr + j) - mx);
  s = block_sum(s);
  if (threadIdx.x == 0) {
    const float mnew = fmaxf(m[r], mx);
    l[r] = l[r] * expf(m[r] - mnew) + s * expf(mx - mnew);
    m[r] = mnew;
    if (t >= v0 && t < v0 + nv) zt[r] = ld(zr + (t - v0));
  }
}

__global__ void ce_finish_rows_k(float* lse, double* loss, const float* m, const float* l,
                                 const float* zt, const int64_t* target, int64_t rows) {
  for (int64_t r = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; r < rows;
       r += int64_t(gridDim.x) * blockDim.x) {
    if (target[r] < 0) {
      lse[r] = 0, loss[r] = 0;
      continue;
    }
    lse[r] = m[r] + logf(l[r]);
    loss[r] = static_cast<double>(lse[r]) - static_cast<double>(zt[r]);
  }
}

// One block: a fixed-order sum of n doubles into out[0].
__global__ void sum_doubles_k(double* out, const double* x, int64_t n) {
  double s = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += x[i];
  s = block_sum(s);
  if (threadIdx.x == 0) out[0] = s;
}

template <class T>
__global__ void ce_bwd_k(T* dz, const T* z, const float* lse, int64_t vblk, int64_t v0, int64_t nv,
                         const int64_t* target, float scale) {
  const int64_t r = blockIdx.x, t = target[r];
  T* dr = dz + r * vblk;
  const T* zr = z + r * vblk;
  for (int64_t j = threadIdx.x; j < vblk; j += blockDim.x) {
    float d = 0;
    if (t >= 0 && j < nv) {
      d = expf(ld(zr + j) - lse[r]) * scale;
      if (j == t - v0) d -= scale;
    }
    st(dr + j, d);
  }
}

// ---- optimizer, reductions ----
template <class T>
__global__ void adamw_k(float* p, const T* g, float* m, float* v, int64_t n, float step_size,
                        float bc2_sqrt, float decay, float b1, float b2, float eps, bool do_decay) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float gi = ld(g + i);
    float pi = p[i];
    if (do_decay) pi *= decay;
    const float mi = b1 * m[i] + (1.f - b1) * gi;
    const float vi = b2 * v[i] + (1.f - b2) * gi * gi;
    m[i] = mi, v[i] = vi;
    p[i] = pi - step_size * mi / (sqrtf(vi) / bc2_sqrt + eps);
  }
}

constexpr int64_t kSumBlock = 4096;
template <class T>
__global__ void sumsq_part_k(double* part, const T* x, int64_t n) {
  const int64_t b = blockIdx.x, i0 = b * kSumBlock, i1 = min(n, i0 + kSumBlock);
  double s = 0;
  for (int64_t i = i0 + threadIdx.x; i < i1; i += blockDim.x) {
    const double v = ld(x + i);
    s += v * v;
  }
  s = block_sum(s);
  if (threadIdx.x == 0) part[b] = s;
}

template <class T>
__global__ void scale_k(T* x, int64_t n, float s) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    st(x + i, ld(x + i) * s);
}

template <class T>
__global__ void add_k(T* y, const T* x, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    st(y + i, ld(y + i) + ld(x + i));
}

// dst of type D: T's (a copy of the bits), or fp32 (bf16 rows widened exactly).
template <class T, class D>
__global__ void index_copy_rows_k(D* dst, const T* src, const int64_t* dr, const int64_t* sr,
                                  int64_t n, int64_t w) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n * w;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = e / w, c = e % w;
    D* y = dst + (dr ? dr[i] : i) * w + c;
    const T* x = src + (sr ? sr[i] : i) * w + c;
    if constexpr (std::is_same_v<T, D>)
      *y = *x;
    else
      st(y, ld(x));
  }
}

// dst of type D: T's, or fp32 (a gradient gaining bf16 rows).
template <class T, class D>
__global__ void index_add_rows_k(D* dst, const T* src, const int64_t* dr, const int64_t* sr,
                                 int64_t n, int64_t w) {
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < w;
       c += int64_t(gridDim.x) * blockDim.x)
    for (int64_t i = 0; i < n; ++i) {
      D* y = dst + (dr ? dr[i] : i) * w + c;
      st(y, ld(y) + ld(src + (sr ? sr[i] : i) * w + c));
    }
}

template <class Y, class X>
__global__ void copy_rows_k(Y* y, int64_t ldy, const X* x, int64_t ldx, int64_t rows, int64_t cols,
                            bool acc) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < rows * cols;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = e / cols, c = e % cols;
    Y* p = y + r * ldy + c;
    const float v = ld(x + r * ldx + c);
    st(p, acc ? ld(p) + v : v);
  }
}

// Scratch for a reduction: fixed-order partials land here, then one block sums them.
double finish_sum(DBuf<double>& part, int64_t n) {
  DBuf<double> out(1, Cat::workspace);
  sum_doubles_k<<<1, 1024, 0, current_stream()>>>(out.get(), part.get(), n);
  check_launch("sum_doubles");
  double h = 0;
  to_host(&h, out.get(), sizeof h);
  return h;
}

}  // namespace

template <class T, class R>
void rmsnorm_fwd(T* y, T* n, float* rstd, const R* x, const T* w, int64_t rows, int64_t h,
                 double eps) {
  if (rows == 0) return;
  const unsigned grid = static_cast<unsigned>(rows);
  if constexpr (std::is_same_v<T, R>)
    with_width<T>(h, {y, n, x, w}, [&](auto width) {
      rmsnorm_fwd_k<T, R, width.value>
          <<<grid, kThreads, 0, current_stream()>>>(y, n, rstd, x, w, h, static_cast<float>(eps));
    });
  else
    rmsnorm_fwd_k<T, R, 1>
        <<<grid, kThreads, 0, current_stream()>>>(y, n, rstd, x, w, h, static_cast<float>(eps));
  check_launch("rmsnorm_fwd");
}

template <class T>
void rmsnorm_apply(T* y, const T* n, const T* w, int64_t rows, int64_t h) {
  rmsnorm_apply_k<<<grid_for(rows * h), kThreads, 0, current_stream()>>>(y, n, w, rows, h);
  check_launch("rmsnorm_apply");
}

template <class T, class R, class G>
void rmsnorm_bwd(R* dx, G* dw, const R* dy, const T* n, const T* w, const float* rstd, int64_t rows,
                 int64_t h) {
  if (rows == 0) return;
  rmsnorm_bwd_dx_k<<<static_cast<unsigned>(rows), kThreads, 0, current_stream()>>>(dx, dy, n, w,
                                                                                   rstd, h);
  check_launch("rmsnorm_bwd_dx");
  // Chunks of rows depend only on `rows`, so the sum order does too.
  const int64_t rows_per = 64, chunks = (rows + rows_per - 1) / rows_per;
  DBuf<float> part(chunks * h, Cat::workspace);
  dim3 grid(grid_for(h), static_cast<unsigned>(chunks));
  colsum_dy_n_k<<<grid, kThreads, 0, current_stream()>>>(part.get(), dy, n, rows, h, rows_per);
  colsum_finish_k<<<grid_for(h), kThreads, 0, current_stream()>>>(dw, part.get(), chunks, h);
  check_launch("rmsnorm_bwd_dw");
}

template <class T>
void rope_fwd(T* x, int64_t stride, const int64_t* pos, int64_t rows, int n_heads, int d,
              const float* cos, const float* sin) {
  rope_k<<<grid_for(rows * n_heads * (d / 2)), kThreads, 0, current_stream()>>>(
      x, stride, pos, rows, n_heads, d / 2, cos, sin, 1.f);
  check_launch("rope_fwd");
}
template <class T>
void rope_bwd(T* dx, int64_t stride, const int64_t* pos, int64_t rows, int n_heads, int d,
              const float* cos, const float* sin) {
  rope_k<<<grid_for(rows * n_heads * (d / 2)), kThreads, 0, current_stream()>>>(
      dx, stride, pos, rows, n_heads, d / 2, cos, sin, -1.f);
  check_launch("rope_bwd");
}

template <class T>
void swiglu_fwd(T* a, const T* g, const T* u, int64_t n) {
  with_width<T>(n, {a, g, u}, [&](auto width) {
    using V = Vec<T, width.value>;
    const int64_t nv = n / width.value;
    swiglu_fwd_k<T, width.value><<<grid_for(nv), kThreads, 0, current_stream()>>>(
        reinterpret_cast<V*>(a), reinterpret_cast<const V*>(g), reinterpret_cast<const V*>(u), nv);
  });
  check_launch("swiglu_fwd");
}
template <class T>
void swiglu_bwd(T* dg, T* du, const T* da, const T* g, const T* u, int64_t n) {
  with_width<T>(n, {dg, du, da, g, u}, [&](auto width) {
    using V = Vec<T, width.value>;
    const int64_t nv = n / width.value;
    swiglu_bwd_k<T, width.value><<<grid_for(nv), kThreads, 0, current_stream()>>>(
        reinterpret_cast<V*>(dg), reinterpret_cast<V*>(du), reinterpret_cast<const V*>(da),
        reinterpret_cast<const V*>(g), reinterpret_cast<const V*>(u), nv);
  });
  check_launch("swiglu_bwd");
}

void ce_init(float* m, float* l, float* zt, int64_t rows) {
  ce_init_k<<<grid_for(rows), kThreads, 0, current_stream()>>>(m, l, zt, rows);
  check_launch("ce_init");
}

template <class T>
void ce_update(float* m, float* l, float* zt, const T* z, int64_t rows, int64_t vblk, int64_t v0,
               int64_t v_real, const int64_t* target) {
  const int64_t nv = std::min<int64_t>(std::max<int64_t>(v_real - v0, 0), vblk);
  if (nv == 0 || rows == 0) return;
  ce_update_k<<<static_cast<unsigned>(rows), kThreads, 0, current_stream()>>>(m, l, zt, z, vblk, v0,
                                                                              nv, target);
  check_launch("ce_update");
}

double ce_finish(float* lse, const float* m, const float* l, const float* zt, int64_t rows,
                 const int64_t* target) {
  if (rows == 0) return 0;
  DBuf<double> loss(rows, Cat::workspace);
  ce_finish_rows_k<<<grid_for(rows), kThreads, 0, current_stream()>>>(lse, loss.get(), m, l, zt,
                                                                      target, rows);
  check_launch("ce_finish");
  return finish_sum(loss, rows);
}

template <class T>
void ce_bwd(T* dz, const T* z, const float* lse, int64_t rows, int64_t vblk, int64_t v0,
            int64_t v_real, const int64_t* target, float scale) {
  if (rows == 0) return;
  const int64_t nv = std::min<int64_t>(std::max<int64_t>(v_real - v0, 0), vblk);
  ce_bwd_k<<<static_cast<unsigned>(rows), kThreads, 0, current_stream()>>>(dz, z, lse, vblk, v0, nv,
                                                                           target, scale);
  check_launch("ce_bwd");
}

template <class T>
void adamw_step(float* p, const T* g, float* m, float* v, int64_t n, const AdamW& h, int64_t step) {
  const double bc1 = 1.0 - std::pow(h.beta1, static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(h.beta2, static_cast<double>(step));
  adamw_k<<<grid_for(n), kThreads, 0, current_stream()>>>(
      p, g, m, v, n, static_cast<float>(h.lr / bc1), static_cast<float>(std::sqrt(bc2)),
      static_cast<float>(1.0 - h.lr * h.weight_decay), static_cast<float>(h.beta1),
      static_cast<float>(h.beta2), static_cast<float>(h.eps), h.weight_decay != 0);
  check_launch("adamw");
}

template <class T>
double sum_squares(const T* x, int64_t n) {
  if (n == 0) return 0;
  const int64_t nb = (n + kSumBlock - 1) / kSumBlock;
  DBuf<double> part(nb, Cat::workspace);
  sumsq_part_k<<<static_cast<unsigned>(nb), kThreads, 0, current_stream()>>>(part.get(), x, n);
  check_launch("sum_squares");
  return finish_sum(part, nb);
}

template <class T>
void scale_inplace(T* x, int64_t n, float s) {
  scale_k<<<grid_for(n), kThreads, 0, current_stream()>>>(x, n, s);
  check_launch("scale_inplace");
}

template <class T>
void add_inplace(T* y, const T* x, int64_t n) {
  add_k<<<grid_for(n), kThreads, 0, current_stream()>>>(y, x, n);
  check_launch("add_inplace");
}

template <class T, class D>
void index_copy_rows(D* dst, const T* src, const int64_t* dst_rows, const int64_t* src_rows,
                     int64_t n, int64_t w) {
  if (n * w == 0) return;
  index_copy_rows_k<<<grid_for(n * w), kThreads, 0, current_stream()>>>(dst, src, dst_rows,
                                                                        src_rows, n, w);
  check_launch("index_copy_rows");
}

template <class T, class D>
void index_add_rows(D* dst, const T* src, const int64_t* dst_rows, const int64_t* src_rows,
                    int64_t n, int64_t w) {
  if (n * w == 0) return;
  index_add_rows_k<<<grid_for(w), kThreads, 0, current_stream()>>>(dst, src, dst_rows, src_rows, n,
                                                                   w);
  check_launch("index_add_rows");
}

__global__ void attn_merge_k(float* o, float* lse, const float* o2, const float* lse2,
                             int64_t rows, int n_h, int d, int64_t stride, int64_t lse_stride) {
  const int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (idx >= rows * n_h) return;
  const int64_t h = idx / rows, i = idx % rows;
  float& a = lse[h * lse_stride + i];
  const float b = lse2[h * lse_stride + i];
  if (b == -INFINITY) return;
  float* oi = o + i * stride + h * d;
  const float* pi = o2 + i * stride + h * d;
  if (a == -INFINITY) {
    for (int c = 0; c < d; ++c) oi[c] = pi[c];
    a = b;
    return;
  }
  const float m = fmaxf(a, b), ea = expf(a - m), eb = expf(b - m), s = ea + eb;
  const float wa = ea / s, wb = eb / s;
  for (int c = 0; c < d; ++c) oi[c] = wa * oi[c] + wb * pi[c];
  a = m + logf(s);
}

void attn_merge(float* o, float* lse, const float* o2, const float* lse2, int64_t rows, int n_h,
                int d, int64_t stride, int64_t lse_stride) {
  if (rows * n_h == 0) return;
  attn_merge_k<<<grid_for(rows * n_h), kThreads, 0, current_stream()>>>(o, lse, o2, lse2, rows,
                                                                        n_h, d, stride, lse_stride);
  check_launch("attn_merge");
}

template <class Y, class X>
void copy_rows(Y* y, int64_t ldy, const X* x, int64_t ldx, int64_t rows, int64_t cols,
               bool accumulate) {
  if (rows * cols == 0) return;
  copy_rows_k<<<grid_for(rows * cols), kThreads, 0, current_stream()>>>(y, ldy, x, ldx, rows, cols,
                                                                        accumulate);
  check_launch("copy_rows");
}

#define INST(T)                                                                                    \
  template void rmsnorm_fwd<T>(T*, T*, float*, const T*, const T*, int64_t, int64_t, double);      \
  template void rmsnorm_apply<T>(T*, const T*, const T*, int64_t, int64_t);                        \
  template void rmsnorm_bwd<T>(T*, T*, const T*, const T*, const T*, const float*, int64_t,        \
                               int64_t);                                                           \
  template void rope_fwd<T>(T*, int64_t, const int64_t*, int64_t, int, int, const float*,          \
                            const float*);                                                         \
  template void rope_bwd<T>(T*, int64_t, const int64_t*, int64_t, int, int, const float*,          \
                            const float*);                                                         \
  template void swiglu_fwd<T>(T*, const T*, const T*, int64_t);                                    \
  template void swiglu_bwd<T>(T*, T*, const T*, const T*, const T*, int64_t);                      \
  template void ce_update<T>(float*, float*, float*, const T*, int64_t, int64_t, int64_t, int64_t, \
                             const int64_t*);                                                      \
  template void ce_bwd<T>(T*, const T*, const float*, int64_t, int64_t, int64_t, int64_t,          \
                          const int64_t*, float);                                                  \
  template void adamw_step<T>(float*, const T*, float*, float*, int64_t, const AdamW&, int64_t);   \
  template double sum_squares<T>(const T*, int64_t);                                               \
  template void scale_inplace<T>(T*, int64_t, float);                                              \
  template void add_inplace<T>(T*, const T*, int64_t);                                             \
  template void index_copy_rows<T>(T*, const T*, const int64_t*, const int64_t*, int64_t,          \
                                   int64_t);                                                       \
  template void index_add_rows<T>(T*, const T*, const int64_t*, const int64_t*, int64_t, int64_t);
INST(float)
INST(bf16)
template void copy_rows<float, float>(float*, int64_t, const float*, int64_t, int64_t, int64_t,
                                      bool);
template void copy_rows<bf16, float>(bf16*, int64_t, const float*, int64_t, int64_t, int64_t, bool);
template void copy_rows<bf16, bf16>(bf16*, int64_t, const bf16*, int64_t, int64_t, int64_t, bool);
template void copy_rows<float, bf16>(float*, int64_t, const bf16*, int64_t, int64_t, int64_t, bool);
// mixed precision (the bf16 kernel table, cuda/backend.cpp): fp32 residual stream and gradients
template void rmsnorm_fwd<bf16, float>(bf16*, bf16*, float*, const float*, const bf16*, int64_t,
                                       int64_t, double);
template void rmsnorm_bwd<bf16, bf16, float>(bf16*, float*, const bf16*, const bf16*, const bf16*,
                                             const float*, int64_t, int64_t);
template void rmsnorm_bwd<bf16, float, float>(float*, float*, const float*, const bf16*,
                                              const bf16*, const float*, int64_t, int64_t);
template void index_copy_rows<bf16, float>(float*, const bf16*, const int64_t*, const int64_t*,
                                           int64_t, int64_t);
template void index_add_rows<bf16, float>(float*, const bf16*, const int64_t*, const int64_t*,
                                          int64_t, int64_t);

}  // namespace origami::cuda
