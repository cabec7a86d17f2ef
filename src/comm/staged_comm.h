// origami's Comm over device buffers through host staging memory (pinned for CUDA: the selected
// device's DeviceOps::host_alloc) and a host communicator (the MPI one): an operation copies its
// device input into pinned staging, runs the host operation there, and copies the result back to
// the device when it is waited (or found complete by test()). It moves the bytes twice more than
// NCCL, but any number of ranks can share one GPU and every operation keeps the host communicator's
// fixed order (bit-identical reductions), so the schedules can be checked on the one lent GPU.
// Bytes are the host communicator's records. Staging buffers come from a pool (pinning per
// operation would cost more than the copies).
// Device-independent: the copies go through copy_bytes, so the emulated device (kernels/emu.h)
// runs this same code on the CPU.
#pragma once
#include <memory>

#include "comm/comm.h"

namespace origami {

std::unique_ptr<Comm> make_staged_comm(std::unique_ptr<Comm> host);

}  // namespace origami
