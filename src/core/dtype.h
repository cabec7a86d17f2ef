// Element types. Tensors carry their dtype explicitly so bf16 can follow fp32.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace origami {

enum class DType { f32, f64, i32, i64, bf16 };

inline size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32:
      return 4;
    case DType::f64:
      return 8;
    case DType::i32:
      return 4;
    case DType::i64:
      return 8;
    case DType::bf16:
      return 2;
  }
  return 0;
}

// safetensors spelling
inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32:
      return "F32";
    case DType::f64:
      return "F64";
    case DType::i32:
      return "I32";
    case DType::i64:
      return "I64";
    case DType::bf16:
      return "BF16";
  }
  return "?";
}

// bfloat16: the top half of an fp32 (8 exponent bits, 7 mantissa bits). Stored and moved as its
// bits; arithmetic converts to fp32 (to_float) and back, rounding to nearest even (to_bf16).
struct bfloat16 {
  uint16_t bits;
};
inline float to_float(bfloat16 x) {
  const uint32_t u = static_cast<uint32_t>(x.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline bfloat16 to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return {static_cast<uint16_t>((u >> 16) | 0x40)};  // NaN
  return {static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16)};
}

// The element type a run computes and stores activations in (--dtype): fp32, or bf16 with fp32
// master weights, gradients, optimizer state and statistics.
DType parse_compute_dtype(const std::string& s);
const char* compute_dtype_name(DType t);  // "fp32" | "bf16"
// The run's compute type, set once per process before an engine is made (select_device; the dry
// run for plan; tests between cases). fp32 unless set.
DType compute_dtype();
void set_compute_dtype(DType t);

template <class T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() {
  return DType::f32;
}
template <>
constexpr DType dtype_of<double>() {
  return DType::f64;
}
template <>
constexpr DType dtype_of<int32_t>() {
  return DType::i32;
}
template <>
constexpr DType dtype_of<int64_t>() {
  return DType::i64;
}
template <>
constexpr DType dtype_of<bfloat16>() {
  return DType::bf16;
}

}  // namespace origami
