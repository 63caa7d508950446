// Gradients in flat buckets, summed across ranks while backward is still running.
//
// Each parameter's gradient is a view into one bucket (a flat f32/f64 tensor on the
// parameters' device of about `bucket_bytes`), so autograd accumulates straight into
// the memory the collective sends, with no copy in or out. Buckets take parameters in
// reverse order, because backward produces the last layers' gradients first. When a
// bucket's last gradient is final (autograd's GradReadyScope says so), its all-reduce
// is started asynchronously; finish() starts whatever is left and waits for all.
// Buckets are started strictly in index order on every rank (a later bucket that is
// ready early waits for the ones before it), so every rank issues the same collectives
// in the same order, as MPI and NCCL require.
//
// Buckets hold at most `bucket_bytes`; a model with fewer than 8 buckets' worth of
// gradients is cut into 8 (none below 64 KiB), so that even a small model's first sums
// start under backward. One bucket could only start when backward is over: measured on
// the default classifier (2.4 MB of gradients), 14 buckets of 0.25 MB hid 99% of the
// all-reduce and one bucket of 25 MB none of it.
//
// With a sharded optimizer (ZeRO-1) the buckets are reduce-scattered instead: each is
// padded to a multiple of the rank count and rank r receives chunk r of the sum.
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

#include "engine/autograd.h"
#include "engine/dist/communicator.h"

namespace bet::dist {

struct BucketTimes {
  double exposed_wait_s = 0;  // time finish() blocked on communication
  int64_t buckets = 0;        // collectives issued
};

class GradBuckets {
 public:
  // `params`: leaves with the same dtype and device (the communicator's).
  GradBuckets(std::vector<Tensor> params, Communicator& comm, int64_t bucket_bytes);
  ~GradBuckets();
  GradBuckets(const GradBuckets&) = delete;
  GradBuckets& operator=(const GradBuckets&) = delete;

  // Zeroes the buckets and binds every parameter's gradient to its view. Call before
  // the first backward of a step (gradients then accumulate over micro-batches).
  void bind();

  // A scope for each backward of a step: records which parameters receive a gradient
  // and, with `start` (the step's last backward), starts each bucket's all-reduce as it
  // fills. Without one, finish() starts them all.
  std::unique_ptr<autograd::GradReadyScope> backward_scope(bool start);
  // Whether parameter i received a gradient in a backward under a scope since bind().
  const std::vector<char>& received() const { return received_; }

  // Starts the buckets not yet started and waits for every sum.
  void finish();

  // Sharded: reduce-scatter every bucket instead (no overlap); shard(b) then holds this
  // rank's chunk of bucket b's sum.
  void finish_reduce_scatter();

  int64_t bucket_count() const { return int64_t(buckets_.size()); }
  // Bucket b's flat gradient (padded to padded_numel(b)); its chunk length per rank.
  const Tensor& flat(int64_t b) const { return buckets_[size_t(b)].flat; }
  int64_t chunk(int64_t b) const { return buckets_[size_t(b)].padded / comm_.size(); }
  const Tensor& shard(int64_t b) const { return buckets_[size_t(b)].shard; }
  // Where parameter i lives: bucket and element offset.
  int64_t bucket_of(size_t i) const { return where_[i].first; }
  int64_t offset_of(size_t i) const { return where_[i].second; }
  const std::vector<Tensor>& params() const { return params_; }
  // Total elements (unpadded) and bytes of all buckets.
  int64_t numel() const;

  const BucketTimes& times() const { return times_; }
  void reset_times() { times_ = {}; }

 private:
  struct Bucket {
    Tensor flat;   // [padded]
    Tensor shard;  // [padded / size] (sharded optimizer)
    int64_t numel = 0, padded = 0;
    int64_t waiting = 0;  // parameters whose gradient is not final yet this backward
    std::vector<size_t> members;
    std::unique_ptr<Work> work;
    bool started = false;
  };
  void ready(size_t param, bool received);
  void start_ready_prefix();

  std::vector<Tensor> params_;
  Communicator& comm_;
  std::vector<Bucket> buckets_;
  std::vector<std::pair<int64_t, int64_t>> where_;
  int64_t next_to_start_ = 0;
  bool starting_ = false;       // this backward starts buckets
  std::vector<char> received_;  // per parameter, since bind()
  BucketTimes times_;
};

// The default bucket size of product.md and DDP: 25 MB.
constexpr int64_t kDefaultBucketBytes = 25ll << 20;
// Buckets per step that a small model is cut into, and the smallest bucket.
constexpr int64_t kMinBuckets = 8;
constexpr int64_t kMinBucketBytes = 64ll << 10;

// The bucket size GradBuckets uses for `total_bytes` of gradients.
int64_t effective_bucket_bytes(int64_t total_bytes, int64_t bucket_bytes);

}  // namespace bet::dist
