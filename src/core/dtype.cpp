#include "core/dtype.h"

#include "core/error.h"

namespace origami {

DType parse_compute_dtype(const std::string& s) {
  if (s == "fp32") return DType::f32;
  if (s == "bf16") return DType::bf16;
  fail("--dtype=", s, " is not one of: fp32, bf16");
}

namespace {
DType g_compute = DType::f32;
}
DType compute_dtype() {
  return g_compute;
}
void set_compute_dtype(DType t) {
  ORIGAMI_CHECK(t == DType::f32 || t == DType::bf16, "the compute type is fp32 or bf16");
  g_compute = t;
}

const char* compute_dtype_name(DType t) {
  return t == DType::bf16 ? "bf16" : "fp32";
}

}  // namespace origami
