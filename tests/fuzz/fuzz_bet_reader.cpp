// libFuzzer target for the .bet reader (built with ASan and UBSan by
// run_bet_reader_asan.sh). The first byte picks the mode:
//   even: the rest is a whole file, decoded as is (checksums stop most damage early);
//   odd:  the rest is "header NUL index NUL data", resealed into a file with every
//         checksum right (bit 1 set: the frame checksums too), so mutations reach the
//         index parsing, the bounds checks and zstd.
// Decoding may succeed or throw bet::Error; anything else (another exception, a
// sanitizer report, an inconsistent tensor) is a finding.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "tests/fuzz/bet_reader_support.h"

namespace {
void check(bool ok) {
  if (!ok) std::abort();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string in(reinterpret_cast<const char*>(data + 1), size - 1);
  std::string file;
  if (data[0] % 2 == 0) {
    file = in;
  } else {
    const size_t a = in.find('\0');
    const size_t b = a == std::string::npos ? a : in.find('\0', a + 1);
    if (b == std::string::npos) return 0;
    nlohmann::json index = nlohmann::json::parse(in.begin() + long(a + 1), in.begin() + long(b), nullptr, false);
    if (index.is_discarded()) return 0;
    file = bet::fuzz::reseal(in.substr(0, a), in.substr(b + 1), std::move(index), (data[0] & 2) != 0);
  }
  try {
    bet::runtime::BetContents c = bet::runtime::decode_bet(file, "fuzz.bet");
    for (const auto& [name, t] : c.tensors) {
      uint64_t n = 1;
      for (int64_t d : t.shape()) {
        check(d >= 0);
        check(d == 0 || n <= UINT64_MAX / uint64_t(d));
        n *= uint64_t(d);
      }
      check(t.storage()->nbytes() == n * bet::dtype_size(t.dtype()));
    }
  } catch (const bet::Error&) {
  }
  return 0;
}
