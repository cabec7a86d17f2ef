// Where new tensors live. Host memory unless a device backend has been selected for the process
// (`--device cuda`: the CUDA backend installs its memory operations, cuda/backend.h); then every
// Tensor::empty/zeros/clone is device memory, counted in MemTracker::device(). Views (mapped
// files) stay on the host. copy_bytes moves bytes between any two places.
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/memory.h"

namespace origami {

struct DeviceOps {
  const char* name;
  void* (*alloc)(size_t bytes, Cat c);
  void (*free)(void* p, size_t bytes, Cat c);
  void (*zero)(void* p, size_t bytes);
  void (*copy)(void* dst, const void* src, size_t bytes);  // host or device, either side
  // Host memory the device copies to and from at full speed (pinned for CUDA): the staged
  // communicator's staging buffers (comm/staged_comm.h).
  void* (*host_alloc)(size_t bytes);
  void (*host_free)(void* p);
  void (*sync)();  // returns when the work this thread queued on the device is done
  // Tensors without data (the dry run's meta device, kernels/meta.h): host work whose only use
  // is to fill tensors (tables, initial values) may be skipped.
  bool no_data = false;
  // This rank's share of the device's free memory, when the device has its own (nullptr: host
  // memory, the host's share is taken instead); local_rank of local_size ranks on this host.
  int64_t (*free_share)(int local_rank, int local_size) = nullptr;
};
// nullptr: host memory again.
void use_device(const DeviceOps* ops);
const DeviceOps* device_ops();
void copy_bytes(void* dst, const void* src, size_t bytes);
void zero_bytes(void* p, size_t bytes);  // host or device memory of the selected device
// The selected device's tensors hold no data (DeviceOps::no_data).
bool tensors_hold_no_data();

}  // namespace origami
