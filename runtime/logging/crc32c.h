// CRC-32C (Castagnoli), as TFRecord framing requires, and its masked form.
#pragma once
#include <cstddef>
#include <cstdint>

namespace bet::runtime {

uint32_t crc32c(const void* data, size_t n, uint32_t crc = 0);
// TFRecord's mask: rotate right by 15 and add a constant, so CRCs of data that
// itself holds CRCs stay well distributed.
inline uint32_t masked_crc32c(const void* data, size_t n) {
  uint32_t c = crc32c(data, n);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

}  // namespace bet::runtime
