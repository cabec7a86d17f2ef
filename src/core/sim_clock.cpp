#include "core/sim_clock.h"

#include <algorithm>

namespace origami::sim {

namespace {
thread_local Clock* t_clock = nullptr;
KernelTime g_time = nullptr;
const void* g_ctx = nullptr;
AttnCharge g_attn;
}  // namespace

void set_attn_charge(const AttnCharge& a) {
  g_attn = a;
}
const AttnCharge& attn_charge() {
  return g_attn;
}

Clock* clock() {
  return t_clock;
}
void bind(Clock* c) {
  t_clock = c;
}
void set_kernel_time(KernelTime f, const void* ctx) {
  g_time = f;
  g_ctx = ctx;
}

void kernel(const Work& w) {
  Clock* c = t_clock;
  if (!c || !g_time) return;
  const double dt = g_time(w, g_ctx) * c->slowdown;
  if (c->trace) c->trace->push_back({w.name, 0, 1e6 * c->now, 1e6 * (c->now + dt)});
  c->now += dt;
  c->compute += dt;
  c->since_wait += dt;
}

void waited(double done, double copy, const char* what, double wire, double background) {
  Clock* c = t_clock;
  if (!c) return;
  c->link_busy += wire;
  c->since_wait = 0;
  if (background > 0 && done < c->now) {  // copied meanwhile, beside the rank's kernels
    if (c->trace)
      c->trace->push_back(
          {std::string("copy ") + what, 0, 1e6 * c->now, 1e6 * (c->now + background)});
    c->now += background;
    c->compute += background;
    return;
  }
  done = std::max(done, c->now + copy);
  if (done <= c->now) return;
  if (c->trace) c->trace->push_back({what, 1, 1e6 * c->now, 1e6 * done});
  c->exposed += done - c->now;
  c->now = done;
}

}  // namespace origami::sim
