// Counters of the emulator, readable from test code without the CUDA stand-in headers.
#pragma once
#include <cstddef>

namespace emu {

struct Stats {
  long launches = 0;
  long blocks = 0;
  long threads = 0;
  long errors = 0;  // every error the emulated runtime reported (each also printed)
  long allocations = 0;
  size_t bytes_in_use = 0;
};
Stats stats();

}  // namespace emu
