// gather, its adjoint scatter_add, and the index range check.
//
// scatter_add has two deterministic forms. When the index is one list expanded
// along the other dims (embedding and index_select backward), the list is sorted
// stably (CUB radix sort) and each run of equal indices is summed in list order by
// one thread per (run, column). Otherwise (gather's backward, small index dims) each
// destination element scans its line of the index.
#include <cub/device/device_radix_sort.cuh>

#include "kernels/index.h"

#include "kernels/copy.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launch.cuh"

namespace bet::kernels::cuda {

namespace {

template <typename T, typename I>
void gather_t(const TensorRef& a, int64_t dim, const TensorRef& index, const TensorRef& out) {
  Shape ast = a.strides();
  const int64_t sd = ast[size_t(dim)];
  ast[size_t(dim)] = 0;
  const T* pa = ptr<T>(a);
  const I* pi = ptr<I>(index);
  T* po = ptr<T>(out);
  auto g = geom_of<3>(out.shape(), {&out.strides(), &index.strides(), &ast}, "gather");
  launch_foreach(g, [=] __device__(auto* off) { po[off[0]] = pa[off[2] + int64_t(pi[off[1]]) * sd]; });
}

// Lines: every position of `shape` with `dim` dropped, for operands with the given
// strides (dim dropped too).
template <int N>
Geom<N> lines_of(const Shape& shape, int64_t dim, std::initializer_list<const Shape*> strides, const char* op) {
  Shape s = shape;
  s.erase(s.begin() + dim);
  std::vector<Shape> st;
  for (const Shape* p : strides) {
    Shape q = *p;
    q.erase(q.begin() + dim);
    st.push_back(q);
  }
  if (s.empty()) {
    s = {1};
    for (auto& q : st) q = {0};
  }
  const Shape* sp[N];
  for (int k = 0; k < N; ++k) sp[k] = &st[size_t(k)];
  Geom<N> g;
  BET_CHECK(make_geom<N>(s, sp, &g), op, ": too many dims for cuda");
  return g;
}

template <typename I>
__global__ void keys_kernel(const I* idx, int64_t stride, int64_t J, int64_t* keys, int64_t* pos) {
  const int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= J) return;
  keys[j] = int64_t(idx[j * stride]);
  pos[j] = j;
}

// Thread per (sorted position i, line q); only the first position of each run works.
template <typename T>
__global__ void run_sum_kernel(const int64_t* keys, const int64_t* pos, int64_t J, Geom<2> lines, const T* src,
                               int64_t src_dim_stride, T* dst, int64_t dst_dim_stride) {
  using C = Acc<T>;
  const int64_t Q = lines.numel;
  const int64_t n = J * Q;
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < n; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = t / Q, q = t - i * Q;
    const int64_t key = keys[i];
    if (i > 0 && keys[i - 1] == key) continue;
    int64_t off[2];
    lines.offsets<int64_t>(q, off);
    C acc = 0;
    for (int64_t k = i; k < J && keys[k] == key; ++k) acc += convert<C>(src[off[0] + pos[k] * src_dim_stride]);
    T* d = dst + off[1] + key * dst_dim_stride;
    *d = convert<T>(convert<C>(*d) + acc);
  }
}

// Thread per (line q, destination t along dim): adds the line's matching sources.
template <typename T, typename I>
__global__ void scan_scatter_kernel(Geom<3> lines, int64_t n_dst, int64_t J, const I* idx, int64_t idx_dim_stride,
                                    const T* src, int64_t src_dim_stride, T* dst, int64_t dst_dim_stride) {
  using C = Acc<T>;
  const int64_t total = lines.numel * n_dst;
  for (int64_t u = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; u < total; u += int64_t(gridDim.x) * blockDim.x) {
    const int64_t q = u / n_dst, t = u - q * n_dst;
    int64_t off[3];  // dst, src, index
    lines.offsets<int64_t>(q, off);
    C acc = 0;
    bool any = false;
    for (int64_t j = 0; j < J; ++j) {
      if (int64_t(idx[off[2] + j * idx_dim_stride]) != t) continue;
      acc += convert<C>(src[off[1] + j * src_dim_stride]);
      any = true;
    }
    if (any) {
      T* d = dst + off[0] + t * dst_dim_stride;
      *d = convert<T>(convert<C>(*d) + acc);
    }
  }
}

template <typename T, typename I>
void scatter_add_t(const TensorRef& dst, int64_t dim, const TensorRef& index, const TensorRef& src) {
  const int64_t J = index.shape()[size_t(dim)];
  const int64_t n_dst = dst.shape()[size_t(dim)];
  bool expanded = true;  // the index varies along `dim` only
  for (int64_t d = 0; d < index.dim(); ++d)
    if (d != dim && index.shape()[size_t(d)] != 1 && index.strides()[size_t(d)] != 0) expanded = false;
  const I* pi = ptr<I>(index);
  const T* ps = ptr<T>(src);
  T* pd = ptr<T>(dst);
  const int64_t sds = src.strides()[size_t(dim)], dds = dst.strides()[size_t(dim)];
  if (!expanded) {
    auto lines = lines_of<3>(src.shape(), dim, {&dst.strides(), &src.strides(), &index.strides()}, "scatter_add");
    scan_scatter_kernel<T, I><<<grid_for(lines.numel * n_dst), kThreads>>>(
        lines, n_dst, J, pi, index.strides()[size_t(dim)], ps, sds, pd, dds);
    BET_CUDA_LAUNCHED("scatter_add");
    return;
  }
  const Device dev = dst.device();
  ScratchTensor keys({2, J}, DType::I64, dev), sorted({2, J}, DType::I64, dev);
  int64_t* k_in = ptr<int64_t>(keys);
  int64_t* p_in = k_in + J;
  int64_t* k_out = ptr<int64_t>(sorted);
  int64_t* p_out = k_out + J;
  keys_kernel<I><<<unsigned((J + kThreads - 1) / kThreads), kThreads>>>(pi, index.strides()[size_t(dim)], J, k_in, p_in);
  BET_CUDA_LAUNCHED("scatter_add");
  int end_bit = 1;  // indices are in [0, n_dst): sort only the bits they use
  while (end_bit < 63 && (int64_t(1) << end_bit) < n_dst) ++end_bit;
  size_t temp_bytes = 0;
  BET_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, k_in, k_out, p_in, p_out, J, 0, end_bit));
  ScratchTensor temp({int64_t(temp_bytes / 8 + 1)}, DType::I64, dev);
  BET_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp.raw_data(), temp_bytes, k_in, k_out, p_in, p_out, J, 0, end_bit));
  auto lines = lines_of<2>(src.shape(), dim, {&src.strides(), &dst.strides()}, "scatter_add");
  run_sum_kernel<T><<<grid_for(J * lines.numel), kThreads>>>(k_out, p_out, J, lines, ps, sds, pd, dds);
  BET_CUDA_LAUNCHED("scatter_add");
}

template <typename I>
__global__ void range_kernel(Geom<1> g, const I* idx, int64_t n, unsigned long long* first) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < g.numel; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off;
    g.offsets<int64_t>(i, &off);
    const int64_t v = int64_t(idx[off]);
    if (v < 0 || v >= n) atomicMin(first, (unsigned long long)i);  // the lowest position: order-free
  }
}

}  // namespace

void gather(const TensorRef& a, int64_t dim, const TensorRef& index, const TensorRef& out) {
  if (out.numel() == 0) return;
  BET_CHECK(a.dtype() == out.dtype(), "gather: dtypes differ");
  DeviceGuard dg(out);
  dispatch_index(index.dtype(), "gather", [&](auto itag) {
    using I = decltype(itag);
    dispatch_all(a.dtype(), "gather", [&](auto tag) { gather_t<decltype(tag), I>(a, dim, index, out); });
  });
}

void scatter_add(const TensorRef& dst, int64_t dim, const TensorRef& index, const TensorRef& src) {
  if (src.numel() == 0) return;
  BET_CHECK(dst.dtype() == src.dtype(), "scatter_add: dtypes differ");
  DeviceGuard dg(dst);
  dispatch_index(index.dtype(), "scatter_add", [&](auto itag) {
    using I = decltype(itag);
    dispatch_float(dst.dtype(), "scatter_add", [&](auto tag) { scatter_add_t<decltype(tag), I>(dst, dim, index, src); });
  });
}

bool find_out_of_range(const TensorRef& index, int64_t n, int64_t* bad) {
  const int64_t total = index.numel();
  if (total == 0) return false;
  DeviceGuard dg(index);
  const Device dev = index.device();
  ScratchTensor first({1}, DType::I64, dev);
  fill(first, double(total));
  auto g = geom_of<1>(index.shape(), {&index.strides()}, "index check");
  dispatch_index(index.dtype(), "index check", [&](auto itag) {
    using I = decltype(itag);
    range_kernel<I><<<grid_for(total), kThreads>>>(g, ptr<I>(index), n, static_cast<unsigned long long*>(first.raw_data()));
    BET_CUDA_LAUNCHED("index check");
  });
  int64_t pos = total;
  BET_CUDA_CHECK(cudaMemcpy(&pos, first.raw_data(), sizeof(int64_t), cudaMemcpyDeviceToHost));
  if (pos >= total) return false;
  int64_t off = 0;
  g.offsets<int64_t>(pos, &off);
  const size_t es = dtype_size(index.dtype());
  int64_t v = 0;
  BET_CUDA_CHECK(cudaMemcpy(&v, static_cast<const char*>(index.raw_data()) + off * int64_t(es), es,
                            cudaMemcpyDeviceToHost));
  *bad = index.dtype() == DType::I32 ? int64_t(int32_t(v)) : v;
  return true;
}

}  // namespace bet::kernels::cuda
