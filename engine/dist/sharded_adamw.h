// AdamW with its state sharded across ranks (ZeRO stage 1), for models whose moments
// do not fit on one device.
//
// The gradients are reduce-scattered over the flat buckets (GradBuckets), so rank r
// holds the sum of chunk r of every bucket; it keeps the moments of that chunk only,
// updates those parameter elements (the same fused kernel, the same scalars as AdamW:
// the update is elementwise, so sharding changes nothing but who computes what), then
// the updated chunks are all-gathered into every rank's parameters.
//
// state() gathers the moments into AdamW's own layout ("adamw.step", "adamw.m.<i>",
// "adamw.v.<i>"), so a checkpoint is the ordinary .bet a one-rank run writes, and
// load_state() takes that layout on any rank count: every rank keeps its chunk.
// state(), load_state(), grad_norm() and step() are collectives: every rank calls them.
// A parameter no rank gave a gradient this step is skipped, as AdamW skips one without
// a gradient (set_stepping says which).
#pragma once
#include <vector>

#include "engine/dist/communicator.h"
#include "engine/dist/grad_buckets.h"
#include "engine/optim/optimizer.h"

namespace bet::dist {

class ShardedAdamW final : public optim::Optimizer {
 public:
  ShardedAdamW(GradBuckets& buckets, Communicator& comm, const optim::AdamWOptions& opt, std::vector<bool> decay);

  void step() override;
  optim::StateList state() const override;
  void load_state(const optim::StateList& s) override;

  // The 2-norm of the summed gradient, from every rank's shards.
  double grad_norm() const;
  // clip_grad_norm's rule on the shards: returns the norm before clipping.
  double clip_grad_norm(double max_norm);
  // Multiplies this rank's gradient shards by `factor`.
  void scale_grads(double factor);
  // Which parameters the next step() updates (default: all).
  void set_stepping(std::vector<bool> stepping) { stepping_ = std::move(stepping); }

 private:
  // A run of one parameter's elements inside this rank's chunk of a bucket.
  struct Segment {
    size_t param;
    int64_t bucket;
    int64_t param_begin;  // first element, in the parameter's flat order
    int64_t len;
    int64_t shard_begin;  // where it sits in the chunk
  };
  Tensor param_piece(const Segment& s) const;

  GradBuckets& buckets_;
  Communicator& comm_;
  optim::AdamWOptions opt_;
  std::vector<Segment> segments_;
  std::vector<Tensor> m_, v_;  // per bucket: this rank's chunk
  std::vector<int64_t> steps_;
  std::vector<bool> stepping_;
};

}  // namespace bet::dist
