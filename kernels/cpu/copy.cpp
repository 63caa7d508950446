#include "kernels/copy.h"

#include <cstring>

#include "kernels/cpu/bf16.h"
#include "kernels/cpu/strided.h"

namespace bet::kernels::cpu {

namespace {

template <typename S, typename D>
void copy_typed(const TensorRef& src, const TensorRef& dst) {
  const S* s = static_cast<const S*>(src.raw_data());
  D* d = static_cast<D*>(dst.raw_data());
  StridedLoop loop = make_loop(dst.shape(), {dst.strides(), src.strides()});
  for_each_run<2>(loop, [&](const std::array<int64_t, 2>& off, int64_t n, const std::array<int64_t, 2>& st) {
    D* dp = d + off[0];
    const S* sp = s + off[1];
    if (st[0] == 1 && st[1] == 1) {
      if constexpr (std::is_same_v<S, D>) {
        std::memcpy(dp, sp, size_t(n) * sizeof(D));
      } else {
        for (int64_t i = 0; i < n; ++i) dp[i] = static_cast<D>(sp[i]);
      }
    } else {
      for (int64_t i = 0; i < n; ++i) dp[i * st[0]] = static_cast<D>(sp[i * st[1]]);
    }
  });
}

template <typename S>
void copy_from(const TensorRef& src, const TensorRef& dst) {
  switch (dst.dtype()) {
    case DType::F32: return copy_typed<S, float>(src, dst);
    case DType::F64: return copy_typed<S, double>(src, dst);
    case DType::I32: return copy_typed<S, int32_t>(src, dst);
    case DType::I64: return copy_typed<S, int64_t>(src, dst);
    case DType::BF16: return copy_typed<S, BF16>(src, dst);
    default: fail("copy: dtype ", dtype_name(dst.dtype()), " not supported on cpu");
  }
}

template <typename D>
void fill_typed(const TensorRef& dst, D v) {
  D* d = static_cast<D*>(dst.raw_data());
  StridedLoop loop = make_loop(dst.shape(), {dst.strides()});
  for_each_run<1>(loop, [&](const std::array<int64_t, 1>& off, int64_t n, const std::array<int64_t, 1>& st) {
    D* dp = d + off[0];
    for (int64_t i = 0; i < n; ++i) dp[i * st[0]] = v;
  });
}

}  // namespace

void copy(const TensorRef& src, const TensorRef& dst) {
  BET_CHECK(src.shape() == dst.shape(), "copy: shapes ", shape_str(src.shape()), " and ",
            shape_str(dst.shape()), " differ");
  if (src.numel() == 0) return;
  switch (src.dtype()) {
    case DType::F32: return copy_from<float>(src, dst);
    case DType::F64: return copy_from<double>(src, dst);
    case DType::I32: return copy_from<int32_t>(src, dst);
    case DType::I64: return copy_from<int64_t>(src, dst);
    case DType::BF16: return copy_from<BF16>(src, dst);
    default: fail("copy: dtype ", dtype_name(src.dtype()), " not supported on cpu");
  }
}

void fill(const TensorRef& dst, double value) {
  if (dst.numel() == 0) return;
  switch (dst.dtype()) {
    case DType::F32: return fill_typed<float>(dst, float(value));
    case DType::F64: return fill_typed<double>(dst, value);
    case DType::I32: return fill_typed<int32_t>(dst, int32_t(value));
    case DType::I64: return fill_typed<int64_t>(dst, int64_t(value));
    case DType::BF16: return fill_typed<BF16>(dst, BF16(value));
    default: fail("fill: dtype ", dtype_name(dst.dtype()), " not supported on cpu");
  }
}

}  // namespace bet::kernels::cpu
