// A dense row-major tensor whose storage comes from MemTracker under one category.
// Copies share storage (like a handle); clone() copies the data.
#pragma once
#include <cstring>
#include <initializer_list>
#include <memory>
#include <vector>

#include "core/device.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/memory.h"

namespace origami {

class Tensor {
 public:
  Tensor() = default;
  static Tensor empty(std::vector<int64_t> shape, DType dt, Cat c);
  static Tensor zeros(std::vector<int64_t> shape, DType dt, Cat c);
  // Host memory whatever device is selected (buffers host code works on: MPI's staging).
  static Tensor empty_host(std::vector<int64_t> shape, DType dt, Cat c);
  static Tensor zeros_host(std::vector<int64_t> shape, DType dt, Cat c);
  // A non-owning view of memory someone else manages (a mapped file): not tracked, not freed.
  static Tensor view(void* ptr, std::vector<int64_t> shape, DType dt);

  bool defined() const { return static_cast<bool>(st_); }
  const std::vector<int64_t>& shape() const { return shape_; }
  int64_t dim(int i) const { return shape_.at(i < 0 ? shape_.size() + i : i); }
  int64_t numel() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dt_); }
  DType dtype() const { return dt_; }
  Cat category() const { return st_->cat; }

  template <class T>
  T* data() {
    ORIGAMI_CHECK(dtype_of<T>() == dt_, "tensor dtype mismatch: have ", dtype_name(dt_),
                  ", asked for ", dtype_name(dtype_of<T>()));
    return static_cast<T*>(st_->ptr);
  }
  template <class T>
  const T* data() const {
    return const_cast<Tensor*>(this)->data<T>();
  }
  void* raw() { return st_ ? st_->ptr : nullptr; }
  const void* raw() const { return st_ ? st_->ptr : nullptr; }
  void zero() {
    if (!st_ || !nbytes()) return;
    if (st_->dev)
      st_->dev->zero(st_->ptr, nbytes());
    else
      std::memset(st_->ptr, 0, nbytes());
  }
  bool on_device() const { return st_ && st_->dev; }
  Tensor clone(Cat c) const;

 private:
  static Tensor make(std::vector<int64_t> shape, DType dt, Cat c, const DeviceOps* dev);
  struct Storage {
    void* ptr = nullptr;
    size_t bytes = 0;
    Cat cat = Cat::workspace;
    bool owned = true;
    const DeviceOps* dev = nullptr;  // device memory of this backend (core/device.h)
    ~Storage() {
      if (!ptr || !owned) return;
      if (dev)
        dev->free(ptr, bytes, cat);
      else
        MemTracker::get().free(ptr, bytes, cat);
    }
  };
  std::shared_ptr<Storage> st_;
  std::vector<int64_t> shape_;
  DType dt_ = DType::f32;
};

std::string shape_str(const std::vector<int64_t>& s);

}  // namespace origami
