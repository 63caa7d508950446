#include "model/context.h"

#include "engine/error.h"

namespace bet::model {

SeqContext SeqContext::from_lengths(const std::vector<int64_t>& lengths, int64_t S, bool causal, DType dtype,
                                    Device device) {
  const int64_t B = int64_t(lengths.size());
  std::vector<double> mask(size_t(B * S)), nctx(size_t(B * S));
  for (int64_t b = 0; b < B; ++b) {
    int64_t n = lengths[size_t(b)];
    BET_CHECK(n >= 1 && n <= S, "SeqContext: sequence ", b, " has length ", n, " (must be 1..", S, ")");
    for (int64_t t = 0; t < S; ++t) {
      mask[size_t(b * S + t)] = t < n ? 1.0 : 0.0;
      nctx[size_t(b * S + t)] = causal ? double(std::min(t + 1, n)) : double(n);
    }
  }
  SeqContext c;
  c.mask = Tensor::from_vector<double>(mask, {B, S}).to(dtype);
  c.n_ctx = Tensor::from_vector<double>(nctx, {B, S}).to(dtype);
  c.lengths = Tensor::from_vector<int64_t>(lengths, {B});
  c.positions = Tensor::arange(S);
  c.causal = causal;
  return device.is_cpu() ? c : c.to(device);
}

SeqContext SeqContext::to(Device device) const {
  SeqContext c = *this;
  for (Tensor* t : {&c.mask, &c.lengths, &c.n_ctx, &c.positions, &c.sequence_index})
    if (t->defined()) *t = t->to(device);
  return c;
}

}  // namespace bet::model
