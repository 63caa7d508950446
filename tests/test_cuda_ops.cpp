// The CUDA backend against the CPU. The ops: every sample of the op table
// (tests/op_table.h, test-backend-ops style) run on the CPU and on the GPU from the same
// inputs, forward values and input gradients compared with per-dtype tolerances. Beside
// it: the dropout mask bit for bit (one Philox stream on both devices) and AdamW steps.
//
// The build-cudaemu configuration (-Dgpu_emulation=true, run by tools/test) runs these
// GPU cases on the emulated device of tests/cuda_emu: the real dispatch and kernel code.
// Without a GPU the GPU cases are skipped with a message; what runs instead is the
// host-side logic of the backend (geometry, GEMM planning, Philox element mapping,
// device allocator). The table's CPU checks (f32 against f64, finite differences,
// PyTorch's values) are in tests/test_op_table.cpp.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "engine/device.h"
#include "engine/device_allocator.h"
#include "engine/ops.h"
#include "engine/optim/optimizer.h"
#include "engine/random.h"
#include "tests/gpu_op_harness.h"
#include "tests/op_table_check.h"
#include "kernels/cuda/gemm_plan.h"
#include "kernels/cuda/geom.h"
#include "kernels/cuda/philox.h"

using namespace bet;
using namespace bet::test::gpu;

namespace {

// The op table of tests/op_table.h: every sample of every op as a GPU-against-CPU case.
const std::vector<OpCase>& table_cases() {
  static const std::vector<OpCase> cases = bet::optable::as_gpu_cases(bet::optable::op_table());
  return cases;
}

int gpu_case_count() {
  return gpu_comparisons(table_cases()) + 3 * 2 /* dropout draws x f32/f64 */ + 2 /* adamw + clipping, f32/f64 */;
}

bool gpu_or_skip() { return bet::test::gpu::gpu_or_skip(gpu_case_count()); }

}  // namespace

// ================================================================ runs everywhere

TEST_CASE("geometry: coalesced offsets equal the strided offsets") {
  using kernels::cuda::Geom;
  Generator gen(7);
  for (int trial = 0; trial < 200; ++trial) {
    const int rank = 1 + int(gen.randint(5));
    Shape shape(static_cast<size_t>(rank), 1), s0, s1(static_cast<size_t>(rank), 0);
    for (int d = 0; d < rank; ++d) shape[size_t(d)] = 1 + int64_t(gen.randint(4));
    // operand 0 contiguous; operand 1 a permutation of it, with broadcast dims
    s0 = contiguous_strides(shape);
    std::vector<int64_t> perm = gen.permutation(rank);
    Shape ps(static_cast<size_t>(rank), 1);
    for (int d = 0; d < rank; ++d) ps[size_t(d)] = shape[size_t(perm[size_t(d)])];
    const Shape pst = contiguous_strides(ps);
    for (int d = 0; d < rank; ++d) {
      int64_t st = 0;
      for (int e = 0; e < rank; ++e)
        if (perm[size_t(e)] == d) st = pst[size_t(e)];
      s1[size_t(d)] = gen.randint(4) == 0 ? 0 : st;
    }
    const Shape* st[2] = {&s0, &s1};
    Geom<2> g;
    REQUIRE(kernels::cuda::make_geom<2>(shape, st, &g));
    REQUIRE(g.fits_int32());
    const int64_t n = shape_numel(shape);
    CHECK(g.numel == n);
    std::vector<int64_t> idx(size_t(rank), 0);
    for (int64_t i = 0; i < n; ++i) {
      int64_t want0 = 0, want1 = 0;
      for (int d = 0; d < rank; ++d) want0 += idx[size_t(d)] * s0[size_t(d)], want1 += idx[size_t(d)] * s1[size_t(d)];
      int64_t off64[2];
      int32_t off32[2];
      g.offsets<int64_t>(i, off64);
      g.offsets<int32_t>(int32_t(i), off32);
      if (off64[0] != want0 || off64[1] != want1 || off32[0] != want0 || off32[1] != want1) {
        FAIL(("offset mismatch at " + std::to_string(i) + " for shape " + shape_str(shape)));
      }
      for (int d = rank - 1; d >= 0; --d) {
        if (++idx[size_t(d)] < shape[size_t(d)]) break;
        idx[size_t(d)] = 0;
      }
    }
  }
}

TEST_CASE("geometry: contiguous operands coalesce to rank 1; too many dims is refused") {
  using kernels::cuda::Geom;
  Shape shape{3, 4, 5}, st = contiguous_strides(shape);
  const Shape* p[1] = {&st};
  Geom<1> g;
  REQUIRE(kernels::cuda::make_geom<1>(shape, p, &g));
  CHECK(g.rank == 1);
  CHECK(g.size[0] == 60);
  Shape big(10, 2), bst(10);
  for (int d = 0; d < 10; ++d) bst[size_t(d)] = int64_t(1) << (2 * (9 - d));  // never mergeable
  const Shape* q[1] = {&bst};
  CHECK_FALSE(kernels::cuda::make_geom<1>(big, q, &g));
}

namespace {

// cuBLAS's column-major strided-batched GEMM, on host memory: what a plan asks for.
void reference_gemm(const kernels::cuda::GemmPlan& p, const double* A, const double* B, double* C) {
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t i = 0; i < p.m; ++i)
      for (int64_t j = 0; j < p.n; ++j) {
        double s = 0;
        for (int64_t l = 0; l < p.k; ++l) {
          const double a = p.trans_a ? A[b * p.stride_a + l + i * p.lda] : A[b * p.stride_a + i + l * p.lda];
          const double v = p.trans_b ? B[b * p.stride_b + j + l * p.ldb] : B[b * p.stride_b + l + j * p.ldb];
          s += a * v;
        }
        C[b * p.stride_c + i + j * p.ldc] = s;
      }
}

// a and b already at out's rank (as the op passes them).
void check_plan(const Tensor& a0, const Tensor& b0, const char* what) {
  CAPTURE(what);
  Tensor want = matmul(a0, b0);
  const Shape out_shape = want.shape();
  const size_t r = out_shape.size();
  auto pad = [&](const Tensor& t) {
    Shape s(r - size_t(t.dim()), 1), st(r - size_t(t.dim()), 0);
    s.insert(s.end(), t.shape().begin(), t.shape().end());
    st.insert(st.end(), t.strides().begin(), t.strides().end());
    return make_view(t, s, st, t.offset());
  };
  Tensor a = pad(a0), b = pad(b0);
  kernels::cuda::GemmPlan p;
  bool ca = false, cb = false;
  if (!kernels::cuda::plan_gemm(a.shape(), a.strides(), b.shape(), b.strides(), out_shape, &p, &ca, &cb)) {
    // What matmul.cu does: dense copies of the refused operands, expanded to the batch.
    auto dense = [&](const Tensor& t, int64_t rows, int64_t cols) {
      Shape s = out_shape;
      s[r - 2] = rows, s[r - 1] = cols;
      return expand(t, s).contiguous();
    };
    const int64_t K = a.shape()[r - 1];
    if (ca) a = dense(a, out_shape[r - 2], K);
    if (cb) b = dense(b, K, out_shape[r - 1]);
    REQUIRE(kernels::cuda::plan_gemm(a.shape(), a.strides(), b.shape(), b.strides(), out_shape, &p, &ca, &cb));
  }
  Tensor got = Tensor::zeros(out_shape, DType::F64);
  reference_gemm(p, b.data<double>(), a.data<double>(), got.data<double>());
  CHECK(compare(got, want, {1e-12, 1e-12}) == "");
}

}  // namespace

TEST_CASE("GEMM planning: cuBLAS parameters reproduce the CPU matmul on strided views") {
  check_plan(U({4, 5}, 1), U({5, 3}, 2), "plain");
  check_plan(transpose(U({5, 4}, 3), 0, 1), U({5, 3}, 4), "a transposed");
  check_plan(U({4, 5}, 5), transpose(U({3, 5}, 6), 0, 1), "b transposed");
  check_plan(transpose(U({5, 4}, 7), 0, 1), transpose(U({3, 5}, 8), 0, 1), "both transposed");
  check_plan(slice(U({4, 9}, 9), 1, 2, 7), slice(U({5, 8}, 10), 1, 1, 4), "column slices (ld > cols)");
  check_plan(slice(U({4, 9}, 11), 1, 0, 9, 2), U({5, 3}, 12), "stride-2 columns (copied)");
  check_plan(U({3, 4, 5}, 13), U({5, 6}, 14), "batch @ shared 2-d (one folded GEMM)");
  check_plan(U({3, 1, 5}, 15), U({5, 6}, 16), "M = 1 batches folded");
  check_plan(U({1, 4, 5}, 17), U({3, 5, 6}, 18), "broadcast a over the batch");
  check_plan(U({2, 1, 4, 5}, 19), U({3, 5, 6}, 20), "partial broadcast (copied)");
  check_plan(U({2, 3, 4, 8}, 21), transpose(U({2, 3, 5, 8}, 22), -1, -2), "K^T per batch");
  check_plan(transpose(U({3, 2, 4, 5}, 23), 0, 1), U({2, 3, 5, 6}, 24), "batch dims permuted (copied)");
  check_plan(U({4, 1}, 25), U({1, 6}, 26), "K = 1");
  check_plan(U({1, 5}, 27), U({5, 1}, 28), "M = N = 1");
  check_plan(transpose(U({6, 4, 5}, 29), 1, 2), U({6, 4, 3}, 30), "batched, a transposed");
}

TEST_CASE("Philox (host build of the device code) equals bet::philox4x32") {
  Generator g(99);
  for (int i = 0; i < 2000; ++i) {
    const uint64_t key = (uint64_t(g.randint(1u << 30)) << 34) ^ g.randint(1u << 30);
    const uint64_t ctr = i < 1000 ? uint64_t(i) + (uint64_t(0xFFFFFFFFu) - 500) : (uint64_t(g.randint(1u << 30)) << 20);
    const auto want = philox4x32(key, ctr);
    const auto got = kernels::cuda::philox4x32_10(key, ctr);
    for (int q = 0; q < 4; ++q) REQUIRE(got.w[q] == want[size_t(q)]);
  }
}

TEST_CASE("dropout mask: the GPU kernel's block walk, run on the host, equals the CPU kernel") {
  for (double p : {0.0, 0.1, 0.5, 1.0 / 3.0, 0.9, 1.0}) {
    for (uint64_t offset : {uint64_t(0), uint64_t(3), uint64_t(5), (uint64_t(1) << 34) - 2}) {
      const int64_t n = 37;
      Tensor x = U({n}, 5, 0.5, 1.5).to(DType::F32);
      Tensor want = dropout(x, p, true, 777, offset);
      const std::vector<float> xv = x.to_vector<float>(), wv = want.to_vector<float>();
      std::vector<float> got(size_t(n), -1.0f);
      // The loop of dropout_kernel (kernels/cuda/rope_dropout.cu), one thread per block.
      const int64_t thr = kernels::cuda::dropout_threshold(p);
      const float scale = p >= 1.0 ? 0.0f : float(1.0 / (1.0 - p));
      const uint64_t first = offset >> 2, nb = ((offset + uint64_t(n) - 1) >> 2) - first + 1;
      for (uint64_t b = 0; b < nb; ++b) {
        const auto r = kernels::cuda::philox4x32_10(777, first + b);
        for (int q = 0; q < 4; ++q) {
          const uint64_t c = ((first + b) << 2) + uint64_t(q);
          if (c < offset || c - offset >= uint64_t(n)) continue;
          const size_t i = size_t(c - offset);
          got[i] = kernels::cuda::dropout_keep(r.w[q], thr) ? xv[i] * scale : 0.0f;
        }
      }
      CAPTURE(p);
      CAPTURE(offset);
      for (int64_t i = 0; i < n; ++i) REQUIRE(got[size_t(i)] == wv[size_t(i)]);
    }
  }
}

namespace {
// A fake device: malloc under a byte budget.
struct FakeDevice {
  static inline std::map<void*, size_t> blocks;
  static inline size_t budget = 0;
  static inline int frees = 0;
  static size_t live() {
    size_t n = 0;
    for (auto& [p, s] : blocks) n += s;
    return n;
  }
  static void* alloc(size_t n, int) {
    if (live() + n > budget) return nullptr;
    void* p = std::malloc(n);
    blocks[p] = n;
    return p;
  }
  static void release(void* p, int) {
    blocks.erase(p);
    std::free(p);
    ++frees;
  }
};
}  // namespace

TEST_CASE("device caching allocator: size classes, reuse, stats, out-of-memory retry and error") {
  for (size_t n : {size_t(0), size_t(1), size_t(511), size_t(512), size_t(513), size_t(100000), size_t(3) << 20}) {
    const size_t c = DeviceCachingAllocator::round_size(n);
    CHECK(c >= n);
    CHECK(c % 512 == 0);
  }
  FakeDevice::budget = 64 << 10;
  DeviceCachingAllocator a({&FakeDevice::alloc, &FakeDevice::release});
  size_t cap1 = 0, cap2 = 0;
  void* p1 = a.allocate(1000, 0, &cap1);
  REQUIRE(p1 != nullptr);
  a.release(p1, cap1, 0);
  void* p2 = a.allocate(900, 0, &cap2);  // same size class: the cached block, no device call
  CHECK(p2 == p1);
  CHECK(cap2 == cap1);
  AllocatorStats s = a.stats(0);
  CHECK(s.system_allocs == 1);
  CHECK(s.cache_hits == 1);
  CHECK(s.bytes_in_use == cap2);
  a.release(p2, cap2, 0);
  CHECK(a.stats(0).bytes_cached == cap2);
  CHECK(a.stats(1).system_allocs == 0);  // devices are separate
  a.empty_cache();
  CHECK(FakeDevice::live() == 0);
  // The budget full of cached blocks of one class; a request of another class makes
  // the allocator return its cache to the device and retry.
  std::vector<std::pair<void*, size_t>> held;
  for (int i = 0; i < 4; ++i) {
    size_t c = 0;
    void* p = a.allocate(16 << 10, 0, &c);
    REQUIRE(p != nullptr);
    held.push_back({p, c});
  }
  for (auto& [p, c] : held) a.release(p, c, 0);
  CHECK(FakeDevice::live() == size_t(64 << 10));
  const int frees = FakeDevice::frees;
  size_t cb = 0;
  void* big = a.allocate(40 << 10, 0, &cb);
  CHECK(big != nullptr);
  CHECK(FakeDevice::frees == frees + 4);
  CHECK(a.stats(0).bytes_cached == 0);
  size_t cx = 0;
  CHECK_THROWS_WITH_AS(a.allocate(1 << 20, 0, &cx), doctest::Contains("out of memory on cuda:0"), Error);
  a.release(big, cb, 0);
  a.empty_cache();
}

TEST_CASE("--device parsing") {
  CHECK(parse_device("cpu") == Device::cpu());
  CHECK_THROWS_WITH_AS(parse_device("gpu"), doctest::Contains("expected cpu, cuda or cuda:N"), Error);
  CHECK_THROWS_WITH_AS(parse_device("cuda:"), doctest::Contains("expected cpu, cuda or cuda:N"), Error);
  CHECK_THROWS_WITH_AS(parse_device("cuda:-1"), doctest::Contains("expected cpu, cuda or cuda:N"), Error);
  if (cuda_available()) {
    CHECK(parse_device("cuda") == Device::cuda(0));
    CHECK(parse_device("cuda:0") == Device::cuda(0));
    CHECK_THROWS_WITH_AS(parse_device("cuda:999"), doctest::Contains("no CUDA device available"), Error);
  } else {
    CHECK(cuda_device_count() == 0);
    CHECK_THROWS_WITH_AS(parse_device("cuda"), doctest::Contains("no CUDA device available"), Error);
    CHECK_THROWS_WITH_AS(parse_device("cuda:1"), doctest::Contains("no CUDA device available"), Error);
    // Device memory is refused with an error, never a crash.
    CHECK_THROWS_AS(Tensor::zeros({2}, DType::F32, Device::cuda(0)), Error);
  }
}

// ================================================================ GPU only

TEST_CASE("GPU: op table (tests/op_table.h) against the CPU, forward and backward (f32, f64, bf16)" * gpu_cases()) {
  if (!gpu_or_skip()) return;
  check_cases_on_gpu(table_cases());
}

// The emulator's cuda:1 has one SM, so every grid-stride loop really loops there.
TEST_CASE("GPU: op table on the last of several devices, f32" * doctest::skip(cuda_device_count() < 2)) {
  check_cases_on_gpu(table_cases(), cuda_device_count() - 1, false);
}

TEST_CASE("GPU: dropout masks are bit-identical to the CPU's (one Philox stream)" * gpu_cases()) {
  if (!gpu_or_skip()) return;
  struct Draw {
    int64_t n;
    double p;
    uint64_t seed, offset;
  };
  for (const Draw& d : {Draw{1 << 20, 0.1, 42, 0}, Draw{100003, 0.5, 7, 3}, Draw{4097, 0.9, ~uint64_t(0) >> 3, (uint64_t(1) << 34) - 6}}) {
    CAPTURE(d.n);
    CAPTURE(d.offset);
    for (DType dt : {DType::F32, DType::F64}) {
      Tensor x = U({d.n}, 11, 0.5, 1.5).to(dt);
      const Tensor want = dropout(x, d.p, true, d.seed, d.offset);
      const Tensor got = dropout(x.to(Device::cuda(0)), d.p, true, d.seed, d.offset).to(Device::cpu());
      // Bit equality of the values (same mask, same x * scale rounding).
      const std::vector<double> w = want.to_vector<double>(), g = got.to_vector<double>();
      int64_t mismatches = 0;
      for (size_t i = 0; i < w.size(); ++i) mismatches += w[i] != g[i];
      CHECK(mismatches == 0);
    }
  }
}

TEST_CASE("GPU: AdamW steps and gradient clipping match the CPU" * gpu_cases()) {
  if (!gpu_or_skip()) return;
  for (DType dt : {DType::F32, DType::F64}) {
    CAPTURE(dtype_name(dt));
    Tensor w_cpu = U({37, 11}, 1).to(dt).detach().set_requires_grad();
    Tensor b_cpu = U({11}, 2).to(dt).detach().set_requires_grad();
    Tensor w_gpu = w_cpu.detach().to(Device::cuda(0)).set_requires_grad();
    Tensor b_gpu = b_cpu.detach().to(Device::cuda(0)).set_requires_grad();
    optim::AdamW oc({w_cpu, b_cpu}, {}, {true, false}), og({w_gpu, b_gpu}, {}, {true, false});
    for (int step = 0; step < 5; ++step) {
      Tensor g1 = U({37, 11}, 100 + uint64_t(step)).to(dt), g2 = U({11}, 200 + uint64_t(step)).to(dt);
      w_cpu.set_grad(g1);
      b_cpu.set_grad(g2);
      w_gpu.set_grad(g1.to(Device::cuda(0)));
      b_gpu.set_grad(g2.to(Device::cuda(0)));
      const double nc = optim::clip_grad_norm(oc.params(), 0.5), ng = optim::clip_grad_norm(og.params(), 0.5);
      CHECK(std::abs(nc - ng) <= 1e-12 * std::abs(nc) + (dt == DType::F32 ? 1e-6 : 0.0));
      oc.step();
      og.step();
    }
    CHECK(compare(host(w_gpu), host(w_cpu), tol_for(dt, 10.0)) == "");
    CHECK(compare(host(b_gpu), host(b_cpu), tol_for(dt, 10.0)) == "");
  }
}

// ================================================================ fused attention (engine/ops/attention_ops.cpp)
// On a GPU, f32 and bf16 run the fused kernels (kernels/cuda/attention.cu), f64 and
// head dims above 128 the composite; all against the CPU composite.
