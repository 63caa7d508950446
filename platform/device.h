// Where a tensor's memory lives. Ops dispatch on this tag: (op, device) -> kernel.
#pragma once
#include <cstdint>
#include <string>

namespace bet {

enum class DeviceType : uint8_t { CPU, CUDA };

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;

  static Device cpu() { return {}; }
  static Device cuda(int i = 0) { return {DeviceType::CUDA, i}; }
  bool is_cpu() const { return type == DeviceType::CPU; }
  bool is_cuda() const { return type == DeviceType::CUDA; }
  bool operator==(const Device& o) const { return type == o.type && index == o.index; }
  bool operator!=(const Device& o) const { return !(*this == o); }
  std::string str() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index); }
};

// GPUs this process can use: 0 in a build without the CUDA backend, and on a machine
// without a driver or a GPU (unless emulated, below). Never throws and never prints.
int cuda_device_count();
inline bool cuda_available() { return cuda_device_count() > 0; }

// Emulated CUDA devices, for testing device placement where there is no GPU (CI).
// With BET_EMULATE_CUDA=N (1..8) in the environment and no real GPU, the process sees
// N "cuda" devices whose memory is host memory and whose kernels are the CPU's, so
// results are bit-identical to the CPU. What it checks is everything above the
// kernels: a tensor left on the wrong device fails the op's same-device check, and
// host code that reads a device tensor's memory without copying it to the CPU first
// fails check_host_access() (on a real GPU that read would be of a device pointer).
bool cuda_emulated();

// The device's memory and kernels are a GPU's: a CUDA device in a build with the CUDA
// backend, not emulated. False for the CPU and for an emulated device (host memory,
// CPU kernels).
bool runs_on_gpu(Device d);

// Waits until the work issued to `d` has finished (timings); nothing to wait for on the
// CPU or an emulated device, whose kernels complete before they return.
void synchronize(Device d);

// Scope of code allowed to touch a device tensor's memory directly: kernels and the
// copies between devices. Process-wide (a counter), so a kernel's OpenMP workers are
// covered; another thread's stray read during a kernel goes unnoticed, never the
// reverse.
class DeviceMemoryScope {
 public:
  DeviceMemoryScope();
  ~DeviceMemoryScope();
  DeviceMemoryScope(const DeviceMemoryScope&) = delete;
  DeviceMemoryScope& operator=(const DeviceMemoryScope&) = delete;
};

// Called by Tensor::data() for a CUDA tensor: throws when emulating and no
// DeviceMemoryScope is open (host code reading device memory). Free otherwise.
void check_host_access(Device d);

// Parses a --device value: "cpu", "cuda" (= cuda:0) or "cuda:N". Throws bet::Error
// for a malformed value, and "no CUDA device available" (with the reason) when a
// CUDA device is asked for and this build or machine has none.
Device parse_device(const std::string& s);

}  // namespace bet
