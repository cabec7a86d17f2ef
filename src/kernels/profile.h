// `--profile-kernels`: every call through the installed kernel tables (dispatch.h) timed by the
// host's wall clock around the call and summed per kernel, to set a measured step's kernels
// beside `plan --time`'s (bench/kernel_compare.py). Host kernels only: a GPU's calls return
// before they run. The wrappers call the tables installed when profiling starts; the results
// are bitwise those of the unprofiled run.
#pragma once
#include <nlohmann/json.hpp>

namespace origami::k {

// Wraps the installed tables (the CPU's when none) with timers. Call after the device is
// selected; idempotent.
void profile_start();
// Zeroes the sums (e.g. after a warm-up step).
void profile_reset();
// {kernel: {"calls": n, "seconds": s}} since the last reset; empty when profiling is off.
nlohmann::json profile_report();

}  // namespace origami::k
