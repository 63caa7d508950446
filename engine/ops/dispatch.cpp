#include "engine/ops/dispatch.h"

namespace bet::ops_detail {

kernels::Backend dispatch(const char* op, std::initializer_list<const Tensor*> tensors) {
  const Tensor* first = nullptr;
  size_t i = 0;
  for (const Tensor* t : tensors) {
    ++i;
    if (!t) continue;  // an absent optional argument
    BET_CHECK(t->defined(), op, ": argument ", i, " is an undefined tensor");
    if (!first) {
      first = t;
      continue;
    }
    BET_CHECK(t->device() == first->device(), op, ": tensors on different devices: ", first->device().str(), " ",
              shape_str(first->shape()), " and ", t->device().str(), " ", shape_str(t->shape()));
  }
  BET_CHECK(first, op, ": no tensor argument");
  const Device d = first->device();
  BET_CHECK(kernels::has_backend(d), op, ": not available on ", d.str(), " in this build");
  return kernels::backend_of(d);
}

}  // namespace bet::ops_detail
