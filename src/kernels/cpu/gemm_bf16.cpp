// bf16 GEMM through oneDNN's matmul primitive (Debian's oneDNN 2.6 has no bf16 BLAS-style call):
// bf16 A and B, fp32 accumulation, C in fp32 or bf16 (rounded once, after beta·C is added in
// fp32). With AVX-512 BF16 (and AMX where present) oneDNN picks its brgemm kernels;
// bench/gemm_bf16 measures them against dnnl_sgemm on the step's shapes (docs/results.md). A
// primitive is made once per (shape, strides, transposes, alpha, beta, C type) and thread, and
// kept: the engines issue a few dozen shapes. Per thread because oneDNN's default build runs a
// primitive only on the thread that created it (and never on two at once).
#include <map>
#include <oneapi/dnnl/dnnl.hpp>
#include <tuple>

#include "core/error.h"
#include "kernels/kernels.h"

namespace origami::cpu {

namespace {
using dnnl::memory;
using Key =
    std::tuple<int, int, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, float, float, int>;

struct Prim {
  memory::desc a, b, c;
  dnnl::matmul mm;
  std::string impl;
};

dnnl::engine& engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

memory::desc md(int64_t rows, int64_t cols, bool trans, int64_t ld, memory::data_type dt) {
  // row-major [rows, cols] with leading dimension ld, or its transpose stored [cols, rows]
  return memory::desc({rows, cols}, dt, trans ? memory::dims{1, ld} : memory::dims{ld, 1});
}

const Prim& prim(const Key& k) {
  static thread_local std::map<Key, Prim> cache;
  auto it = cache.find(k);
  if (it != cache.end()) return it->second;
  const auto [ta, tb, M, N, K, lda, ldb, ldc, alpha, beta, ct] = k;
  const auto cdt =
      static_cast<DType>(ct) == DType::bf16 ? memory::data_type::bf16 : memory::data_type::f32;
  Prim p;
  p.a = md(M, K, ta, lda, memory::data_type::bf16);
  p.b = md(K, N, tb, ldb, memory::data_type::bf16);
  p.c = md(M, N, false, ldc, cdt);
  dnnl::primitive_attr attr;
  if (alpha != 1.0f) attr.set_output_scales(0, {alpha});
  if (beta != 0.0f) {
    dnnl::post_ops po;
    po.append_sum(beta);
    attr.set_post_ops(po);
  }
  try {
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(p.a, p.b, p.c), attr, engine());
    p.impl = pd.impl_info_str();
    p.mm = dnnl::matmul(pd);
  } catch (const dnnl::error& e) {
    fail("oneDNN bf16 matmul M=", M, " N=", N, " K=", K, ": ", e.what());
  }
  return cache.emplace(k, std::move(p)).first->second;
}
}  // namespace

void gemm_bf16(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, const bfloat16* A,
               int64_t lda, const bfloat16* B, int64_t ldb, float beta, void* C, DType ct,
               int64_t ldc) {
  if (M == 0 || N == 0) return;
  ORIGAMI_CHECK(ct == DType::f32 || ct == DType::bf16, "gemm_bf16: C must be fp32 or bf16");
  const Prim& p = prim(
      {ta == Trans::T, tb == Trans::T, M, N, K, lda, ldb, ldc, alpha, beta, static_cast<int>(ct)});
  static thread_local dnnl::stream strm(engine());
  memory a(p.a, engine(), const_cast<bfloat16*>(A)), b(p.b, engine(), const_cast<bfloat16*>(B)),
      c(p.c, engine(), C);
  p.mm.execute(strm, {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, c}});
  strm.wait();
}

std::string gemm_bf16_impl(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, DType ct) {
  const int64_t lda = ta == Trans::N ? K : M, ldb = tb == Trans::N ? N : K;
  return prim({ta == Trans::T, tb == Trans::T, M, N, K, lda, ldb, N, 1.0f, 0.0f,
               static_cast<int>(ct)})
      .impl;
}

}  // namespace origami::cpu
