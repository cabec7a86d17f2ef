// The kernel interface: pure single-device functions, outputs first, then inputs, then sizes.
// Backward kernels *accumulate* into parameter gradients and into the activation gradient named
// `dx` where the caller sums several paths (dq, dk, dv, dx of norms); elementwise backward kernels
// whose output has exactly one producer (swiglu, rope) write.
// Every kernel is templated over the element type and instantiated for float (training) and
// double (finite-difference tests); the ones a bf16 run calls also for bfloat16, computing in fp32
// (kernels/cpu/bf16.cpp, the attention and GEMM files). Row-major everywhere; "stride" is the
// distance between rows.
#pragma once
#include <cstdint>
#include <string>

#include "core/dtype.h"

namespace origami::cpu {

// What statistics (RMSNorm's rstd, attention's log-sum-exp, the RoPE tables), the attention
// kernels' dq/dk/dv and parameter gradients are held in when the elements are T: T itself, or
// fp32 for bf16 (mixed precision: the sums of many terms stay in fp32).
template <class T>
struct acc {
  using type = T;
};
template <>
struct acc<bfloat16> {
  using type = float;
};
template <class T>
using acc_t = typename acc<T>::type;

// ---- GEMM (BLAS) ---------------------------------------------------------------------------
enum class Trans { N, T };
const char* gemm_backend();  // "onednn" or "openblas" (env ORIGAMI_GEMM)
// C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C
template <class T>
void gemm(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
          const T* B, int64_t ldb, T beta, T* C, int64_t ldc);
// bf16 A and B with fp32 accumulation; C (type ct: fp32 or bf16) = alpha·op(A)·op(B) + beta·C,
// rounded once (oneDNN's matmul).
void gemm_bf16(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, const bfloat16* A,
               int64_t lda, const bfloat16* B, int64_t ldb, float beta, void* C, DType ct,
               int64_t ldc);
// The oneDNN implementation gemm_bf16 runs for a shape (benchmarks print it).
std::string gemm_bf16_impl(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, DType ct);
// y[M,N] = x[M,K] W[N,K]^T (+ beta*y)
template <class T>
void linear_fwd(T* y, const T* x, const T* W, int64_t M, int64_t N, int64_t K, T beta = 0);
// dx[M,K] += dy[M,N] W[N,K]
template <class T>
void linear_bwd_x(T* dx, const T* dy, const T* W, int64_t M, int64_t N, int64_t K);
// dW[N,K] += dy[M,N]^T x[M,K]
template <class T>
void linear_bwd_w(T* dW, const T* dy, const T* x, int64_t M, int64_t N, int64_t K);

// ---- RMSNorm: n = x * rstd, rstd = 1/sqrt(mean(x^2) + eps), y = w * n, per row of h ----------
// n (the normalised input before the weight) may be null; it is what backward needs (it is safe
// for w = 0, unlike y / w), so it is what a layer saves.
// x (and, backward, dx and dy) may be of a wider type R than the outputs: a bf16 run keeps the
// residual stream and the gradients summed into it in fp32 (R = float, T = bfloat16).
template <class T, class R = T>
void rmsnorm_fwd(T* y, T* n, acc_t<T>* rstd, const R* x, const T* w, int64_t rows, int64_t h,
                 double eps);
// y = w * n (the norm output recomputed from the saved normalised input)
template <class T>
void rmsnorm_apply(T* y, const T* n, const T* w, int64_t rows, int64_t h);
// dx += d/dx, dw += d/dw
template <class T, class R = T>
void rmsnorm_bwd(R* dx, acc_t<T>* dw, const R* dy, const T* n, const T* w, const acc_t<T>* rstd,
                 int64_t rows, int64_t h);

// ---- RoPE (HF rotate_half: pairs (i, i + d/2), inv_freq_i = theta^(-2i/d)) ---------------------
// cos/sin tables are [max_pos, d/2], built in double by rope_table.
template <class T>
void rope_table(T* cos, T* sin, int64_t max_pos, int d, double theta);
// In place on rows of n_heads*d values (row stride `stride`), row r at global position pos[r].
template <class T>
void rope_fwd(T* x, int64_t stride, const int64_t* pos, int64_t rows, int n_heads, int d,
              const acc_t<T>* cos, const acc_t<T>* sin);
// The transpose (inverse rotation): turns d(rotated) into d(unrotated), in place.
template <class T>
void rope_bwd(T* dx, int64_t stride, const int64_t* pos, int64_t rows, int n_heads, int d,
              const acc_t<T>* cos, const acc_t<T>* sin);

// ---- SwiGLU: a = silu(g) * u --------------------------------------------------------------------
template <class T>
void swiglu_fwd(T* a, const T* g, const T* u, int64_t n);
template <class T>
void swiglu_bwd(T* dg, T* du, const T* da, const T* g, const T* u, int64_t n);

// ---- Causal flash attention with GQA over key segments ------------------------------------------
// Queries: rows of q (row stride q_stride, n_h heads of d), given as segments of consecutive
// global positions. Keys/values: segments (pointer, row stride, first global position, length)
// with n_kv heads of d; query head i uses kv head i / (n_h / n_kv). A query at position p attends
// keys at positions <= p, and, with document masks (`lo`), >= the first position of its own
// document: packed documents each attend only to themselves. Never materialises more than a tile
// of scores; key tiles wholly before a query tile's first document are skipped, not masked.
struct QSeg {
  int64_t row0;  // first row of q / o / dq
  int64_t pos0;  // its global position
  int64_t len;
  // Document masks: lo[i] = the first key position row i may see (its document's start; a host
  // array of len, nondecreasing). Null: plain causal.
  const int64_t* lo = nullptr;
};
template <class T>
struct KvSeg {
  const T* k;
  const T* v;
  int64_t stride;
  int64_t pos0;
  int64_t len;
  acc_t<T>* dk = nullptr;  // backward accumulates here (same stride)
  acc_t<T>* dv = nullptr;
};
struct AttnShape {
  int n_h, n_kv, d;
};
// o: same layout as q. lse: [n_h, lse_stride] natural log-sum-exp of the scaled masked scores.
// bf16: Q, K, V, O tiles are read as bf16 and widened to fp32 per tile; scores, running max and
// sums, accumulators, lse and (backward) dq, dk, dv are fp32.
// O: o's type, T's or (bf16 inputs) fp32 — a partial result merged with others later (decode).
template <class T, class O = T>
void flash_attn_fwd(O* o, acc_t<T>* lse, int64_t lse_stride, const T* q, int64_t q_stride,
                    const QSeg* qs, int nqs, const KvSeg<T>* ks, int nks, AttnShape sh,
                    acc_t<T> scale);
// dq (layout of q) += ; each segment's dk, dv +=.
template <class T>
void flash_attn_bwd(acc_t<T>* dq, const T* dout, const T* q, const T* o, int64_t q_stride,
                    const acc_t<T>* lse, int64_t lse_stride, const QSeg* qs, int nqs,
                    const KvSeg<T>* ks, int nks, AttnShape sh, acc_t<T> scale);
// Ring attention's merge of two partial results over disjoint keys (fp32): (o, lse) becomes the
// attention over both key sets, o = (e^lse·o + e^lse2·o2) / (e^lse + e^lse2), lse their log-sum-
// exp; a row whose lse2 is -inf (no visible key) is left as it is. o, o2: [rows, stride], head h
// at columns h·d; lse, lse2: [n_h, lse_stride].
void attn_merge(float* o, float* lse, const float* o2, const float* lse2, int64_t rows, int n_h,
                int d, int64_t stride, int64_t lse_stride);
// Each OpenMP thread's tiles, in elements of acc_t, held (workspace, host) during one call:
// forward a score tile, an accumulator and two row statistics; backward two score tiles and a row
// sum; under bf16 also the widened Q, K, V (and dO) tiles.
int64_t flash_attn_tile_elems(bool bwd, int d, bool bf16 = false);

// ---- Cross-entropy over vocabulary blocks (online log-sum-exp) ----------------------------------
// Running per-row state m (max), l (sum of exp(z - m)), zt (target logit). A block holds columns
// [v0, v0 + vblk) of the logits; columns >= v_real are padding (logit -inf). target < 0 = ignored.
template <class T>
void ce_init(T* m, T* l, T* zt, int64_t rows);
template <class T>
void ce_update(T* m, T* l, T* zt, const T* z, int64_t rows, int64_t vblk, int64_t v0,
               int64_t v_real, const int64_t* target);
// lse = m + log l; returns sum over non-ignored rows of (lse - zt), accumulated in double.
template <class T>
double ce_finish(T* lse, const T* m, const T* l, const T* zt, int64_t rows, const int64_t* target);
// dz = (exp(z - lse) - onehot(target)) * scale for non-ignored rows, 0 for ignored rows and pads.
template <class T>
void ce_bwd(T* dz, const T* z, const T* lse, int64_t rows, int64_t vblk, int64_t v0, int64_t v_real,
            const int64_t* target, T scale);

// ---- Optimizer ---------------------------------------------------------------------------------
struct AdamW {
  double lr, beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.0;
};
// PyTorch AdamW semantics; step counts from 1. Decay applied iff weight_decay != 0.
template <class T>
void adamw_step(T* p, const T* g, T* m, T* v, int64_t n, const AdamW& h, int64_t step);
template <class T>
double sum_squares(const T* x, int64_t n);
template <class T>
void scale_inplace(T* x, int64_t n, T s);
// y += x
template <class T>
void add_inplace(T* y, const T* x, int64_t n);
// dst = src, converted (float ↔ bfloat16, rounding to nearest even).
template <class D, class S>
void convert(D* dst, const S* src, int64_t n);

// ---- Rows by index (embedding lookups and their gradients, packing rows for a transfer) ---------
// For i = 0..n-1: row dst_rows[i] of dst (i when dst_rows is null) takes (copy) or gains (add) row
// src_rows[i] of src (i when null); rows of w elements, contiguous. The index arrays are host
// arrays (like positions). copy: the destination rows are distinct. add: in order of i, so a
// destination row that repeats sums its sources in that order (deterministic, no atomics).
// copy: dst of type D (widening bf16 rows into fp32 ones when D = float, T = bfloat16).
template <class T, class D = T>
void index_copy_rows(D* dst, const T* src, const int64_t* dst_rows, const int64_t* src_rows,
                     int64_t n, int64_t w);
// add: dst in acc_t<T> (an embedding's fp32 gradient gains bf16 rows).
template <class T>
void index_add_rows(acc_t<T>* dst, const T* src, const int64_t* dst_rows, const int64_t* src_rows,
                    int64_t n, int64_t w);

}  // namespace origami::cpu
