#include "core/device.h"

#include <cstring>

namespace origami {

namespace {
const DeviceOps* g_ops = nullptr;
}

void use_device(const DeviceOps* ops) {
  g_ops = ops;
}
const DeviceOps* device_ops() {
  return g_ops;
}
bool tensors_hold_no_data() {
  return g_ops && g_ops->no_data;
}

void copy_bytes(void* dst, const void* src, size_t bytes) {
  if (!bytes) return;
  if (g_ops)
    g_ops->copy(dst, src, bytes);
  else
    std::memcpy(dst, src, bytes);
}

void zero_bytes(void* p, size_t bytes) {
  if (!bytes) return;
  if (g_ops)
    g_ops->zero(p, bytes);
  else
    std::memset(p, 0, bytes);
}

}  // namespace origami
