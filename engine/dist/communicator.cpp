// The argument contracts of communicator.h, checked once for every backend.
#include "engine/dist/communicator.h"

namespace bet::dist {

void Communicator::check_operand(const Tensor& t, const char* op) const {
  const std::string who = backend() + " " + op;
  BET_CHECK(t.defined(), who, ": undefined tensor");
  BET_CHECK(t.device() == device(), who, ": the tensor is on ", t.device().str(), ", the communicator's device is ",
            device().str(), device().is_cpu() ? "" : " (one GPU per rank)");
  BET_CHECK(t.dtype() == DType::F32 || t.dtype() == DType::F64, who, ": the tensor is ", dtype_name(t.dtype()),
            "; collectives take f32 or f64 (reduce bf16 gradients as f32)");
  BET_CHECK(t.is_contiguous(), who, ": the tensor is not contiguous (call .contiguous() first)");
}

void Communicator::check_pair(const Tensor& in, const Tensor& out, const char* op, bool gather) const {
  check_operand(in, op);
  check_operand(out, op);
  const std::string who = backend() + " " + op;
  BET_CHECK(in.dtype() == out.dtype(), who, ": in is ", dtype_name(in.dtype()), ", out is ", dtype_name(out.dtype()));
  // The whole side holds size() chunks of the other.
  const Tensor& whole = gather ? out : in;
  const Tensor& chunk = gather ? in : out;
  BET_CHECK(whole.numel() == chunk.numel() * size(), who, ": ", gather ? "out" : "in", " has ", whole.numel(),
            " elements, expected size() * ", gather ? "in" : "out", ".numel() = ", size(), " * ", chunk.numel());
}

void Communicator::check_root(int root, const char* op) const {
  BET_CHECK(root >= 0 && root < size(), backend(), " ", op, ": root ", root, " is not a rank (0..", size() - 1, ")");
}

}  // namespace bet::dist
