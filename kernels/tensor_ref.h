// What a kernel sees of a tensor: its element type, shape, strides (in elements),
// device and the address of its first element. Kernels take TensorRefs, not
// bet::Tensor: they know nothing of the engine (storage, views, autograd), only of
// the platform below both (platform/). A bet::Tensor converts to one implicitly.
//
// A TensorRef borrows, like std::span: what it was made from (a Tensor, a
// ScratchTensor, the shape and strides handed to view()) must outlive it. It is
// passed down into kernels, never stored. An undefined TensorRef (defined() false)
// stands for an absent optional operand or an output nobody wants.
#pragma once
#include <cstddef>
#include <cstdint>

#include "platform/device.h"
#include "platform/dtype.h"
#include "platform/error.h"
#include "platform/shape.h"

namespace bet::kernels {

class TensorRef {
 public:
  TensorRef() = default;
  TensorRef(void* data, DType dtype, const Shape& shape, const Shape& strides, Device device)
      : data_(data), shape_(&shape), strides_(&strides), dtype_(dtype), device_(device) {}

  bool defined() const { return shape_ != nullptr; }
  const Shape& shape() const { return *shape_; }
  const Shape& strides() const { return *strides_; }
  int64_t dim() const { return int64_t(shape_->size()); }
  int64_t numel() const { return shape_numel(*shape_); }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype_); }
  bool is_contiguous() const;

  // The first element. On a GPU a device address: kernels hand it to the device.
  void* raw_data() const { return data_; }
  template <typename T>
  T* data() const {
    BET_CHECK(dtype_of<T>::value == dtype_, "kernel: tensor is ", dtype_name(dtype_), ", asked for ",
              dtype_name(dtype_of<T>::value));
    return static_cast<T*>(data_);
  }

  // The same first element seen with another shape and strides, which must outlive
  // the result (a temporary lasts to the end of the full expression that uses it).
  TensorRef view(const Shape& shape, const Shape& strides) const { return {data_, dtype_, shape, strides, device_}; }

 private:
  void* data_ = nullptr;
  const Shape* shape_ = nullptr;
  const Shape* strides_ = nullptr;
  DType dtype_ = DType::F32;
  Device device_;
};

// Memory a kernel allocates for itself (partial sums, sort keys, a dense copy of an
// operand): a contiguous tensor from the device's caching allocator
// (platform/memory.h), given back when it goes out of scope. On a GPU that is safe
// while kernels still read it: one stream orders the block's next use after them.
class ScratchTensor {
 public:
  ScratchTensor(Shape shape, DType dtype, Device device);
  ~ScratchTensor();
  ScratchTensor(const ScratchTensor&) = delete;
  ScratchTensor& operator=(const ScratchTensor&) = delete;

  TensorRef ref() const { return {data_, dtype_, shape_, strides_, device_}; }
  operator TensorRef() const { return ref(); }
  void* raw_data() const { return data_; }
  template <typename T>
  T* data() const {
    return ref().data<T>();
  }
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype_); }

 private:
  Shape shape_, strides_;
  DType dtype_;
  Device device_;
  size_t capacity_ = 0;
  void* data_ = nullptr;
};

}  // namespace bet::kernels
