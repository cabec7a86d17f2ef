#include "cuda/backend.h"

#include <mpi.h>

#include <algorithm>

#include "core/device.h"
#include "core/error.h"
#include "cuda/kernels.h"
#include "cuda/runtime.h"
#include "kernels/dispatch.h"

namespace origami::cuda {
namespace {

void* alloc(size_t bytes, Cat c) {
  return dalloc(bytes, c);
}
void release(void* p, size_t bytes, Cat c) {
  dfree(p, bytes, c);
}
void zero(void* p, size_t bytes) {
  ORIGAMI_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, current_stream()));
}
// Either side may be host memory: wait, so the caller may reuse or read it at once.
void copy(void* dst, const void* src, size_t bytes) {
  ORIGAMI_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, current_stream()));
  ORIGAMI_CUDA_CHECK(cudaStreamSynchronize(current_stream()));
}
void* pinned(size_t bytes) {
  void* p = nullptr;
  ORIGAMI_CUDA_CHECK(cudaMallocHost(&p, bytes));
  return p;
}
void unpin(void* p) {
  cudaFreeHost(p);
}
void sync_stream() {
  ORIGAMI_CUDA_CHECK(cudaStreamSynchronize(current_stream()));
}
// The node's ranks spread over its devices by local rank modulo the count (use_cuda): this one
// shares its device with the other ranks of the same residue.
int64_t free_share(int local_rank, int local_size) {
  size_t free = 0, total = 0;
  ORIGAMI_CUDA_CHECK(cudaMemGetInfo(&free, &total));
  const int n = device_count();
  const int sharers = local_size / n + (local_rank % n < local_size % n ? 1 : 0);
  return static_cast<int64_t>(free) / std::max(1, sharers);
}
const DeviceOps kOps{"cuda", alloc, release,     zero,  copy,
                     pinned, unpin, sync_stream, false, free_share};

// Host arrays of the engines' calls (positions, targets) copied to the device.
DBuf<int64_t> up(const int64_t* h, int64_t n) {
  DBuf<int64_t> d(n > 0 ? n : 1, Cat::workspace);
  if (n > 0) to_device(d.get(), h, static_cast<size_t>(n) * sizeof(int64_t));
  return d;
}
void rope_fwd_h(float* x, int64_t stride, const int64_t* pos, int64_t rows, int nh, int d,
                const float* cos, const float* sin) {
  auto p = up(pos, rows);
  rope_fwd<float>(x, stride, p.get(), rows, nh, d, cos, sin);
}
void rope_bwd_h(float* x, int64_t stride, const int64_t* pos, int64_t rows, int nh, int d,
                const float* cos, const float* sin) {
  auto p = up(pos, rows);
  rope_bwd<float>(x, stride, p.get(), rows, nh, d, cos, sin);
}
void ce_update_h(float* m, float* l, float* zt, const float* z, int64_t rows, int64_t vblk,
                 int64_t v0, int64_t v_real, const int64_t* target) {
  auto t = up(target, rows);
  ce_update<float>(m, l, zt, z, rows, vblk, v0, v_real, t.get());
}
double ce_finish_h(float* lse, const float* m, const float* l, const float* zt, int64_t rows,
                   const int64_t* target) {
  auto t = up(target, rows);
  return ce_finish(lse, m, l, zt, rows, t.get());
}
void ce_bwd_h(float* dz, const float* z, const float* lse, int64_t rows, int64_t vblk, int64_t v0,
              int64_t v_real, const int64_t* target, float scale) {
  auto t = up(target, rows);
  ce_bwd<float>(dz, z, lse, rows, vblk, v0, v_real, t.get(), scale);
}

// Row indices (host arrays; null = identity) uploaded for the index kernels.
DBuf<int64_t> up_rows(const int64_t* rows, int64_t n) {
  return rows ? up(rows, n) : DBuf<int64_t>();
}
void index_copy_rows_h(float* dst, const float* src, const int64_t* dr, const int64_t* sr,
                       int64_t n, int64_t w) {
  auto d = up_rows(dr, n), s = up_rows(sr, n);
  index_copy_rows<float>(dst, src, d.get(), s.get(), n, w);
}
void index_add_rows_h(float* dst, const float* src, const int64_t* dr, const int64_t* sr, int64_t n,
                      int64_t w) {
  auto d = up_rows(dr, n), s = up_rows(sr, n);
  index_add_rows<float>(dst, src, d.get(), s.get(), n, w);
}

const k::Table kTable{&gemm<float>,
                      &linear_fwd<float>,
                      &linear_bwd_x<float>,
                      &linear_bwd_w<float>,
                      &rmsnorm_fwd<float>,
                      &rmsnorm_apply<float>,
                      &rmsnorm_bwd<float>,
                      &rope_fwd_h,
                      &rope_bwd_h,
                      &swiglu_fwd<float>,
                      &swiglu_bwd<float>,
                      &flash_attn_fwd<float>,
                      &flash_attn_bwd<float>,
                      &ce_init,
                      &ce_update_h,
                      &ce_finish_h,
                      &ce_bwd_h,
                      &adamw_step<float>,
                      &sum_squares<float>,
                      &scale_inplace<float>,
                      &add_inplace<float>,
                      &index_copy_rows_h,
                      &index_add_rows_h,
                      &attn_merge};

// ---- bf16 (--dtype bf16): the CPU's bf16 contract (kernels/dispatch.h, k::BTable) on the CUDA
// kernels. The engines' bfloat16 and CUDA's __nv_bfloat16 share the bits.
bf16* B(bfloat16* p) {
  return reinterpret_cast<bf16*>(p);
}
const bf16* B(const bfloat16* p) {
  return reinterpret_cast<const bf16*>(p);
}
void gemm16(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, const bfloat16* A,
            int64_t lda, const bfloat16* Bm, int64_t ldb, float beta, void* C, DType ct,
            int64_t ldc) {
  gemm_ex(ta, tb, M, N, K, alpha, A, lda, Bm, ldb, DType::bf16, beta, C, ldc, ct);
}
void norm_fwd16(bfloat16* y, bfloat16* n, float* rstd, const bfloat16* x, const bfloat16* w,
                int64_t rows, int64_t h, double eps) {
  rmsnorm_fwd<bf16>(B(y), B(n), rstd, B(x), B(w), rows, h, eps);
}
void norm_apply16(bfloat16* y, const bfloat16* n, const bfloat16* w, int64_t rows, int64_t h) {
  rmsnorm_apply<bf16>(B(y), B(n), B(w), rows, h);
}
void norm_bwd16(bfloat16* dx, float* dw, const bfloat16* dy, const bfloat16* n, const bfloat16* w,
                const float* rstd, int64_t rows, int64_t h) {
  rmsnorm_bwd<bf16, bf16, float>(B(dx), dw, B(dy), B(n), B(w), rstd, rows, h);
}
void rope_fwd16(bfloat16* x, int64_t stride, const int64_t* pos, int64_t rows, int nh, int d,
                const float* cos, const float* sin) {
  auto p = up(pos, rows);
  rope_fwd<bf16>(B(x), stride, p.get(), rows, nh, d, cos, sin);
}
void swiglu_fwd16(bfloat16* a, const bfloat16* g, const bfloat16* u, int64_t n) {
  swiglu_fwd<bf16>(B(a), B(g), B(u), n);
}
void swiglu_bwd16(bfloat16* dg, bfloat16* du, const bfloat16* da, const bfloat16* g,
                  const bfloat16* u, int64_t n) {
  swiglu_bwd<bf16>(B(dg), B(du), B(da), B(g), B(u), n);
}
void attn_fwd16(bfloat16* o, float* lse, int64_t ls, const bfloat16* q, int64_t qs_, const QSeg* qs,
                int nqs, const KvSeg<bfloat16>* ks, int nks, AttnShape sh, float scale) {
  flash_attn_fwd_mixed(o, DType::bf16, lse, ls, q, qs_, qs, nqs, ks, nks, sh, scale);
}
void attn_fwd16_wide(float* o, float* lse, int64_t ls, const bfloat16* q, int64_t qs_,
                     const QSeg* qs, int nqs, const KvSeg<bfloat16>* ks, int nks, AttnShape sh,
                     float scale) {
  flash_attn_fwd_mixed(o, DType::f32, lse, ls, q, qs_, qs, nqs, ks, nks, sh, scale);
}
void add16(bfloat16* y, const bfloat16* x, int64_t n) {
  add_inplace<bf16>(B(y), B(x), n);
}
void index_copy_rows16(bfloat16* dst, const bfloat16* src, const int64_t* dr, const int64_t* sr,
                       int64_t n, int64_t w) {
  auto d = up_rows(dr, n), s = up_rows(sr, n);
  index_copy_rows<bf16>(B(dst), B(src), d.get(), s.get(), n, w);
}
void index_widen16(float* dst, const bfloat16* src, const int64_t* dr, const int64_t* sr, int64_t n,
                   int64_t w) {
  auto d = up_rows(dr, n), s = up_rows(sr, n);
  index_copy_rows<bf16, float>(dst, B(src), d.get(), s.get(), n, w);
}
void index_add_rows16(float* dst, const bfloat16* src, const int64_t* dr, const int64_t* sr,
                      int64_t n, int64_t w) {
  auto d = up_rows(dr, n), s = up_rows(sr, n);
  index_add_rows<bf16, float>(dst, B(src), d.get(), s.get(), n, w);
}
void to_bf16(bfloat16* dst, const float* src, int64_t n) {
  copy_rows<bf16, float>(B(dst), n, src, n, 1, n, false);
}
void to_f32(float* dst, const bfloat16* src, int64_t n) {
  copy_rows<float, bf16>(dst, n, B(src), n, 1, n, false);
}
void norm_fwd_res(bfloat16* y, bfloat16* n, float* rstd, const float* x, const bfloat16* w,
                  int64_t rows, int64_t h, double eps) {
  rmsnorm_fwd<bf16, float>(B(y), B(n), rstd, x, B(w), rows, h, eps);
}
void norm_bwd_res(float* dx, float* dw, const float* dy, const bfloat16* n, const bfloat16* w,
                  const float* rstd, int64_t rows, int64_t h) {
  rmsnorm_bwd<bf16, float, float>(dx, dw, dy, B(n), B(w), rstd, rows, h);
}

const k::BTable kBTable{&gemm16,
                        &norm_fwd16,
                        &norm_apply16,
                        &norm_bwd16,
                        &rope_fwd16,
                        &swiglu_fwd16,
                        &swiglu_bwd16,
                        &attn_fwd16,
                        &flash_attn_bwd_mixed,
                        &add16,
                        &index_copy_rows16,
                        &index_add_rows16,
                        &to_bf16,
                        &to_f32,
                        &norm_fwd_res,
                        &norm_bwd_res,
                        &index_widen16,
                        &attn_fwd16_wide};

}  // namespace

void use_cuda() {
  const int n = device_count();
  if (n == 0) fail("--device cuda: no CUDA device is visible here (no GPU, or no driver)");
  // Under mpirun: the node's ranks spread over its devices (local rank modulo the count).
  int init = 0, local = 0;
  MPI_Initialized(&init);
  if (init) {
    MPI_Comm node;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
    MPI_Comm_rank(node, &local);
    MPI_Comm_free(&node);
  }
  ORIGAMI_CUDA_CHECK(cudaSetDevice(local % n));
  use_device(&kOps);
  k::install(&kTable);
  k::install_bf16(&kBTable);
}

}  // namespace origami::cuda
