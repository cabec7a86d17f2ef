#include "runtime/runtime.h"

#include <cstdlib>
#include <utility>

#include "comm/mpi_comm.h"
#include "comm/serial_comm.h"
#include "comm/staged_comm.h"
#include "core/error.h"
#include "kernels/emu.h"

namespace origami {

void parse_emulated_link(const std::string& v, RuntimeOptions& p) {
  char* end = nullptr;
  p.link_gbps = std::strtod(v.c_str(), &end);
  p.link_latency_us = 0;
  if (end != v.c_str() && *end == ',') p.link_latency_us = std::strtod(end + 1, &end);
  if (end == v.c_str() || *end || !(p.link_gbps > 0) || p.link_latency_us < 0)
    fail("--emulate-link=", v, " is not GBPS[,LATENCY_US] with GBPS > 0 and LATENCY_US >= 0");
}

std::string comm_kind(const RuntimeOptions& p) {
  if (p.comm != "auto") return p.comm;
  return p.device == "cpu" ? "mpi" : "mpi_staged";
}

void select_device(const RuntimeOptions& p) {
  const std::string c = comm_kind(p);
  if (c != "mpi" && c != "mpi_staged" && c != "nccl")
    fail("--comm=", p.comm, " is not one of: auto, mpi, mpi_staged, nccl");
  if (c == "nccl" && p.device != "cuda") fail("--comm nccl needs --device cuda");
  if (p.device == "cpu" && c != "mpi")
    fail("--comm ", c, " stages device buffers: it needs --device cuda or emu");
  if (p.device != "cpu" && c == "mpi")
    fail("--comm mpi hands tensors to MPI directly, which cannot read --device ", p.device,
         " memory (Debian's Open MPI is not CUDA-aware): use --comm mpi_staged or nccl");
  set_compute_dtype(p.dtype);
  set_comm_timeout(p.timeout_s);
  if (c == "nccl" && !p.make_nccl)
    fail(
        "--comm nccl: this binary was built without NCCL (the CUDA build finds it next to the "
        "toolkit); use --comm mpi_staged");
  if (p.device == "cpu") return;
  if (p.device == "emu") return emu::use_emulated_device();
  if (p.device != "cuda") fail("--device=", p.device, " is not one of: cpu, cuda, emu");
  if (!p.use_cuda)
    fail(
        "--device cuda: this binary has no CUDA backend; run origami-cuda (built next to it when "
        "the CUDA toolkit is found, -DORIGAMI_CUDA=ON)");
  p.use_cuda();
}

// The layout's communicators of the --comm kind: MPI's; MPI's wrapped into the staged one, which
// takes device buffers (several ranks may share a GPU); or NCCL's.
Mesh make_layout_mesh(const RuntimeOptions& p, int M, int T) {
  const std::string kind = comm_kind(p);
  Mesh m = kind == "nccl" ? make_mesh(M, T, p.make_nccl) : make_mesh(M, T);
  for (auto* c : {&m.model, &m.dp, &m.tp, &m.sp}) {
    if (*c && kind == "mpi_staged") *c = make_staged_comm(std::move(*c));
    if (*c && !p.overlap) *c = make_serial_comm(std::move(*c));
  }
  return m;
}

void configure_transfers(const RuntimeOptions& p, int world) {
  set_emulated_link(p.link_gbps, p.link_latency_us);
  set_progress_thread(world > 1 ? p.progress_us : 0);
}

}  // namespace origami
