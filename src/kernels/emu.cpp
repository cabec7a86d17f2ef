#include "kernels/emu.h"

#include <cstdlib>
#include <cstring>
#include <vector>

#include "core/device.h"
#include "core/error.h"
#include "core/memory.h"
#include "kernels/dispatch.h"

namespace origami::emu {
namespace {

constexpr uintptr_t kTag = uintptr_t{1} << 62;

template <class T>
T* untag(T* p) {
  return const_cast<T*>(static_cast<const T*>(real(p)));
}
void* tag(void* p) {
  return reinterpret_cast<void*>(reinterpret_cast<uintptr_t>(p) | kTag);
}

size_t padded(size_t bytes) {
  return ((bytes ? bytes : 1) + 63) & ~size_t{63};
}
void* alloc(size_t bytes, Cat c) {
  void* p = std::aligned_alloc(64, padded(bytes));
  ORIGAMI_CHECK(p, "emulated device: allocation of ", bytes, " bytes failed");
  MemTracker::device().note_alloc(bytes, c);
  return tag(p);
}
void release(void* p, size_t bytes, Cat c) {
  if (!p) return;
  std::free(untag(p));
  MemTracker::device().note_free(bytes, c);
}
void zero(void* p, size_t bytes) {
  std::memset(untag(p), 0, bytes);
}
void copy(void* dst, const void* src, size_t bytes) {
  std::memcpy(untag(dst), untag(src), bytes);
}
void* host_alloc(size_t bytes) {
  void* p = std::malloc(bytes ? bytes : 1);
  ORIGAMI_CHECK(p, "emulated device: staging allocation of ", bytes, " bytes failed");
  return p;
}
void host_free(void* p) {
  std::free(p);
}
const DeviceOps kOps{"emu", alloc, release, zero, copy, host_alloc, host_free};

// A CPU kernel behind a wrapper that strips the tag from its pointer arguments.
template <class T>
T arg(T x) {
  return x;
}
template <class T>
T* arg(T* p) {
  return untag(p);
}
template <auto F>
struct Wrap;
template <class R, class... A, R (*F)(A...)>
struct Wrap<F> {
  static R call(A... a) { return F(arg(a)...); }
};

// Key segments carry device pointers inside: a host copy with the real addresses.
std::vector<k::KvSeg<float>> segs(const k::KvSeg<float>* ks, int n) {
  std::vector<k::KvSeg<float>> r(ks, ks + n);
  for (auto& s : r) s.k = untag(s.k), s.v = untag(s.v), s.dk = untag(s.dk), s.dv = untag(s.dv);
  return r;
}
void attn_fwd(float* o, float* lse, int64_t ls, const float* q, int64_t qs_, const k::QSeg* qs,
              int nqs, const k::KvSeg<float>* ks, int nks, k::AttnShape sh, float scale) {
  const auto s = segs(ks, nks);
  k::cpu_table().flash_attn_fwd(untag(o), untag(lse), ls, untag(q), qs_, qs, nqs, s.data(), nks, sh,
                                scale);
}
void attn_bwd(float* dq, const float* dout, const float* q, const float* o, int64_t qs_,
              const float* lse, int64_t ls, const k::QSeg* qs, int nqs, const k::KvSeg<float>* ks,
              int nks, k::AttnShape sh, float scale) {
  const auto s = segs(ks, nks);
  k::cpu_table().flash_attn_bwd(untag(dq), untag(dout), untag(q), untag(o), qs_, untag(lse), ls, qs,
                                nqs, s.data(), nks, sh, scale);
}

#define W(name) &Wrap<&cpu::name>::call
const k::Table kTable{W(gemm<float>),
                      W(linear_fwd<float>),
                      W(linear_bwd_x<float>),
                      W(linear_bwd_w<float>),
                      W(rmsnorm_fwd<float>),
                      W(rmsnorm_apply<float>),
                      W(rmsnorm_bwd<float>),
                      W(rope_fwd<float>),
                      W(rope_bwd<float>),
                      W(swiglu_fwd<float>),
                      W(swiglu_bwd<float>),
                      &attn_fwd,
                      &attn_bwd,
                      W(ce_init<float>),
                      W(ce_update<float>),
                      W(ce_finish<float>),
                      W(ce_bwd<float>),
                      W(adamw_step<float>),
                      W(sum_squares<float>),
                      W(scale_inplace<float>),
                      W(add_inplace<float>)};
#undef W

}  // namespace

void use_emulated_device() {
  use_device(&kOps);
  k::install(&kTable);
}

}  // namespace origami::emu
