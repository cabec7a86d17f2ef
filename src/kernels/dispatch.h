// The kernels the engines call, dispatched to a device backend when one is installed
// (`--device cuda`: cuda/backend.h fills the table with the CUDA kernels, which take the same
// arguments), else to the CPU kernels. Same names and contracts as kernels/kernels.h; positions
// and targets stay host arrays in these calls (a device backend copies them over itself).
// Callers qualify the calls (k::gemm<float>(...)): cpu's types in the arguments would otherwise
// bring cpu's templates in by argument-dependent lookup.
//
// Two forms: k::name<float>(float pointers) calls the fp32 table directly; k::name(Ptr …) (no
// template argument) takes pointers whose element type is known at run time — a tensor's dtype —
// and calls the fp32 table or the bf16 one (BTable: bf16 elements, fp32 statistics, attention
// gradients and parameter gradients), so one engine serves --dtype fp32 and bf16.
#pragma once
#include <type_traits>
#include <utility>

#include "kernels/kernels.h"

namespace origami::k {

using cpu::AdamW;
using cpu::AttnShape;
using cpu::KvSeg;
using cpu::QSeg;
using cpu::Trans;

struct Table {
  decltype(&cpu::gemm<float>) gemm;
  decltype(&cpu::linear_fwd<float>) linear_fwd;
  decltype(&cpu::linear_bwd_x<float>) linear_bwd_x;
  decltype(&cpu::linear_bwd_w<float>) linear_bwd_w;
  decltype(&cpu::rmsnorm_fwd<float>) rmsnorm_fwd;
  decltype(&cpu::rmsnorm_apply<float>) rmsnorm_apply;
  decltype(&cpu::rmsnorm_bwd<float>) rmsnorm_bwd;
  decltype(&cpu::rope_fwd<float>) rope_fwd;
  decltype(&cpu::rope_bwd<float>) rope_bwd;
  decltype(&cpu::swiglu_fwd<float>) swiglu_fwd;
  decltype(&cpu::swiglu_bwd<float>) swiglu_bwd;
  decltype(&cpu::flash_attn_fwd<float>) flash_attn_fwd;
  decltype(&cpu::flash_attn_bwd<float>) flash_attn_bwd;
  decltype(&cpu::ce_init<float>) ce_init;
  decltype(&cpu::ce_update<float>) ce_update;
  decltype(&cpu::ce_finish<float>) ce_finish;
  decltype(&cpu::ce_bwd<float>) ce_bwd;
  decltype(&cpu::adamw_step<float>) adamw_step;
  decltype(&cpu::sum_squares<float>) sum_squares;
  decltype(&cpu::scale_inplace<float>) scale_inplace;
  decltype(&cpu::add_inplace<float>) add_inplace;
  decltype(&cpu::index_copy_rows<float>) index_copy_rows;
  decltype(&cpu::index_add_rows<float>) index_add_rows;
  decltype(&cpu::attn_merge) attn_merge;
};
void install(const Table* t);  // nullptr: the CPU kernels (the bf16 ones too)
const Table* table();
// The table of the CPU kernels (tests compare a device table against it).
const Table& cpu_table();

// The bf16 kernels. A backend that installs a Table but no BTable has no bf16 path: a bf16 call
// then fails naming the kernel (the CPU's would be handed device memory).
struct BTable {
  decltype(&cpu::gemm_bf16) gemm;
  decltype(&cpu::rmsnorm_fwd<bfloat16>) rmsnorm_fwd;
  decltype(&cpu::rmsnorm_apply<bfloat16>) rmsnorm_apply;
  decltype(&cpu::rmsnorm_bwd<bfloat16>) rmsnorm_bwd;
  decltype(&cpu::rope_fwd<bfloat16>) rope_fwd;
  decltype(&cpu::swiglu_fwd<bfloat16>) swiglu_fwd;
  decltype(&cpu::swiglu_bwd<bfloat16>) swiglu_bwd;
  decltype(&cpu::flash_attn_fwd<bfloat16>) flash_attn_fwd;
  decltype(&cpu::flash_attn_bwd<bfloat16>) flash_attn_bwd;
  decltype(&cpu::add_inplace<bfloat16>) add_inplace;
  decltype(&cpu::index_copy_rows<bfloat16>) index_copy_rows;
  decltype(&cpu::index_add_rows<bfloat16>) index_add_rows;
  decltype(&cpu::convert<bfloat16, float>) to_bf16;
  decltype(&cpu::convert<float, bfloat16>) to_f32;
  // the fp32 residual stream of a bf16 run: RMSNorm of fp32 x, its backward into fp32 dx from
  // fp32 dy; bf16 embedding rows widened into fp32 ones
  decltype(&cpu::rmsnorm_fwd<bfloat16, float>) rmsnorm_fwd_res;
  decltype(&cpu::rmsnorm_bwd<bfloat16, float>) rmsnorm_bwd_res;
  decltype(&cpu::index_copy_rows<bfloat16, float>) index_copy_rows_widen;
  // attention of bf16 Q, K, V into an fp32 o: a partial result merged with others (decode)
  decltype(&cpu::flash_attn_fwd<bfloat16, float>) flash_attn_fwd_wide;
};
void install_bf16(const BTable* t);  // with install(): nullptr = none (or the CPU's, no table)
const BTable* bf16_table();          // the installed one (nullptr: none installed)
const BTable& cpu_bf16_table();

// A pointer to elements of a run-time type (fp32 or bf16): arithmetic in elements. It converts
// to float* where an fp32-only path takes it, checked (a bf16 tensor there is an error, not a
// reinterpretation).
struct Ptr {
  void* p = nullptr;
  DType dt = DType::f32;
  Ptr() = default;
  Ptr(void* q, DType t) : p(q), dt(t) {}
  Ptr(float* f) : p(f), dt(DType::f32) {}  // NOLINT: fp32 pointers are Ptrs
  Ptr operator+(int64_t n) const {
    return {static_cast<char*>(p) + n * static_cast<int64_t>(dtype_size(dt)), dt};
  }
  template <class T>
  T* as() const {
    check(dtype_of<T>());
    return static_cast<T*>(p);
  }
  operator float*() const { return as<float>(); }  // NOLINT
  void check(DType want) const;
};
struct CPtr {
  const void* p = nullptr;
  DType dt = DType::f32;
  CPtr() = default;
  CPtr(const void* q, DType t) : p(q), dt(t) {}
  CPtr(Ptr q) : p(q.p), dt(q.dt) {}               // NOLINT
  CPtr(const float* f) : p(f), dt(DType::f32) {}  // NOLINT
  CPtr operator+(int64_t n) const {
    return {static_cast<const char*>(p) + n * static_cast<int64_t>(dtype_size(dt)), dt};
  }
  template <class T>
  const T* as() const {
    Ptr{const_cast<void*>(p), dt}.check(dtype_of<T>());
    return static_cast<const T*>(p);
  }
  operator const float*() const { return as<float>(); }  // NOLINT
};
// A key segment with run-time typed K and V (KvSeg's fields); dk, dv are fp32 (acc_t) either way.
struct Kv {
  CPtr k, v;
  int64_t stride, pos0, len;
  float* dk = nullptr;
  float* dv = nullptr;
};

// The run-time typed forms. GEMMs: A and B of one type; C fp32, or bf16 with bf16 inputs. RMSNorm:
// y, n, w of one type; x (and backward dx, dy) of it or fp32. Rows: dst of src's type or fp32.
void gemm(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, CPtr A, int64_t lda,
          CPtr B, int64_t ldb, float beta, Ptr C, int64_t ldc);
void linear_fwd(Ptr y, CPtr x, CPtr W, int64_t M, int64_t N, int64_t K, float beta = 0);
void linear_bwd_x(Ptr dx, CPtr dy, CPtr W, int64_t M, int64_t N, int64_t K);
void linear_bwd_w(Ptr dW, CPtr dy, CPtr x, int64_t M, int64_t N, int64_t K);
void rmsnorm_fwd(Ptr y, Ptr n, float* rstd, CPtr x, CPtr w, int64_t rows, int64_t h, double eps);
void rmsnorm_apply(Ptr y, CPtr n, CPtr w, int64_t rows, int64_t h);
void rmsnorm_bwd(Ptr dx, float* dw, CPtr dy, CPtr n, CPtr w, const float* rstd, int64_t rows,
                 int64_t h);
void rope_fwd(Ptr x, int64_t stride, const int64_t* pos, int64_t rows, int n_heads, int d,
              const float* cos, const float* sin);
void swiglu_fwd(Ptr a, CPtr g, CPtr u, int64_t n);
void swiglu_bwd(Ptr dg, Ptr du, CPtr da, CPtr g, CPtr u, int64_t n);
// o: q's type, or fp32 with bf16 q (a partial result merged in fp32 later).
void flash_attn_fwd(Ptr o, float* lse, int64_t lse_stride, CPtr q, int64_t q_stride, const QSeg* qs,
                    int nqs, const Kv* ks, int nks, AttnShape sh, float scale);
void flash_attn_bwd(float* dq, CPtr dout, CPtr q, CPtr o, int64_t q_stride, const float* lse,
                    int64_t lse_stride, const QSeg* qs, int nqs, const Kv* ks, int nks,
                    AttnShape sh, float scale);
void add_inplace(Ptr y, CPtr x, int64_t n);
void index_copy_rows(Ptr dst, CPtr src, const int64_t* dst_rows, const int64_t* src_rows, int64_t n,
                     int64_t w);
// dst fp32 (a gradient) gains rows of src (fp32 or bf16).
void index_add_rows(float* dst, CPtr src, const int64_t* dst_rows, const int64_t* src_rows,
                    int64_t n, int64_t w);
// dst = src converted (or copied when the types agree).
void convert(Ptr dst, CPtr src, int64_t n);
// n elements of host memory (a mapped file, a host tensor) into dst, host or device memory of
// the selected device: a copy when the types agree, else converted on the host first (by the CPU
// kernel, whatever device is installed) and then copied.
void upload(Ptr dst, CPtr host_src, int64_t n);

#define ORIGAMI_K(name)                                                         \
  template <class T, class... A>                                                \
  auto name(A&&... a) {                                                         \
    static_assert(std::is_same_v<T, float>, "the dispatched kernels are fp32"); \
    const Table* t = table();                                                   \
    return (t ? t->name : cpu_table().name)(std::forward<A>(a)...);             \
  }
ORIGAMI_K(gemm)
template <class T>
void linear_fwd(T* y, const T* x, const T* W, int64_t M, int64_t N, int64_t K, T beta = 0) {
  static_assert(std::is_same_v<T, float>, "the dispatched kernels are fp32");
  const Table* t = table();
  (t ? t->linear_fwd : cpu_table().linear_fwd)(y, x, W, M, N, K, beta);
}
ORIGAMI_K(linear_bwd_x)
ORIGAMI_K(linear_bwd_w)
ORIGAMI_K(rmsnorm_fwd)
ORIGAMI_K(rmsnorm_apply)
ORIGAMI_K(rmsnorm_bwd)
ORIGAMI_K(rope_fwd)
ORIGAMI_K(rope_bwd)
ORIGAMI_K(swiglu_fwd)
ORIGAMI_K(swiglu_bwd)
ORIGAMI_K(flash_attn_fwd)
ORIGAMI_K(flash_attn_bwd)
ORIGAMI_K(ce_init)
ORIGAMI_K(ce_update)
ORIGAMI_K(ce_finish)
ORIGAMI_K(ce_bwd)
ORIGAMI_K(adamw_step)
ORIGAMI_K(sum_squares)
ORIGAMI_K(scale_inplace)
ORIGAMI_K(add_inplace)
ORIGAMI_K(index_copy_rows)
ORIGAMI_K(index_add_rows)
// (fp32 only: ring attention's partial results are fp32 under bf16 too)
inline void attn_merge(float* o, float* lse, const float* o2, const float* lse2, int64_t rows,
                       int n_h, int d, int64_t stride, int64_t lse_stride) {
  const Table* t = table();
  (t ? t->attn_merge : cpu_table().attn_merge)(o, lse, o2, lse2, rows, n_h, d, stride, lse_stride);
}
#undef ORIGAMI_K

}  // namespace origami::k
