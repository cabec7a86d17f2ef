// The fp32 kernels the engines call, dispatched to a device backend when one is installed
// (`--device cuda`: cuda/backend.h fills the table with the CUDA kernels, which take the same
// arguments), else to the CPU kernels. Same names and contracts as kernels/kernels.h; positions
// and targets stay host arrays in these calls (a device backend copies them over itself).
// Callers qualify the calls (k::gemm<float>(...)): cpu's types in the arguments would otherwise
// bring cpu's templates in by argument-dependent lookup.
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
};
void install(const Table* t);  // nullptr: the CPU kernels
const Table* table();
// The table of the CPU kernels (tests compare a device table against it).
const Table& cpu_table();

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
#undef ORIGAMI_K

}  // namespace origami::k
