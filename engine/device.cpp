#include "engine/device.h"

#include "bet_config.h"
#include "engine/error.h"

#if BET_HAVE_CUDA
#include "kernels/cuda/runtime.h"
#endif

namespace bet {

int cuda_device_count() {
#if BET_HAVE_CUDA
  return kernels::cuda::device_count();
#else
  return 0;
#endif
}

Device parse_device(const std::string& s) {
  if (s == "cpu") return Device::cpu();
  int index = 0;
  if (s != "cuda") {
    BET_CHECK(s.rfind("cuda:", 0) == 0 && s.size() > 5 && s.size() <= 8 &&
                  s.find_first_not_of("0123456789", 5) == std::string::npos,
              "--device ", s, ": expected cpu, cuda or cuda:N");
    index = std::stoi(s.substr(5));
  }
#if BET_HAVE_CUDA
  const int n = cuda_device_count();
  BET_CHECK(n > 0, "--device ", s, ": no CUDA device available (no driver or no GPU found)");
  BET_CHECK(index < n, "--device ", s, ": no CUDA device available with index ", index, " (", n, " found)");
#else
  fail("--device ", s, ": no CUDA device available (this build has no CUDA backend; rebuild with -Dcuda=enabled)");
#endif
  return Device::cuda(index);
}

}  // namespace bet
