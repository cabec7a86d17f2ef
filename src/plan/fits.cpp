// `train` refuses, before it allocates, a run the dry run predicts will not fit (plan/dry_run.h).
#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <fstream>
#include <string>

#include "core/device.h"
#include "core/error.h"
#include "core/memory.h"
#include "plan/dry_run.h"

namespace origami::plan {

namespace {

// A number of bytes from the first line of a cgroup v2 file ("max": none).
int64_t cgroup_bytes(const char* path) {
  std::ifstream f(path);
  std::string v;
  if (!(f >> v) || v == "max") return -1;
  try {
    return std::stoll(v);
  } catch (...) {
    return -1;
  }
}

std::string gib(int64_t b) {
  char s[32];
  if (b >= (1 << 30))
    std::snprintf(s, sizeof s, "%.2f GiB", static_cast<double>(b) / (1 << 30));
  else
    std::snprintf(s, sizeof s, "%.1f MiB", static_cast<double>(b) / (1 << 20));
  return s;
}

}  // namespace

Capacity rank_capacity() {
  int local = 0, local_size = 1, init = 0;
  MPI_Initialized(&init);
  if (init) {
    MPI_Comm node;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
    MPI_Comm_rank(node, &local);
    MPI_Comm_size(node, &local_size);
    MPI_Comm_free(&node);
  }
  const std::string ranks =
      local_size > 1 ? ", shared by this host's " + std::to_string(local_size) + " ranks" : "";
  Capacity c;
  const DeviceOps* d = device_ops();
  if (d && d->free_share) {
    c.bytes = d->free_share(local, local_size);
    c.what = std::string("this rank's share of the ") + d->name + " device's free memory";
    return c;
  }
  int64_t avail = proc_kb_field("/proc/meminfo", "MemAvailable");
  c.what = "MemAvailable in /proc/meminfo";
  const int64_t max = cgroup_bytes("/sys/fs/cgroup/memory.max");
  const int64_t cur = cgroup_bytes("/sys/fs/cgroup/memory.current");
  if (max >= 0 && cur >= 0 && (avail < 0 || max - cur < avail)) {
    avail = std::max<int64_t>(0, max - cur);
    c.what = "the cgroup's memory.max less memory.current";
  }
  if (avail < 0) return c;  // not Linux, or no /proc: unknown
  c.bytes = avail / local_size;
  c.what += ranks;
  return c;
}

void check_fits(const Input& in, const Result& r, double limit_gib,
                const std::string& config_path) {
  Capacity cap;
  if (limit_gib >= 0) {
    cap.bytes = static_cast<int64_t>(limit_gib * (1 << 30));
    cap.what = "--memory-limit";
  } else {
    cap = rank_capacity();
  }
  const DeviceOps* d = device_ops();
  int64_t baseline = d && d->free_share ? 0 : std::max<int64_t>(0, proc_status_bytes("VmRSS"));
  int64_t limit = cap.bytes < 0 ? INT64_MAX : cap.bytes;
  int init = 0, world = 1;
  MPI_Initialized(&init);
  if (init) MPI_Comm_size(MPI_COMM_WORLD, &world);
  if (world > 1) {  // one verdict for every rank
    MPI_Allreduce(MPI_IN_PLACE, &limit, 1, MPI_INT64_T, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, &baseline, 1, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD);
  }
  const int64_t need = r.total + baseline;
  if (limit == INT64_MAX || need <= limit) return;
  int big = 0;
  for (int i = 1; i < kNumCats; ++i)
    if (r.peak[static_cast<size_t>(i)] > r.peak[static_cast<size_t>(big)]) big = i;
  const ModelConfig& c = in.cfg;
  fail("the plan predicts a peak of ", gib(r.total),
       " per rank (largest: ", cat_name(static_cast<Cat>(big)), " ",
       gib(r.peak[static_cast<size_t>(big)]), ") for ", config_path,
       " (hidden_size=", c.hidden_size, ", intermediate_size=", c.intermediate_size,
       ", num_hidden_layers=", c.num_hidden_layers, ", vocab_size=", c.vocab_size,
       ") at --seq=", in.seq, " --micro-batch=", in.micro_batch, " --layout ",
       in.layout.text.empty() ? "single" : in.layout.text, ", plus ", gib(baseline),
       " the process already holds: more than the ", gib(limit), " a rank can use (",
       limit_gib >= 0 || world == 1 ? cap.what : cap.what + ", the smallest over the ranks",
       "). Use more ranks, a shorter --seq, a smaller --micro-batch or --recompute full "
       "(`origami plan` shows what each saves), or set --memory-limit");
}

}  // namespace origami::plan
