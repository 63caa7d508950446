// Placeholder until the NCCL backend lands.
#include "engine/dist/communicator.h"

namespace bet::dist {

std::unique_ptr<Communicator> nccl_communicator(std::unique_ptr<Communicator>, Device) {
  fail("this betctl was built without NCCL (build with nvcc and the toolkit's NCCL, or -Dgpu_emulation=true)");
}

}  // namespace bet::dist
