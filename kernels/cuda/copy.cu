// Strided copy with dtype conversion, and fill, on the GPU: one grid-stride loop
// over the destination (kernels/cuda/launch.cuh); a dense copy between equal dtypes
// is a device-to-device memcpy.
#include "kernels/copy.h"
#include "kernels/cuda/launch.cuh"

namespace bet::kernels::cuda {

namespace {

template <typename D>
__device__ __forceinline__ D load_as(const void* p, int64_t off, DType dt) {
  switch (dt) {
    case DType::F32: return convert<D>(static_cast<const float*>(p)[off]);
    case DType::F64: return convert<D>(static_cast<const double*>(p)[off]);
    case DType::BF16: return convert<D>(static_cast<const bf16*>(p)[off]);
    case DType::F16: return convert<D>(static_cast<const f16*>(p)[off]);
    case DType::I32: return convert<D>(static_cast<const int32_t*>(p)[off]);
    case DType::I64: return convert<D>(static_cast<const int64_t*>(p)[off]);
  }
  return D{};
}

template <typename D>
void copy_t(const TensorRef& src, const TensorRef& dst) {
  const void* ps = src.raw_data();
  const DType sdt = src.dtype();
  D* pd = ptr<D>(dst);
  auto g = geom_of<2>(dst.shape(), {&dst.strides(), &src.strides()}, "copy");
  launch_foreach(g, [=] __device__(auto* off) { pd[off[0]] = load_as<D>(ps, off[1], sdt); });
}

template <typename D>
void fill_t(const TensorRef& dst, double value) {
  const D v = convert<D>(value);
  D* pd = ptr<D>(dst);
  auto g = geom_of<1>(dst.shape(), {&dst.strides()}, "fill");
  launch_foreach(g, [=] __device__(auto* off) { pd[off[0]] = v; });
}

}  // namespace

void copy(const TensorRef& src, const TensorRef& dst) {
  BET_CHECK(src.shape() == dst.shape(), "copy: shapes ", shape_str(src.shape()), " and ", shape_str(dst.shape()),
            " differ");
  if (src.numel() == 0) return;
  check_cuda(src, "copy");
  check_cuda(dst, "copy");
  BET_CHECK(src.device() == dst.device(), "copy: tensors on ", src.device().str(), " and ", dst.device().str());
  DeviceGuard dg(dst);
  if (src.dtype() == dst.dtype() && src.is_contiguous() && dst.is_contiguous()) {
    BET_CUDA_CHECK(cudaMemcpyAsync(dst.raw_data(), src.raw_data(), dst.nbytes(), cudaMemcpyDeviceToDevice, 0));
    return;
  }
  dispatch_all(dst.dtype(), "copy", [&](auto tag) { copy_t<decltype(tag)>(src, dst); });
}

void fill(const TensorRef& dst, double value) {
  if (dst.numel() == 0) return;
  check_cuda(dst, "fill");
  DeviceGuard dg(dst);
  dispatch_all(dst.dtype(), "fill", [&](auto tag) { fill_t<decltype(tag)>(dst, value); });
}

}  // namespace bet::kernels::cuda
