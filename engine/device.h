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
// without a driver or a GPU. Never throws and never prints.
int cuda_device_count();
inline bool cuda_available() { return cuda_device_count() > 0; }

// Parses a --device value: "cpu", "cuda" (= cuda:0) or "cuda:N". Throws bet::Error
// for a malformed value, and "no CUDA device available" (with the reason) when a
// CUDA device is asked for and this build or machine has none.
Device parse_device(const std::string& s);

}  // namespace bet
