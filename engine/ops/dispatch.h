// How an op reaches its kernels. At its start an op calls
//
//   const kernels::Backend be = dispatch("add", {&a, &b});
//
// with every tensor argument (optional ones through maybe()): one check for all of
// them, that each is defined, that they live on one device, and that this build has
// kernels for it, each error naming the op and the shapes. Then it calls kernels of
// that backend, declared once per family in kernels/<family>.h:
//
//   BET_KERNEL(be, binary(BinaryOp::Add, a, b, out));   // kernels::cpu or kernels::cuda
//
// (kernels/dispatch.h). Backwards dispatch on the tensors they compute with.
#pragma once
#include <initializer_list>

#include "engine/tensor.h"
#include "kernels/dispatch.h"

namespace bet::ops_detail {

kernels::Backend dispatch(const char* op, std::initializer_list<const Tensor*> tensors);

// An optional argument for dispatch(): checked when defined, skipped otherwise.
inline const Tensor* maybe(const Tensor& t) { return t.defined() ? &t : nullptr; }

}  // namespace bet::ops_detail
