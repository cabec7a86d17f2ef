// GEMM through cuBLASLt: row-major calls mapped onto its column-major API (map_row_major, checked
// against the CPU BLAS in tests/cuda/test_cuda_host.cpp), fp32 accumulation, one algorithm chosen
// by the heuristics per shape and cached (so a rerun takes the same algorithm: bitwise equal), a
// 32 MiB workspace per thread counted under "workspace" in device memory.
#include <cublasLt.h>

#include <map>
#include <tuple>
#include <type_traits>
#include <utility>

#include "cuda/kernels.h"
#include "cuda/runtime.h"

namespace origami::cuda {

ColMajorGemm map_row_major(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, int64_t lda,
                           int64_t ldb, int64_t ldc) {
  // A row-major X[r, c] with leading dimension ld is the column-major Xᵀ[c, r] with the same ld.
  // So Cᵀ[N, M] = op(B)ᵀ op(A)ᵀ: A' = B (transposed iff tb), B' = A (transposed iff ta).
  ColMajorGemm g{};
  g.trans_a = tb == Trans::T;
  g.trans_b = ta == Trans::T;
  g.m = N, g.n = M, g.k = K;
  g.a_rows = g.trans_a ? K : N, g.a_cols = g.trans_a ? N : K, g.lda = ldb;
  g.b_rows = g.trans_b ? M : K, g.b_cols = g.trans_b ? K : M, g.ldb = lda;
  g.ldc = ldc;
  return g;
}

namespace {

void check_lt(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS)
    fail("cuBLASLt ", what, " failed with status ", static_cast<int>(s));
}

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::f32:
      return CUDA_R_32F;
    case DType::bf16:
      return CUDA_R_16BF;
    default:
      fail("GEMM: dtype ", dtype_name(t), " is not supported on CUDA (f32, bf16)");
  }
}

int alignment(const void* p) {
  auto a = reinterpret_cast<uintptr_t>(p);
  int al = 256;
  while (al > 1 && a % al) al /= 2;
  return al;
}

using Key = std::tuple<int, int, int, bool, bool, int64_t, int64_t, int64_t, int64_t, int64_t,
                       int64_t, int, int, int, int, int64_t, int64_t, int64_t>;
struct Plan {
  cublasLtMatmulDesc_t op{};
  cublasLtMatrixLayout_t a{}, b{}, c{};
  cublasLtMatmulAlgo_t algo{};
};

constexpr size_t kWorkspace = 32u << 20;

struct Lt {
  cublasLtHandle_t h{};
  void* ws = nullptr;
  std::map<Key, Plan> plans;
  Lt() {
    check_lt(cublasLtCreate(&h), "create");
    ws = dalloc(kWorkspace, Cat::workspace);
  }
  ~Lt() {
    for (auto& [k, p] : plans) {
      cublasLtMatrixLayoutDestroy(p.a);
      cublasLtMatrixLayoutDestroy(p.b);
      cublasLtMatrixLayoutDestroy(p.c);
      cublasLtMatmulDescDestroy(p.op);
    }
    dfree(ws, kWorkspace, Cat::workspace);
    cublasLtDestroy(h);
  }
};

Lt& lt() {
  thread_local Lt t;
  return t;
}

}  // namespace

void gemm_ex(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, const void* A,
             int64_t lda, const void* B, int64_t ldb, DType ab, float beta, void* C, int64_t ldc,
             DType c, Batch batch) {
  if (M == 0 || N == 0) return;
  ORIGAMI_CHECK(c == ab || c == DType::f32, "GEMM: output ", dtype_name(c), " with inputs ",
                dtype_name(ab), " (the output is f32 or the input type)");
  if (K == 0) {
    ORIGAMI_CHECK(beta == 1.f || beta == 0.f, "GEMM with K = 0 needs beta 0 or 1");
    const size_t e = dtype_size(c);
    if (beta == 0.f)
      for (int b = 0; b < batch.count; ++b)
        ORIGAMI_CUDA_CHECK(cudaMemset2DAsync(static_cast<char*>(C) + b * batch.sC * e, ldc * e, 0,
                                             N * e, M, current_stream()));
    return;
  }
  const ColMajorGemm g = map_row_major(ta, tb, M, N, K, lda, ldb, ldc);
  const void* Ap = B;  // A' = B
  const void* Bp = A;  // B' = A
  const int64_t sAp = batch.sB, sBp = batch.sA;
  // The alignment every batch member has: of the base pointer and of the batch stride in bytes.
  auto align_b = [&](const void* p, int64_t stride, DType t) {
    const int a = alignment(p);
    if (batch.count == 1) return a;
    const int s = alignment(reinterpret_cast<const void*>(stride * dtype_size(t)));
    return a < s ? a : s;
  };
  const int alA = align_b(Ap, sAp, ab), alB = align_b(Bp, sBp, ab), alC = align_b(C, batch.sC, c);
  Lt& L = lt();
  const Key key{static_cast<int>(ab),
                static_cast<int>(c),
                beta != 0.f,
                g.trans_a,
                g.trans_b,
                g.m,
                g.n,
                g.k,
                g.lda,
                g.ldb,
                g.ldc,
                alA,
                alB,
                alC,
                batch.count,
                sAp,
                sBp,
                batch.sC};
  auto it = L.plans.find(key);
  if (it == L.plans.end()) {
    Plan p;
    const cudaDataType_t tab = cuda_type(ab), tc = cuda_type(c);
    check_lt(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F), "desc");
    cublasOperation_t opa = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasOperation_t opb = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    check_lt(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa),
             "transa");
    check_lt(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb),
             "transb");
    check_lt(cublasLtMatrixLayoutCreate(&p.a, tab, g.a_rows, g.a_cols, g.lda), "layout A");
    check_lt(cublasLtMatrixLayoutCreate(&p.b, tab, g.b_rows, g.b_cols, g.ldb), "layout B");
    check_lt(cublasLtMatrixLayoutCreate(&p.c, tc, g.m, g.n, g.ldc), "layout C");
    if (batch.count > 1) {
      const int32_t n = batch.count;
      const std::pair<cublasLtMatrixLayout_t, int64_t> lay[3] = {
          {p.a, sAp}, {p.b, sBp}, {p.c, batch.sC}};
      for (const auto& [l, stride] : lay) {
        check_lt(
            cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &n, sizeof n),
            "batch count");
        check_lt(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                                                  &stride, sizeof stride),
                 "batch stride");
      }
    }
    cublasLtMatmulPreference_t pref;
    check_lt(cublasLtMatmulPreferenceCreate(&pref), "preference");
    size_t ws = kWorkspace;
    check_lt(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                  &ws, sizeof ws),
             "workspace");
    // Every operand's alignment (D is C), so the heuristic offers only kernels valid for them.
    const std::pair<cublasLtMatmulPreferenceAttributes_t, uint32_t> align[4] = {
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, uint32_t(alA)},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, uint32_t(alB)},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, uint32_t(alC)},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, uint32_t(alC)}};
    for (const auto& [attr, bytes] : align)
      check_lt(cublasLtMatmulPreferenceSetAttribute(pref, attr, &bytes, sizeof bytes), "alignment");
    cublasLtMatmulHeuristicResult_t res{};
    int found = 0;
    check_lt(cublasLtMatmulAlgoGetHeuristic(L.h, p.op, p.a, p.b, p.c, p.c, pref, 1, &res, &found),
             "heuristic");
    cublasLtMatmulPreferenceDestroy(pref);
    ORIGAMI_CHECK(found > 0, "cuBLASLt has no algorithm for GEMM m=", g.m, " n=", g.n, " k=", g.k,
                  " (", dtype_name(ab), " -> ", dtype_name(c), ")");
    p.algo = res.algo;
    it = L.plans.emplace(key, p).first;
  }
  const Plan& p = it->second;
  check_lt(cublasLtMatmul(L.h, p.op, &alpha, Ap, p.a, Bp, p.b, &beta, C, p.c, C, p.c, &p.algo, L.ws,
                          kWorkspace, current_stream()),
           "matmul");
}

template <class T>
void gemm(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, const T* A, int64_t lda,
          const T* B, int64_t ldb, float beta, T* C, int64_t ldc) {
  constexpr DType t = dtype_of<T>();
  gemm_ex(ta, tb, M, N, K, alpha, A, lda, B, ldb, t, beta, C, ldc, t);
}

template <class T>
void linear_fwd(T* y, const T* x, const T* W, int64_t M, int64_t N, int64_t K, float beta) {
  cuda::gemm<T>(Trans::N, Trans::T, M, N, K, 1.f, x, K, W, K, beta, y, N);
}
template <class T>
void linear_bwd_x(T* dx, const T* dy, const T* W, int64_t M, int64_t N, int64_t K) {
  cuda::gemm<T>(Trans::N, Trans::N, M, K, N, 1.f, dy, N, W, K, 1.f, dx, K);
}
template <class T>
void linear_bwd_w(T* dW, const T* dy, const T* x, int64_t M, int64_t N, int64_t K) {
  cuda::gemm<T>(Trans::T, Trans::N, N, K, M, 1.f, dy, N, x, K, 1.f, dW, K);
}

#define INST(T)                                                                            \
  template void gemm<T>(Trans, Trans, int64_t, int64_t, int64_t, float, const T*, int64_t, \
                        const T*, int64_t, float, T*, int64_t);                            \
  template void linear_fwd<T>(T*, const T*, const T*, int64_t, int64_t, int64_t, float);   \
  template void linear_bwd_x<T>(T*, const T*, const T*, int64_t, int64_t, int64_t);        \
  template void linear_bwd_w<T>(T*, const T*, const T*, int64_t, int64_t, int64_t);
INST(float)
INST(bf16)

}  // namespace origami::cuda
