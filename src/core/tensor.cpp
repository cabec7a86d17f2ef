#include "core/tensor.h"

namespace origami {

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (auto d : shape_) n *= d;
  return n;
}

Tensor Tensor::empty(std::vector<int64_t> shape, DType dt, Cat c) {
  return make(std::move(shape), dt, c, device_ops());
}
Tensor Tensor::empty_host(std::vector<int64_t> shape, DType dt, Cat c) {
  return make(std::move(shape), dt, c, nullptr);
}
Tensor Tensor::zeros_host(std::vector<int64_t> shape, DType dt, Cat c) {
  Tensor t = empty_host(std::move(shape), dt, c);
  t.zero();
  return t;
}

Tensor Tensor::make(std::vector<int64_t> shape, DType dt, Cat c, const DeviceOps* dev) {
  Tensor t;
  t.shape_ = std::move(shape);
  t.dt_ = dt;
  for (auto d : t.shape_)
    ORIGAMI_CHECK(d >= 0, "negative tensor dimension in ", shape_str(t.shape_));
  t.st_ = std::make_shared<Storage>();
  t.st_->bytes = t.nbytes();
  t.st_->cat = c;
  t.st_->dev = dev;
  t.st_->ptr =
      t.st_->dev ? t.st_->dev->alloc(t.st_->bytes, c) : MemTracker::get().alloc(t.st_->bytes, c);
  return t;
}

Tensor Tensor::zeros(std::vector<int64_t> shape, DType dt, Cat c) {
  Tensor t = empty(std::move(shape), dt, c);
  t.zero();
  return t;
}

Tensor Tensor::view(void* ptr, std::vector<int64_t> shape, DType dt) {
  Tensor t;
  t.shape_ = std::move(shape);
  t.dt_ = dt;
  t.st_ = std::make_shared<Storage>();
  t.st_->bytes = t.nbytes();
  t.st_->ptr = ptr;
  t.st_->owned = false;
  return t;
}

Tensor Tensor::clone(Cat c) const {
  Tensor t = empty(shape_, dt_, c);
  copy_bytes(t.raw(), raw(), nbytes());
  return t;
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

}  // namespace origami
