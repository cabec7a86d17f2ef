#include "core/dtype.h"

#include "core/error.h"

namespace origami {

DType parse_compute_dtype(const std::string& s) {
  if (s == "fp32") return DType::f32;
  if (s == "bf16") return DType::bf16;
  fail("--dtype=", s, " is not one of: fp32, bf16");
}

const char* compute_dtype_name(DType t) {
  return t == DType::bf16 ? "bf16" : "fp32";
}

}  // namespace origami
