#include "engine/tensor.h"

#include "bet_config.h"
#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/ops/dispatch.h"
#include "kernels/copy.h"
#include "platform/memory.h"

namespace bet {

namespace {
// Strided copy with conversion between two tensors on one device.
void copy_on_device(const Tensor& src, const Tensor& dst, const char* op) {
  BET_KERNEL(ops_detail::dispatch(op, {&src, &dst}), copy(src, dst));
}

// n dense bytes from one device's memory to another's (either may be the CPU).
void copy_bytes(const Tensor& dst, const Tensor& src, size_t n) {
  const kernels::TensorRef d = dst, s = src;  // the addresses, without a host-access check
  platform::copy_bytes(d.raw_data(), dst.device(), s.raw_data(), src.device(), n);
}
}  // namespace

Tensor make_view(const Tensor& base, const Shape& shape, const Shape& strides, int64_t offset) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = base.storage();
  impl->shape = shape;
  impl->strides = strides;
  impl->offset = offset;
  impl->dtype = base.dtype();
  return Tensor(std::move(impl));
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  // The byte count with overflow checks: a product that wraps would allocate a small
  // buffer for a huge shape. 2^48 bytes is beyond any machine's memory.
  constexpr uint64_t kMaxBytes = uint64_t(1) << 48;
  uint64_t bytes = dtype_size(dtype);
  for (auto d : shape) {
    BET_CHECK(d >= 0, "Tensor::empty: negative dim in ", shape_str(shape));
    if (d != 0 && bytes > kMaxBytes / uint64_t(d))
      fail("Tensor::empty: ", shape_str(shape), " needs more than 2^48 bytes");
    bytes *= uint64_t(d);
  }
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = Storage::allocate(size_t(bytes), device);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) { return full(shape, 0.0, dtype, device); }
Tensor Tensor::ones(const Shape& shape, DType dtype, Device device) { return full(shape, 1.0, dtype, device); }

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.fill_(value);
  return t;
}

Tensor Tensor::scalar(double value, DType dtype) { return full({}, value, dtype); }

Tensor Tensor::arange(int64_t n, DType dtype) {
  Tensor t = empty({n}, DType::I64);
  int64_t* p = t.data<int64_t>();
  for (int64_t i = 0; i < n; ++i) p[i] = i;
  return dtype == DType::I64 ? t : t.to(dtype);
}

template <typename T>
Tensor Tensor::from_vector(const std::vector<T>& values, const Shape& shape) {
  BET_CHECK(int64_t(values.size()) == shape_numel(shape), "Tensor::from_vector: ", values.size(),
            " values for shape ", shape_str(shape));
  Tensor t = empty(shape, dtype_of<T>::value);
  std::copy(values.begin(), values.end(), t.data<T>());
  return t;
}
template Tensor Tensor::from_vector(const std::vector<float>&, const Shape&);
template Tensor Tensor::from_vector(const std::vector<double>&, const Shape&);
template Tensor Tensor::from_vector(const std::vector<int32_t>&, const Shape&);
template Tensor Tensor::from_vector(const std::vector<int64_t>&, const Shape&);

Tensor Tensor::from_storage(std::shared_ptr<Storage> storage, const Shape& shape, DType dtype, int64_t offset) {
  BET_CHECK(size_t(offset + shape_numel(shape)) * dtype_size(dtype) <= storage->nbytes(),
            "Tensor::from_storage: shape ", shape_str(shape), " exceeds storage of ", storage->nbytes(), " bytes");
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::move(storage);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->offset = offset;
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

int64_t Tensor::size(int64_t d) const { return shape()[normalize_dim(d, dim(), "Tensor::size")]; }

bool Tensor::is_contiguous() const {
  if (numel() == 0) return true;  // no element to misplace
  int64_t expected = 1;
  for (int64_t i = dim() - 1; i >= 0; --i) {
    if (shape()[i] == 1) continue;
    if (strides()[i] != expected) return false;
    expected *= shape()[i];
  }
  return true;
}

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  Tensor out = empty(shape(), dtype(), device());
  copy_on_device(*this, out, "contiguous");
  return autograd::record("contiguous", out, {*this}, [](const Tensor& g) { return std::vector<Tensor>{g}; });
}

Tensor Tensor::clone() const {
  Tensor out = empty(shape(), dtype(), device());
  copy_on_device(*this, out, "clone");
  return autograd::record("clone", out, {*this}, [](const Tensor& g) { return std::vector<Tensor>{g}; });
}

Tensor Tensor::to(DType t) const {
  if (t == dtype()) return *this;
  Tensor out = empty(shape(), t, device());
  copy_on_device(*this, out, "to(dtype)");
  if (!is_floating(t) || !is_floating(dtype())) return out;
  DType from = dtype();
  return autograd::record("to_dtype", out, {*this}, [from](const Tensor& g) { return std::vector<Tensor>{g.to(from)}; });
}

Tensor Tensor::to(Device d) const {
  if (d == device()) return *this;
  BET_CHECK(d.is_cpu() || d.index < cuda_device_count(), "to(device): ", d.str(), " is not available (",
            cuda_device_count(), " CUDA devices", BET_HAVE_CUDA ? "" : "; this build has no CUDA backend", ")");
  // Dense bytes moved in one copy; recorded (the gradient moves back), as in torch.
  Tensor c = is_contiguous() ? *this : detach().contiguous();
  Tensor out = empty(shape(), dtype(), d);
  copy_bytes(out, c, nbytes());
  if (!is_floating(dtype())) return out;
  const Device from = device();
  return autograd::record("to_device", out, {*this}, [from](const Tensor& g) { return std::vector<Tensor>{g.to(from)}; });
}

template <typename T>
std::vector<T> Tensor::to_vector() const {
  // Converted where the data is (the CPU has no bf16), then brought to the host.
  Tensor c = detach().to(dtype_of<T>::value).contiguous().to(Device::cpu());
  const T* p = c.data<T>();
  return std::vector<T>(p, p + c.numel());
}
template std::vector<float> Tensor::to_vector() const;
template std::vector<double> Tensor::to_vector() const;
template std::vector<int32_t> Tensor::to_vector() const;
template std::vector<int64_t> Tensor::to_vector() const;

double Tensor::item() const {
  BET_CHECK(numel() == 1, "Tensor::item: tensor of shape ", shape_str(shape()), " has ", numel(), " elements");
  return to_vector<double>()[0];
}

void Tensor::copy_(const Tensor& src) {
  BET_CHECK(src.shape() == shape(), "copy_: source shape ", shape_str(src.shape()), " differs from ",
            shape_str(shape()));
  // Between devices: the source comes over first (dense), then a strided copy here.
  copy_on_device(src.device() == device() ? src : src.detach().to(device()), *this, "copy_");
}

void Tensor::fill_(double value) { BET_KERNEL(ops_detail::dispatch("fill_", {this}), fill(*this, value)); }

Tensor& Tensor::set_requires_grad(bool r) {
  BET_CHECK(!r || is_floating(dtype()), "set_requires_grad: ", dtype_name(dtype()), " tensors have no gradient");
  impl().requires_grad = r;
  return *this;
}

void Tensor::retain_grad() { impl().retains_grad = true; }

void Tensor::backward(const Tensor& grad) const {
  Tensor seed = grad;
  if (!seed.defined()) {
    BET_CHECK(numel() == 1, "backward: implicit gradient needs a one-element tensor, got ", shape_str(shape()));
    seed = Tensor::ones(shape(), dtype(), device());
  }
  autograd::run_backward(*this, seed);
}

Tensor Tensor::detach() const { return make_view(*this, shape(), strides(), offset()); }

}  // namespace bet
