#include "kernels/matmul.h"

#include <dnnl.hpp>

#include <algorithm>
#include <memory>
#include <mutex>
#include <optional>
#include <unordered_map>

#include "kernels/copy.h"
#include "kernels/cpu/matmul.h"
#include "platform/threads.h"

namespace bet::kernels::cpu {

using platform::kParallelGrain;
using platform::num_threads;
using platform::parallel_for;

namespace {

// ---------------------------------------------------------------- plain loop

template <typename T>
void matmul_loop(const TensorRef& a, const TensorRef& b, const TensorRef& bias, const TensorRef& out) {
  const int64_t r = out.dim();
  const int64_t M = out.shape()[r - 2], N = out.shape()[r - 1], K = a.shape()[r - 1];
  int64_t nb = 1;
  for (int64_t d = 0; d + 2 < r; ++d) nb *= out.shape()[d];
  if (nb * M * N == 0) return;

  // Per-batch offsets, with broadcast dims contributing nothing.
  std::vector<int64_t> aoff(size_t(nb), 0), boff(size_t(nb), 0);
  for (int64_t i = 0; i < nb; ++i) {
    int64_t rem = i;
    for (int64_t d = r - 3; d >= 0; --d) {
      int64_t idx = rem % out.shape()[d];
      rem /= out.shape()[d];
      if (a.shape()[d] != 1) aoff[size_t(i)] += idx * a.strides()[d];
      if (b.shape()[d] != 1) boff[size_t(i)] += idx * b.strides()[d];
    }
  }
  const T* A = static_cast<const T*>(a.raw_data());
  const T* B = static_cast<const T*>(b.raw_data());
  T* O = static_cast<T*>(out.raw_data());
  const T* bp = bias.defined() ? static_cast<const T*>(bias.raw_data()) : nullptr;
  const int64_t sbias = bias.defined() ? bias.strides()[0] : 0;
  const int64_t sam = a.strides()[r - 2], sak = a.strides()[r - 1];
  const int64_t sbk = b.strides()[r - 2], sbn = b.strides()[r - 1];

  const int64_t grain = std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(1, N * std::max<int64_t>(K, 1)));
  parallel_for(nb * M, grain, [&](int64_t lo, int64_t hi) {
    for (int64_t row = lo; row < hi; ++row) {
      const int64_t bi = row / M, i = row % M;
      T* o = O + row * N;
      for (int64_t j = 0; j < N; ++j) o[j] = bp ? bp[j * sbias] : T(0);
      const T* ap = A + aoff[size_t(bi)] + i * sam;
      const T* bb = B + boff[size_t(bi)];
      for (int64_t k = 0; k < K; ++k) {
        const T av = ap[k * sak];
        const T* brow = bb + k * sbk;
        if (sbn == 1) {
          for (int64_t j = 0; j < N; ++j) o[j] += av * brow[j];
        } else {
          for (int64_t j = 0; j < N; ++j) o[j] += av * brow[j * sbn];
        }
      }
    }
  });
}

// ---------------------------------------------------------------- oneDNN

dnnl::engine& dnnl_engine() {
  static dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  return eng;
}

// A stream is not meant to be shared between threads; the primitives are.
dnnl::stream& dnnl_stream() {
  thread_local dnnl::stream s(dnnl_engine());
  return s;
}

struct Entry {
  bool ok = true;  // false: oneDNN has no implementation; remembered so we ask once
  dnnl::matmul prim;
  dnnl::memory::desc a_md, b_md, bias_md, out_md;
};

struct KeyHash {
  size_t operator()(const std::vector<int64_t>& k) const {
    uint64_t h = 1469598103934665603ull;
    for (int64_t v : k) h = (h ^ uint64_t(v)) * 1099511628211ull;
    return size_t(h);
  }
};

// Creating a primitive costs tens of microseconds, comparable to a small GEMM, so
// primitives are kept per geometry. A training loop sees a handful of geometries.
class PrimitiveCache {
 public:
  std::shared_ptr<const Entry> find(const std::vector<int64_t>& key) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = map_.find(key);
    return it == map_.end() ? nullptr : it->second;
  }
  void insert(const std::vector<int64_t>& key, std::shared_ptr<const Entry> e) {
    std::lock_guard<std::mutex> lock(mu_);
    if (map_.size() >= kCapacity) map_.clear();  // unbounded shape streams: start over
    map_.emplace(key, std::move(e));
  }
  size_t size() {
    std::lock_guard<std::mutex> lock(mu_);
    return map_.size();
  }

 private:
  static constexpr size_t kCapacity = 1024;
  std::mutex mu_;
  std::unordered_map<std::vector<int64_t>, std::shared_ptr<const Entry>, KeyHash> map_;
};

PrimitiveCache& cache() {
  static PrimitiveCache c;
  return c;
}

// One operand as oneDNN will see it.
struct Geometry {
  dnnl::memory::dims dims, strides;
};

// Drops batch dims that are 1 everywhere and describes each operand; batch dims
// broadcast by a stride of 0 become size-1 dims, which oneDNN broadcasts itself.
// Returns false when an operand is not a strided matrix oneDNN's GEMM can read
// (a stride-0 matrix dim, or neither of the two inner dims unit-stride).
bool describe(const TensorRef& a, const TensorRef& b, const TensorRef& out, Geometry* ga, Geometry* gb,
              Geometry* go, bool* a_ok, bool* b_ok) {
  const int64_t r = out.dim();
  *ga = {}, *gb = {}, *go = {};
  for (int64_t d = 0; d + 2 < r; ++d) {
    const int64_t n = out.shape()[d];
    if (n == 1) continue;
    int64_t da = a.shape()[d], db = b.shape()[d];
    if (da != 1 && a.strides()[d] == 0) da = 1;
    if (db != 1 && b.strides()[d] == 0) db = 1;
    if (da == 1 && db == 1) {
      // Both operands expanded along this dim: oneDNN wants one of them real.
      if (b.shape()[d] != 1) {
        *b_ok = false;
        db = n;
      } else {
        *a_ok = false;
        da = n;
      }
    }
    ga->dims.push_back(da);
    ga->strides.push_back(da == 1 ? 0 : a.strides()[d]);
    gb->dims.push_back(db);
    gb->strides.push_back(db == 1 ? 0 : b.strides()[d]);
    go->dims.push_back(n);
  }
  auto matrix = [&](const TensorRef& t, Geometry* g) {
    const int64_t rows = t.shape()[r - 2], cols = t.shape()[r - 1];
    int64_t sr = t.strides()[r - 2], sc = t.strides()[r - 1];
    // A size-1 dim's stride is never applied; 1 keeps the BLAS leading-dim rules happy.
    if (rows == 1) sr = 1;
    if (cols == 1) sc = 1;
    g->dims.push_back(rows);
    g->dims.push_back(cols);
    g->strides.push_back(sr);
    g->strides.push_back(sc);
    return sr != 0 && sc != 0 && (sr == 1 || sc == 1);
  };
  *a_ok = matrix(a, ga) && *a_ok;
  *b_ok = matrix(b, gb) && *b_ok;
  go->dims.push_back(out.shape()[r - 2]);
  go->dims.push_back(out.shape()[r - 1]);
  // Size-1 batch dims (broadcast) get the stride an outer dim would have, so the
  // strides stay ordered and oneDNN can fuse batch dims into one GEMM where possible.
  for (Geometry* g : {ga, gb}) {
    int64_t extent = 1;
    for (size_t d = 0; d < g->dims.size(); ++d)
      if (g->dims[d] > 1) extent = std::max<int64_t>(extent, g->strides[d] * g->dims[d]);
    for (size_t d = 0; d + 2 < g->dims.size(); ++d)
      if (g->dims[d] == 1) g->strides[d] = extent;
  }
  go->strides.assign(go->dims.size(), 1);
  for (int64_t d = int64_t(go->dims.size()) - 2; d >= 0; --d) go->strides[d] = go->strides[d + 1] * go->dims[d + 1];
  return *a_ok && *b_ok;
}

std::shared_ptr<const Entry> get_primitive(const Geometry& ga, const Geometry& gb, const Geometry& go,
                                           bool with_bias) {
  std::vector<int64_t> key;
  key.reserve(4 + 5 * ga.dims.size());
  key.push_back(num_threads());
  key.push_back(with_bias);
  key.push_back(int64_t(ga.dims.size()));
  for (const Geometry* g : {&ga, &gb}) {
    key.insert(key.end(), g->dims.begin(), g->dims.end());
    key.insert(key.end(), g->strides.begin(), g->strides.end());
  }
  key.insert(key.end(), go.dims.begin(), go.dims.end());
  if (auto e = cache().find(key)) return e;

  using dt = dnnl::memory::data_type;
  auto e = std::make_shared<Entry>();
  try {
    e->a_md = dnnl::memory::desc(ga.dims, dt::f32, ga.strides);
    e->b_md = dnnl::memory::desc(gb.dims, dt::f32, gb.strides);
    e->out_md = dnnl::memory::desc(go.dims, dt::f32, go.strides);
    if (with_bias) {
      const size_t n = go.dims.size();
      const int64_t N = go.dims[n - 1];
      dnnl::memory::dims bd(n, 1), bs(n, N);
      bd[n - 1] = N;
      bs[n - 1] = 1;
      e->bias_md = dnnl::memory::desc(bd, dt::f32, bs);
      dnnl::matmul::desc d(e->a_md, e->b_md, e->bias_md, e->out_md);
      e->prim = dnnl::matmul(dnnl::matmul::primitive_desc(d, dnnl_engine()));
    } else {
      dnnl::matmul::desc d(e->a_md, e->b_md, e->out_md);
      e->prim = dnnl::matmul(dnnl::matmul::primitive_desc(d, dnnl_engine()));
    }
  } catch (const dnnl::error&) {
    e->ok = false;
  }
  cache().insert(key, e);
  return e;
}

// A dense copy of `t`, held by *keep.
TensorRef materialize(const TensorRef& t, std::optional<ScratchTensor>* keep) {
  keep->emplace(t.shape(), t.dtype(), t.device());
  copy(t, **keep);
  return **keep;
}

void matmul_f32(TensorRef a, TensorRef b, TensorRef bias, const TensorRef& out) {
  if (out.dim() - 2 > DNNL_MAX_NDIMS - 2) return matmul_loop<float>(a, b, bias, out);
  std::optional<ScratchTensor> a_dense, b_dense, bias_dense;
  // oneDNN's bias post-processing reads the bias as a dense row.
  if (bias.defined() && bias.numel() > 1 && bias.strides()[0] != 1) bias = materialize(bias, &bias_dense);
  Geometry ga, gb, go;
  bool a_ok = true, b_ok = true;
  if (!describe(a, b, out, &ga, &gb, &go, &a_ok, &b_ok)) {
    // Rare layouts (expanded rows, doubly strided matrices): one dense copy.
    if (!a_ok) a = materialize(a, &a_dense);
    if (!b_ok) b = materialize(b, &b_dense);
    a_ok = b_ok = true;
    if (!describe(a, b, out, &ga, &gb, &go, &a_ok, &b_ok)) return matmul_loop<float>(a, b, bias, out);
  }
  std::shared_ptr<const Entry> e = get_primitive(ga, gb, go, bias.defined());
  if (!e->ok) return matmul_loop<float>(a, b, bias, out);
  dnnl::engine& eng = dnnl_engine();
  dnnl::memory am(e->a_md, eng, a.raw_data());
  dnnl::memory bm(e->b_md, eng, b.raw_data());
  dnnl::memory om(e->out_md, eng, out.raw_data());
  std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, om}};
  if (bias.defined()) args.emplace(DNNL_ARG_BIAS, dnnl::memory(e->bias_md, eng, bias.raw_data()));
  try {
    e->prim.execute(dnnl_stream(), args);
    dnnl_stream().wait();
  } catch (const dnnl::error& err) {
    fail("matmul: oneDNN failed (", err.what(), ") for ", shape_str(a.shape()), " @ ", shape_str(b.shape()));
  }
}

// bf16, which has no GEMM here: the operands (exact in f32) are multiplied in f32
// and the product rounded to bf16, the GPU's numbers up to the order of accumulation.
void matmul_bf16(const TensorRef& a, const TensorRef& b, const TensorRef& bias, const TensorRef& out) {
  ScratchTensor a32(a.shape(), DType::F32, a.device()), b32(b.shape(), DType::F32, b.device());
  copy(a, a32);
  copy(b, b32);
  std::optional<ScratchTensor> bias32;
  if (bias.defined()) {
    bias32.emplace(bias.shape(), DType::F32, bias.device());
    copy(bias, *bias32);
  }
  ScratchTensor o32(out.shape(), DType::F32, out.device());
  matmul(a32, b32, bias32 ? bias32->ref() : TensorRef(), o32);
  copy(o32, out);
}

}  // namespace

void matmul(const TensorRef& a, const TensorRef& b, const TensorRef& bias, const TensorRef& out) {
  if (out.numel() == 0) return;
  const int64_t K = a.shape()[a.dim() - 1];
  switch (out.dtype()) {
    case DType::F32:
      if (K == 0) return matmul_loop<float>(a, b, bias, out);
      return matmul_f32(a, b, bias, out);
    case DType::F64: return matmul_loop<double>(a, b, bias, out);
    case DType::BF16: return matmul_bf16(a, b, bias, out);
    default: fail("matmul: dtype ", dtype_name(out.dtype()), " not supported on cpu");
  }
}

size_t matmul_cache_size() { return cache().size(); }

}  // namespace bet::kernels::cpu
