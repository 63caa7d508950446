// The one-process communicator: a run of one rank pays nothing for data parallelism.
#include "engine/dist/communicator.h"

namespace bet::dist {

namespace {

struct DoneWork final : Work {
  void wait() override {}
};

class LocalCommunicator final : public Communicator {
 public:
  explicit LocalCommunicator(Device d) : device_(d) {}
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string backend() const override { return "local"; }
  Device device() const override { return device_; }
  // The identity, with the arguments checked as every backend checks them.
  void all_reduce_sum(Tensor& t) override { check_operand(t, "all_reduce"); }
  std::unique_ptr<Work> all_reduce_sum_async(Tensor t) override {
    check_operand(t, "all_reduce_async");
    return std::make_unique<DoneWork>();
  }
  void reduce_scatter_sum(const Tensor& in, Tensor& out) override {
    check_pair(in, out, "reduce_scatter", false);
    out.copy_(in);
  }
  void all_gather(const Tensor& in, Tensor& out) override {
    check_pair(in, out, "all_gather", true);
    out.copy_(in);
  }
  void broadcast(Tensor& t, int root) override {
    check_operand(t, "broadcast");
    check_root(root, "broadcast");
  }
  void all_reduce_sum(std::vector<double>&) override {}
  void all_reduce_max(std::vector<double>&) override {}
  void broadcast_bytes(std::string&, int) override {}
  std::vector<std::string> all_gather_bytes(const std::string& mine) override { return {mine}; }
  void barrier() override {}

 private:
  Device device_;
};

}  // namespace

std::unique_ptr<Communicator> local_communicator(Device device) { return std::make_unique<LocalCommunicator>(device); }

}  // namespace bet::dist
