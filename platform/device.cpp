#include "platform/device.h"

#include <atomic>
#include <cstdlib>

#include "bet_config.h"
#include "platform/error.h"

#if BET_HAVE_CUDA
#include "platform/cuda/runtime.h"
#endif

namespace bet {

namespace {
int real_cuda_device_count() {
#if BET_HAVE_CUDA
  return platform::cuda::device_count();
#else
  return 0;
#endif
}

int emulated_count() {
  static const int n = [] {
    const char* e = std::getenv("BET_EMULATE_CUDA");
    if (!e || !*e) return 0;
    char* end = nullptr;
    const long v = std::strtol(e, &end, 10);
    if (*end != '\0' || v < 1 || v > 8) return 0;
    return real_cuda_device_count() > 0 ? 0 : int(v);
  }();
  return n;
}

std::atomic<int> g_device_memory_scopes{0};
}  // namespace

int cuda_device_count() {
  const int e = emulated_count();
  return e > 0 ? e : real_cuda_device_count();
}

bool cuda_emulated() { return emulated_count() > 0; }

bool runs_on_gpu(Device d) { return BET_HAVE_CUDA && d.is_cuda() && !cuda_emulated(); }

void synchronize(Device d) {
#if BET_HAVE_CUDA
  if (runs_on_gpu(d)) platform::cuda::synchronize(d.index);
#else
  (void)d;
#endif
}

DeviceMemoryScope::DeviceMemoryScope() { g_device_memory_scopes.fetch_add(1, std::memory_order_relaxed); }
DeviceMemoryScope::~DeviceMemoryScope() { g_device_memory_scopes.fetch_sub(1, std::memory_order_relaxed); }

void check_host_access(Device d) {
  if (!cuda_emulated() || g_device_memory_scopes.load(std::memory_order_relaxed) > 0) return;
  fail("host code read the memory of a tensor on ", d.str(),
       " (emulated device): copy it to the CPU first (to(Device::cpu()), to_vector, item)");
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
  if (cuda_emulated()) {
    BET_CHECK(index < cuda_device_count(), "--device ", s, ": no CUDA device available with index ", index, " (",
              cuda_device_count(), " emulated)");
    return Device::cuda(index);
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
