#include "engine/dist/grad_buckets.h"

#include <algorithm>

#include "engine/ops.h"

namespace bet::dist {

int64_t effective_bucket_bytes(int64_t total_bytes, int64_t bucket_bytes) {
  const int64_t eighth = (total_bytes + kMinBuckets - 1) / kMinBuckets;
  return std::min(bucket_bytes, std::max(kMinBucketBytes, eighth));
}

GradBuckets::GradBuckets(std::vector<Tensor> params, Communicator& comm, int64_t bucket_bytes)
    : params_(std::move(params)), comm_(comm), where_(params_.size()) {
  BET_CHECK(!params_.empty(), "gradient buckets: no parameters");
  BET_CHECK(bucket_bytes > 0, "--bucket-mb must be positive");
  const DType dt = params_[0].dtype();
  const Device dev = params_[0].device();
  for (const Tensor& p : params_)
    BET_CHECK(p.dtype() == dt && p.device() == dev, "gradient buckets: parameters must share one dtype and device");
  const int64_t elem = int64_t(dtype_size(dt));
  int64_t total = 0;
  for (const Tensor& p : params_) total += p.numel() * elem;
  bucket_bytes = effective_bucket_bytes(total, bucket_bytes);
  // Reverse order: the first bucket holds the parameters backward finishes first.
  Bucket cur;
  auto close = [&] {
    if (cur.members.empty()) return;
    const int64_t n = comm_.size();
    cur.padded = (cur.numel + n - 1) / n * n;
    cur.flat = Tensor::zeros({cur.padded}, dt, dev);
    buckets_.push_back(std::move(cur));
    cur = Bucket();
  };
  for (size_t k = params_.size(); k-- > 0;) {
    const int64_t numel = params_[k].numel();
    if (!cur.members.empty() && (cur.numel + numel) * elem > bucket_bytes) close();
    where_[k] = {int64_t(buckets_.size()), cur.numel};
    cur.members.push_back(k);
    cur.numel += numel;
  }
  close();
}

GradBuckets::~GradBuckets() {
  // A bucket still in flight (an exception mid-step) must land before its memory goes.
  for (Bucket& b : buckets_)
    if (b.work) try {
        b.work->wait();
      } catch (...) {
      }
}

int64_t GradBuckets::numel() const {
  int64_t n = 0;
  for (const Bucket& b : buckets_) n += b.numel;
  return n;
}

void GradBuckets::bind() {
  for (Bucket& b : buckets_) {
    BET_CHECK(!b.work, "gradient buckets: bind() while a bucket is in flight");
    b.flat.fill_(0.0);
    b.started = false;
  }
  next_to_start_ = 0;
  received_.assign(params_.size(), 0);
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& p = params_[i];
    const Tensor& flat = buckets_[size_t(where_[i].first)].flat;
    Shape strides(p.shape().size(), 1);
    for (int64_t d = int64_t(strides.size()) - 2; d >= 0; --d) strides[size_t(d)] = strides[size_t(d + 1)] * p.shape()[size_t(d + 1)];
    Tensor view = make_view(flat, p.shape(), strides, flat.offset() + where_[i].second);
    const_cast<Tensor&>(p).set_grad(view);
  }
}

std::unique_ptr<autograd::GradReadyScope> GradBuckets::backward_scope(bool start) {
  starting_ = start;
  for (Bucket& b : buckets_) b.waiting = int64_t(b.members.size());
  return std::make_unique<autograd::GradReadyScope>(params_, [this](size_t i, bool got) { ready(i, got); });
}

void GradBuckets::ready(size_t param, bool received) {
  received_[param] |= received ? 1 : 0;
  Bucket& b = buckets_[size_t(where_[param].first)];
  if (--b.waiting == 0 && starting_) start_ready_prefix();
}

void GradBuckets::start_ready_prefix() {
  while (next_to_start_ < int64_t(buckets_.size())) {
    Bucket& b = buckets_[size_t(next_to_start_)];
    if (b.waiting > 0) return;
    b.work = comm_.all_reduce_sum_async(b.flat);
    b.started = true;
    times_.buckets++;
    next_to_start_++;
  }
}

void GradBuckets::finish() {
  starting_ = false;
  for (Bucket& b : buckets_) b.waiting = 0;
  start_ready_prefix();
  const auto t0 = std::chrono::steady_clock::now();
  for (Bucket& b : buckets_) {
    if (b.work) b.work->wait();
    b.work.reset();
  }
  times_.exposed_wait_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void GradBuckets::finish_reduce_scatter() {
  const auto t0 = std::chrono::steady_clock::now();
  for (Bucket& b : buckets_) {
    BET_CHECK(!b.work, "gradient buckets: reduce-scatter while an all-reduce is in flight");
    if (!b.shard.defined()) b.shard = Tensor::zeros({b.padded / comm_.size()}, b.flat.dtype(), b.flat.device());
    comm_.reduce_scatter_sum(b.flat, b.shard);
    times_.buckets++;
  }
  times_.exposed_wait_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace bet::dist
