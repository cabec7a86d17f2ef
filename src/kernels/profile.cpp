#include "kernels/profile.h"

#include <array>
#include <atomic>
#include <chrono>
#include <type_traits>

#include "kernels/dispatch.h"

namespace origami::k {

namespace {

using Clock = std::chrono::steady_clock;
constexpr int kMax = 64;
struct Slot {
  const char* name = nullptr;
  std::atomic<int64_t> calls{0}, ns{0};
};
std::array<Slot, kMax> g_slots;
bool g_on = false;
Table g_ft;
BTable g_bt;

// The wrapper of slot I: times the call to the function it replaced.
template <int I, class F>
struct Wrap;
template <int I, class R, class... A>
struct Wrap<I, R (*)(A...)> {
  static inline R (*orig)(A...) = nullptr;
  static R call(A... a) {
    const auto t0 = Clock::now();
    struct Done {
      Clock::time_point t0;
      ~Done() {
        g_slots[I].calls.fetch_add(1, std::memory_order_relaxed);
        g_slots[I].ns.fetch_add(
            std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count(),
            std::memory_order_relaxed);
      }
    } done{t0};
    return orig(a...);
  }
};
template <int I, class F>
void wrap(F& f, const char* name) {
  static_assert(I < kMax);
  Wrap<I, F>::orig = f;
  f = &Wrap<I, F>::call;
  g_slots[I].name = name;
}

}  // namespace

void profile_start() {
  if (g_on) return;
  g_ft = table() ? *table() : cpu_table();
  // The bf16 table of the backend (the CPU's when no backend is installed); none stays none.
  const bool has_bt = !table() || bf16_table();
  if (has_bt) g_bt = bf16_table() ? *bf16_table() : cpu_bf16_table();
#define ORIGAMI_WRAP(t, slot, name) wrap<__COUNTER__>(t.slot, name)
  ORIGAMI_WRAP(g_ft, gemm, "gemm");
  ORIGAMI_WRAP(g_ft, linear_fwd, "linear_fwd");
  ORIGAMI_WRAP(g_ft, linear_bwd_x, "linear_bwd_x");
  ORIGAMI_WRAP(g_ft, linear_bwd_w, "linear_bwd_w");
  ORIGAMI_WRAP(g_ft, rmsnorm_fwd, "rmsnorm_fwd");
  ORIGAMI_WRAP(g_ft, rmsnorm_apply, "rmsnorm_apply");
  ORIGAMI_WRAP(g_ft, rmsnorm_bwd, "rmsnorm_bwd");
  ORIGAMI_WRAP(g_ft, rope_fwd, "rope");
  ORIGAMI_WRAP(g_ft, rope_bwd, "rope_bwd");
  ORIGAMI_WRAP(g_ft, swiglu_fwd, "swiglu_fwd");
  ORIGAMI_WRAP(g_ft, swiglu_bwd, "swiglu_bwd");
  ORIGAMI_WRAP(g_ft, flash_attn_fwd, "flash_attn_fwd");
  ORIGAMI_WRAP(g_ft, flash_attn_bwd, "flash_attn_bwd");
  ORIGAMI_WRAP(g_ft, ce_init, "ce_init");
  ORIGAMI_WRAP(g_ft, ce_update, "ce_update");
  ORIGAMI_WRAP(g_ft, ce_finish, "ce_finish");
  ORIGAMI_WRAP(g_ft, ce_bwd, "ce_bwd");
  ORIGAMI_WRAP(g_ft, adamw_step, "adamw");
  ORIGAMI_WRAP(g_ft, sum_squares, "sum_squares");
  ORIGAMI_WRAP(g_ft, scale_inplace, "scale_inplace");
  ORIGAMI_WRAP(g_ft, add_inplace, "add_inplace");
  ORIGAMI_WRAP(g_ft, index_copy_rows, "index_copy_rows");
  ORIGAMI_WRAP(g_ft, index_add_rows, "index_add_rows");
  ORIGAMI_WRAP(g_ft, attn_merge, "attn_merge");
  install(&g_ft);
  if (has_bt) {
    ORIGAMI_WRAP(g_bt, gemm, "gemm");
    ORIGAMI_WRAP(g_bt, rmsnorm_fwd, "rmsnorm_fwd");
    ORIGAMI_WRAP(g_bt, rmsnorm_apply, "rmsnorm_apply");
    ORIGAMI_WRAP(g_bt, rmsnorm_bwd, "rmsnorm_bwd");
    ORIGAMI_WRAP(g_bt, rope_fwd, "rope");
    ORIGAMI_WRAP(g_bt, swiglu_fwd, "swiglu_fwd");
    ORIGAMI_WRAP(g_bt, swiglu_bwd, "swiglu_bwd");
    ORIGAMI_WRAP(g_bt, flash_attn_fwd, "flash_attn_fwd");
    ORIGAMI_WRAP(g_bt, flash_attn_bwd, "flash_attn_bwd");
    ORIGAMI_WRAP(g_bt, add_inplace, "add_inplace");
    ORIGAMI_WRAP(g_bt, index_copy_rows, "index_copy_rows");
    ORIGAMI_WRAP(g_bt, index_add_rows, "index_add_rows");
    ORIGAMI_WRAP(g_bt, to_bf16, "to_bf16");
    ORIGAMI_WRAP(g_bt, to_f32, "to_f32");
    ORIGAMI_WRAP(g_bt, rmsnorm_fwd_res, "rmsnorm_fwd");
    ORIGAMI_WRAP(g_bt, rmsnorm_bwd_res, "rmsnorm_bwd");
    ORIGAMI_WRAP(g_bt, index_copy_rows_widen, "index_copy_rows");
    ORIGAMI_WRAP(g_bt, flash_attn_fwd_wide, "flash_attn_fwd");
    install_bf16(&g_bt);
  }
#undef ORIGAMI_WRAP
  g_on = true;
}

void profile_reset() {
  for (Slot& s : g_slots) s.calls = 0, s.ns = 0;
}

nlohmann::json profile_report() {
  nlohmann::json j = nlohmann::json::object();
  if (!g_on) return j;
  for (const Slot& s : g_slots) {
    if (!s.name || s.calls == 0) continue;
    auto& e = j[s.name];
    const double prev = e.is_null() ? 0.0 : e["seconds"].get<double>();
    const int64_t calls = e.is_null() ? 0 : e["calls"].get<int64_t>();
    e = {{"calls", calls + s.calls.load()}, {"seconds", prev + 1e-9 * static_cast<double>(s.ns)}};
  }
  return j;
}

}  // namespace origami::k
