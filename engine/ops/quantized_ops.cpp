#include "engine/quantized.h"

#include "engine/autograd.h"
#include "engine/error.h"
#include "engine/ops.h"

namespace bet {

bool quantized_linear_supports(const Tensor& x, const Int8Linear& q) {
  return x.defined() && x.dtype() == DType::F32 && x.device().is_cpu() && x.dim() >= 1 &&
         x.shape().back() == q.in_features();
}

Tensor quantized_linear(const Tensor& x, const Int8Linear& q) {
  BET_CHECK(x.defined(), "quantized_linear: undefined input");
  BET_CHECK(!autograd::needs_grad({&x}), "quantized_linear: int8 layers are for inference only (no gradient); "
            "train or fine-tune the f32 model");
  BET_CHECK(x.dtype() == DType::F32, "quantized_linear: input is ", dtype_name(x.dtype()), ", int8 layers take f32");
  BET_CHECK(x.device().is_cpu(), "quantized_linear: int8 layers run on the CPU only");
  BET_CHECK(x.dim() >= 1 && x.shape().back() == q.in_features(), "quantized_linear: input ", shape_str(x.shape()),
            " does not match in_features ", q.in_features());
  const int64_t K = q.in_features(), N = q.out_features();
  // Rows of x: read in place when its last dim is dense and its rows evenly spaced.
  Tensor xs = x;
  int64_t rows = K ? x.numel() / K : 0;
  int64_t ldx = K;
  bool dense = x.is_contiguous();
  if (!dense && x.dim() == 2 && x.strides()[1] == 1 && x.strides()[0] >= K) {
    dense = true;
    ldx = x.strides()[0];
  }
  if (!dense) xs = x.contiguous();
  Shape out_shape = x.shape();
  out_shape.back() = N;
  Tensor out = Tensor::empty(out_shape, DType::F32, x.device());
  if (rows > 0) q.forward(xs.data<float>(), rows, ldx, out.data<float>());
  return out;
}

std::shared_ptr<const Int8Linear> quantize_linear_weights(const Tensor& weight, const Tensor& bias) {
  BET_CHECK(weight.defined() && weight.dim() == 2, "quantize int8: weight must be [out, in]");
  autograd::NoGradGuard ng;
  Tensor w = weight.detach().to(Device::cpu()).to(DType::F32).contiguous();
  Tensor b;
  if (bias.defined()) b = bias.detach().to(Device::cpu()).to(DType::F32).contiguous();
  return Int8Linear::quantize(w.data<float>(), b.defined() ? b.data<float>() : nullptr, w.size(0), w.size(1));
}

}  // namespace bet
