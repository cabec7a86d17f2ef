// The emulated device (`--device emu`): a stand-in for a GPU that runs on the CPU and proves, with
// no GPU at hand, that the engines touch tensor memory only through the device seam. Its tensors
// are host memory handed out behind a tag bit that makes the address non-canonical on x86-64, so
// any direct host access (a memcpy, a loop over data<float>(), MPI reading the buffer) faults at
// once; its DeviceOps copy, zero and allocate through the real address, and its kernel table is
// the CPU kernels behind wrappers that strip the tag from every pointer argument (key segments
// included) and refuse a tensor argument in host memory (a GPU kernel could not reach it; the
// int64 positions and targets are host arrays by contract). Every allocation ends against a guard
// page, so overruns fault too. The communicators are wrapped into the staged one, as for CUDA.
// Bitwise equal to `--device cpu` of the same layout (same kernels, same reduction order): tests
// check that. What it cannot see: ordering between streams, and what only the CUDA kernels get
// wrong.
#pragma once
#include <cstdint>

namespace origami::emu {

void use_emulated_device();
// The bit that marks an emulated-device address (non-canonical on x86-64 with it set).
constexpr uintptr_t kTag = uintptr_t{1} << 62;
// The host address behind a tagged (emulated-device) pointer; other pointers unchanged.
inline const void* real(const void* p) {
  return reinterpret_cast<const void*>(reinterpret_cast<uintptr_t>(p) & ~kTag);
}

}  // namespace origami::emu
