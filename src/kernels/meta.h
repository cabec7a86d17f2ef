// The meta device of the dry run (plan/dry_run.h): a tensor has an address and a size but no
// memory, kernels do nothing, copies to or from it do nothing. Allocations are counted in
// MemTracker::get() under their category, as host tensors are in a CPU run, so a dry run of an
// engine reports the same peaks as the engine on the CPU; the flash-attention kernels still take
// their per-thread tiles (host workspace) for the length of the call, as the CPU kernels do.
// Addresses have bit 63 set (non-canonical on x86-64): any host access faults at once.
// Under --dtype bf16 the engines allocate bf16 tensors themselves (compute_dtype()), so the
// counts are theirs: no accounting of its own here. Both kernel tables (fp32 and bf16) are meta.
#pragma once
#include <cstdint>

namespace origami::meta {

struct Options {
  int threads = 1;  // OpenMP threads per rank: the attention kernels hold tiles per thread
};
// From here on new tensors are meta tensors and the kernels are the meta kernels, process-wide;
// stop() restores host memory and the CPU kernels.
void start(const Options& o);
void stop();
constexpr uintptr_t kBit = uintptr_t{1} << 63;
inline bool is_meta(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & kBit) != 0;
}

}  // namespace origami::meta
