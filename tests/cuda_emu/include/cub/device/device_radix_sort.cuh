// Stand-in for CUB's DeviceRadixSort::SortPairs: its contract, run on the host over
// device memory (a stable sort on bits [begin_bit, end_bit) of the keys, signed keys
// ordered as CUB's bit twiddling orders them), with CUB's two-call temporary storage
// protocol checked. CUB's own kernels are not emulated.
#pragma once
#include <algorithm>
#include <cstdint>
#include <numeric>
#include <type_traits>
#include <vector>

#include "cuda_emu_access.h"
#include "cuda_runtime.h"

namespace emu {
// Bytes the emulated SortPairs asks for: enough that a caller passing too little shows.
inline size_t radix_sort_temp_bytes(int64_t n, size_t key_bytes, size_t value_bytes) {
  return size_t(n) * (key_bytes + value_bytes) + 256;
}
cudaError_t check_device_range(const void* p, size_t n, const char* what);
}  // namespace emu

namespace cub {

struct DeviceRadixSort {
  template <typename K, typename V, typename N>
  static cudaError_t SortPairs(void* d_temp_storage, size_t& temp_storage_bytes, const K* d_keys_in, K* d_keys_out,
                               const V* d_values_in, V* d_values_out, N num_items, int begin_bit = 0,
                               int end_bit = int(sizeof(K) * 8), cudaStream_t = nullptr, bool = false) {
    static_assert(std::is_integral_v<K>, "emulated SortPairs: integral keys only");
    const int64_t n = int64_t(num_items);
    const size_t need = emu::radix_sort_temp_bytes(n, sizeof(K), sizeof(V));
    if (d_temp_storage == nullptr) {
      temp_storage_bytes = need;
      return cudaSuccess;
    }
    if (temp_storage_bytes < need || n < 0 || begin_bit < 0 || end_bit > int(sizeof(K) * 8) || begin_bit > end_bit)
      return cudaErrorInvalidValue;
    for (auto [p, b] : {std::pair<const void*, size_t>{d_temp_storage, temp_storage_bytes},
                        {d_keys_in, n * sizeof(K)}, {d_keys_out, n * sizeof(K)}, {d_values_in, n * sizeof(V)},
                        {d_values_out, n * sizeof(V)}})
      if (n > 0 && emu::check_device_range(p, b, "cub::DeviceRadixSort::SortPairs") != cudaSuccess)
        return cudaErrorInvalidValue;
    emu::DeviceAccess access;
    using U = std::make_unsigned_t<K>;
    auto digit = [&](K k) {
      U u = U(k);
      if constexpr (std::is_signed_v<K>) u ^= U(U(1) << (sizeof(K) * 8 - 1));
      const int w = end_bit - begin_bit;
      const U m = w >= int(sizeof(K) * 8) ? ~U(0) : U((U(1) << w) - 1);
      return U(u >> begin_bit) & m;
    };
    std::vector<int64_t> order(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), int64_t(0));
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t a, int64_t b) { return digit(d_keys_in[a]) < digit(d_keys_in[b]); });
    std::vector<K> keys(static_cast<size_t>(n));
    std::vector<V> vals(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) keys[size_t(i)] = d_keys_in[order[size_t(i)]], vals[size_t(i)] = d_values_in[order[size_t(i)]];
    std::copy(keys.begin(), keys.end(), d_keys_out);
    std::copy(vals.begin(), vals.end(), d_values_out);
    return cudaSuccess;
  }
};

}  // namespace cub
