#include "kernels/dispatch.h"

#include <vector>

#include "core/device.h"
#include "core/error.h"

namespace origami::k {

namespace {
const Table* g_table = nullptr;
}

void install(const Table* t) {
  g_table = t;
  if (!t) install_bf16(nullptr);  // back to the CPU kernels, both tables
}
const Table* table() {
  return g_table;
}

const Table& cpu_table() {
  static const Table t{&cpu::gemm<float>,           &cpu::linear_fwd<float>,
                       &cpu::linear_bwd_x<float>,   &cpu::linear_bwd_w<float>,
                       &cpu::rmsnorm_fwd<float>,    &cpu::rmsnorm_apply<float>,
                       &cpu::rmsnorm_bwd<float>,    &cpu::rope_fwd<float>,
                       &cpu::rope_bwd<float>,       &cpu::swiglu_fwd<float>,
                       &cpu::swiglu_bwd<float>,     &cpu::flash_attn_fwd<float>,
                       &cpu::flash_attn_bwd<float>, &cpu::ce_init<float>,
                       &cpu::ce_update<float>,      &cpu::ce_finish<float>,
                       &cpu::ce_bwd<float>,         &cpu::adamw_step<float>,
                       &cpu::sum_squares<float>,    &cpu::scale_inplace<float>,
                       &cpu::add_inplace<float>,    &cpu::index_copy_rows<float>,
                       &cpu::index_add_rows<float>, &cpu::attn_merge};
  return t;
}

}  // namespace origami::k

namespace origami::k {

namespace {
const BTable* g_bf16 = nullptr;

// The bf16 table of the installed backend; `what` names the kernel when there is none.
const BTable& bt(const char* what) {
  if (g_bf16) return *g_bf16;
  if (g_table) fail("--dtype bf16: the installed device backend has no bf16 kernel ", what);
  return cpu_bf16_table();
}
const Table& ft() {
  return g_table ? *g_table : cpu_table();
}
bool is_bf16(CPtr p, const char* what) {
  if (p.dt == DType::f32) return false;
  if (p.dt == DType::bf16) return true;
  fail(what, ": elements of type ", dtype_name(p.dt), " (fp32 or bf16 expected)");
}
void same(DType a, DType b, const char* what) {
  if (a != b) fail(what, ": mixed element types ", dtype_name(a), " and ", dtype_name(b));
}
}  // namespace

void Ptr::check(DType want) const {
  if (dt != want)
    fail("a kernel for ", dtype_name(want), " elements was handed ", dtype_name(dt),
         " ones (a path that does not support --dtype ", compute_dtype_name(dt), ")");
}

void install_bf16(const BTable* t) {
  g_bf16 = t;
}
const BTable* bf16_table() {
  return g_bf16;
}

const BTable& cpu_bf16_table() {
  static const BTable t{&cpu::gemm_bf16,
                        &cpu::rmsnorm_fwd<bfloat16>,
                        &cpu::rmsnorm_apply<bfloat16>,
                        &cpu::rmsnorm_bwd<bfloat16>,
                        &cpu::rope_fwd<bfloat16>,
                        &cpu::swiglu_fwd<bfloat16>,
                        &cpu::swiglu_bwd<bfloat16>,
                        &cpu::flash_attn_fwd<bfloat16>,
                        &cpu::flash_attn_bwd<bfloat16>,
                        &cpu::add_inplace<bfloat16>,
                        &cpu::index_copy_rows<bfloat16>,
                        &cpu::index_add_rows<bfloat16>,
                        &cpu::convert<bfloat16, float>,
                        &cpu::convert<float, bfloat16>,
                        &cpu::rmsnorm_fwd<bfloat16, float>,
                        &cpu::rmsnorm_bwd<bfloat16, float>,
                        &cpu::index_copy_rows<bfloat16, float>,
                        &cpu::flash_attn_fwd<bfloat16, float>};
  return t;
}

void gemm(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, CPtr A, int64_t lda,
          CPtr B, int64_t ldb, float beta, Ptr C, int64_t ldc) {
  same(A.dt, B.dt, "gemm");
  if (!is_bf16(A, "gemm"))
    return ft().gemm(ta, tb, M, N, K, alpha, A.as<float>(), lda, B.as<float>(), ldb, beta,
                     C.as<float>(), ldc);
  bt("gemm").gemm(ta, tb, M, N, K, alpha, A.as<bfloat16>(), lda, B.as<bfloat16>(), ldb, beta, C.p,
                  C.dt, ldc);
}
void linear_fwd(Ptr y, CPtr x, CPtr W, int64_t M, int64_t N, int64_t K, float beta) {
  if (!is_bf16(x, "linear_fwd"))
    return ft().linear_fwd(y.as<float>(), x.as<float>(), W.as<float>(), M, N, K, beta);
  gemm(Trans::N, Trans::T, M, N, K, 1, x, K, W, K, beta, y, N);
}
void linear_bwd_x(Ptr dx, CPtr dy, CPtr W, int64_t M, int64_t N, int64_t K) {
  if (!is_bf16(dy, "linear_bwd_x"))
    return ft().linear_bwd_x(dx.as<float>(), dy.as<float>(), W.as<float>(), M, N, K);
  gemm(Trans::N, Trans::N, M, K, N, 1, dy, N, W, K, 1, dx, K);
}
void linear_bwd_w(Ptr dW, CPtr dy, CPtr x, int64_t M, int64_t N, int64_t K) {
  if (!is_bf16(dy, "linear_bwd_w"))
    return ft().linear_bwd_w(dW.as<float>(), dy.as<float>(), x.as<float>(), M, N, K);
  gemm(Trans::T, Trans::N, N, K, M, 1, dy, N, x, K, 1, dW, K);
}
void rmsnorm_fwd(Ptr y, Ptr n, float* rstd, CPtr x, CPtr w, int64_t rows, int64_t h, double eps) {
  if (!is_bf16(y, "rmsnorm_fwd"))
    return ft().rmsnorm_fwd(y.as<float>(), n.p ? n.as<float>() : nullptr, rstd, x.as<float>(),
                            w.as<float>(), rows, h, eps);
  bfloat16* nn = n.p ? n.as<bfloat16>() : nullptr;
  if (x.dt == DType::f32)
    return bt("rmsnorm_fwd")
        .rmsnorm_fwd_res(y.as<bfloat16>(), nn, rstd, x.as<float>(), w.as<bfloat16>(), rows, h, eps);
  bt("rmsnorm_fwd")
      .rmsnorm_fwd(y.as<bfloat16>(), nn, rstd, x.as<bfloat16>(), w.as<bfloat16>(), rows, h, eps);
}
void rmsnorm_apply(Ptr y, CPtr n, CPtr w, int64_t rows, int64_t h) {
  if (!is_bf16(n, "rmsnorm_apply"))
    return ft().rmsnorm_apply(y.as<float>(), n.as<float>(), w.as<float>(), rows, h);
  bt("rmsnorm_apply").rmsnorm_apply(y.as<bfloat16>(), n.as<bfloat16>(), w.as<bfloat16>(), rows, h);
}
void rmsnorm_bwd(Ptr dx, float* dw, CPtr dy, CPtr n, CPtr w, const float* rstd, int64_t rows,
                 int64_t h) {
  if (!is_bf16(n, "rmsnorm_bwd"))
    return ft().rmsnorm_bwd(dx.as<float>(), dw, dy.as<float>(), n.as<float>(), w.as<float>(), rstd,
                            rows, h);
  if (dx.dt == DType::f32)
    return bt("rmsnorm_bwd")
        .rmsnorm_bwd_res(dx.as<float>(), dw, dy.as<float>(), n.as<bfloat16>(), w.as<bfloat16>(),
                         rstd, rows, h);
  bt("rmsnorm_bwd")
      .rmsnorm_bwd(dx.as<bfloat16>(), dw, dy.as<bfloat16>(), n.as<bfloat16>(), w.as<bfloat16>(),
                   rstd, rows, h);
}
void rope_fwd(Ptr x, int64_t stride, const int64_t* pos, int64_t rows, int n_heads, int d,
              const float* cos, const float* sin) {
  if (!is_bf16(x, "rope_fwd"))
    return ft().rope_fwd(x.as<float>(), stride, pos, rows, n_heads, d, cos, sin);
  bt("rope_fwd").rope_fwd(x.as<bfloat16>(), stride, pos, rows, n_heads, d, cos, sin);
}
void swiglu_fwd(Ptr a, CPtr g, CPtr u, int64_t n) {
  if (!is_bf16(g, "swiglu_fwd"))
    return ft().swiglu_fwd(a.as<float>(), g.as<float>(), u.as<float>(), n);
  bt("swiglu_fwd").swiglu_fwd(a.as<bfloat16>(), g.as<bfloat16>(), u.as<bfloat16>(), n);
}
void swiglu_bwd(Ptr dg, Ptr du, CPtr da, CPtr g, CPtr u, int64_t n) {
  if (!is_bf16(g, "swiglu_bwd"))
    return ft().swiglu_bwd(dg.as<float>(), du.as<float>(), da.as<float>(), g.as<float>(),
                           u.as<float>(), n);
  bt("swiglu_bwd")
      .swiglu_bwd(dg.as<bfloat16>(), du.as<bfloat16>(), da.as<bfloat16>(), g.as<bfloat16>(),
                  u.as<bfloat16>(), n);
}

namespace {
template <class T>
std::vector<KvSeg<T>> segs(const Kv* ks, int n) {
  std::vector<KvSeg<T>> r;
  for (int i = 0; i < n; ++i)
    r.push_back({ks[i].k.as<T>(), ks[i].v.as<T>(), ks[i].stride, ks[i].pos0, ks[i].len, ks[i].dk,
                 ks[i].dv});
  return r;
}
}  // namespace

void flash_attn_fwd(Ptr o, float* lse, int64_t lse_stride, CPtr q, int64_t q_stride, const QSeg* qs,
                    int nqs, const Kv* ks, int nks, AttnShape sh, float scale) {
  if (!is_bf16(q, "flash_attn_fwd")) {
    const auto s = segs<float>(ks, nks);
    return ft().flash_attn_fwd(o.as<float>(), lse, lse_stride, q.as<float>(), q_stride, qs, nqs,
                               s.data(), nks, sh, scale);
  }
  const auto s = segs<bfloat16>(ks, nks);
  if (o.dt == DType::f32)  // a partial result, merged in fp32 later
    return bt("flash_attn_fwd")
        .flash_attn_fwd_wide(o.as<float>(), lse, lse_stride, q.as<bfloat16>(), q_stride, qs, nqs,
                             s.data(), nks, sh, scale);
  bt("flash_attn_fwd")
      .flash_attn_fwd(o.as<bfloat16>(), lse, lse_stride, q.as<bfloat16>(), q_stride, qs, nqs,
                      s.data(), nks, sh, scale);
}
void flash_attn_bwd(float* dq, CPtr dout, CPtr q, CPtr o, int64_t q_stride, const float* lse,
                    int64_t lse_stride, const QSeg* qs, int nqs, const Kv* ks, int nks,
                    AttnShape sh, float scale) {
  if (!is_bf16(q, "flash_attn_bwd")) {
    const auto s = segs<float>(ks, nks);
    return ft().flash_attn_bwd(dq, dout.as<float>(), q.as<float>(), o.as<float>(), q_stride, lse,
                               lse_stride, qs, nqs, s.data(), nks, sh, scale);
  }
  const auto s = segs<bfloat16>(ks, nks);
  bt("flash_attn_bwd")
      .flash_attn_bwd(dq, dout.as<bfloat16>(), q.as<bfloat16>(), o.as<bfloat16>(), q_stride, lse,
                      lse_stride, qs, nqs, s.data(), nks, sh, scale);
}
void add_inplace(Ptr y, CPtr x, int64_t n) {
  same(y.dt, x.dt, "add_inplace");
  if (!is_bf16(x, "add_inplace")) return ft().add_inplace(y.as<float>(), x.as<float>(), n);
  bt("add_inplace").add_inplace(y.as<bfloat16>(), x.as<bfloat16>(), n);
}
void index_copy_rows(Ptr dst, CPtr src, const int64_t* dst_rows, const int64_t* src_rows, int64_t n,
                     int64_t w) {
  if (!is_bf16(src, "index_copy_rows"))
    return ft().index_copy_rows(dst.as<float>(), src.as<float>(), dst_rows, src_rows, n, w);
  if (dst.dt == DType::f32)
    return bt("index_copy_rows")
        .index_copy_rows_widen(dst.as<float>(), src.as<bfloat16>(), dst_rows, src_rows, n, w);
  bt("index_copy_rows")
      .index_copy_rows(dst.as<bfloat16>(), src.as<bfloat16>(), dst_rows, src_rows, n, w);
}
void index_add_rows(float* dst, CPtr src, const int64_t* dst_rows, const int64_t* src_rows,
                    int64_t n, int64_t w) {
  if (!is_bf16(src, "index_add_rows"))
    return ft().index_add_rows(dst, src.as<float>(), dst_rows, src_rows, n, w);
  bt("index_add_rows").index_add_rows(dst, src.as<bfloat16>(), dst_rows, src_rows, n, w);
}
void convert(Ptr dst, CPtr src, int64_t n) {
  if (dst.dt == src.dt)
    return copy_bytes(dst.p, src.p, static_cast<size_t>(n) * dtype_size(dst.dt));
  if (dst.dt == DType::bf16) return bt("convert").to_bf16(dst.as<bfloat16>(), src.as<float>(), n);
  bt("convert").to_f32(dst.as<float>(), src.as<bfloat16>(), n);
}

void upload(Ptr dst, CPtr src, int64_t n) {
  const size_t bytes = static_cast<size_t>(n) * dtype_size(dst.dt);
  if (dst.dt == src.dt) return copy_bytes(dst.p, src.p, bytes);
  std::vector<char> tmp(bytes);
  if (dst.dt == DType::bf16)
    cpu::convert(reinterpret_cast<bfloat16*>(tmp.data()), src.as<float>(), n);
  else
    cpu::convert(reinterpret_cast<float*>(tmp.data()), src.as<bfloat16>(), n);
  copy_bytes(dst.p, tmp.data(), bytes);
}

}  // namespace origami::k
