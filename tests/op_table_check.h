// What the test drivers of the op table (tests/op_table.h) share: a sample's inputs
// (PyTorch's, from tests/reference/, where the sample names them), and the table as
// cases of the GPU-against-CPU harness (tests/gpu_op_harness.h).
#pragma once
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "tests/gpu_op_harness.h"
#include "tests/op_table.h"
#include "tests/reference_data.h"

namespace bet::optable {

// A reference value as a tensor: {"shape", "data"}, a (nested) list, or a number.
inline Tensor ref_value(const nlohmann::json& j, DType dt) {
  if (j.is_object()) return testing::ref_tensor(j, DType::F64).to(dt);
  Shape shape;
  const nlohmann::json* p = &j;
  while (p->is_array()) {
    shape.push_back(int64_t(p->size()));
    if (p->empty()) break;
    p = &(*p)[0];
  }
  std::vector<double> v;
  auto flat = [&](auto&& self, const nlohmann::json& e) -> void {
    if (e.is_array())
      for (const auto& x : e) self(self, x);
    else
      v.push_back(e.is_null() ? -INFINITY : e.get<double>());
  };
  flat(flat, j);
  return Tensor::from_vector<double>(v, shape).to(dt);
}

inline Tensor ref_at(const std::string& file, const std::string& pointer, DType dt) {
  const nlohmann::json& root = testing::reference_file(file);
  const nlohmann::json::json_pointer ptr(pointer);
  REQUIRE_MESSAGE(root.contains(ptr), "tests/reference/" << file << " has no " << pointer);
  return ref_value(root.at(ptr), dt);
}

// A sample's inputs: made, or read from the reference file.
inline Inputs sample_inputs(const Sample& s) {
  if (!s.ref.defined()) return s.make();
  Inputs in;
  for (const auto& [ptr, dt] : s.ref.inputs) in.push_back(ref_at(s.ref.file, ptr, dt));
  return in;
}

inline std::string case_name(const OpInfo& op, const Sample& s) { return op.name + " | " + s.name; }

// A sample as a case of the GPU harness (f32 and f64; bf16 where the row lists it).
// `op` and `s` must outlive the case (the rows of op_table() do).
inline test::gpu::OpCase gpu_case(const OpInfo& op, const Sample& s) {
  const OpInfo* o = &op;
  const Sample* sp = &s;
  return {case_name(op, s), [sp] { return sample_inputs(*sp); }, [o, sp](const Inputs& x) { return run_sample(*o, *sp, x); },
          s.tol, op.differentiable, op.has_bf16()};
}

inline std::vector<test::gpu::OpCase> as_gpu_cases(const std::vector<OpInfo>& table) {
  std::vector<test::gpu::OpCase> cases;
  for (const OpInfo& op : table)
    for (const Sample& s : op.samples) cases.push_back(gpu_case(op, s));
  return cases;
}

}  // namespace bet::optable
