// Where a run executes, chosen once per process before the engine is made: the device (cpu, cuda,
// emu), the kind of communicators (mpi, mpi_staged, nccl) and the layout's mesh built from them,
// the emulated link and the progress thread. The layouts (parallel/) call make_layout_mesh; the
// entry points call select_device.
#pragma once
#include <string>

#include "comm/mesh.h"
#include "core/dtype.h"

namespace origami {

struct RuntimeOptions {
  double link_gbps = 0, link_latency_us = 0;  // --emulate-link (0: off)
  double progress_us = 100;                   // --progress-thread (0: off)
  double timeout_s = 600;                     // --timeout (0: no limit)
  bool overlap = true;  // false (--no-overlap): every transfer complete when posted (serial_comm.h)
  std::string device = "cpu";     // --device cpu|cuda|emu
  DType dtype = DType::f32;       // --dtype fp32|bf16: the compute type (core/dtype.h)
  std::string comm = "auto";      // --comm auto|mpi|mpi_staged|nccl
  void (*use_cuda)() = nullptr;   // set by the entry point when the CUDA backend is built in
  CommMaker make_nccl = nullptr;  // likewise when it is built with NCCL
};

// Selects p.device and p.dtype (set_compute_dtype) for the rest of the process: from here on
// tensors are allocated there and the kernels are its own (cuda: needs use_cuda and a visible
// device; emu: kernels/emu.h). Refuses a --comm the device cannot use, and a --dtype it has no
// kernels for, first. Call after the host-side inputs are loaded and before the
// engine is made.
void select_device(const RuntimeOptions& p);
// --comm resolved: auto is mpi on the CPU and mpi_staged on a device.
std::string comm_kind(const RuntimeOptions& p);
// make_mesh(M, T) with communicators of the --comm kind: MPI's; MPI's wrapped into the staged
// one, which takes device buffers (several ranks may share a GPU); or NCCL's. Under --no-overlap
// each is wrapped once more so that every transfer completes as it is posted.
Mesh make_layout_mesh(const RuntimeOptions& p, int M, int T = 1);

// The emulated link (--emulate-link) and the progress thread (--progress-thread, only when the
// run has more than one rank) of this process's transfers.
void configure_transfers(const RuntimeOptions& p, int world);
// --emulate-link GBPS[,LATENCY_US] into p.link_gbps, p.link_latency_us (train, grad and bench).
void parse_emulated_link(const std::string& v, RuntimeOptions& p);

}  // namespace origami
