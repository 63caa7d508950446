// Learning, measured against the theory's floor: a 2-layer causal `bet` model trained
// on exchangeable Bernoulli sequences (p ~ Beta(1,1) per sequence) must come within
// 0.05 nats per token of exact Bayes, and must not go clearly below it: exact Bayes is
// the best any model that does not see the future can do.
#include <doctest/doctest.h>
#include <unistd.h>

#include <filesystem>

#include "runtime/train/trainer.h"

using namespace bet;
using namespace bet::runtime;

TEST_CASE("causal bet model approaches exact Bayes on the Bernoulli task") {
  TrainConfig c;
  c.out = (std::filesystem::temp_directory_path() / ("bet_learning_" + std::to_string(::getpid()))).string();
  c.steps = 200;
  c.seq_len = 32;
  c.batch_size = 32;
  c.lr = 3e-3;
  c.warmup = 20;
  c.eval_every = 200;
  c.quiet = true;
  c.seed = 3;
  c.threads = 1;  // small GEMMs: one thread is faster than two here
  c.synthetic_val = 512;
  c.model.d_model = 32;
  c.model.heads = 2;
  c.model.layers = 2;
  c.model.max_len = 64;
  c.model.dropout = 0.0;
  TrainResult r = train(c);
  const double excess = r.summary["metrics"]["val/excess_over_bayes"].get<double>();
  MESSAGE("excess over exact Bayes after 200 steps: " << excess << " nats/token");
  CHECK(excess < 0.05);
  CHECK(excess > -0.01);  // clearly below the floor would mean the model sees the future
  std::filesystem::remove_all(c.out);
}
