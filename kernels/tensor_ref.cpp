#include "kernels/tensor_ref.h"

#include "platform/memory.h"

namespace bet::kernels {

bool TensorRef::is_contiguous() const {
  if (numel() == 0) return true;  // no element to misplace
  int64_t expected = 1;
  for (int64_t i = dim() - 1; i >= 0; --i) {
    if ((*shape_)[size_t(i)] == 1) continue;
    if ((*strides_)[size_t(i)] != expected) return false;
    expected *= (*shape_)[size_t(i)];
  }
  return true;
}

ScratchTensor::ScratchTensor(Shape shape, DType dtype, Device device)
    : shape_(std::move(shape)), strides_(contiguous_strides(shape_)), dtype_(dtype), device_(device) {
  data_ = platform::allocate(nbytes(), device_, &capacity_);
}

ScratchTensor::~ScratchTensor() { platform::release(data_, capacity_, device_); }

}  // namespace bet::kernels
