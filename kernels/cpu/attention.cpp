// Fused attention on the CPU: there is none. bet::attention composes matmul, softmax
// and dropout here, which is also what keeps the CPU's values bit-identical to the
// model's composite.
#include "kernels/attention.h"

namespace bet::kernels::cpu {

bool has_fused_attention(const TensorRef&) { return false; }

void attention_forward(const TensorRef&, const TensorRef&, const TensorRef&, const TensorRef&, double, uint64_t,
                       uint64_t, const TensorRef&, const TensorRef&) {
  fail("attention: the CPU has no fused kernels (has_fused_attention is false)");
}

void attention_backward(const TensorRef&, const TensorRef&, const TensorRef&, const TensorRef&, const TensorRef&,
                        const TensorRef&, const TensorRef&, double, uint64_t, uint64_t, const TensorRef&,
                        const TensorRef&, const TensorRef&) {
  fail("attention: the CPU has no fused kernels (has_fused_attention is false)");
}

}  // namespace bet::kernels::cpu
