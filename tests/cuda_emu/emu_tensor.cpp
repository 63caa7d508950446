// What Tensor::full does in a CUDA build for a device tensor: allocate, then the
// device's fill kernel (kernels/cuda/copy.cu, emulated).
#include "cuda_emu_tensor.h"

#include "kernels/copy.h"

namespace emu {

bet::Tensor tensor_full(const bet::Shape& shape, double value, bet::DType dtype, bet::Device device) {
  bet::Tensor t = bet::Tensor::empty(shape, dtype, device);
  if (device.is_cuda()) bet::kernels::cuda::fill(t, value);
  else t.fill_(value);
  return t;
}
bet::Tensor tensor_zeros(const bet::Shape& shape, bet::DType dtype, bet::Device device) {
  return tensor_full(shape, 0.0, dtype, device);
}
bet::Tensor tensor_ones(const bet::Shape& shape, bet::DType dtype, bet::Device device) {
  return tensor_full(shape, 1.0, dtype, device);
}

}  // namespace emu
