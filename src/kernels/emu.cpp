#include "kernels/emu.h"

#include <sys/mman.h>

#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#include "core/device.h"
#include "core/error.h"
#include "core/memory.h"
#include "kernels/dispatch.h"

namespace origami::emu {
namespace {

template <class T>
T* untag(T* p) {
  return const_cast<T*>(static_cast<const T*>(real(p)));
}
void* tag(void* p) {
  return reinterpret_cast<void*>(reinterpret_cast<uintptr_t>(p) | kTag);
}

// Each allocation ends exactly (to the float) against an inaccessible guard page, with another
// before its first page, so a kernel or copy that runs past the end of a tensor faults too (an
// overrun the host heap would absorb, and a GPU would report as an illegal address). The data is
// therefore only 4-byte aligned: the CPU kernels load unaligned.
constexpr size_t kPage = 4096;
size_t pages(size_t bytes) {
  return ((bytes ? bytes : 1) + 63 + kPage - 1) / kPage * kPage;
}
size_t offset(size_t bytes) {  // of the data in its pages: ending at the guard
  return (pages(bytes) - (bytes ? bytes : 1)) & ~size_t{3};
}
void* alloc(size_t bytes, Cat c) {
  const size_t n = pages(bytes);
  void* m = mmap(nullptr, n + 2 * kPage, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ORIGAMI_CHECK(m != MAP_FAILED, "emulated device: allocation of ", bytes, " bytes failed");
  char* data = static_cast<char*>(m) + kPage;
  ORIGAMI_CHECK(mprotect(data, n, PROT_READ | PROT_WRITE) == 0, "emulated device: mprotect failed");
  MemTracker::device().note_alloc(bytes, c);
  return tag(data + offset(bytes));
}
void release(void* p, size_t bytes, Cat c) {
  if (!p) return;
  char* data = static_cast<char*>(untag(p)) - offset(bytes);
  munmap(data - kPage, pages(bytes) + 2 * kPage);
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
void sync() {}  // its kernels run to completion when called
const DeviceOps kOps{"emu",      alloc,     release, zero,  copy,
                     host_alloc, host_free, sync,    false, nullptr};

bool tagged(const void* p) {
  return reinterpret_cast<uintptr_t>(p) & kTag;
}
// A CPU kernel behind a wrapper that strips the tag from its pointer arguments.
template <class T>
T arg(T x) {
  return x;
}
// A GPU kernel can reach device memory only: a tensor argument (fp32, bf16, gemm_bf16's untyped
// C) in host memory is an error here (on a GPU it is an illegal address); positions, targets and
// row indices (int64) are host arrays by contract.
template <class T>
T* arg(T* p) {
  using U = std::remove_const_t<T>;
  if constexpr (std::is_same_v<U, float> || std::is_same_v<U, bfloat16> || std::is_void_v<U>)
    ORIGAMI_CHECK(!p || tagged(p),
                  "emulated device: a kernel was handed host memory for a tensor argument (a GPU "
                  "kernel cannot reach it)");
  return untag(p);
}
template <auto F>
struct Wrap;
template <class R, class... A, R (*F)(A...)>
struct Wrap<F> {
  static R call(A... a) { return F(arg(a)...); }
};

// Key segments carry device pointers inside: a host copy with the real addresses.
template <class T>
std::vector<k::KvSeg<T>> segs(const k::KvSeg<T>* ks, int n) {
  std::vector<k::KvSeg<T>> r(ks, ks + n);
  for (auto& s : r) s.k = arg(s.k), s.v = arg(s.v), s.dk = arg(s.dk), s.dv = arg(s.dv);
  return r;
}
void attn_fwd(float* o, float* lse, int64_t ls, const float* q, int64_t qs_, const k::QSeg* qs,
              int nqs, const k::KvSeg<float>* ks, int nks, k::AttnShape sh, float scale) {
  const auto s = segs(ks, nks);
  k::cpu_table().flash_attn_fwd(arg(o), arg(lse), ls, arg(q), qs_, qs, nqs, s.data(), nks, sh,
                                scale);
}
void attn_bwd(float* dq, const float* dout, const float* q, const float* o, int64_t qs_,
              const float* lse, int64_t ls, const k::QSeg* qs, int nqs, const k::KvSeg<float>* ks,
              int nks, k::AttnShape sh, float scale) {
  const auto s = segs(ks, nks);
  k::cpu_table().flash_attn_bwd(arg(dq), arg(dout), arg(q), arg(o), qs_, arg(lse), ls, qs, nqs,
                                s.data(), nks, sh, scale);
}

// bf16 (--dtype bf16): the CPU's bf16 kernels behind the same wrapper
void attn_fwd16(bfloat16* o, float* lse, int64_t ls, const bfloat16* q, int64_t qs_,
                const k::QSeg* qs, int nqs, const k::KvSeg<bfloat16>* ks, int nks, k::AttnShape sh,
                float scale) {
  const auto s = segs(ks, nks);
  k::cpu_bf16_table().flash_attn_fwd(arg(o), arg(lse), ls, arg(q), qs_, qs, nqs, s.data(), nks, sh,
                                     scale);
}
void attn_fwd16w(float* o, float* lse, int64_t ls, const bfloat16* q, int64_t qs_,
                 const k::QSeg* qs, int nqs, const k::KvSeg<bfloat16>* ks, int nks, k::AttnShape sh,
                 float scale) {
  const auto s = segs(ks, nks);
  k::cpu_bf16_table().flash_attn_fwd_wide(arg(o), arg(lse), ls, arg(q), qs_, qs, nqs, s.data(), nks,
                                          sh, scale);
}
void attn_bwd16(float* dq, const bfloat16* dout, const bfloat16* q, const bfloat16* o, int64_t qs_,
                const float* lse, int64_t ls, const k::QSeg* qs, int nqs,
                const k::KvSeg<bfloat16>* ks, int nks, k::AttnShape sh, float scale) {
  const auto s = segs(ks, nks);
  k::cpu_bf16_table().flash_attn_bwd(arg(dq), arg(dout), arg(q), arg(o), qs_, arg(lse), ls, qs, nqs,
                                     s.data(), nks, sh, scale);
}
constexpr auto kToBf16 = &cpu::convert<bfloat16, float>;
constexpr auto kToF32 = &cpu::convert<float, bfloat16>;
constexpr auto kNormFwdRes = &cpu::rmsnorm_fwd<bfloat16, float>;
constexpr auto kNormBwdRes = &cpu::rmsnorm_bwd<bfloat16, float>;
constexpr auto kWiden = &cpu::index_copy_rows<bfloat16, float>;

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
                      W(add_inplace<float>),
                      W(index_copy_rows<float>),
                      W(index_add_rows<float>),
                      W(attn_merge)};
const k::BTable kBTable{W(gemm_bf16),
                        W(rmsnorm_fwd<bfloat16>),
                        W(rmsnorm_apply<bfloat16>),
                        W(rmsnorm_bwd<bfloat16>),
                        W(rope_fwd<bfloat16>),
                        W(swiglu_fwd<bfloat16>),
                        W(swiglu_bwd<bfloat16>),
                        &attn_fwd16,
                        &attn_bwd16,
                        W(add_inplace<bfloat16>),
                        W(index_copy_rows<bfloat16>),
                        W(index_add_rows<bfloat16>),
                        &Wrap<kToBf16>::call,
                        &Wrap<kToF32>::call,
                        &Wrap<kNormFwdRes>::call,
                        &Wrap<kNormBwdRes>::call,
                        &Wrap<kWiden>::call,
                        &attn_fwd16w};
#undef W

}  // namespace

void use_emulated_device() {
  use_device(&kOps);
  k::install(&kTable);
  k::install_bf16(&kBTable);
}

}  // namespace origami::emu
