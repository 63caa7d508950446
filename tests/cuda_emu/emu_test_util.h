// Shared by the test_cuda_emu sources: device tensors over emulated device memory,
// seeded inputs and the comparison of a device result with the CPU kernel's.
#pragma once
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "engine/ops.h"
#include "engine/random.h"
#include "engine/tensor.h"
#include "kernels/copy.h"
#include "platform/cuda/runtime.h"
#include "tests/cuda_emu/emu_stats.h"
#include "tests/gpu_op_harness.h"

namespace emutest {

using namespace bet;
namespace kcuda = bet::kernels::cuda;
namespace kcpu = bet::kernels::cpu;

// A device tensor viewing a copy of h's whole storage with h's shape, strides and
// offset: the kernel sees the same layout as the CPU kernel does.
inline Tensor to_dev(const Tensor& h, int device = 0) {
  const auto& st = h.storage();
  auto ds = Storage::allocate(st->nbytes(), Device::cuda(device));
  platform::cuda::copy_host_to_device(ds->data(), st->data(), st->nbytes(), device);
  return make_view(Tensor::from_storage(ds, {0}, h.dtype(), 0), h.shape(), h.strides(), h.offset());
}

// A fresh device output between two canaries of kCanary poisoned elements (the
// allocator hook fills memory with 0xff): check_close fails on a write past either end.
constexpr int64_t kCanary = 32;
inline Tensor empty_dev(const Shape& s, DType dt, int device = 0) {
  const int64_t n = shape_numel(s) + 2 * kCanary;
  auto st = Storage::allocate(size_t(n) * dtype_size(dt), Device::cuda(device));
  return make_view(Tensor::from_storage(st, {n}, dt, 0), s, contiguous_strides(s), kCanary);
}
inline bool has_canaries(const Tensor& t) {
  return t.device().is_cuda() && t.offset() == kCanary &&
         t.storage()->nbytes() == size_t(t.numel() + 2 * kCanary) * dtype_size(t.dtype());
}
inline void check_canaries(const Tensor& t) {
  std::vector<unsigned char> h(t.storage()->nbytes());
  platform::cuda::copy_device_to_host(h.data(), t.storage()->data(), h.size(), t.device().index);
  const size_t pad = size_t(kCanary) * dtype_size(t.dtype());
  size_t hit = 0;
  for (size_t i = 0; i < pad; ++i) hit += (h[i] != 0xff) + (h[h.size() - 1 - i] != 0xff);
  CHECK_MESSAGE(hit == 0, hit, " bytes written outside the output");
}

// A contiguous CPU copy (a strided device tensor is first made contiguous on the device).
inline Tensor to_host(const Tensor& t) {
  Tensor c = t;
  if (!t.is_contiguous()) {
    c = Tensor::empty(t.shape(), t.dtype(), t.device());
    kcuda::copy(t, c);
  }
  Tensor h = Tensor::empty(t.shape(), t.dtype());
  platform::cuda::copy_device_to_host(h.raw_data(), c.raw_data(), h.nbytes(), t.device().index);
  return h;
}

inline double half_value(uint16_t h) {
  const int e = (h >> 10) & 31, m = h & 1023;
  const double v = e == 31 ? (m ? NAN : INFINITY) : e == 0 ? std::ldexp(double(m), -24) : std::ldexp(double(m + 1024), e - 25);
  return (h >> 15) ? -v : v;
}

// Values of a tensor on either device, any dtype, as doubles in row-major order.
inline std::vector<double> values(const Tensor& t) {
  Tensor h = t.device().is_cuda() ? to_host(t) : t.contiguous();
  if (h.dtype() == DType::F16) {
    std::vector<double> v(size_t(h.numel()));
    const auto* p = static_cast<const uint16_t*>(h.raw_data());
    for (size_t i = 0; i < v.size(); ++i) v[i] = half_value(p[i]);
    return v;
  }
  return h.to_vector<double>();
}

struct Tol {
  double rtol, atol;
};
// Per dtype: f64 a few ulp of a differently ordered sum; f32 a few ulp (the CPU's
// vectorised exp/erf/tanh are polynomials of a few ulp, the device's libm-grade);
// bf16 one unit in the last place (the CPU rounds its f32 result, the device its own).
inline Tol tol_of(DType dt, double scale = 1.0) {
  switch (dt) {
    case DType::F64: return {1e-12 * scale, 1e-13 * scale};
    case DType::F32: return {4e-6 * scale, 2e-7 * scale};
    case DType::BF16: case DType::F16: return {(1.0 / 128) * scale, 1e-6 * scale};
    default: return {0.0, 0.0};
  }
}
constexpr Tol kExact{0.0, 0.0};

// got (either device) against want (CPU): same shape; |g - w| <= atol + rtol |w|
// elementwise, NaN where want is NaN, infinities equal.
inline void check_close(const Tensor& got, const Tensor& want, Tol tol, const std::string& what) {
  INFO(what);
  REQUIRE(shape_str(got.shape()) == shape_str(want.shape()));
  if (has_canaries(got)) check_canaries(got);
  const std::vector<double> g = values(got), w = values(want);
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    const bool ok = std::isnan(w[i])   ? std::isnan(g[i])
                    : std::isinf(w[i]) ? g[i] == w[i]
                                       : std::abs(g[i] - w[i]) <= tol.atol + tol.rtol * std::abs(w[i]);
    if (!ok && bad++ == 0) first = i;
  }
  CHECK_MESSAGE(bad == 0, bad, " of ", w.size(), " elements differ; first at ", first, ": device ",
                bad ? g[first] : 0.0, ", cpu ", bad ? w[first] : 0.0);
}

// Bit-for-bit equality of two tensors' elements (same dtype).
inline void check_bits(const Tensor& got, const Tensor& want, const std::string& what) {
  INFO(what);
  REQUIRE(got.dtype() == want.dtype());
  REQUIRE(shape_str(got.shape()) == shape_str(want.shape()));
  if (has_canaries(got)) check_canaries(got);
  const Tensor g = got.device().is_cuda() ? to_host(got) : got.contiguous();
  const Tensor w = want.device().is_cuda() ? to_host(want) : want.contiguous();
  CHECK(std::memcmp(g.raw_data(), w.raw_data(), g.nbytes()) == 0);
}

// Seeded inputs: the GPU suites' (tests/gpu_op_harness.h).
using bet::test::gpu::ids;
using bet::test::gpu::U;

// Where the CPU computes what the device computes in dtype dt (bf16: in f32).
inline DType cpu_dtype(DType dt) { return dt == DType::BF16 ? DType::F32 : dt; }

// Fails the test when the emulated runtime reported an error (a kernel fault, a bad
// copy) that the kernel's own checks did not turn into an exception.
struct NoEmuErrors {
  long before = emu::stats().errors;
  ~NoEmuErrors() {
    if (std::uncaught_exceptions() == 0)
      CHECK_MESSAGE(emu::stats().errors == before, "the emulated CUDA runtime reported errors (see stderr)");
  }
};

}  // namespace emutest
