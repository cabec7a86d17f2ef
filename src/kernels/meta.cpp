#include "kernels/meta.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <tuple>
#include <type_traits>

#include "core/device.h"
#include "core/error.h"
#include "core/memory.h"
#include "core/tensor.h"
#include "kernels/dispatch.h"

namespace origami::meta {
namespace {

Options g_opt;
std::atomic<uint64_t> g_next{0};

int64_t counted(size_t bytes, Cat c) {
  const auto b = static_cast<int64_t>(bytes);
  if (!g_opt.bf16) return b;
  return c == Cat::optimizer ? b + b / 2 : b / 2;
}
void* alloc(size_t bytes, Cat c) {
  MemTracker::get().note_alloc(static_cast<size_t>(counted(bytes, c)), c);
  // Distinct, 64-byte aligned, never dereferenced: 2^63 bytes of addresses.
  const uint64_t off = g_next.fetch_add((bytes + 127) / 64 * 64);
  return reinterpret_cast<void*>(kBit | (off & (kBit - 1)));
}
void release(void* p, size_t bytes, Cat c) {
  if (p) MemTracker::get().note_free(static_cast<size_t>(counted(bytes, c)), c);
}
void zero(void* p, size_t bytes) {
  if (!is_meta(p)) std::memset(p, 0, bytes);
}
// Host to host copies; a host destination of a meta source reads zeros.
void copy(void* dst, const void* src, size_t bytes) {
  if (is_meta(dst)) return;
  if (is_meta(src))
    std::memset(dst, 0, bytes);
  else
    std::memmove(dst, src, bytes);
}
void* host_alloc(size_t bytes) {
  void* p = std::malloc(bytes ? bytes : 1);
  ORIGAMI_CHECK(p, "meta device: host allocation of ", bytes, " bytes failed");
  return p;
}
void host_free(void* p) {
  std::free(p);
}
void sync() {}

const DeviceOps kOps{"meta", alloc, release, zero, copy, host_alloc, host_free, sync, true};

// A kernel that does nothing and returns a zero of its result type.
template <class F>
struct Nop;
template <class R, class... A>
struct Nop<R (*)(A...)> {
  static R call(A...) {
    if constexpr (!std::is_void_v<R>) return R{};
  }
};
// The flash-attention kernels: nothing computed, the CPU kernels' tiles held during the call.
template <bool Bwd, class F>
struct Attn;
template <bool Bwd, class... A>
struct Attn<Bwd, void (*)(A...)> {
  static void call(A... a) {
    const k::AttnShape sh = std::get<sizeof...(A) - 2>(std::forward_as_tuple(a...));
    Tensor tiles = Tensor::empty_host({g_opt.threads, cpu::flash_attn_tile_elems(Bwd, sh.d)},
                                      DType::f32, Cat::workspace);
  }
};

k::Table make_table() {
  k::Table t{};
  auto nop = [](auto& f) { f = &Nop<std::remove_reference_t<decltype(f)>>::call; };
  nop(t.gemm), nop(t.linear_fwd), nop(t.linear_bwd_x), nop(t.linear_bwd_w);
  nop(t.rmsnorm_fwd), nop(t.rmsnorm_apply), nop(t.rmsnorm_bwd), nop(t.rope_fwd), nop(t.rope_bwd);
  nop(t.swiglu_fwd), nop(t.swiglu_bwd), nop(t.ce_init), nop(t.ce_update), nop(t.ce_finish);
  nop(t.ce_bwd), nop(t.adamw_step), nop(t.sum_squares), nop(t.scale_inplace), nop(t.add_inplace);
  nop(t.index_copy_rows), nop(t.index_add_rows);
  t.flash_attn_fwd = &Attn<false, decltype(t.flash_attn_fwd)>::call;
  t.flash_attn_bwd = &Attn<true, decltype(t.flash_attn_bwd)>::call;
  return t;
}
const k::Table kTable = make_table();

}  // namespace

void start(const Options& o) {
  g_opt = o;
  use_device(&kOps);
  k::install(&kTable);
}

void stop() {
  use_device(nullptr);
  k::install(nullptr);
}

int64_t payload_bytes(const void* p, int64_t bytes) {
  return g_opt.bf16 && is_meta(p) ? bytes / 2 : bytes;
}

}  // namespace origami::meta
