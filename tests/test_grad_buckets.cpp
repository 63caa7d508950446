// Gradient buckets on one process (the collectives are the identity): the layout, the
// views autograd accumulates into, and when buckets are started.
#include <doctest/doctest.h>

#include "engine/dist/grad_buckets.h"
#include "engine/ops.h"

using namespace bet;
using namespace bet::dist;

namespace {

std::vector<Tensor> params_of(const std::vector<int64_t>& sizes) {
  std::vector<Tensor> ps;
  for (int64_t n : sizes) ps.push_back(Tensor::zeros({n}).set_requires_grad());
  return ps;
}

}  // namespace

TEST_CASE("bucket size: at most the flag, at least 8 buckets for a small model, none under 64 KiB") {
  CHECK(effective_bucket_bytes(1ll << 30, kDefaultBucketBytes) == kDefaultBucketBytes);
  CHECK(effective_bucket_bytes(8ll << 20, kDefaultBucketBytes) == 1ll << 20);
  CHECK(effective_bucket_bytes(100, kDefaultBucketBytes) == kMinBucketBytes);
  CHECK(effective_bucket_bytes(8ll << 20, 1ll << 19) == 1ll << 19);
}

TEST_CASE("gradients are views into buckets filled in reverse order; backward accumulates into them") {
  // 10 parameters of 64 KiB (16384 f32): 8 buckets' worth at least, so several buckets.
  std::vector<Tensor> ps = params_of(std::vector<int64_t>(10, 16384));
  auto comm = local_communicator();
  GradBuckets buckets(ps, *comm, kDefaultBucketBytes);
  CHECK(buckets.bucket_count() >= 2);
  CHECK(buckets.numel() == 10 * 16384);
  // The last parameter sits first in the first bucket.
  CHECK(buckets.bucket_of(9) == 0);
  CHECK(buckets.offset_of(9) == 0);
  CHECK(buckets.bucket_of(0) == buckets.bucket_count() - 1);
  buckets.bind();
  Tensor loss;
  for (size_t i = 0; i < ps.size(); ++i) {
    Tensor term = sum(mul(ps[i], double(i + 1)));
    loss = loss.defined() ? add(loss, term) : term;
  }
  {
    auto scope = buckets.backward_scope(true);
    loss.backward();
  }
  buckets.finish();
  for (size_t i = 0; i < ps.size(); ++i) {
    CAPTURE(i);
    // d loss / d p_i = i + 1, written straight into the bucket.
    const Tensor& flat = buckets.flat(buckets.bucket_of(i));
    CHECK(flat.to_vector<float>()[size_t(buckets.offset_of(i))] == float(i + 1));
    CHECK(ps[i].grad().to_vector<float>()[7] == float(i + 1));
    CHECK(buckets.received()[i] == 1);
  }
  // A second bind zeroes them: the next step starts from nothing.
  buckets.bind();
  CHECK(ps[3].grad().to_vector<float>()[0] == 0.0f);
  CHECK(buckets.received()[3] == 0);
}
