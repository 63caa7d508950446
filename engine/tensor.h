// Tensor: a typed, shaped, strided view of a Storage, with the autograd fields the
// tape needs. `Tensor` is a cheap handle (a shared_ptr); copies alias the same data.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "engine/storage.h"
#include "kernels/tensor_ref.h"
#include "platform/device.h"
#include "platform/dtype.h"
#include "platform/error.h"
#include "platform/shape.h"

namespace bet {

namespace autograd {
struct Node;
}

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  Shape strides;       // in elements
  int64_t offset = 0;  // in elements
  DType dtype = DType::F32;

  // autograd
  bool requires_grad = false;
  bool retains_grad = false;
  std::shared_ptr<TensorImpl> grad;           // accumulated gradient (leaves, or retained)
  std::shared_ptr<autograd::Node> grad_fn;    // op that produced this tensor, if recorded
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // ---- factories ----
  static Tensor empty(const Shape& shape, DType dtype = DType::F32, Device device = {});
  static Tensor zeros(const Shape& shape, DType dtype = DType::F32, Device device = {});
  static Tensor ones(const Shape& shape, DType dtype = DType::F32, Device device = {});
  static Tensor full(const Shape& shape, double value, DType dtype = DType::F32, Device device = {});
  static Tensor scalar(double value, DType dtype = DType::F32);
  static Tensor arange(int64_t n, DType dtype = DType::I64);
  template <typename T>
  static Tensor from_vector(const std::vector<T>& values, const Shape& shape);
  // A tensor over existing memory (not copied); `storage` keeps it alive.
  static Tensor from_storage(std::shared_ptr<Storage> storage, const Shape& shape, DType dtype,
                             int64_t offset = 0);

  // ---- metadata ----
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl().shape; }
  const Shape& strides() const { return impl().strides; }
  int64_t offset() const { return impl().offset; }
  int64_t dim() const { return int64_t(impl().shape.size()); }
  int64_t size(int64_t d) const;
  int64_t numel() const { return shape_numel(impl().shape); }
  DType dtype() const { return impl().dtype; }
  Device device() const { return impl().storage ? impl().storage->device() : Device{}; }
  bool is_contiguous() const;
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype()); }
  const std::shared_ptr<Storage>& storage() const { return impl().storage; }
  TensorImpl* impl_ptr() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_shared() const { return impl_; }

  // Pointer to the first element (offset applied). Checks the dtype.
  template <typename T>
  T* data() const {
    BET_CHECK(dtype_of<T>::value == dtype(), "Tensor::data: tensor is ", dtype_name(dtype()),
              ", asked for ", dtype_name(dtype_of<T>::value));
    if (impl().storage->device().is_cuda()) check_host_access(impl().storage->device());
    return static_cast<T*>(impl().storage->data()) + impl().offset;
  }
  void* raw_data() const {
    if (impl().storage->device().is_cuda()) check_host_access(impl().storage->device());
    return static_cast<char*>(impl().storage->data()) + impl().offset * int64_t(dtype_size(dtype()));
  }
  // What a kernel sees of this tensor (undefined for an undefined tensor). The
  // reference borrows this tensor's shape and strides: it lives no longer than it.
  operator kernels::TensorRef() const {
    if (!impl_) return {};
    void* first = static_cast<char*>(impl_->storage->data()) + impl_->offset * int64_t(dtype_size(impl_->dtype));
    return {first, impl_->dtype, impl_->shape, impl_->strides, impl_->storage->device()};
  }

  // ---- copies and conversion (not recorded by autograd unless noted) ----
  Tensor contiguous() const;  // recorded (identity gradient)
  Tensor clone() const;       // recorded
  Tensor to(DType dtype) const;  // recorded between floating types
  Tensor to(Device device) const;
  template <typename T>
  std::vector<T> to_vector() const;
  double item() const;  // one element, as double
  // Copies `src` (same shape) into this tensor's memory; not recorded.
  void copy_(const Tensor& src);
  void fill_(double value);

  // ---- autograd ----
  bool requires_grad() const { return impl().requires_grad; }
  Tensor& set_requires_grad(bool r = true);
  Tensor grad() const { return impl().grad ? Tensor(impl().grad) : Tensor(); }
  void set_grad(const Tensor& g) { impl().grad = g.impl_; }
  void zero_grad() { impl().grad.reset(); }
  void retain_grad();
  const std::shared_ptr<autograd::Node>& grad_fn() const { return impl().grad_fn; }
  bool is_leaf() const { return impl().grad_fn == nullptr; }
  // Backpropagates from this tensor; `grad` defaults to ones for a one-element tensor.
  void backward(const Tensor& grad = Tensor()) const;
  // Same data, cut from the graph.
  Tensor detach() const;

  bool same(const Tensor& o) const { return impl_ == o.impl_; }

 private:
  TensorImpl& impl() const {
    BET_CHECK(impl_ != nullptr, "Tensor: use of an undefined tensor");
    return *impl_;
  }
  std::shared_ptr<TensorImpl> impl_;
};

// A view of `base`'s storage with new geometry; shares memory, not recorded.
Tensor make_view(const Tensor& base, const Shape& shape, const Shape& strides, int64_t offset);

}  // namespace bet
