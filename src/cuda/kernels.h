// The kernel interface of kernels/kernels.h on a CUDA device: the same names, argument order and
// accumulate-or-write contracts, for T = float and bf16 (storage type; arithmetic in fp32). Every
// pointer is device memory except the segment lists of attention (host arrays holding device
// pointers). Statistics (rstd, lse, the online-softmax state) are fp32 whatever T is. Everything is
// issued on current_stream() (cuda/runtime.h) and returns without waiting, except functions that
// return a host value. Every reduction has a fixed order (no atomics): reruns are bitwise equal.
#pragma once
#include <cuda_bf16.h>

#include <cstdint>

#include "core/dtype.h"
#include "kernels/kernels.h"

namespace origami::cuda {

using bf16 = __nv_bfloat16;
using cpu::AdamW;
using cpu::AttnShape;
using cpu::KvSeg;
using cpu::QSeg;
using cpu::Trans;

// ---- GEMM (cuBLASLt, fp32 accumulation; fp32 inputs use exact fp32, not TF32) ------------------
// Row-major C = op(A) op(B) as cuBLAS's column-major Cᵀ = op(B)ᵀ op(A)ᵀ: the call cuBLASLt gets.
struct ColMajorGemm {
  bool trans_a, trans_b;  // of the column-major operands A' = B, B' = A
  int64_t m, n, k;
  int64_t a_rows, a_cols, lda;  // A' as stored, column-major
  int64_t b_rows, b_cols, ldb;  // B' as stored
  int64_t ldc;
};
ColMajorGemm map_row_major(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, int64_t lda,
                           int64_t ldb, int64_t ldc);
// C[M,N] = alpha op(A) op(B) + beta C; A and B share a type (f32 or bf16), C is f32 or that type.
// batch > 1: `batch` independent products, operand i at A + i·sA, B + i·sB, C + i·sC (elements).
struct Batch {
  int count = 1;
  int64_t sA = 0, sB = 0, sC = 0;
};
void gemm_ex(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, const void* A,
             int64_t lda, const void* B, int64_t ldb, DType ab, float beta, void* C, int64_t ldc,
             DType c, Batch batch = {});
template <class T>
void gemm(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, const T* A, int64_t lda,
          const T* B, int64_t ldb, float beta, T* C, int64_t ldc);
template <class T>
void linear_fwd(T* y, const T* x, const T* W, int64_t M, int64_t N, int64_t K, float beta = 0);
template <class T>
void linear_bwd_x(T* dx, const T* dy, const T* W, int64_t M, int64_t N, int64_t K);
template <class T>
void linear_bwd_w(T* dW, const T* dy, const T* x, int64_t M, int64_t N, int64_t K);

// ---- RMSNorm
// ---------------------------------------------------------------------------------------
// x (and backward dx, dy) of type R: T's, or fp32 under mixed precision (a bf16 run's residual
// stream); dw of type G: T's, or fp32 (a parameter gradient).
template <class T, class R = T>
void rmsnorm_fwd(T* y, T* n, float* rstd, const R* x, const T* w, int64_t rows, int64_t h,
                 double eps);
template <class T>
void rmsnorm_apply(T* y, const T* n, const T* w, int64_t rows, int64_t h);
template <class T, class R = T, class G = T>
void rmsnorm_bwd(R* dx, G* dw, const R* dy, const T* n, const T* w, const float* rstd, int64_t rows,
                 int64_t h);

// ---- RoPE at global positions (tables: fp32 [max_pos, d/2], built on the host by cpu::rope_table)
template <class T>
void rope_fwd(T* x, int64_t stride, const int64_t* pos, int64_t rows, int n_heads, int d,
              const float* cos, const float* sin);
template <class T>
void rope_bwd(T* dx, int64_t stride, const int64_t* pos, int64_t rows, int n_heads, int d,
              const float* cos, const float* sin);

// ---- SwiGLU
// ----------------------------------------------------------------------------------------
template <class T>
void swiglu_fwd(T* a, const T* g, const T* u, int64_t n);
template <class T>
void swiglu_bwd(T* dg, T* du, const T* da, const T* g, const T* u, int64_t n);

// ---- Cross-entropy over vocabulary blocks (online log-sum-exp; state fp32) ---------------------
void ce_init(float* m, float* l, float* zt, int64_t rows);
template <class T>
void ce_update(float* m, float* l, float* zt, const T* z, int64_t rows, int64_t vblk, int64_t v0,
               int64_t v_real, const int64_t* target);
// Waits for the stream; returns Σ (lse − zt) over non-ignored rows, summed in a fixed order.
double ce_finish(float* lse, const float* m, const float* l, const float* zt, int64_t rows,
                 const int64_t* target);
template <class T>
void ce_bwd(T* dz, const T* z, const float* lse, int64_t rows, int64_t vblk, int64_t v0,
            int64_t v_real, const int64_t* target, float scale);

// ---- Attention, the parity path: tiles of cuBLASLt GEMMs plus small kernels -----------------
// Same contract as cpu::flash_attn_fwd/bwd (segments of global positions, causal, GQA); lse fp32.
// fp32 inputs give fp32 attention (cuDNN has none); bf16 inputs use fp32 scores and accumulators.
template <class T>
void flash_attn_fwd(T* o, float* lse, int64_t lse_stride, const T* q, int64_t q_stride,
                    const QSeg* qs, int nqs, const KvSeg<T>* ks, int nks, AttnShape sh,
                    float scale);
// Tile sizes (query rows x key columns per GEMM); tests make them small to cross tile edges.
void set_attention_tiles(int bq, int bk);
template <class T>
void flash_attn_bwd(T* dq, const T* dout, const T* q, const T* o, int64_t q_stride,
                    const float* lse, int64_t lse_stride, const QSeg* qs, int nqs,
                    const KvSeg<T>* ks, int nks, AttnShape sh, float scale);
// Mixed precision, the CPU's bf16 contract (cpu::flash_attn_fwd/bwd<bfloat16>): bf16 Q, K, V, O;
// o bf16 or (o_type f32) an fp32 partial result; dq and the segments' dK, dV fp32.
void flash_attn_fwd_mixed(void* o, DType o_type, float* lse, int64_t lse_stride, const bfloat16* q,
                          int64_t q_stride, const QSeg* qs, int nqs, const KvSeg<bfloat16>* ks,
                          int nks, AttnShape sh, float scale);
void flash_attn_bwd_mixed(float* dq, const bfloat16* dout, const bfloat16* q, const bfloat16* o,
                          int64_t q_stride, const float* lse, int64_t lse_stride, const QSeg* qs,
                          int nqs, const KvSeg<bfloat16>* ks, int nks, AttnShape sh, float scale);

// cpu::attn_merge (ring attention's merge of two fp32 partial results), one thread per row and
// head.
void attn_merge(float* o, float* lse, const float* o2, const float* lse2, int64_t rows, int n_h,
                int d, int64_t stride, int64_t lse_stride);

// ---- Optimizer and reductions (master weights and moments fp32; gradients T) -------------------
template <class T>
void adamw_step(float* p, const T* g, float* m, float* v, int64_t n, const AdamW& h, int64_t step);
// Waits for the stream; a fixed-order blocked sum in double.
template <class T>
double sum_squares(const T* x, int64_t n);
template <class T>
void scale_inplace(T* x, int64_t n, float s);
template <class T>
void add_inplace(T* y, const T* x, int64_t n);
// Rows by index (cpu::index_copy_rows / index_add_rows); the index arrays are device memory here
// (the table's wrappers upload the engines' host arrays). add: one thread per column walks the
// rows in order, so repeated destination rows sum in the CPU's order, without atomics.
// D: T's, or fp32 (copy: bf16 rows widened; add: an fp32 gradient gains bf16 rows).
template <class T, class D = T>
void index_copy_rows(D* dst, const T* src, const int64_t* dst_rows, const int64_t* src_rows,
                     int64_t n, int64_t w);
template <class T, class D = T>
void index_add_rows(D* dst, const T* src, const int64_t* dst_rows, const int64_t* src_rows,
                    int64_t n, int64_t w);
// y[r, :cols] (+)= x[r, :cols] with row strides (accumulate = add): fp32 accumulators into T.
template <class Y, class X>
void copy_rows(Y* y, int64_t ldy, const X* x, int64_t ldx, int64_t rows, int64_t cols,
               bool accumulate);

}  // namespace origami::cuda

namespace origami {
// bf16 joins core/dtype.h's map from element types to DType.
template <>
constexpr DType dtype_of<cuda::bf16>() {
  return DType::bf16;
}
}  // namespace origami
