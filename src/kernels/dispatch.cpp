#include "kernels/dispatch.h"

namespace origami::k {

namespace {
const Table* g_table = nullptr;
}

void install(const Table* t) {
  g_table = t;
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
                       &cpu::index_add_rows<float>};
  return t;
}

}  // namespace origami::k
