// The CUDA kernels of kernels/cuda/elementwise.cu, copy.cu and reduce.cu, run by the emulator
// (tests/cuda_emu/README.md), against the CPU kernels on the same inputs: broadcast
// and strided operands, sizes off the block size, empty tensors, every dtype the
// kernel takes, and grid-stride loops that really loop (cuda:1 has one SM).
// test_cuda_emu_nn.cpp and test_cuda_emu_attention.cpp cover the other kernel files.
#include <cstdlib>
#include <cstring>
#include <functional>

#include "cuda_emu_access.h"
#include "kernels/copy.h"
#include "kernels/elementwise.h"
#include "kernels/reduce.h"
#include "tests/cuda_emu/emu_test_util.h"

using namespace emutest;
using bet::kernels::BinaryOp;
using bet::kernels::UnaryOp;

namespace {

// Device memory for every tensor here comes from platform/cuda/runtime.cu's caching
// allocator (over the emulated cudaMalloc), refilled with 0xff bytes at each
// allocation: a kernel that counts on zeroed or stale memory reads NaN.
void* poisoned_allocate(size_t n, int device, size_t* capacity) {
  void* p = platform::cuda::device_allocate(n, device, capacity);
  emu::DeviceAccess access;  // device memory is closed to the host otherwise
  std::memset(p, 0xff, *capacity);
  return p;
}
const bool g_hooks_installed = [] {
  // BET_EMULATE_CUDA (platform/device.h) would put cuda tensors in plain host memory
  // behind the CPU kernels; this test needs them in the emulated device's memory.
  unsetenv("BET_EMULATE_CUDA");
  register_cuda_allocator({&poisoned_allocate, &platform::cuda::device_release});
  return true;
}();

using View = std::function<Tensor(const Tensor&)>;
const View kSame = [](const Tensor& t) { return t; };
View expand_to(Shape s) {
  return [s](const Tensor& t) { return expand(t, s); };
}
View transposed(int64_t d0, int64_t d1) {
  return [=](const Tensor& t) { return transpose(t, d0, d1); };
}

// An operand: a fresh tensor of `base` shape, seen through `view` by both kernels.
struct Operand {
  Shape base;
  View view = kSame;
};

struct Layout {
  const char* name;
  std::vector<Operand> ops;
  Shape out;
  int device = 0;
};

// The layouts every elementwise kernel runs over (operands broadcast to `out`).
std::vector<Layout> layouts(int arity) {
  auto rep = [&](Operand o) { return std::vector<Operand>(size_t(arity), o); };
  std::vector<Layout> l;
  l.push_back({"ragged contiguous [37, 53]", rep({{37, 53}}), {37, 53}});
  std::vector<Operand> bc = rep({{3, 5}, expand_to({4, 3, 5})});
  bc[0] = {{4, 1, 5}, expand_to({4, 3, 5})};
  l.push_back({"broadcast [4,1,5] with [3,5]", bc, {4, 3, 5}});
  std::vector<Operand> tr = rep({{4, 5}});
  tr[0] = {{5, 4}, transposed(0, 1)};
  l.push_back({"transposed operand", tr, {4, 5}});
  std::vector<Operand> sl = rep({{6, 4}});
  sl[0] = {{6, 8}, [](const Tensor& t) { return slice(t, 1, 1, 8, 2); }};
  l.push_back({"sliced with step 2 (offset 1)", sl, {6, 4}});
  std::vector<Operand> sc = rep({{3, 4}});
  sc[0] = {{}, expand_to({3, 4})};
  l.push_back({"0-d operand", sc, {3, 4}});
  l.push_back({"empty [0, 5]", rep({{0, 5}}), {0, 5}});
  std::vector<Operand> big = rep({{129, 300}, transposed(0, 1)});
  big[0] = {{300, 129}};
  l.push_back({"grid-stride on one SM: [300, 129], transposed operands", big, {300, 129}, 1});
  return l;
}

const DType kAll[] = {DType::F32, DType::F64, DType::BF16, DType::I32, DType::I64};
const DType kFloat[] = {DType::F32, DType::F64, DType::BF16};

bool is_int(DType dt) { return dt == DType::I32 || dt == DType::I64; }

// The operands of one run: device views, and the CPU's (bf16 values widened to f32).
struct Args {
  std::vector<Tensor> dev, cpu;
};
Args make_args(const Layout& l, DType dt, uint64_t seed, double lo, double hi,
               const std::function<void(size_t, Tensor&)>& edit = {}) {
  Args a;
  for (size_t i = 0; i < l.ops.size(); ++i) {
    Tensor base = U(l.ops[i].base, seed + i, lo, hi);
    if (edit) edit(i, base);
    Tensor b = base.to(dt);
    a.dev.push_back(to_dev(l.ops[i].view(b), l.device));
    a.cpu.push_back(l.ops[i].view(b.to(cpu_dtype(dt))));
  }
  return a;
}

// The CPU's result as the device would store it: bf16 results rounded from f32.
Tensor as_device_dtype(const Tensor& cpu_out, DType dt) { return dt == DType::BF16 ? cpu_out.to(dt) : cpu_out; }

std::string label(const std::string& what, const Layout& l, DType dt) {
  return what + " | " + l.name + " | " + dtype_name(dt);
}

// A few NaNs (and, for integers, nothing) in the first operand.
void add_nans(size_t i, Tensor& base) {
  if (i != 0 || base.numel() < 4) return;
  double* p = base.data<double>();
  p[1] = NAN;
  p[base.numel() - 2] = NAN;
}

}  // namespace

TEST_CASE("elementwise.cu binary: every op and dtype over broadcast, strided, ragged, empty operands") {
  NoEmuErrors guard;
  const BinaryOp ops[] = {BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Maximum};
  for (const Layout& l : layouts(2))
    for (DType dt : kAll)
      for (BinaryOp op : ops) {
        if (is_int(dt) && op == BinaryOp::Div) continue;
        const double lo = is_int(dt) ? -50 : (op == BinaryOp::Div ? 0.5 : -3), hi = is_int(dt) ? 50 : 3;
        Args a = make_args(l, dt, 10 + int(op), lo, hi, is_int(dt) ? nullptr : add_nans);
        Tensor want = Tensor::empty(l.out, cpu_dtype(dt));
        kcpu::binary(op, a.cpu[0], a.cpu[1], want);
        Tensor got = empty_dev(l.out, dt, l.device);
        kcuda::binary(op, a.dev[0], a.dev[1], got);
        // Same arithmetic in the same precision (bf16: f32, then one rounding): exact.
        check_close(got, as_device_dtype(want, dt), kExact, label("binary op " + std::to_string(int(op)), l, dt));
      }
}

namespace {

struct UnaryCase {
  UnaryOp op;
  double p0 = 0, p1 = 0, lo = -3, hi = 3;
  double tol = 1.0;  // multiplier on the dtype's tolerance (transcendental functions); 0: exact
  bool ints = false;  // also defined for integer tensors
};

// The tolerance of a transcendental case. GELU's 1 + erf(x / sqrt 2) cancels for
// x << 0 on both devices (f32: an absolute error near |x| 2^-24, relative errors of
// percents in the tail), so it is judged by an absolute bound there. Softplus in f64:
// above x = 20 the CPU (as torch's threshold) returns x, the CUDA kernel x +
// log1p(exp(-x)), a difference below exp(-20) = 2.1e-9 (see tests/cuda_emu/README.md).
Tol unary_tol(const UnaryCase& c, DType dt) {
  if (c.tol == 0) return kExact;
  Tol t = tol_of(dt, c.tol);
  if (c.op == UnaryOp::Gelu && dt == DType::F32) t.atol = 1e-6;
  if (c.op == UnaryOp::Softplus && dt == DType::F64) t.atol = 2.1e-9;
  return t;
}

const UnaryCase kUnary[] = {
    {UnaryOp::Neg, 0, 0, -3, 3, 0, true},
    {UnaryOp::Exp, 0, 0, -5, 5, 1},
    {UnaryOp::Log, 0, 0, 0.05, 5, 1},
    {UnaryOp::Sqrt, 0, 0, 0, 4, 1},
    {UnaryOp::Tanh, 0, 0, -4, 4, 1},
    {UnaryOp::Sigmoid, 0, 0, -8, 8, 1},
    {UnaryOp::Relu, 0, 0, -3, 3, 0, true},
    {UnaryOp::Gelu, 0, 0, -5, 5, 1},
    {UnaryOp::Softplus, 0, 0, -30, 30, 1},
    {UnaryOp::Abs, 0, 0, -3, 3, 0, true},
    {UnaryOp::AddScalar, 0.5, 0, -3, 3, 0},
    {UnaryOp::AddScalar, 3, 0, -3, 3, 0, true},
    {UnaryOp::MulScalar, -1.5, 0, -3, 3, 0},
    {UnaryOp::MulScalar, -2, 0, -3, 3, 0, true},
    {UnaryOp::RSubScalar, 2, 0, -3, 3, 0, true},
    {UnaryOp::Pow, 1, 0, 0.1, 3, 0},
    {UnaryOp::Pow, 2, 0, 0.1, 3, 0},
    {UnaryOp::Pow, 3, 0, 0.1, 3, 0},
    {UnaryOp::Pow, 0.5, 0, 0.1, 3, 1},
    {UnaryOp::Pow, -1, 0, 0.1, 3, 0},
    {UnaryOp::Pow, -0.5, 0, 0.1, 3, 1},
    {UnaryOp::Pow, 1.7, 0, 0.1, 3, 1},
    {UnaryOp::Clamp, -0.3, 0.4, -3, 3, 0},
    {UnaryOp::Clamp, -7.5, 12.2, -3, 3, 0, true},
    {UnaryOp::Clamp, -INFINITY, INFINITY, -3, 3, 0, true},
};

}  // namespace

TEST_CASE("elementwise.cu unary: every op (integer forms too) over the layouts") {
  NoEmuErrors guard;
  for (const Layout& l : layouts(1))
    for (DType dt : kAll)
      for (const UnaryCase& c : kUnary) {
        if (is_int(dt) && !c.ints) continue;
        const double scale = is_int(dt) ? 16 : 1;
        Args a = make_args(l, dt, 30 + int(c.op), c.lo * scale, c.hi * scale, is_int(dt) ? nullptr : add_nans);
        Tensor want = Tensor::empty(l.out, cpu_dtype(dt));
        kcpu::unary(c.op, a.cpu[0], want, c.p0, c.p1);
        Tensor got = empty_dev(l.out, dt, l.device);
        kcuda::unary(c.op, a.dev[0], got, c.p0, c.p1);
        const Tol t = unary_tol(c, dt);
        check_close(got, as_device_dtype(want, dt), t,
                    label("unary op " + std::to_string(int(c.op)) + " p0 " + std::to_string(c.p0), l, dt));
      }
}

TEST_CASE("elementwise.cu unary on integers rejects what the CPU rejects") {
  NoEmuErrors guard;
  Tensor x = to_dev(ids({5}, 10, 1, DType::I32)), out = empty_dev({5}, DType::I32);
  CHECK_THROWS_WITH_AS(kcuda::unary(UnaryOp::AddScalar, x, out, 0.5, 0), doctest::Contains("not an integer"), Error);
  CHECK_THROWS_WITH_AS(kcuda::unary(UnaryOp::Exp, x, out, 0, 0), doctest::Contains("does not support integer"), Error);
  CHECK_THROWS_AS(kcuda::binary(BinaryOp::Div, x, x, out), Error);
}

TEST_CASE("elementwise.cu unary_backward: g * f'(x) for every op with a derivative") {
  NoEmuErrors guard;
  const UnaryCase ops[] = {
      {UnaryOp::Exp, 0, 0, -3, 3, 1},     {UnaryOp::Log, 0, 0, 0.1, 3, 1},    {UnaryOp::Sqrt, 0, 0, 0.1, 3, 1},
      {UnaryOp::Tanh, 0, 0, -1, 1, 1},    {UnaryOp::Sigmoid, 0, 0, 0, 1, 1},  {UnaryOp::Relu, 0, 0, -3, 3, 0},
      {UnaryOp::Gelu, 0, 0, -4, 4, 1},    {UnaryOp::Softplus, 0, 0, -20, 20, 1}, {UnaryOp::Abs, 0, 0, -3, 3, 0},
      {UnaryOp::Pow, 0, 0, 0.1, 3, 0},    {UnaryOp::Pow, 2, 0, 0.1, 3, 0},    {UnaryOp::Pow, 1.7, 0, 0.1, 3, 1},
      {UnaryOp::Clamp, -0.3, 0.4, -1, 1, 0},
  };
  for (const Layout& l : layouts(2))
    for (DType dt : kFloat)
      for (const UnaryCase& c : ops) {
        Args a = make_args(l, dt, 50 + int(c.op), c.lo, c.hi);
        Tensor want = Tensor::empty(l.out, cpu_dtype(dt));
        kcpu::unary_backward(c.op, a.cpu[0], a.cpu[1], want, c.p0, c.p1);
        Tensor got = empty_dev(l.out, dt, l.device);
        kcuda::unary_backward(c.op, a.dev[0], a.dev[1], got, c.p0, c.p1);
        const Tol t = unary_tol(c, dt);
        check_close(got, as_device_dtype(want, dt), t, label("unary_backward op " + std::to_string(int(c.op)), l, dt));
      }
}

TEST_CASE("elementwise.cu where / masked_fill: conditions of every CPU dtype, broadcast") {
  NoEmuErrors guard;
  const DType conds[] = {DType::I64, DType::I32, DType::F32, DType::F64};
  for (const Layout& l : layouts(3))
    for (DType dt : kAll)
      for (DType cdt : conds) {
        const std::string what = std::string("cond ") + dtype_name(cdt);
        // Operand 0 is the condition: values in {0, 1, 2} (nonzero is true), of dtype cdt.
        Args a = make_args(l, dt, 70, -40, 40);
        Tensor cond_base = ids(l.ops[0].base, 3, 71, cdt);
        Tensor cond = l.ops[0].view(cond_base);
        Tensor cond_dev = to_dev(cond, l.device);
        Tensor want = Tensor::empty(l.out, cpu_dtype(dt));
        kcpu::where(cond, a.cpu[1], a.cpu[2], want);
        Tensor got = empty_dev(l.out, dt, l.device);
        kcuda::where(cond_dev, a.dev[1], a.dev[2], got);
        check_close(got, as_device_dtype(want, dt), kExact, label("where, " + what, l, dt));
        // masked_fill(a, mask): the mask is operand 0's layout too, the filled operand 1's.
        Tensor want2 = Tensor::empty(l.out, cpu_dtype(dt));
        kcpu::masked_fill(a.cpu[1], cond, -2.0, want2);
        Tensor got2 = empty_dev(l.out, dt, l.device);
        kcuda::masked_fill(a.dev[1], cond_dev, -2.0, got2);
        check_close(got2, as_device_dtype(want2, dt), kExact, label("masked_fill, " + what, l, dt));
      }
}

TEST_CASE("elementwise.cu maximum_backward: ties go to a, NaN counts as the larger") {
  NoEmuErrors guard;
  for (const Layout& l : layouts(3))
    for (DType dt : kFloat) {
      // Small integers: many ties between a and b.
      Args a = make_args(l, dt, 90, -2, 2, [](size_t i, Tensor& b) {
        double* p = b.data<double>();
        for (int64_t k = 0; k < b.numel(); ++k) p[k] = std::round(p[k]);
        if (i == 0) add_nans(0, b);
      });
      Tensor wa = Tensor::empty(l.out, cpu_dtype(dt)), wb = Tensor::empty(l.out, cpu_dtype(dt));
      kcpu::maximum_backward(a.cpu[0], a.cpu[1], a.cpu[2], wa, wb);
      Tensor ga = empty_dev(l.out, dt, l.device), gb = empty_dev(l.out, dt, l.device);
      kcuda::maximum_backward(a.dev[0], a.dev[1], a.dev[2], ga, gb);
      check_close(ga, as_device_dtype(wa, dt), kExact, label("maximum_backward ga", l, dt));
      check_close(gb, as_device_dtype(wb, dt), kExact, label("maximum_backward gb", l, dt));
    }
}

TEST_CASE("copy.cu copy: every dtype pair, strided source and destination") {
  NoEmuErrors guard;
  for (const Layout& l : layouts(1))
    for (DType from : kAll)
      for (DType to : kAll) {
        // Values exactly representable in f32: f64 -> bf16 then rounds once on both
        // devices (see the rounding case below for doubles that are not).
        Tensor base = U(l.ops[0].base, 110, -300, 300);
        double* p = base.data<double>();
        for (int64_t k = 0; k < base.numel(); ++k) p[k] = double(float(p[k]));
        add_nans(0, base);
        if (is_int(from) || is_int(to)) base = base.to(DType::I64).to(DType::F64);  // no NaN into integers
        Tensor src_cpu = l.ops[0].view(base.to(from));
        Tensor want = Tensor::empty(l.out, to);
        kcpu::copy(src_cpu, want);
        // The destination is a transposed view when 2-D: both layouts are strided.
        Tensor got;
        if (l.out.size() == 2) {
          Tensor store = empty_dev({l.out[1], l.out[0]}, to, l.device);
          got = transpose(store, 0, 1);
        } else {
          got = empty_dev(l.out, to, l.device);
        }
        kcuda::copy(to_dev(src_cpu, l.device), got);
        check_close(got, want, kExact, label(std::string("copy to ") + dtype_name(to), l, from));
      }
}

TEST_CASE("copy.cu copy: f16 round trips and rounding, f64 -> bf16 rounds once") {
  NoEmuErrors guard;
  // f32 -> f16 -> f32: ties to even, gradual underflow, overflow to infinity.
  const std::vector<float> in{1.0f, 1.0f + 0x1p-11f, 1.0f + 3 * 0x1p-11f, 65504.0f, 65519.0f, 65520.0f, 0x1p-24f,
                              0x1p-25f, 0x1.8p-25f, -2.5f, 0.0f, -0.0f};
  const std::vector<double> out{1.0, 1.0, 1.0 + 0x1p-9, 65504.0, 65504.0, INFINITY, 0x1p-24, 0.0, 0x1p-24, -2.5,
                                0.0, 0.0};
  Tensor src = to_dev(Tensor::from_vector(in, {int64_t(in.size())}));
  Tensor half = empty_dev(src.shape(), DType::F16), back = empty_dev(src.shape(), DType::F32);
  kcuda::copy(src, half);
  kcuda::copy(half, back);
  check_close(back, Tensor::from_vector(out, {int64_t(out.size())}), kExact, "f32 -> f16 -> f32");
  // A double just above a bf16 tie: rounded directly it goes up; through f32 (which
  // loses the excess) it would tie to even and go down.
  const std::vector<double> d{1.0 + 0x1p-8 + 0x1p-30, -(1.0 + 0x1p-8 + 0x1p-30), 1.0 + 0x1p-8};
  Tensor b = empty_dev({3}, DType::BF16);
  kcuda::copy(to_dev(Tensor::from_vector(d, {3})), b);
  check_close(b, Tensor::from_vector(std::vector<double>{1.0 + 0x1p-7, -(1.0 + 0x1p-7), 1.0}, {3}), kExact,
              "f64 -> bf16, once");
}

TEST_CASE("copy.cu fill: every dtype, through a strided view (nothing else written)") {
  NoEmuErrors guard;
  const DType all[] = {DType::F32, DType::F64, DType::BF16, DType::F16, DType::I32, DType::I64};
  for (DType dt : all) {
    Tensor store = empty_dev({6, 8}, dt, 1);
    Tensor view = slice(transpose(store, 0, 1), 0, 1, 8, 3);  // [3, 6], strides (3, 8), offset 1+kCanary
    kcuda::fill(view, -3.0);
    const std::vector<double> v = values(store);
    int filled = 0, untouched = 0;
    for (int64_t i = 0; i < 6; ++i)
      for (int64_t j = 0; j < 8; ++j) {
        const double x = v[size_t(i * 8 + j)];
        if (j % 3 == 1) filled += x == -3.0;
        else untouched += std::isnan(x) || x == -1.0;  // the 0xff poison: NaN, or -1 for integers
      }
    INFO(dtype_name(dt));
    CHECK(filled == 18);
    CHECK(untouched == 30);
    check_canaries(store);
  }
}

namespace {

struct SumCase {
  const char* name;
  Shape base;
  View view;
  std::vector<bool> reduce;  // over the view's dims
  int device = 0;
};

// Sums of n terms of magnitude <= 1 (integers: exact). The device accumulates in
// double; the CPU in double too, except that its f32 path first adds four rows in
// f32 (a few ulp of the terms, not of a possibly cancelling total).
Tol sum_tol(DType dt, int64_t n) {
  switch (dt) {
    case DType::F64: return {1e-13, 1e-16 * double(n)};
    case DType::F32: return {1e-6, 2e-7 * double(n)};
    case DType::BF16: return tol_of(dt);
    default: return kExact;
  }
}

Shape kept_shape(const Shape& s, const std::vector<bool>& reduce) {
  Shape o = s;
  for (size_t d = 0; d < o.size(); ++d)
    if (reduce[d]) o[d] = 1;
  return o;
}

}  // namespace

TEST_CASE("reduce.cu sum: every launch plan (warp, block, chunked inner; outer with partials), any strides") {
  NoEmuErrors guard;
  const SumCase cases[] = {
      {"all of [13, 17]", {13, 17}, kSame, {true, true}},
      {"inner 300 (a warp per output)", {9, 300}, kSame, {false, true}},
      {"inner 5000 (a block per output)", {3, 5000}, kSame, {false, true}},
      {"inner 200000 of one output (chunked, partials)", {200000}, kSame, {true}},
      {"inner 70000 of three outputs on one SM (chunked)", {3, 70000}, kSame, {false, true}, 1},
      {"outer 64 (thread per output)", {64, 33}, kSame, {true, false}},
      {"outer 5000 of 8 outputs (chunks of R, partials)", {5000, 8}, kSame, {true, false}},
      {"outer, 300 outputs on one SM", {700, 300}, kSame, {true, false}, 1},
      {"middle dim of [6, 40, 7]", {6, 40, 7}, kSame, {false, true, false}},
      {"dims 0 and 2 of [4, 5, 6]", {4, 5, 6}, kSame, {true, false, true}},
      {"dim 1 of a transposed [5, 7, 3]", {5, 7, 3}, transposed(0, 2), {false, true, false}},
      {"size-1 dims [1, 7, 1, 9]", {1, 7, 1, 9}, kSame, {true, false, true, true}},
      {"sliced rows, step 3", {30, 40}, [](const Tensor& t) { return slice(t, 0, 2, 30, 3); }, {false, true}},
      {"broadcast operand (stride 0)", {1, 50}, expand_to({20, 50}), {true, false}},
      {"empty reduced dim [4, 0]", {4, 0}, kSame, {false, true}},
      {"empty kept dim [0, 5]", {0, 5}, kSame, {false, true}},
      {"nothing reduced", {3, 4}, kSame, {false, false}},
  };
  for (const SumCase& c : cases)
    for (DType dt : kAll) {
      const bool ints = is_int(dt);
      Tensor base = U(c.base, 130, ints ? -50 : -1, ints ? 50 : 1).to(dt);
      Tensor a = c.view(base);
      const Shape out = kept_shape(a.shape(), c.reduce);
      // The CPU has no bf16 sum: it sums the same bf16 values in f32 tensors (in
      // double) and rounds the total.
      Tensor want = Tensor::empty(out, cpu_dtype(dt));
      kcpu::sum(dt == DType::BF16 ? a.to(DType::F32) : a, c.reduce, want);
      Tensor got = empty_dev(out, dt, c.device);
      kcuda::sum(to_dev(a, c.device), c.reduce, got);
      check_close(got, as_device_dtype(want, dt), sum_tol(dt, a.numel() / std::max<int64_t>(1, shape_numel(out))),
                  std::string("sum ") + c.name + " | " + dtype_name(dt));
    }
}

TEST_CASE("reduce.cu max_dim: rows (warp) and strided, first maximum, NaN wins, values and/or indices") {
  NoEmuErrors guard;
  struct Case {
    Shape shape;
    int64_t dim;
    int device;
  };
  const Case cases[] = {{{8, 300}, 1, 0}, {{50, 7}, 0, 0}, {{4, 6, 5}, 1, 0}, {{3, 1}, 1, 0},
                        {{1, 37}, 1, 0},  {{700, 41}, 1, 1}, {{41, 700}, 0, 1}};
  for (const Case& c : cases)
    for (DType dt : kAll)
      for (int with : {3, 1, 2}) {  // bit 0: values, bit 1: indices
        // Few distinct values: many ties, so "the first maximum" is tested.
        Tensor base = U(c.shape, 140, -3, 3);
        double* p = base.data<double>();
        for (int64_t i = 0; i < base.numel(); ++i) p[i] = std::round(p[i]);
        if (!is_int(dt) && base.numel() > 20) p[7] = p[base.numel() - 3] = NAN;
        Tensor a = base.to(dt);
        Shape out = c.shape;
        out[size_t(c.dim)] = 1;
        Tensor wv = Tensor::empty(out, cpu_dtype(dt)), wi = Tensor::empty(out, DType::I64);
        kcpu::max_dim(dt == DType::BF16 ? a.to(DType::F32) : a, c.dim, wv, wi);
        Tensor gv = empty_dev(out, dt, c.device), gi = empty_dev(out, DType::I64, c.device);
        kcuda::max_dim(to_dev(a, c.device), c.dim, (with & 1) ? gv : Tensor(), (with & 2) ? gi : Tensor());
        const std::string what = "max_dim " + shape_str(c.shape) + " dim " + std::to_string(c.dim) + " | " + dtype_name(dt);
        if (with & 1) check_close(gv, as_device_dtype(wv, dt), kExact, what + " values");
        if (with & 2) check_close(gi, wi, kExact, what + " indices");
        if (with != 3) continue;
        // The backward scatter of the same indices.
        Tensor g = U(out, 141).to(dt);
        Tensor want = Tensor::zeros(c.shape, cpu_dtype(dt));
        if (is_int(dt)) continue;  // scatter_dim is floating only
        kcpu::scatter_dim(g.to(cpu_dtype(dt)), wi, c.dim, want);
        Tensor got = empty_dev(c.shape, dt, c.device);
        kcuda::fill(got, 0.0);
        kcuda::scatter_dim(to_dev(g, c.device), gi, c.dim, got);
        check_close(got, as_device_dtype(want, dt), kExact, what + " scatter_dim");
      }
}

TEST_CASE("reduce.cu cumsum: row scan (warp shuffles, chunks carried), strided, reverse") {
  NoEmuErrors guard;
  struct Case {
    Shape shape;
    int64_t dim;
    int device;
  };
  const Case cases[] = {{{4, 700}, 1, 0}, {{3, 33}, 1, 0},  {{6, 20}, 1, 0},  {{300, 5}, 0, 0},
                        {{2, 3, 100}, 2, 0}, {{2, 64, 3}, 1, 0}, {{1, 1000}, 1, 1}, {{5, 0}, 1, 0}};
  for (const Case& c : cases)
    for (DType dt : kAll)
      for (bool reverse : {false, true}) {
        const bool ints = is_int(dt);
        Tensor a = U(c.shape, 150, ints ? -50 : -1, ints ? 50 : 1).to(dt);
        Tensor want = Tensor::empty(c.shape, cpu_dtype(dt));
        kcpu::cumsum(dt == DType::BF16 ? a.to(DType::F32) : a, c.dim, reverse, want);
        Tensor got = empty_dev(c.shape, dt, c.device);
        kcuda::cumsum(to_dev(a, c.device), c.dim, reverse, got);
        // Both carry the running sum in double; the block scan adds in another order.
        check_close(got, as_device_dtype(want, dt), sum_tol(dt, c.shape[size_t(c.dim)]),
                    "cumsum " + shape_str(c.shape) + " dim " + std::to_string(c.dim) + (reverse ? " reverse" : "") +
                        " | " + dtype_name(dt));
      }
}
