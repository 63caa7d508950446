// THE op table (as PyTorch's OpInfo and ggml's test-backend-ops): every op declared in
// engine/ops.h, once, with a function building it from inputs, sample inputs (broadcast,
// non-contiguous, size-1 and empty shapes, the kernels' size thresholds), its dtypes,
// whether it is differentiable, where PyTorch's reference values are, and the shapes
// `betctl bench ops` times it on. Every generic op check is driven from here:
//
//   tests/test_op_table.cpp  f64 finite-difference gradients (CPU), CPU f32 against f64
//                            (forward and backward), PyTorch's reference values, and the
//                            coverage checks: an op declared in engine/ops.h without a row
//                            fails, so does a row missing a kind of sample it needs;
//   tests/test_cuda_ops.cpp  every sample on the GPU (or the emulated one of the
//                            build-cudaemu configuration) against the CPU, forward and
//                            backward, f32/f64 (and bf16 where the row lists it);
//   bench/bench_ops.cpp      the op rows of `betctl bench ops` (the `bench` cases).
//
// Header-only and free of test frameworks, so betctl (through bench/bench_ops.cpp) and
// the tests include the same table without a library of its own. Op-specific semantics
// (exact values, ties, error messages, thread-count independence) stay in the per-op
// test files (tests/test_{elementwise,reduce,nn_ops,matmul,index_ops,...}.cpp).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "engine/ops.h"
#include "engine/random.h"

namespace bet::optable {

using Inputs = std::vector<Tensor>;
using Args = std::vector<double>;  // an op's non-tensor arguments (dims, scalars, flags)

// The kinds of sample every row must cover (or waive, saying why).
enum Tag : unsigned {
  kBroadcast = 1,  // operands of different shapes broadcast together (broadcasting ops only)
  kStrided = 2,    // a non-contiguous operand (transposed, sliced with a step, expanded)
  kSize1 = 4,      // size-1 dims or a 0-d tensor
  kEmpty = 8,      // a zero-size dim
};
inline const char* tag_name(unsigned t) {
  switch (t) {
    case kBroadcast: return "broadcast";
    case kStrided: return "non-contiguous";
    case kSize1: return "size-1";
    case kEmpty: return "empty";
    default: return "?";
  }
}

// ---------------------------------------------------------------- inputs

// Uniform f64 in [lo, hi), seeded.
inline Tensor U(const Shape& s, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  return Generator(seed).uniform(s, lo, hi, DType::F64);
}
// Uniform f64 in [lo, hi) kept at least `margin` away from each of `kinks` (where the
// op is not differentiable: finite differences there are meaningless).
inline Tensor away(const Shape& s, uint64_t seed, double lo, double hi, std::vector<double> kinks,
                   double margin = 0.05) {
  std::vector<double> v = U(s, seed, lo, hi).to_vector<double>();
  for (double& x : v)
    for (double k : kinks)
      if (std::abs(x - k) < margin) x = x < k ? k - margin : k + margin;
  return Tensor::from_vector<double>(v, s);
}
// Distinct values spread over [lo, hi] (no ties: max and argmax have one answer).
inline Tensor distinct(const Shape& s, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  const int64_t n = shape_numel(s);
  std::vector<int64_t> p = Generator(seed).permutation(n);
  std::vector<double> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = lo + (hi - lo) * (double(p[size_t(i)]) + 0.5) / double(n);
  return Tensor::from_vector<double>(v, s);
}
// Values k * step + phase, k integer in [-4, 4]: two grids with different phases never
// come closer than |phase difference| (maximum's operands never tie).
inline Tensor grid(const Shape& s, uint64_t seed, double step, double phase) {
  Generator g(seed);
  std::vector<double> v(size_t(shape_numel(s)));
  for (double& x : v) x = (double(g.randint(9)) - 4.0) * step + phase;
  return Tensor::from_vector<double>(v, s);
}
// Integers in [0, n), i64 or i32.
inline Tensor ids(const Shape& s, int64_t n, uint64_t seed, DType dt = DType::I64) {
  Generator g(seed);
  std::vector<int64_t> v(size_t(shape_numel(s)));
  for (auto& x : v) x = int64_t(g.randint(uint64_t(n)));
  return Tensor::from_vector(v, s).to(dt);
}
inline Tensor ints(const std::vector<int64_t>& v, const Shape& s, DType dt = DType::I64) {
  return Tensor::from_vector(v, s).to(dt);
}
// 0/1 mask (i64), about `keep` of it ones.
inline Tensor mask01(const Shape& s, uint64_t seed, double keep = 0.7) {
  std::vector<double> u = U(s, seed, 0.0, 1.0).to_vector<double>();
  std::vector<int64_t> v(u.size());
  for (size_t i = 0; i < v.size(); ++i) v[i] = u[i] < keep ? 1 : 0;
  return Tensor::from_vector(v, s);
}
// Standard normal f32 (bench inputs).
inline Tensor N32(const Shape& s, uint64_t seed) { return Generator(seed).normal(s, 0.0, 1.0); }

// A number as a sample name shows it ("1.7", "-0.5").
inline std::string num(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%g", v);
  return b;
}

inline std::vector<int64_t> int_args(const Args& a, size_t from = 0, size_t to = size_t(-1)) {
  std::vector<int64_t> v;
  for (size_t i = from; i < a.size() && i < to; ++i) v.push_back(int64_t(a[i]));
  return v;
}

// ---------------------------------------------------------------- rows

// Where PyTorch's values are: tests/reference/<file>, JSON pointers (RFC 6901) to the
// sample's inputs and expected output (a {"shape", "data"} tensor, a plain list or a
// number), and optionally to the upstream gradient (default: ones) and the expected
// gradients of some inputs. Read by the tests only.
struct Ref {
  Ref() = default;
  Ref(std::string f, std::vector<std::pair<std::string, DType>> in, std::string o)
      : file(std::move(f)), inputs(std::move(in)), out(std::move(o)) {}
  std::string file;
  std::vector<std::pair<std::string, DType>> inputs;  // pointer, dtype
  std::string out;
  std::string grad_out;
  std::vector<std::pair<size_t, std::string>> grads;  // input index, pointer
  bool defined() const { return !file.empty(); }
};

struct Sample {
  std::string name;
  std::function<Inputs()> make;               // CPU inputs: floating ones f64, indices i32/i64
  unsigned tags = 0;                          // Tag bits this sample covers
  Args args;                                  // empty: the op's default args
  std::function<Inputs(const Inputs&)> view;  // views taken inside the op's function
                                              // (non-contiguous samples), or none
  double tol = 1.0;                           // multiplier on the drivers' tolerances
  bool fd = true;                             // run the f64 finite-difference check (false:
                                              // kernel-path sizes too big for it)
  Ref ref;                                    // PyTorch's values (inputs come from there)

  Sample& with(Args a) { return args = std::move(a), *this; }
  Sample& viewed(std::function<Inputs(const Inputs&)> v) { return view = std::move(v), *this; }
  Sample& tolerance(double t) { return tol = t, *this; }
  Sample& no_fd() { return fd = false, *this; }
  Sample& reference(Ref r) { return ref = std::move(r), *this; }
};

// The op's costs for a bench row: a product (FLOPs of batch x M x N x K, against
// dnnl_sgemm on the same shape) or memory-bound (bytes read + written, against a copy of
// the same bytes).
struct BenchCost {
  bool gemm = false;
  int64_t batch = 1, M = 0, N = 0, K = 0;
  bool trans_b = false;
  double bytes = 0;
};
inline BenchCost gemm_cost(int64_t batch, int64_t M, int64_t N, int64_t K, bool trans_b) {
  return {true, batch, M, N, K, trans_b, 0};
}
inline BenchCost bytes_cost(double bytes) { return {false, 1, 0, 0, 0, false, bytes}; }

struct BenchCase {
  std::string label;  // the row's name in `betctl bench ops`
  std::string shape;  // its shape column
  std::function<Inputs()> make;  // f32 inputs (floating ones get requires_grad, as in training)
  Args args;
  std::function<Inputs(const Inputs&)> view;
  BenchCost cost;
};

struct OpInfo {
  std::string name;  // unique row name: the function, or "add(scalar)" for an overload
  std::string decl;  // the function declared in engine/ops.h this row covers
  std::function<Tensor(const Inputs&, const Args&)> fn;
  Args args;                          // default args of the samples
  bool differentiable = true;         // floating output with gradients to floating inputs
  std::vector<size_t> nondiff;        // floating inputs that are data, not differentiated
  std::vector<DType> dtypes = {DType::F32, DType::F64};  // BF16: the GPU also runs it in
                                                         // bf16 (against the CPU's f32)
  bool broadcasts = false;            // needs a broadcast sample
  bool isa_variants = false;          // its CPU kernel has AVX2 and AVX-512 forms (kernels/cpu/isa.h):
                                      // tests/test_cpu_isa.cpp compares them on the samples
  std::vector<std::pair<unsigned, std::string>> waived;  // tags it cannot have, and why
  std::vector<Sample> samples;
  std::vector<BenchCase> bench;

  Sample& sample(std::string sname, std::function<Inputs()> make, unsigned tags = 0) {
    Sample s;
    s.name = std::move(sname);
    s.make = std::move(make);
    s.tags = tags;
    samples.push_back(std::move(s));
    return samples.back();
  }
  Sample& ref_sample(std::string sname, Ref r, unsigned tags = 0) {
    Sample& s = sample(std::move(sname), nullptr, tags);
    s.ref = std::move(r);
    return s;
  }
  OpInfo& waive(unsigned tag, std::string why) { return waived.push_back({tag, std::move(why)}), *this; }
  OpInfo& bench_case(std::string label, std::string shape, std::function<Inputs()> make, BenchCost cost,
                     Args a = {}, std::function<Inputs(const Inputs&)> view = nullptr) {
    bench.push_back({std::move(label), std::move(shape), std::move(make), std::move(a), std::move(view), cost});
    return *this;
  }
  bool has_bf16() const {
    for (DType d : dtypes)
      if (d == DType::BF16) return true;
    return false;
  }
  bool is_nondiff(size_t i) const {
    for (size_t k : nondiff)
      if (k == i) return true;
    return false;
  }
};

// Runs `op` on a sample's inputs (views applied first).
inline Tensor run_sample(const OpInfo& op, const Sample& s, const Inputs& in) {
  const Args& a = s.args.empty() ? op.args : s.args;
  return s.view ? op.fn(s.view(in), a) : op.fn(in, a);
}
inline Tensor run_bench(const OpInfo& op, const BenchCase& b, const Inputs& in) {
  const Args& a = b.args.empty() ? op.args : b.args;
  return b.view ? op.fn(b.view(in), a) : op.fn(in, a);
}

inline std::vector<OpInfo> build_op_table();

// The table, built once.
inline const std::vector<OpInfo>& op_table() {
  static const std::vector<OpInfo> table = build_op_table();
  return table;
}

// ---------------------------------------------------------------- the rows

namespace detail {

inline std::string dims(std::initializer_list<int64_t> d) {
  std::string s;
  for (int64_t x : d) {
    if (!s.empty()) s += 'x';
    s += std::to_string(x);
  }
  return s;
}

// The first input transposed (dims 0 and 1), the others as they are.
inline Inputs T0(const Inputs& x) {
  Inputs v = x;
  v[0] = transpose(x[0], 0, 1);
  return v;
}

// One row per view op: the views share storage, their backward runs real ops.
inline void view_rows(std::vector<OpInfo>& t) {
  auto def = [&](const char* name, std::function<Tensor(const Inputs&, const Args&)> fn) -> OpInfo& {
    OpInfo op;
    op.name = op.decl = name;
    op.fn = std::move(fn);
    t.push_back(std::move(op));
    return t.back();
  };
  {
    OpInfo& op = def("reshape", [](const Inputs& x, const Args& a) { return reshape(x[0], int_args(a)); });
    op.waive(kBroadcast, "not a broadcasting op");
    op.sample("[3, 4] -> [2, -1, 3] (a view)", [] { return Inputs{U({3, 4}, 1)}; }).with({2, -1, 3});
    op.sample("transposed -> [12] (copies)", [] { return Inputs{U({4, 3}, 2)}; }, kStrided).with({12}).viewed(T0);
    op.sample("[1, 3, 1] -> [3]", [] { return Inputs{U({1, 3, 1}, 3)}; }, kSize1).with({3});
    op.sample("[0, 4] -> [4, 0]", [] { return Inputs{U({0, 4}, 4)}; }, kEmpty).with({4, 0});
  }
  {
    OpInfo& op = def("flatten", [](const Inputs& x, const Args& a) { return flatten(x[0], int64_t(a[0]), int64_t(a[1])); });
    op.waive(kBroadcast, "not a broadcasting op");
    op.sample("[2, 3, 4] dims 1..2", [] { return Inputs{U({2, 3, 4}, 5)}; }).with({1, 2});
    op.sample("permuted, all dims", [] { return Inputs{U({4, 3, 2}, 6)}; }, kStrided)
        .with({0, -1})
        .viewed([](const Inputs& x) { return Inputs{permute(x[0], {2, 0, 1})}; });
    op.sample("[1, 1, 3] dims 0..1", [] { return Inputs{U({1, 1, 3}, 7)}; }, kSize1).with({0, 1});
    op.sample("[2, 0, 3] dims 1..-1", [] { return Inputs{U({2, 0, 3}, 8)}; }, kEmpty).with({1, -1});
  }
  {
    OpInfo& op = def("transpose", [](const Inputs& x, const Args& a) { return transpose(x[0], int64_t(a[0]), int64_t(a[1])); });
    op.waive(kBroadcast, "not a broadcasting op");
    op.sample("[3, 4]", [] { return Inputs{U({3, 4}, 9)}; }).with({0, 1});
    op.sample("of a stride-2 slice, dims -1 and 0", [] { return Inputs{U({3, 8}, 10)}; }, kStrided)
        .with({-1, 0})
        .viewed([](const Inputs& x) { return Inputs{slice(x[0], 1, 1, 8, 2)}; });
    op.sample("[1, 4, 1] dims 0 and 2", [] { return Inputs{U({1, 4, 1}, 11)}; }, kSize1).with({0, 2});
    op.sample("[0, 3]", [] { return Inputs{U({0, 3}, 12)}; }, kEmpty).with({0, 1});
  }
  {
    OpInfo& op = def("permute", [](const Inputs& x, const Args& a) { return permute(x[0], int_args(a)); });
    op.waive(kBroadcast, "not a broadcasting op");
    op.sample("[2, 3, 4] -> (2, 0, 1)", [] { return Inputs{U({2, 3, 4}, 13)}; }).with({2, 0, 1});
    op.sample("of a transpose", [] { return Inputs{U({4, 3, 2}, 14)}; }, kStrided)
        .with({1, 2, 0})
        .viewed([](const Inputs& x) { return Inputs{transpose(x[0], 0, 2)}; });
    op.sample("[1, 3, 1] -> (2, 1, 0)", [] { return Inputs{U({1, 3, 1}, 15)}; }, kSize1).with({2, 1, 0});
    op.sample("[2, 0, 3] -> (1, 2, 0)", [] { return Inputs{U({2, 0, 3}, 16)}; }, kEmpty).with({1, 2, 0});
  }
  {
    OpInfo& op = def("slice", [](const Inputs& x, const Args& a) {
      return slice(x[0], int64_t(a[0]), int64_t(a[1]), int64_t(a[2]), int64_t(a[3]));
    });
    op.waive(kBroadcast, "not a broadcasting op");
    op.sample("[3, 8] dim 1, 1:8:2", [] { return Inputs{U({3, 8}, 17)}; }).with({1, 1, 8, 2});
    op.sample("of a transpose, dim 0, 1:5", [] { return Inputs{U({4, 6}, 18)}; }, kStrided).with({0, 1, 5, 1}).viewed(T0);
    op.sample("[1, 5] dim 1, 0:5:3", [] { return Inputs{U({1, 5}, 19)}; }, kSize1).with({1, 0, 5, 3});
    op.sample("[3, 4] dim 1, 2:2 (empty)", [] { return Inputs{U({3, 4}, 20)}; }, kEmpty).with({1, 2, 2, 1});
  }
  {
    OpInfo& op = def("select", [](const Inputs& x, const Args& a) { return select(x[0], int64_t(a[0]), int64_t(a[1])); });
    op.waive(kBroadcast, "not a broadcasting op");
    op.sample("[3, 4] dim 1, index 2", [] { return Inputs{U({3, 4}, 21)}; }).with({1, 2});
    op.sample("of a transpose, dim 0, index -1", [] { return Inputs{U({3, 4}, 22)}; }, kStrided).with({0, -1}).viewed(T0);
    op.sample("[1, 3] dim 0", [] { return Inputs{U({1, 3}, 23)}; }, kSize1).with({0, 0});
    op.sample("[0, 3] dim 1", [] { return Inputs{U({0, 3}, 24)}; }, kEmpty).with({1, 1});
  }
  {
    OpInfo& op = def("expand", [](const Inputs& x, const Args& a) { return expand(x[0], int_args(a)); });
    op.broadcasts = true;
    op.sample("[3, 1] -> [2, 3, 5]", [] { return Inputs{U({3, 1}, 25)}; }, kBroadcast).with({2, 3, 5});
    op.sample("of a transpose [1, 3] -> [3, 1] -> [3, 4]", [] { return Inputs{U({1, 3}, 26)}; }, kStrided | kBroadcast)
        .with({3, 4})
        .viewed(T0);
    op.sample("0-d -> [4]", [] { return Inputs{U({}, 27)}; }, kSize1 | kBroadcast).with({4});
    op.sample("[1, 3] -> [0, 3]", [] { return Inputs{U({1, 3}, 28)}; }, kEmpty).with({0, 3});
  }
  {
    OpInfo& op = def("unsqueeze", [](const Inputs& x, const Args& a) { return unsqueeze(x[0], int64_t(a[0])); });
    op.waive(kBroadcast, "not a broadcasting op");
    op.sample("[3, 4] at 1", [] { return Inputs{U({3, 4}, 29)}; }).with({1});
    op.sample("of a transpose, at -1", [] { return Inputs{U({3, 4}, 30)}; }, kStrided).with({-1}).viewed(T0);
    op.sample("0-d at 0", [] { return Inputs{U({}, 31)}; }, kSize1).with({0});
    op.sample("[0, 2] at 2", [] { return Inputs{U({0, 2}, 32)}; }, kEmpty).with({2});
  }
  {
    OpInfo& op = def("squeeze", [](const Inputs& x, const Args& a) { return squeeze(x[0], int64_t(a[0])); });
    op.waive(kBroadcast, "not a broadcasting op");
    op.sample("[3, 1, 4] at 1", [] { return Inputs{U({3, 1, 4}, 33)}; }, kSize1).with({1});
    op.sample("of a transpose, at 0", [] { return Inputs{U({3, 1}, 34)}; }, kStrided | kSize1).with({0}).viewed(T0);
    op.sample("[1] -> 0-d", [] { return Inputs{U({1}, 35)}; }, kSize1).with({0});
    op.sample("[0, 1] at 1", [] { return Inputs{U({0, 1}, 36)}; }, kEmpty).with({1});
  }
  {
    OpInfo& op = def("sum_to", [](const Inputs& x, const Args& a) { return sum_to(x[0], int_args(a)); });
    op.broadcasts = true;
    op.sample("[2, 3, 4] -> [3, 1]", [] { return Inputs{U({2, 3, 4}, 37)}; }, kBroadcast).with({3, 1});
    op.sample("of a transpose [4, 3] -> [3]", [] { return Inputs{U({3, 4}, 38)}; }, kStrided | kBroadcast).with({3}).viewed(T0);
    op.sample("[1, 1] -> [1]", [] { return Inputs{U({1, 1}, 39)}; }, kSize1).with({1});
    op.sample("[5, 3] -> 0-d", [] { return Inputs{U({5, 3}, 40)}; }, kSize1 | kBroadcast).with({});
    op.sample("[0, 3] -> [3]", [] { return Inputs{U({0, 3}, 41)}; }, kEmpty | kBroadcast).with({3});
  }
}

// ------------------------------------------------ elementwise

inline void binary_rows(std::vector<OpInfo>& t) {
  struct B {
    const char* name;
    Tensor (*f)(const Tensor&, const Tensor&);
    double lo, hi;     // b's range (div: away from 0)
    bool grid;         // maximum: operands on grids that never tie
  };
  const B ops[] = {{"add", [](const Tensor& a, const Tensor& b) { return add(a, b); }, -1, 1, false},
                   {"sub", [](const Tensor& a, const Tensor& b) { return sub(a, b); }, -1, 1, false},
                   {"mul", [](const Tensor& a, const Tensor& b) { return mul(a, b); }, -1, 1, false},
                   {"div", [](const Tensor& a, const Tensor& b) { return div(a, b); }, 0.5, 1.5, false},
                   {"maximum", [](const Tensor& a, const Tensor& b) { return maximum(a, b); }, -1, 1, true}};
  uint64_t seed = 100;
  for (const B& b : ops) {
    OpInfo op;
    op.name = op.decl = b.name;
    auto f = b.f;
    op.fn = [f](const Inputs& x, const Args&) { return f(x[0], x[1]); };
    op.broadcasts = true;
    op.dtypes = {DType::F32, DType::F64, DType::BF16};
    const double lo = b.lo, hi = b.hi;
    const bool g = b.grid;
    auto A = [g](const Shape& s, uint64_t sd) { return g ? grid(s, sd, 0.2, 0.1) : U(s, sd); };
    auto Bv = [g, lo, hi](const Shape& s, uint64_t sd) { return g ? grid(s, sd, 0.2, 0.0) : U(s, sd, lo, hi); };
    const uint64_t s0 = seed;
    seed += 20;
    op.sample("[3, 1, 4] with [2, 4]", [=] { return Inputs{A({3, 1, 4}, s0), Bv({2, 4}, s0 + 1)}; }, kBroadcast);
    op.sample("same shape [2, 3]", [=] { return Inputs{A({2, 3}, s0 + 2), Bv({2, 3}, s0 + 3)}; });
    op.sample("[5] with 0-d", [=] { return Inputs{A({5}, s0 + 4), Bv({}, s0 + 5)}; }, kBroadcast | kSize1);
    op.sample("[1] with [3, 1]", [=] { return Inputs{A({1}, s0 + 6), Bv({3, 1}, s0 + 7)}; }, kBroadcast | kSize1);
    op.sample("transposed with [3, 4]", [=] { return Inputs{A({4, 3}, s0 + 8), Bv({3, 4}, s0 + 9)}; }, kStrided)
        .viewed([](const Inputs& x) { return Inputs{transpose(x[0], 0, 1), x[1]}; });
    op.sample("stride-2 slice with a transposed [4, 1]", [=] { return Inputs{A({3, 8}, s0 + 10), Bv({4, 1}, s0 + 11)}; },
              kStrided | kBroadcast)
        .viewed([](const Inputs& x) { return Inputs{slice(x[0], 1, 1, 8, 2), transpose(x[1], 0, 1)}; });
    op.sample("[0, 5] with [5]", [=] { return Inputs{A({0, 5}, s0 + 12), Bv({5}, s0 + 13)}; }, kEmpty | kBroadcast);
    op.sample("[300, 129] transposed operands", [=] { return Inputs{A({129, 300}, s0 + 14), Bv({300, 129}, s0 + 15)}; },
              kStrided)
        .viewed([](const Inputs& x) { return Inputs{transpose(x[0], 0, 1), x[1]}; })
        .no_fd();
    op.ref_sample("torch: [3, 1, 4] with [2, 4]",
                  {"elementwise.json", {{"/binary/a", DType::F64}, {"/binary/b", DType::F64}}, std::string("/binary/") + b.name},
                  kBroadcast)
        .no_fd();  // the reference's b has a tie with a for maximum
    t.push_back(std::move(op));
  }
  // the scalar overloads and rsub
  struct S {
    const char* name;
    const char* decl;
    Tensor (*f)(const Tensor&, double);
  };
  const S sops[] = {{"add(scalar)", "add", [](const Tensor& a, double s) { return add(a, s); }},
                    {"mul(scalar)", "mul", [](const Tensor& a, double s) { return mul(a, s); }},
                    {"rsub", "rsub", [](const Tensor& a, double s) { return rsub(s, a); }}};
  for (const S& s : sops) {
    OpInfo op;
    op.name = s.name;
    op.decl = s.decl;
    auto f = s.f;
    op.fn = [f](const Inputs& x, const Args& a) { return f(x[0], a[0]); };
    op.args = {-1.5};
    op.dtypes = {DType::F32, DType::F64, DType::BF16};
    op.waive(kBroadcast, "one tensor operand");
    const uint64_t s0 = seed;
    seed += 10;
    op.sample("[3, 5]", [=] { return Inputs{U({3, 5}, s0)}; }).with({0.5});
    op.sample("transposed", [=] { return Inputs{U({5, 3}, s0 + 1)}; }, kStrided).viewed(T0);
    op.sample("0-d", [=] { return Inputs{U({}, s0 + 2)}; }, kSize1);
    op.sample("[2, 1, 3]", [=] { return Inputs{U({2, 1, 3}, s0 + 3)}; }, kSize1).with({0.3});
    op.sample("[0, 3]", [=] { return Inputs{U({0, 3}, s0 + 4)}; }, kEmpty);
    op.ref_sample("torch: s = 1.75", {"elementwise.json", {{"/binary/a", DType::F64}}, std::string("/binary/scalar/") + s.decl})
        .with({1.75});
    t.push_back(std::move(op));
  }
}

inline void unary_rows(std::vector<OpInfo>& t) {
  struct Un {
    const char* name;
    std::function<Tensor(const Tensor&, const Args&)> f;
    double lo, hi;
    std::vector<double> kinks;  // keep finite differences away from these
    bool ref;                   // elementwise.json /unary/<name> on /unary/x
    bool pos;                   // the reference's input is /unary/pos
  };
  auto f1 = [](Tensor (*g)(const Tensor&)) { return [g](const Tensor& x, const Args&) { return g(x); }; };
  const std::vector<Un> ops = {
      {"neg", f1(neg), -1, 1, {}, true, false},
      {"exp", f1(exp), -3, 3, {}, true, false},
      {"log", f1(log), 0.3, 3, {}, true, true},
      {"sqrt", f1(sqrt), 0.3, 3, {}, true, true},
      {"tanh", f1(tanh), -3, 3, {}, true, false},
      {"sigmoid", f1(sigmoid), -5, 5, {}, true, false},
      {"relu", f1(relu), -1, 1, {0.0}, true, false},
      {"gelu", f1(gelu), -5, 5, {}, true, false},
      {"softplus", f1(softplus), -30, 30, {}, true, false},  // crosses the threshold (20)
      {"abs", f1(abs), -1, 1, {0.0}, true, false},
  };
  uint64_t seed = 300;
  for (const Un& u : ops) {
    OpInfo op;
    op.name = op.decl = u.name;
    auto f = u.f;
    op.fn = [f](const Inputs& x, const Args& a) { return f(x[0], a); };
    op.dtypes = {DType::F32, DType::F64, DType::BF16};
    op.waive(kBroadcast, "unary");
    const double lo = u.lo, hi = u.hi;
    const std::vector<double> k = u.kinks;
    auto X = [=](const Shape& s, uint64_t sd) { return away(s, sd, lo, hi, k); };
    const uint64_t s0 = seed;
    seed += 10;
    op.sample("[4, 9]", [=] { return Inputs{X({4, 9}, s0)}; });
    op.sample("transposed", [=] { return Inputs{X({6, 4}, s0 + 1)}; }, kStrided).viewed(T0);
    op.sample("stride-4 slice", [=] { return Inputs{X({4, 6}, s0 + 2)}; }, kStrided)
        .viewed([](const Inputs& x) { return Inputs{slice(x[0], 1, 0, 6, 4)}; });
    op.sample("0-d", [=] { return Inputs{X({}, s0 + 3)}; }, kSize1);
    op.sample("[2, 1, 3]", [=] { return Inputs{X({2, 1, 3}, s0 + 4)}; }, kSize1);
    op.sample("[0, 3]", [=] { return Inputs{X({0, 3}, s0 + 5)}; }, kEmpty);
    op.sample("[4, 33] (vector tail)", [=] { return Inputs{X({4, 33}, s0 + 6)}; });
    if (u.ref)
      op.ref_sample("torch: tails included",
                    {"elementwise.json", {{u.pos ? "/unary/pos" : "/unary/x", DType::F64}}, std::string("/unary/") + u.name})
          .no_fd();  // inputs chosen for values (tails, 1e-4 for log), not for finite differences
    t.push_back(std::move(op));
  }
  // Gradients PyTorch wrote (upstream ones), for the ops whose derivative has its own formula.
  for (OpInfo& op : t)
    for (const char* n : {"gelu", "softplus", "sigmoid", "tanh"})
      if (op.name == n)
        for (Sample& s : op.samples)
          if (s.ref.defined()) s.ref.grads = {{0, std::string("/unary/grad/") + n}};
  {
    OpInfo op;
    op.name = op.decl = "pow";
    op.fn = [](const Inputs& x, const Args& a) { return pow(x[0], a[0]); };
    op.args = {1.7};
    op.dtypes = {DType::F32, DType::F64, DType::BF16};
    op.waive(kBroadcast, "unary");
    for (double e : {2.0, 3.0, 1.7, 0.5, -0.5, -1.0, 0.0})
      op.sample("[5, 5], e = " + num(e), [=] { return Inputs{U({5, 5}, 400 + uint64_t(e * 10 + 20), 0.3, 2.0)}; })
          .with({e});
    op.sample("transposed", [] { return Inputs{U({4, 6}, 431, 0.3, 2.0)}; }, kStrided).viewed(T0);
    op.sample("0-d, e = 3", [] { return Inputs{U({}, 432, 0.3, 2.0)}; }, kSize1).with({3.0});
    op.sample("[0, 3]", [] { return Inputs{U({0, 3}, 433, 0.3, 2.0)}; }, kEmpty);
    int i = 0;
    for (double e : {2.0, 3.0, 0.5, -1.0, -0.5, 1.7, 0.0}) {
      op.ref_sample("torch: e = " + num(e),
                    {"elementwise.json", {{"/unary/pos", DType::F64}}, "/unary/pow/" + std::to_string(i++) + "/out"})
          .with({e})
          .no_fd();
    }
    t.push_back(std::move(op));
  }
  {
    OpInfo op;
    op.name = op.decl = "clamp";
    op.fn = [](const Inputs& x, const Args& a) { return clamp(x[0], a[0], a[1]); };
    op.args = {-0.3, 0.4};
    op.dtypes = {DType::F32, DType::F64, DType::BF16};
    op.waive(kBroadcast, "unary");
    auto X = [](const Shape& s, uint64_t sd) { return away(s, sd, -1, 1, {-0.3, 0.4}); };
    op.sample("[6, 10]", [=] { return Inputs{X({6, 10}, 440)}; });
    op.sample("transposed", [=] { return Inputs{X({6, 4}, 441)}; }, kStrided).viewed(T0);
    op.sample("[2, 1, 3]", [=] { return Inputs{X({2, 1, 3}, 442)}; }, kSize1);
    op.sample("[0, 3]", [=] { return Inputs{X({0, 3}, 443)}; }, kEmpty);
    op.sample("unbounded", [=] { return Inputs{X({3, 4}, 444)}; }).with({-INFINITY, INFINITY});
    op.ref_sample("torch: [-0.5, 0.7]", {"elementwise.json", {{"/unary/x", DType::F64}}, "/unary/clamp/out"})
        .with({-0.5, 0.7})
        .no_fd();
    t.push_back(std::move(op));
  }
}

inline void select_rows(std::vector<OpInfo>& t) {
  {
    OpInfo op;
    op.name = op.decl = "where";
    op.fn = [](const Inputs& x, const Args&) { return where(x[0], x[1], x[2]); };
    op.broadcasts = true;
    op.nondiff = {0};  // the condition (any dtype)
    op.dtypes = {DType::F32, DType::F64, DType::BF16};
    op.sample("cond [3, 1], a [3, 4], b [4]", [] { return Inputs{mask01({3, 1}, 500), U({3, 4}, 501), U({4}, 502)}; },
              kBroadcast);
    op.sample("cond [4], a [3, 1], b [2, 3, 4]", [] { return Inputs{ints({1, 0, 0, 1}, {4}), U({3, 1}, 503), U({2, 3, 4}, 504)}; },
              kBroadcast | kSize1);
    op.sample("f32 cond, transposed a", [] { return Inputs{mask01({4, 3}, 505).to(DType::F32), U({3, 4}, 506), U({4, 3}, 507)}; },
              kStrided)
        .viewed([](const Inputs& x) { return Inputs{x[0], transpose(x[1], 0, 1), x[2]}; });
    op.sample("[0, 4]", [] { return Inputs{mask01({0, 4}, 508), U({0, 4}, 509), U({4}, 510)}; }, kEmpty | kBroadcast);
    op.ref_sample("torch: every operand broadcast",
                  {"elementwise.json", {{"/select/cond", DType::I64}, {"/select/a", DType::F64}, {"/select/b", DType::F64}},
                   "/select/where"},
                  kBroadcast);
    t.push_back(std::move(op));
  }
  {
    OpInfo op;
    op.name = op.decl = "masked_fill";
    op.fn = [](const Inputs& x, const Args& a) { return masked_fill(x[0], x[1], a[0]); };
    op.args = {2.5};
    op.nondiff = {1};  // the mask (any dtype)
    op.broadcasts = true;
    op.dtypes = {DType::F32, DType::F64, DType::BF16};
    op.sample("[3, 4] mask [4]", [] { return Inputs{U({3, 4}, 520), mask01({4}, 521)}; }, kBroadcast);
    op.sample("[2, 3, 4] i32 mask [3, 1]", [] { return Inputs{U({2, 3, 4}, 522), ints({0, 1, 0}, {3, 1}, DType::I32)}; },
              kBroadcast | kSize1)
        .with({9.0});
    op.sample("transposed input, strided mask",
              [] { return Inputs{U({4, 3, 2}, 523), ints({1, 0, 1}, {1, 3}, DType::I32)}; }, kStrided | kBroadcast)
        .viewed([](const Inputs& x) { return Inputs{transpose(x[0], 0, 2), transpose(x[1], 0, 1)}; });
    op.sample("[0, 4]", [] { return Inputs{U({0, 4}, 524), mask01({4}, 525)}; }, kEmpty | kBroadcast);
    op.ref_sample("torch: mask [3, 1]",
                  {"elementwise.json", {{"/select/mf_a", DType::F64}, {"/select/mf_mask", DType::I32}}, "/select/masked_fill"},
                  kBroadcast)
        .with({-7.5});
    t.push_back(std::move(op));
  }
}

// ------------------------------------------------ reductions

inline void reduce_rows(std::vector<OpInfo>& t) {
  // sum and mean: args = {keepdim, dims...} (no dims: all)
  for (const char* name : {"sum", "mean"}) {
    OpInfo op;
    op.name = op.decl = name;
    const bool is_sum = std::string(name) == "sum";
    op.fn = [is_sum](const Inputs& x, const Args& a) {
      const std::vector<int64_t> d = int_args(a, 1);
      return is_sum ? sum(x[0], d, a[0] != 0) : mean(x[0], d, a[0] != 0);
    };
    op.args = {0};
    op.waive(kBroadcast, "a reduction");
    if (is_sum) op.dtypes = {DType::F32, DType::F64, DType::BF16};
    const uint64_t s0 = is_sum ? 600 : 650;
    int k = 0;
    for (Args a : {Args{0}, Args{0, 0}, Args{1, 1}, Args{0, 2}, Args{1, 0, 2}, Args{0, -1, 1}})
      op.sample("[3, 1, 4] " + std::to_string(k++), [=] { return Inputs{U({3, 1, 4}, s0)}; }, kSize1).with(a);
    op.sample("transposed, dim 1", [=] { return Inputs{U({4, 5}, s0 + 1)}; }, kStrided).with({0, 1}).viewed(T0);
    op.sample("stride-2 slice, dim 0 keepdim", [=] { return Inputs{U({4, 5}, s0 + 2)}; }, kStrided)
        .with({1, 0})
        .viewed([](const Inputs& x) { return Inputs{slice(x[0], 1, 0, 5, 2)}; });
    op.sample("0-d", [=] { return Inputs{U({}, s0 + 3)}; }, kSize1);
    op.sample("[0, 3] over dim 1", [=] { return Inputs{U({0, 3}, s0 + 4)}; }, kEmpty).with({0, 1});
    if (is_sum) op.sample("[0, 3] over dim 0", [=] { return Inputs{U({0, 3}, s0 + 5)}; }, kEmpty).with({0, 0});
    op.sample("[9, 300] inner dim", [=] { return Inputs{U({9, 300}, s0 + 6)}; }).with({0, 1}).no_fd();
    op.sample("[64, 33] outer dim", [=] { return Inputs{U({64, 33}, s0 + 7)}; }).with({0, 0}).no_fd();
    op.sample("[5, 7, 3] transposed, dim 1", [=] { return Inputs{U({5, 7, 3}, s0 + 8)}; }, kStrided)
        .with({0, 1})
        .viewed([](const Inputs& x) { return Inputs{transpose(x[0], 0, 2)}; })
        .no_fd();
    if (is_sum) {
      op.sample("[5000, 8] long, few outputs (split rows)", [=] { return Inputs{U({5000, 8}, s0 + 9)}; }).with({0, 0}).no_fd();
      op.sample("[200000] very long (split inner)", [=] { return Inputs{U({200000}, s0 + 10)}; }).no_fd().tolerance(10);
    }
    // elementwise.json /reduce/sums: [dims] x keepdim, in the order the script wrote them
    const std::vector<std::pair<int, Args>> refs = {
        {0, {0}}, {3, {1, 0}}, {4, {0, 1}}, {9, {1, 0, 2}}, {12, {0, -1, 0}}};
    for (const auto& [i, a] : refs)
      op.ref_sample("torch: sums[" + std::to_string(i) + "]",
                    {"elementwise.json", {{"/reduce/x", DType::F64}}, "/reduce/sums/" + std::to_string(i) + "/" + name})
          .with(a);
    t.push_back(std::move(op));
  }
  {
    OpInfo op;  // args = {dim, keepdim}
    op.name = op.decl = "max";
    op.fn = [](const Inputs& x, const Args& a) { return max(x[0], int64_t(a[0]), a[1] != 0); };
    op.args = {1, 0};
    op.waive(kBroadcast, "a reduction");
    for (int64_t d : {0, 1, -1})
      op.sample("[4, 5] dim " + std::to_string(d), [] { return Inputs{distinct({4, 5}, 700)}; }).with({double(d), 0});
    op.sample("transposed, keepdim", [] { return Inputs{distinct({4, 5}, 701)}; }, kStrided).with({1, 1}).viewed(T0);
    for (int64_t d : {0, 1, 2, 3})
      op.sample("[2, 3, 1, 4] dim " + std::to_string(d), [] { return Inputs{distinct({2, 3, 1, 4}, 702)}; }, kSize1)
          .with({double(d), 0});
    op.sample("[0, 5] dim 1", [] { return Inputs{distinct({0, 5}, 703)}; }, kEmpty).with({1, 0});
    op.sample("[8, 300] rows", [] { return Inputs{distinct({8, 300}, 704)}; }).with({1, 0}).no_fd();
    op.sample("[50, 7] dim 0 keepdim", [] { return Inputs{distinct({50, 7}, 705)}; }).with({0, 1}).no_fd();
    int i = 0;
    for (int64_t d : {0, 1, 2, -1})  // integer values: ties, the first index wins
      op.ref_sample("torch: ties, dim " + std::to_string(d),
                    {"elementwise.json", {{"/reduce/xi", DType::F64}}, "/reduce/max/" + std::to_string(i++) + "/values"})
          .with({double(d), 0})
          .no_fd();
    t.push_back(std::move(op));
  }
  {
    OpInfo op;
    op.name = op.decl = "argmax";
    op.fn = [](const Inputs& x, const Args& a) { return argmax(x[0], int64_t(a[0]), a[1] != 0); };
    op.args = {1, 0};
    op.differentiable = false;
    op.waive(kBroadcast, "a reduction");
    op.sample("[9, 70] dim 1", [] { return Inputs{distinct({9, 70}, 710)}; });
    op.sample("transposed, keepdim", [] { return Inputs{distinct({4, 5}, 711)}; }, kStrided).with({0, 1}).viewed(T0);
    op.sample("[2, 1, 4] dim 1", [] { return Inputs{distinct({2, 1, 4}, 712)}; }, kSize1);
    op.sample("[0, 5] dim 1", [] { return Inputs{distinct({0, 5}, 713)}; }, kEmpty);
    int i = 0;
    for (int64_t d : {0, 1, 2, -1})
      op.ref_sample("torch: ties, dim " + std::to_string(d),
                    {"elementwise.json", {{"/reduce/xi", DType::F64}}, "/reduce/max/" + std::to_string(i++) + "/argmax"})
          .with({double(d), 0});
    t.push_back(std::move(op));
  }
  {
    OpInfo op;
    op.name = op.decl = "cumsum";
    op.fn = [](const Inputs& x, const Args& a) { return cumsum(x[0], int64_t(a[0])); };
    op.args = {1};
    op.waive(kBroadcast, "a scan");
    for (int64_t d : {0, 1, -1}) op.sample("[4, 5] dim " + std::to_string(d), [] { return Inputs{U({4, 5}, 720)}; }).with({double(d)});
    op.sample("transposed dim 1", [] { return Inputs{U({4, 5}, 721)}; }, kStrided).with({1}).viewed(T0);
    for (int64_t d : {0, 2, 3})
      op.sample("[2, 3, 1, 4] dim " + std::to_string(d), [] { return Inputs{U({2, 3, 1, 4}, 722)}; }, kSize1).with({double(d)});
    op.sample("[0, 5] dim 1", [] { return Inputs{U({0, 5}, 723)}; }, kEmpty);
    op.sample("[4, 700] long rows", [] { return Inputs{U({4, 700}, 724)}; }).no_fd();
    op.sample("[6, 20] short rows", [] { return Inputs{U({6, 20}, 725)}; });
    op.sample("[300, 5] dim 0", [] { return Inputs{U({300, 5}, 726)}; }).with({0}).no_fd();
    int i = 0;
    for (int64_t d : {0, 1, 2, -2})
      op.ref_sample("torch: dim " + std::to_string(d),
                    {"elementwise.json", {{"/reduce/x", DType::F64}}, "/reduce/cumsum/" + std::to_string(i++) + "/out"})
          .with({double(d)});
    t.push_back(std::move(op));
  }
}

// ------------------------------------------------ softmax, layer norm, cross-entropy

inline void nn_rows(std::vector<OpInfo>& t) {
  for (const bool log_form : {false, true}) {
    OpInfo op;  // inputs {x} or {x, mask}; args {dim}
    op.name = op.decl = log_form ? "log_softmax" : "softmax";
    op.fn = [log_form](const Inputs& x, const Args& a) {
      const int64_t d = int64_t(a[0]);
      const Tensor m = x.size() > 1 ? x[1] : Tensor();
      if (!log_form) return softmax(x[0], d, m);
      // masked entries are -inf: zeroed after the op, so values and finite differences
      // stay finite (their gradient is 0 either way)
      Tensor y = log_softmax(x[0], d, m);
      return m.defined() ? masked_fill(y, rsub(1.0, m), 0.0) : y;
    };
    op.args = {-1};
    op.nondiff = {1};
    op.broadcasts = true;  // the mask broadcasts
    const uint64_t s0 = log_form ? 850 : 800;
    for (int64_t d : {-1, 0, 1})
      op.sample("[3, 4, 5] dim " + std::to_string(d), [=] { return Inputs{U({3, 4, 5}, s0, -2, 2)}; }).with({double(d)});
    op.sample("transposed", [=] { return Inputs{U({5, 3}, s0 + 1)}; }, kStrided).viewed(T0);
    op.sample("stride-2 slice, dim 0", [=] { return Inputs{U({5, 3}, s0 + 2)}; }, kStrided)
        .with({0})
        .viewed([](const Inputs& x) { return Inputs{slice(x[0], 1, 0, 3, 2)}; });
    op.sample("[4, 1] dim -1", [=] { return Inputs{U({4, 1}, s0 + 3)}; }, kSize1);
    op.sample("[4, 1] dim 0", [=] { return Inputs{U({4, 1}, s0 + 4)}; }, kSize1).with({0});
    op.sample("0-d", [=] { return Inputs{U({}, s0 + 5)}; }, kSize1).with({0});
    op.sample("[0, 5]", [=] { return Inputs{U({0, 5}, s0 + 6)}; }, kEmpty);
    op.sample("[2, 0, 3] dim 1", [=] { return Inputs{U({2, 0, 3}, s0 + 7)}; }, kEmpty).with({1});
    op.sample("[3, 0] masked", [=] { return Inputs{U({3, 0}, s0 + 8), ints({}, {0})}; }, kEmpty | kBroadcast);
    op.sample("mask [3, 1, 5] (a fully masked row)",
              [=] {
                return Inputs{U({3, 2, 5}, s0 + 9, -3, 3),
                              Tensor::from_vector<double>({1, 0, 1, 1, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1}, {3, 1, 5})};
              },
              kBroadcast);
    op.sample("dim 0, mask [2, 1, 5]",
              [=] {
                return Inputs{U({2, 3, 5}, s0 + 10, -3, 3),
                              Tensor::from_vector<double>({1, 1, 0, 1, 1, 0, 0, 1, 1, 1}, {2, 1, 5})};
              },
              kBroadcast)
        .with({0});
    op.sample("[6, 50]", [=] { return Inputs{U({6, 50}, s0 + 11, -3, 3)}; }).no_fd();
    op.sample("[7, 5] dim 0", [=] { return Inputs{U({7, 5}, s0 + 12, -3, 3)}; }).with({0});
    op.sample("[3, 2000] long rows", [=] { return Inputs{U({3, 2000}, s0 + 13, -3, 3)}; }).no_fd();
    op.sample("[6, 4, 50] i64 mask [6, 1, 50], row 2 fully masked",
              [=] {
                std::vector<int64_t> m = mask01({6, 1, 50}, s0 + 14).to_vector<int64_t>();
                for (size_t j = 0; j < 50; ++j) m[2 * 50 + j] = 0;
                return Inputs{U({6, 4, 50}, s0 + 15, -3, 3), Tensor::from_vector(m, {6, 1, 50})};
              },
              kBroadcast)
        .no_fd();
    op.sample("[5, 3, 40] mask [1, 3, 40]", [=] { return Inputs{U({5, 3, 40}, s0 + 16, -3, 3), mask01({1, 3, 40}, s0 + 17)}; },
              kBroadcast)
        .no_fd();
    const std::string key = log_form ? "log_softmax" : "softmax";
    int i = 0;
    for (int64_t d : {-1, 0, 1})
      op.ref_sample("torch: dim " + std::to_string(d),
                    {"nn_ops.json", {{"/softmax/x", DType::F64}}, "/softmax/dims/" + std::to_string(i++) + "/" + key})
          .with({double(d)});
    if (!log_form) {  // the log form's reference keeps -inf where our function writes 0
      op.ref_sample("torch: masked, fully masked row",
                    {"nn_ops.json", {{"/softmax/x", DType::F64}, {"/softmax/mask", DType::F64}}, "/softmax/masked_last/softmax"},
                    kBroadcast);
      op.ref_sample("torch: masked along dim 1",
                    {"nn_ops.json", {{"/softmax/x", DType::F64}, {"/softmax/masked_dim1/mask", DType::F64}},
                     "/softmax/masked_dim1/softmax"},
                    kBroadcast)
          .with({1});
    }
    t.push_back(std::move(op));
  }
  {
    OpInfo op;  // inputs {x}, {x, w} or {x, w, b}; args {eps, use w, use b} (default: those given)
    op.name = op.decl = "layer_norm";
    op.fn = [](const Inputs& x, const Args& a) {
      const bool w = x.size() > 1 && (a.size() < 2 || a[1] != 0), b = x.size() > 2 && (a.size() < 3 || a[2] != 0);
      return layer_norm(x[0], w ? x[1] : Tensor(), b ? x[2] : Tensor(), a[0]);
    };
    op.args = {1e-5};
    op.waive(kBroadcast, "weight and bias are [D], never broadcast otherwise");
    op.sample("[3, 5] affine", [] { return Inputs{U({3, 5}, 900, -2, 2), U({5}, 901, 0.5, 1.5), U({5}, 902)}; });
    op.sample("[3, 5] weight only", [] { return Inputs{U({3, 5}, 903, -2, 2), U({5}, 904, 0.5, 1.5)}; });
    op.sample("[3, 5] plain", [] { return Inputs{U({3, 5}, 905, -2, 2)}; });
    op.sample("[3, 5] bias only", [] { return Inputs{U({3, 5}, 925, -2, 2), U({5}, 926), U({5}, 927)}; }).with({1e-5, 0, 1});
    op.sample("transposed input", [] { return Inputs{U({5, 2, 3}, 906), U({5}, 907, 0.5, 1.5), U({5}, 908)}; }, kStrided)
        .viewed([](const Inputs& x) { return Inputs{transpose(x[0], 0, 2), x[1], x[2]}; });
    op.sample("[70, 3] (several dw/db blocks)", [] { return Inputs{U({70, 3}, 909), U({3}, 910), U({3}, 911)}; });
    op.sample("[4, 1] (D = 1)", [] { return Inputs{U({4, 1}, 912), U({1}, 913), U({1}, 914)}; }, kSize1);
    op.sample("[0, 4]", [] { return Inputs{U({0, 4}, 915), U({4}, 916), U({4}, 917)}; }, kEmpty);
    op.sample("[10, 64]", [] { return Inputs{U({10, 64}, 918), U({64}, 919), U({64}, 920)}; }).no_fd();
    op.sample("[3, 300] plain, wide", [] { return Inputs{U({3, 300}, 921, 2.0, 5.0)}; }).no_fd();
    op.sample("[700, 24] many rows", [] { return Inputs{U({700, 24}, 922), U({24}, 923), U({24}, 924)}; })
        .no_fd()
        .tolerance(10);
    const std::vector<std::pair<std::string, DType>> in3 = {
        {"/layer_norm/x", DType::F64}, {"/layer_norm/weight", DType::F64}, {"/layer_norm/bias", DType::F64}};
    op.ref_sample("torch: affine", {"nn_ops.json", in3, "/layer_norm/affine"});
    op.ref_sample("torch: plain", {"nn_ops.json", {in3[0]}, "/layer_norm/plain"});
    op.ref_sample("torch: eps 0.5", {"nn_ops.json", in3, "/layer_norm/eps_big"}).with({0.5});
    t.push_back(std::move(op));
  }
  {
    OpInfo op;  // inputs {logits [N, C], targets [N]}; args {ignore_index}
    op.name = op.decl = "cross_entropy_sum";
    op.fn = [](const Inputs& x, const Args& a) { return cross_entropy_sum(x[0], x[1], int64_t(a[0])); };
    op.args = {-100};
    op.waive(kBroadcast, "logits [N, C] and targets [N]: no broadcasting");
    op.sample("[5, 4], an ignored row", [] { return Inputs{U({5, 4}, 950, -3, 3), ints({2, -100, 0, 3, 3}, {5})}; });
    op.sample("transposed logits, i32 targets",
              [] { return Inputs{U({4, 5}, 951), ints({2, -100, 0, 3, 3}, {5}, DType::I32)}; }, kStrided)
        .viewed(T0);
    op.sample("strided targets", [] { return Inputs{U({3, 6}, 952), ints({1, 9, 5, 9, 0, 9}, {6})}; }, kStrided)
        .viewed([](const Inputs& x) { return Inputs{x[0], slice(x[1], 0, 0, 6, 2)}; });
    op.sample("ignore_index 0", [] { return Inputs{U({4, 3}, 953), ints({0, 1, 2, 0}, {4})}; }).with({0});
    op.sample("[1, 1]", [] { return Inputs{U({1, 1}, 954), ints({0}, {1})}; }, kSize1);
    op.sample("all ignored", [] { return Inputs{U({2, 3}, 955), ints({-100, -100}, {2})}; });
    op.sample("[0, 3]", [] { return Inputs{U({0, 3}, 956), ints({}, {0})}; }, kEmpty);
    op.sample("[12, 40], some ignored",
              [] { return Inputs{U({12, 40}, 957, -3, 3), masked_fill(ids({12}, 40, 958), mask01({12}, 959, 0.25), -100.0)}; })
        .no_fd();
    op.sample("[7, 300] i32 targets", [] { return Inputs{U({7, 300}, 960, -3, 3), ids({7}, 300, 961, DType::I32)}; }).no_fd();
    op.ref_sample("torch: ignored rows",
                  {"nn_ops.json", {{"/cross_entropy/logits", DType::F64}, {"/cross_entropy/targets", DType::I64}},
                   "/cross_entropy/sum"});
    op.ref_sample("torch: ignore_index 7",
                  {"nn_ops.json", {{"/cross_entropy/logits", DType::F64}, {"/cross_entropy_ignore7/targets", DType::I32}},
                   "/cross_entropy_ignore7/sum"})
        .with({7});
    t.push_back(std::move(op));
  }
  {
    OpInfo op;  // inputs {targets}; args {ignore_index}; an i64 0-d tensor of the count
    op.name = op.decl = "count_valid";
    op.fn = [](const Inputs& x, const Args& a) {
      return Tensor::scalar(double(count_valid(x[0], int64_t(a[0]))), DType::I64);
    };
    op.args = {-100};
    op.differentiable = false;
    op.waive(kBroadcast, "one operand");
    op.sample("i64, some ignored", [] { return Inputs{ints({2, -100, 0, 3, -100}, {5})}; });
    op.sample("i32, ignore 0", [] { return Inputs{ints({0, 1, 2, 0}, {4}, DType::I32)}; }).with({0});
    op.sample("stride-2 slice", [] { return Inputs{ints({1, -100, -100, 9, 5, 9}, {6})}; }, kStrided)
        .viewed([](const Inputs& x) { return Inputs{slice(x[0], 0, 0, 6, 2)}; });
    op.sample("[1]", [] { return Inputs{ints({-100}, {1})}; }, kSize1);
    op.sample("[0]", [] { return Inputs{ints({}, {0})}; }, kEmpty);
    op.ref_sample("torch", {"nn_ops.json", {{"/cross_entropy/targets", DType::I64}}, "/cross_entropy/count"});
    t.push_back(std::move(op));
  }
}

// ------------------------------------------------ matmul, linear

inline void matmul_rows(std::vector<OpInfo>& t) {
  {
    OpInfo op;
    op.name = op.decl = "matmul";
    op.fn = [](const Inputs& x, const Args&) { return matmul(x[0], x[1]); };
    op.broadcasts = true;
    op.dtypes = {DType::F32, DType::F64, DType::BF16};
    auto mm = [&op](std::string n, Shape a, Shape b, uint64_t sd, unsigned tags = 0) -> Sample& {
      return op.sample(std::move(n), [=] { return Inputs{U(a, sd), U(b, sd + 1)}; }, tags);
    };
    mm("[3, 4] @ [4, 5]", {3, 4}, {4, 5}, 1000);
    mm("batched", {2, 3, 4}, {2, 4, 5}, 1002);
    mm("broadcast batch [1, 3, 4] @ [2, 4, 5]", {1, 3, 4}, {2, 4, 5}, 1004, kBroadcast | kSize1);
    mm("broadcast batch [2, 1, 3, 4] @ [3, 4, 2]", {2, 1, 3, 4}, {3, 4, 2}, 1006, kBroadcast);
    mm("2-d @ batched", {3, 4}, {2, 4, 5}, 1008, kBroadcast);
    mm("batched @ 2-d", {2, 3, 3, 4}, {4, 2}, 1010, kBroadcast);
    mm("[1, 4] @ [4, 1]", {1, 4}, {4, 1}, 1012, kSize1);
    mm("transposed operands", {4, 3}, {5, 4}, 1014, kStrided).viewed([](const Inputs& x) {
      return Inputs{transpose(x[0], 0, 1), transpose(x[1], 0, 1)};
    });
    mm("stride-2 slice @ [4, 2]", {3, 8}, {4, 2}, 1016, kStrided).viewed([](const Inputs& x) {
      return Inputs{slice(x[0], 1, 0, 8, 2), x[1]};
    });
    mm("K^T per batch, broadcast batch", {2, 1, 3, 4}, {2, 3, 5, 4}, 1018, kStrided | kBroadcast)
        .viewed([](const Inputs& x) { return Inputs{x[0], transpose(x[1], -1, -2)}; });
    mm("permuted batch layout", {2, 3, 2, 4}, {2, 2, 4, 3}, 1020, kStrided).viewed([](const Inputs& x) {
      return Inputs{permute(x[0], {0, 2, 1, 3}), x[1]};
    });
    mm("expanded (stride-0) batch", {1, 2, 4}, {3, 4, 2}, 1022, kStrided | kBroadcast).viewed([](const Inputs& x) {
      return Inputs{expand(x[0], {3, 2, 4}), x[1]};
    });
    mm("[2, 0, 3] @ [3, 2]", {2, 0, 3}, {3, 2}, 1024, kEmpty);
    mm("K = 0: [3, 0] @ [0, 4]", {3, 0}, {0, 4}, 1026, kEmpty);
    mm("[3, 4, 5] @ [5, 6]", {3, 4, 5}, {5, 6}, 1028).no_fd();
    mm("broadcast batch, copied operand", {2, 1, 4, 5}, {3, 5, 6}, 1030, kBroadcast).no_fd();
    mm("sliced and transposed views", {7, 9}, {6, 5}, 1032, kStrided)
        .viewed([](const Inputs& x) { return Inputs{slice(x[0], 1, 2, 7), transpose(x[1], 0, 1)}; })
        .no_fd();
    mm("[2, 3, 4, 8] @ K^T", {2, 3, 4, 8}, {2, 3, 5, 8}, 1034, kStrided)
        .viewed([](const Inputs& x) { return Inputs{x[0], transpose(x[1], -1, -2)}; })
        .no_fd();
    // matmul_index.json: f32 values; "t": the stored operand is used transposed
    const int kT[][2] = {{0, 0}, {0, 0}, {0, 0}, {0, 0}, {0, 0}, {0, 0}, {0, 0}, {1, 0}, {0, 1}, {1, 1}, {0, 1}, {1, 0}};
    for (int i = 0; i < 12; ++i) {
      const std::string p = "/matmul/" + std::to_string(i);
      const bool ta = kT[i][0], tb = kT[i][1];
      Sample& s = op.ref_sample("torch: case " + std::to_string(i),
                                {"matmul_index.json", {{p + "/a/value", DType::F64}, {p + "/b/value", DType::F64}}, p + "/out"},
                                (ta || tb) ? kStrided : 0u);
      if (ta || tb)
        s.viewed([=](const Inputs& x) {
          return Inputs{ta ? transpose(x[0], -1, -2) : x[0], tb ? transpose(x[1], -1, -2) : x[1]};
        });
    }
    // bench: the token-parallel products of a transformer block (T x D x D, T x D x 4D
    // both ways) and attention's Q K^T (K transposed as a view) and P V.
    const int64_t T = 4096, D = 256;
    const int64_t shapes[3][2] = {{D, D}, {D, 4 * D}, {4 * D, D}};
    for (auto [in, out] : shapes)
      op.bench_case("matmul", dims({T, in}) + " @ " + dims({in, out}), [=] { return Inputs{N32({T, in}, 1), N32({in, out}, 2)}; },
                    gemm_cost(1, T, out, in, false));
    const int64_t BH = 32, hd = 64;  // B=8, H=4, head dim 64 (D = 256)
    for (int64_t S : {128, 512}) {
      op.bench_case("attn QK^T", dims({BH, S, hd}) + " @ " + dims({BH, hd, S}),
                    [=] { return Inputs{N32({BH, S, hd}, 6), N32({BH, S, hd}, 7)}; }, gemm_cost(BH, S, S, hd, true), {},
                    [](const Inputs& x) { return Inputs{x[0], transpose(x[1], -2, -1)}; });
      op.bench_case("attn PV", dims({BH, S, S}) + " @ " + dims({BH, S, hd}),
                    [=] { return Inputs{N32({BH, S, S}, 8), N32({BH, S, hd}, 9)}; }, gemm_cost(BH, S, hd, S, false));
    }
    t.push_back(std::move(op));
  }
  {
    OpInfo op;  // inputs {x, w} or {x, w, b}
    op.name = op.decl = "linear";
    op.fn = [](const Inputs& x, const Args&) { return linear(x[0], x[1], x.size() > 2 ? x[2] : Tensor()); };
    op.broadcasts = true;  // the bias over the rows, the weight over the leading dims
    op.dtypes = {DType::F32, DType::F64, DType::BF16};
    op.sample("[5, 4], bias", [] { return Inputs{U({5, 4}, 1100), U({3, 4}, 1101), U({3}, 1102)}; }, kBroadcast);
    op.sample("[5, 4], no bias", [] { return Inputs{U({5, 4}, 1103), U({3, 4}, 1104)}; });
    op.sample("[2, 3, 4], bias", [] { return Inputs{U({2, 3, 4}, 1105), U({6, 4}, 1106), U({6}, 1107)}; }, kBroadcast);
    op.sample("1-d input", [] { return Inputs{U({4}, 1108), U({2, 4}, 1109), U({2}, 1110)}; }, kBroadcast);
    op.sample("transposed input and weight", [] { return Inputs{U({3, 2, 4}, 1111), U({4, 5}, 1112), U({5}, 1113)}; }, kStrided)
        .viewed([](const Inputs& x) { return Inputs{transpose(x[0], 0, 1), transpose(x[1], 0, 1), x[2]}; });
    op.sample("[1, 1] in, 1 out", [] { return Inputs{U({1, 1}, 1114), U({1, 1}, 1115), U({1}, 1116)}; }, kSize1);
    op.sample("[0, 4] rows", [] { return Inputs{U({0, 4}, 1117), U({3, 4}, 1118), U({3}, 1119)}; }, kEmpty);
    op.sample("[2, 3, 8], bias", [] { return Inputs{U({2, 3, 8}, 1120), U({5, 8}, 1121), U({5}, 1122)}; }).no_fd();
    op.sample("transposed input, no bias", [] { return Inputs{U({8, 6}, 1123), U({4, 8}, 1124)}; }, kStrided)
        .viewed([](const Inputs& x) { return Inputs{transpose(x[0], 0, 1), x[1]}; })
        .no_fd();
    const int lin_t[] = {0, 0, 0, 1, 0};
    for (int i = 0; i < 5; ++i) {
      const std::string p = "/linear/" + std::to_string(i);
      std::vector<std::pair<std::string, DType>> in = {{p + "/x/value", DType::F64}, {p + "/w", DType::F64}};
      if (i != 1) in.push_back({p + "/b", DType::F64});
      Sample& s = op.ref_sample("torch: case " + std::to_string(i), {"matmul_index.json", in, p + "/out"});
      if (lin_t[i]) {
        s.tags = kStrided;
        s.viewed([](const Inputs& x) {
          Inputs v = x;
          v[0] = transpose(x[0], -1, -2);
          return v;
        });
      }
    }
    const int64_t T = 4096, D = 256;
    const int64_t shapes[3][2] = {{D, D}, {D, 4 * D}, {4 * D, D}};
    for (auto [in, out] : shapes)
      op.bench_case("linear+bias", dims({T, in}) + " @ " + dims({out, in}) + "^T",
                    [=] { return Inputs{N32({T, in}, 3), N32({out, in}, 4), N32({out}, 5)}; }, gemm_cost(1, T, out, in, true));
    t.push_back(std::move(op));
  }
}

// ------------------------------------------------ indexing

inline void index_rows(std::vector<OpInfo>& t) {
  {
    OpInfo op;  // inputs {weight [V, D], ids}
    op.name = op.decl = "embedding";
    op.fn = [](const Inputs& x, const Args&) { return embedding(x[0], x[1]); };
    op.waive(kBroadcast, "a lookup");
    op.sample("repeated ids [2, 3]", [] { return Inputs{U({6, 3}, 1200), ints({2, 2, 5, 0, 2, 5}, {2, 3})}; });
    op.sample("i32 ids", [] { return Inputs{U({6, 3}, 1201), ints({2, 2, 5, 0, 2, 5}, {2, 3}, DType::I32)}; });
    op.sample("transposed ids", [] { return Inputs{U({6, 3}, 1202), ints({2, 2, 5, 0, 2, 5}, {2, 3})}; }, kStrided)
        .viewed([](const Inputs& x) { return Inputs{x[0], transpose(x[1], 0, 1)}; });
    op.sample("transposed weight", [] { return Inputs{U({3, 6}, 1203), ints({1, 1, 1, 4}, {4})}; }, kStrided).viewed([](const Inputs& x) {
      return Inputs{transpose(x[0], 0, 1), x[1]};
    });
    op.sample("0-d id", [] { return Inputs{U({6, 3}, 1204), ints({3}, {})}; }, kSize1);
    op.sample("[0] ids", [] { return Inputs{U({6, 3}, 1205), ints({}, {0})}; }, kEmpty);
    op.sample("[10, 6] ids [3, 4]", [] { return Inputs{U({10, 6}, 1206), ids({3, 4}, 10, 1207)}; }).no_fd();
    op.sample("[50, 16] i32 ids [40]", [] { return Inputs{U({50, 16}, 1208), ids({40}, 7, 1209, DType::I32)}; }).no_fd();
    Ref r{"matmul_index.json", {{"/embedding/weight", DType::F64}, {"/embedding/ids", DType::I64}}, "/embedding/out"};
    r.grad_out = "/embedding/grad_out";
    r.grads = {{0, "/embedding/grad_weight"}};
    op.ref_sample("torch: repeated ids", r);
    const int64_t V = 32000, D = 256, T = 4096;
    op.bench_case("embedding", dims({V, D}) + ", " + std::to_string(T) + " ids",
                  [=] { return Inputs{N32({V, D}, 30), ids({T}, V, 31)}; }, bytes_cost(2.0 * double(T * D) * 4 + double(T) * 8));
    t.push_back(std::move(op));
  }
  {
    OpInfo op;  // inputs {x, index}; args {dim}
    op.name = op.decl = "gather";
    op.fn = [](const Inputs& x, const Args& a) { return gather(x[0], int64_t(a[0]), x[1]); };
    op.args = {1};
    op.waive(kBroadcast, "torch.gather semantics: the index is smaller, never broadcast");
    op.sample("dim 1, repeated", [] { return Inputs{U({3, 4, 5}, 1300), ints({0, 3, 3, 1, 2, 2, 0, 0, 1, 3, 3, 3, 2, 1, 0, 0, 2, 2}, {3, 2, 3})}; });
    op.sample("dim 0", [] { return Inputs{U({3, 4, 5}, 1301), ints({2, 2, 0, 1, 1, 0, 0, 2}, {2, 2, 2})}; }).with({0});
    op.sample("dim -1, i32, [1, 4, 3]",
              [] { return Inputs{U({3, 4, 5}, 1302), ints({4, 4, 4, 0, 1, 2, 3, 4, 0, 0, 1, 1}, {1, 4, 3}, DType::I32)}; },
              kSize1)
        .with({-1});
    op.sample("transposed input and index", [] { return Inputs{U({5, 4}, 1303), ints({1, 0, 4, 4, 2, 3, 0, 1}, {2, 4})}; }, kStrided)
        .viewed([](const Inputs& x) { return Inputs{transpose(x[0], 0, 1), transpose(x[1], 0, 1)}; });
    op.sample("[0, 3] index", [] { return Inputs{U({4, 7}, 1304), ids({0, 3}, 7, 1305)}; }, kEmpty);
    op.sample("[4, 7] index [4, 3]", [] { return Inputs{U({4, 7}, 1306), ids({4, 3}, 7, 1307)}; }).no_fd();
    const int64_t gather_dims[] = {1, 0, 1};
    for (int i = 0; i < 3; ++i) {
      const std::string c = "/gather/cases/" + std::to_string(i);
      op.ref_sample("torch: case " + std::to_string(i),
                    {"matmul_index.json", {{"/gather/x", DType::F64}, {c + "/index", DType::I64}}, c + "/out"})
          .with({double(gather_dims[i])});
    }
    t.push_back(std::move(op));
  }
  {
    OpInfo op;  // inputs {x, index (1-D)}; args {dim}
    op.name = op.decl = "index_select";
    op.fn = [](const Inputs& x, const Args& a) { return index_select(x[0], int64_t(a[0]), x[1]); };
    op.args = {0};
    op.waive(kBroadcast, "a lookup");
    for (int64_t d = 0; d < 3; ++d)
      op.sample("[3, 4, 5] dim " + std::to_string(d), [] { return Inputs{U({3, 4, 5}, 1400), ints({2, 0, 2, 1, 2}, {5})}; })
          .with({double(d)});
    op.sample("strided input and index", [] { return Inputs{U({4, 10}, 1401), ints({3, 9, 0, 9, 4, 9, 4}, {7})}; }, kStrided)
        .with({1})
        .viewed([](const Inputs& x) { return Inputs{slice(x[0], 1, 1, 10, 2), slice(x[1], 0, 0, 7, 2)}; });
    op.sample("[3, 1, 2] dim 1, i32", [] { return Inputs{U({3, 1, 2}, 1402), ints({0, 0, 0}, {3}, DType::I32)}; }, kSize1).with({1});
    op.sample("[0] index", [] { return Inputs{U({3, 4, 5}, 1403), ints({}, {0})}; }, kEmpty).with({1});
    op.sample("[6, 5] dim 0, 9 ids", [] { return Inputs{U({6, 5}, 1404), ids({9}, 6, 1405)}; }).no_fd();
    op.sample("[3, 6, 2] dim 1", [] { return Inputs{U({3, 6, 2}, 1406), ids({4}, 6, 1407)}; }).with({1}).no_fd();
    for (int d = 0; d < 3; ++d) {
      const std::string c = "/index_select/cases/" + std::to_string(d);
      op.ref_sample("torch: dim " + std::to_string(d),
                    {"matmul_index.json", {{"/index_select/x", DType::F64}, {c + "/index", DType::I32}}, c + "/out"})
          .with({double(d)});
    }
    t.push_back(std::move(op));
  }
  {
    OpInfo op;  // inputs: the tensors; args {dim}
    op.name = op.decl = "concat";
    op.fn = [](const Inputs& x, const Args& a) { return concat(x, int64_t(a[0])); };
    op.args = {1};
    op.waive(kBroadcast, "sizes must match off the concat dim");
    op.sample("dim 1 with a transposed and an empty piece",
              [] { return Inputs{U({2, 3, 4}, 1500), U({2, 1, 4}, 1501), U({2, 4, 2}, 1502), U({2, 0, 4}, 1503)}; },
              kStrided | kSize1 | kEmpty)
        .viewed([](const Inputs& x) { return Inputs{x[0], x[1], transpose(x[2], 1, 2), x[3]}; });
    op.sample("dim 0, an input twice", [] { return Inputs{U({2, 3, 4}, 1504), U({1, 3, 4}, 1505)}; }, kSize1)
        .with({0})
        .viewed([](const Inputs& x) { return Inputs{x[0], x[1], x[0]}; });
    op.sample("dim -1", [] { return Inputs{U({2, 3, 1}, 1506), U({2, 3, 2}, 1507)}; }).with({-1});
    op.sample("one piece", [] { return Inputs{U({2, 3}, 1508)}; });
    op.ref_sample("torch: dim 1",
                  {"matmul_index.json",
                   {{"/concat/inputs/0", DType::F64}, {"/concat/inputs/1", DType::F64}, {"/concat/inputs/2", DType::F64}},
                   "/concat/out"});
    t.push_back(std::move(op));
  }
  {
    OpInfo op;  // inputs {x}; args {dim, sizes...}; out: the parts flattened and concatenated
    op.name = op.decl = "split";
    op.fn = [](const Inputs& x, const Args& a) {
      std::vector<Tensor> parts = split(x[0], int_args(a, 1), int64_t(a[0]));
      for (Tensor& p : parts) p = reshape(p, {-1});
      return concat(parts, 0);
    };
    op.args = {1, 2, 4, 1};
    op.waive(kBroadcast, "one operand");
    op.sample("[3, 7] into 2, 4, 1", [] { return Inputs{U({3, 7}, 1600)}; });
    op.sample("rows 1, 2", [] { return Inputs{U({3, 7}, 1601)}; }).with({0, 1, 2});
    op.sample("transposed, with an empty part", [] { return Inputs{U({7, 3}, 1602)}; }, kStrided | kEmpty)
        .with({1, 2, 0, 4, 1})
        .viewed(T0);
    op.sample("[3, 1] into 1", [] { return Inputs{U({3, 1}, 1603)}; }, kSize1).with({1, 1});
    op.sample("[0, 4] into 3, 1", [] { return Inputs{U({0, 4}, 1604)}; }, kEmpty).with({1, 3, 1});
    t.push_back(std::move(op));
  }
}

// ------------------------------------------------ rope, dropout, attention

inline void position_rows(std::vector<OpInfo>& t) {
  {
    OpInfo op;  // inputs {x [B, H, S, hd], positions [B, S] or [S]}; args {base}
    op.name = op.decl = "rope";
    op.fn = [](const Inputs& x, const Args& a) { return rope(x[0], x[1], a[0]); };
    op.args = {10000.0};
    op.nondiff = {1};
    op.broadcasts = true;  // [S] positions over the batch
    op.sample("positions [B, S]", [] { return Inputs{U({2, 2, 3, 6}, 1700), ints({0, 3, 1, 9, 2, 5}, {2, 3})}; });
    op.sample("transposed x, i32 positions [S], base 500",
              [] { return Inputs{U({2, 3, 2, 4}, 1701), ints({4, 0, 7}, {3}, DType::I32)}; }, kStrided | kBroadcast)
        .with({500.0})
        .viewed([](const Inputs& x) { return Inputs{transpose(x[0], 1, 2), x[1]}; });
    op.sample("fractional positions [B, S]", [] { return Inputs{U({2, 2, 4, 6}, 1702), U({2, 4}, 1703, 0.0, 50.0)}; }).with({500.0});
    op.sample("[1, 1, 1, 2]", [] { return Inputs{U({1, 1, 1, 2}, 1704), ints({5}, {1})}; }, kSize1 | kBroadcast);
    op.sample("S = 0", [] { return Inputs{U({2, 2, 0, 4}, 1705), ints({}, {0})}; }, kEmpty | kBroadcast);
    op.sample("[2, 3, 5, 8] positions [5]", [] { return Inputs{U({2, 3, 5, 8}, 1706), ids({5}, 9, 1707)}; }, kBroadcast).no_fd();
    op.ref_sample("torch: positions [B, S]",
                  {"nn_ops.json", {{"/rope/x", DType::F64}, {"/rope/pos_batch", DType::I64}}, "/rope/out_batch"});
    op.ref_sample("torch: positions [S], base 100",
                  {"nn_ops.json", {{"/rope/x", DType::F64}, {"/rope/pos_seq", DType::I64}}, "/rope/out_seq_base100"},
                  kBroadcast)
        .with({100.0});
    {
      // The bet layer's paths: per-sequence permuted positions.
      const int64_t B = 32, H = 4, S = 128, hd = 64;
      op.bench_case("rope, permuted positions", dims({B, H, S, hd}),
                    [=] {
                      std::vector<double> pos(size_t(B * S));
                      Generator g(16);
                      for (int64_t bi = 0; bi < B; ++bi) {
                        auto perm = g.permutation(S);
                        for (int64_t s = 0; s < S; ++s) pos[size_t(bi * S + s)] = double(perm[size_t(s)]);
                      }
                      return Inputs{N32({B, H, S, hd}, 15), Tensor::from_vector(pos, {B, S})};
                    },
                    bytes_cost(2.0 * double(B * H * S * hd) * 4));
    }
    t.push_back(std::move(op));
  }
  {
    OpInfo op;  // inputs {x}; args {p, training, seed, offset}
    op.name = op.decl = "dropout";
    op.fn = [](const Inputs& x, const Args& a) { return dropout(x[0], a[0], a[1] != 0, uint64_t(a[2]), uint64_t(a[3])); };
    op.args = {0.3, 1, 1234, 5};
    op.waive(kBroadcast, "unary");
    op.sample("[4, 5] p 0.5", [] { return Inputs{U({4, 5}, 1800)}; }).with({0.5, 1, 3, 77});
    op.sample("transposed, p 0.25", [] { return Inputs{U({5, 4}, 1801)}; }, kStrided).with({0.25, 1, 3, 5}).viewed(T0);
    op.sample("[1, 1]", [] { return Inputs{U({1, 1}, 1802)}; }, kSize1);
    op.sample("[0, 5]", [] { return Inputs{U({0, 5}, 1803)}; }, kEmpty);
    op.sample("not training", [] { return Inputs{U({3, 4}, 1804)}; }).with({0.5, 0, 1, 0});
    op.sample("[7, 33]", [] { return Inputs{U({7, 33}, 1805)}; }).no_fd();
    // Dropout draws one Philox word per element: compute-bound unless vectorised.
    op.bench_case("dropout p=0.1", dims({4096, 1024}), [] { return Inputs{N32({4096, 1024}, 14)}; },
                  bytes_cost(2.0 * 4096 * 1024 * 4), {0.1, 1, 5, 0});
    t.push_back(std::move(op));
  }
  {
    OpInfo op;  // inputs {q, k, v} or {q, k, v, mask}; args {p, training, seed, offset}
    op.name = op.decl = "attention";
    op.fn = [](const Inputs& x, const Args& a) {
      return attention(x[0], x[1], x[2], x.size() > 3 ? x[3] : Tensor(), a[0], a[1] != 0, uint64_t(a[2]), uint64_t(a[3]));
    };
    op.args = {0.0, 1, 0, 0};
    op.nondiff = {3};
    op.broadcasts = true;  // v over paths, the mask over the scores
    op.dtypes = {DType::F32, DType::F64, DType::BF16};
    auto qkv = [](int64_t P, int64_t B, int64_t H, int64_t S, int64_t hd, int64_t Pv, uint64_t sd) {
      return Inputs{U({P, B, H, S, hd}, sd), U({P, B, H, S, hd}, sd + 1), U({Pv, B, H, S, hd}, sd + 2)};
    };
    // causal [S, S] mask with row 0 of batch 0 fully masked, broadcast over P, H: [1, B, 1, S, S]
    auto causal = [](int64_t B, int64_t S) {
      std::vector<double> m(size_t(B * S * S));
      for (int64_t b = 0; b < B; ++b)
        for (int64_t i = 0; i < S; ++i)
          for (int64_t j = 0; j < S; ++j) m[size_t((b * S + i) * S + j)] = (j <= i && !(b == 0 && i == 0)) ? 1 : 0;
      return Tensor::from_vector(m, {1, B, 1, S, S});
    };
    op.sample("shared v, no mask", [=] { return qkv(2, 2, 1, 3, 2, 1, 1900); }, kBroadcast | kSize1);
    op.sample("shared v, causal mask with a fully masked row, dropout",
              [=] {
                Inputs x = qkv(2, 2, 2, 4, 3, 1, 1903);
                x.push_back(causal(2, 4));
                return x;
              },
              kBroadcast)
        .with({0.3, 1, 9, 3});
    op.sample("per-path v, key mask [P, B, 1, 1, S]",
              [=] {
                Inputs x = qkv(3, 1, 2, 3, 2, 3, 1906);
                x.push_back(mask01({3, 1, 1, 1, 3}, 1909, 0.6));
                return x;
              },
              kBroadcast);
    op.sample("permuted q, sliced k, expanded v, dropout",
              [] {
                return Inputs{U({2, 1, 3, 2, 2}, 1910), U({2, 1, 2, 3, 4}, 1911), U({1, 1, 2, 3, 2}, 1912),
                              mask01({2, 1, 1, 1, 3}, 1913, 0.6)};
              },
              kStrided | kBroadcast)
        .with({0.2, 1, 17, 5})
        .viewed([](const Inputs& x) {
          return Inputs{permute(x[0], {0, 1, 3, 2, 4}), slice(x[1], 4, 0, 4, 2), expand(x[2], {2, 1, 2, 3, 2}), x[3]};
        });
    op.sample("S = 0", [=] { return qkv(1, 1, 1, 0, 2, 1, 1914); }, kEmpty);
    op.sample("[2, 2, 2, 33, 16] causal", [=] {
      Inputs x = qkv(2, 2, 2, 33, 16, 1, 1917);
      x.push_back(causal(2, 33));
      return x;
    }).no_fd();
    t.push_back(std::move(op));
  }
}

}  // namespace detail

inline std::vector<OpInfo> build_op_table() {
  std::vector<OpInfo> t;
  detail::view_rows(t);
  detail::binary_rows(t);
  detail::unary_rows(t);
  detail::select_rows(t);
  detail::reduce_rows(t);
  detail::nn_rows(t);
  detail::matmul_rows(t);
  detail::index_rows(t);
  detail::position_rows(t);
  // bench cases of the memory-bound rows (f32, sized past the caches)
  const int64_t T = 4096;
  for (OpInfo& op : t) {
    for (const char* n : {"softmax", "log_softmax", "cross_entropy_sum", "layer_norm", "gelu", "rope", "dropout"})
      if (op.name == n) op.isa_variants = true;
    using detail::dims;
    const double f = 4;
    if (op.name == "softmax")
      for (int64_t S : {128, 512})
        op.bench_case("softmax", dims({32 * S, S}) + ", last dim", [=] { return Inputs{N32({32 * S, S}, 10)}; },
                      bytes_cost(2.0 * double(32 * S * S) * f), {-1});
    if (op.name == "layer_norm")
      for (int64_t D : {256, 1024})
        op.bench_case("layer_norm", dims({T, D}), [=] { return Inputs{N32({T, D}, 11), N32({D}, 12), N32({D}, 13)}; },
                      bytes_cost((2.0 * double(T * D) + 2.0 * double(D)) * f));
    if (op.name == "gelu")
      op.bench_case("gelu", dims({T, 1024}), [=] { return Inputs{N32({T, 1024}, 14)}; }, bytes_cost(2.0 * double(T * 1024) * f));
    if (op.name == "add")
      op.bench_case("add, bias broadcast", dims({T, 1024}) + " + " + dims({1024}),
                    [=] { return Inputs{N32({T, 1024}, 17), N32({1024}, 18)}; },
                    bytes_cost((2.0 * double(T * 1024) + 1024) * f));
    if (op.name == "sum")
      op.bench_case("sum, last dim", dims({T, 1024}), [=] { return Inputs{N32({T, 1024}, 19)}; },
                    bytes_cost((double(T * 1024) + double(T)) * f), {0, -1});
    if (op.name == "cross_entropy_sum")
      op.bench_case("cross_entropy_sum", dims({T, 1024}) + ", " + std::to_string(T) + " targets",
                    [=] { return Inputs{N32({T, 1024}, 20), ids({T}, 1024, 21)}; },
                    bytes_cost(double(T * 1024) * f + double(T) * 8));
  }
  return t;
}

}  // namespace bet::optable
