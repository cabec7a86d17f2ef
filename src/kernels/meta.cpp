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

void* alloc(size_t bytes, Cat c) {
  MemTracker::get().note_alloc(bytes, c);
  // Distinct, 64-byte aligned, never dereferenced: 2^63 bytes of addresses.
  const uint64_t off = g_next.fetch_add((bytes + 127) / 64 * 64);
  return reinterpret_cast<void*>(kBit | (off & (kBit - 1)));
}
void release(void* p, size_t bytes, Cat c) {
  if (p) MemTracker::get().note_free(bytes, c);
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

const DeviceOps kOps{"meta",     alloc,     release, zero, copy,
                     host_alloc, host_free, sync,    true, nullptr};

// A kernel that does nothing and returns a zero of its result type.
template <class F>
struct Nop;
template <class R, class... A>
struct Nop<R (*)(A...)> {
  static R call(A...) {
    if constexpr (!std::is_void_v<R>) return R{};
  }
};
// The flash-attention kernels: nothing computed, the CPU kernels' tiles held during the call
// (fp32; under bf16 with the widened Q, K, V tiles too).
template <bool Bwd, bool Bf16, class F>
struct Attn;
template <bool Bwd, bool Bf16, class... A>
struct Attn<Bwd, Bf16, void (*)(A...)> {
  static void call(A... a) {
    const k::AttnShape sh = std::get<sizeof...(A) - 2>(std::forward_as_tuple(a...));
    Tensor tiles = Tensor::empty_host({g_opt.threads, cpu::flash_attn_tile_elems(Bwd, sh.d, Bf16)},
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
  t.flash_attn_fwd = &Attn<false, false, decltype(t.flash_attn_fwd)>::call;
  t.flash_attn_bwd = &Attn<true, false, decltype(t.flash_attn_bwd)>::call;
  return t;
}
const k::Table kTable = make_table();

k::BTable make_bf16_table() {
  k::BTable t{};
  auto nop = [](auto& f) { f = &Nop<std::remove_reference_t<decltype(f)>>::call; };
  nop(t.gemm), nop(t.rmsnorm_fwd), nop(t.rmsnorm_apply), nop(t.rmsnorm_bwd), nop(t.rope_fwd);
  nop(t.swiglu_fwd), nop(t.swiglu_bwd), nop(t.add_inplace), nop(t.index_copy_rows);
  nop(t.index_add_rows), nop(t.to_bf16), nop(t.to_f32), nop(t.rmsnorm_fwd_res);
  nop(t.rmsnorm_bwd_res), nop(t.index_copy_rows_widen);
  t.flash_attn_fwd = &Attn<false, true, decltype(t.flash_attn_fwd)>::call;
  t.flash_attn_bwd = &Attn<true, true, decltype(t.flash_attn_bwd)>::call;
  t.flash_attn_fwd_wide = &Attn<false, true, decltype(t.flash_attn_fwd_wide)>::call;
  return t;
}
const k::BTable kBTable = make_bf16_table();

}  // namespace

void start(const Options& o) {
  g_opt = o;
  use_device(&kOps);
  k::install(&kTable);
  k::install_bf16(&kBTable);
}

void stop() {
  use_device(nullptr);
  k::install(nullptr);
  k::install_bf16(nullptr);
}

}  // namespace origami::meta
