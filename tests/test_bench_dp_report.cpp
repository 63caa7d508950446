// `bench train --nproc N`'s arithmetic and its worker file, from a fixture (no timing):
// the ranks' JSON parses back to what was measured, and scaling efficiency, speedup,
// comm share and the hidden fraction of the all-reduce (clamped, n/a below the timer's
// resolution) come out of it as defined.
#include <doctest/doctest.h>

#include <cmath>
#include <stdexcept>
#include <string>
#include <variant>

#include <nlohmann/json.hpp>

#include "bench/bench_data_parallel.h"

using namespace bet::bench;

namespace {

// What rank 0 of `mpirun -np 2 betctl bench train --dp-rank-worker` writes.
const char* kWorkerFixture = R"({
  "tables": [{
    "title": "bench train dp-rank-worker",
    "meta": {},
    "columns": ["layer", "ranks", "threads per rank", "params", "tokens/step", "ms/step", "ms/step min",
                "exposed wait ms", "exposed wait min ms", "allreduce ms", "buckets", "gradient MB", "final loss", "error"],
    "rows": [{"layer": "bet", "ranks": 2, "threads per rank": 1, "params": 1000000, "tokens/step": 8192,
              "ms/step": 400.0, "ms/step min": 380.0, "exposed wait ms": 10.0, "exposed wait min ms": 4.0,
              "allreduce ms": 40.0,
              "buckets": 2, "gradient MB": 3.8, "final loss": 0.69, "error": ""},
             {"layer": "standard", "ranks": 2, "threads per rank": 1, "params": 900000, "tokens/step": 8192,
              "ms/step": 300.0, "ms/step min": 290.0, "exposed wait ms": 50.0, "allreduce ms": null,
              "buckets": 1, "gradient MB": 3.4, "final loss": null, "error": ""}]
  }]
})";

double num(const Row& r, const std::string& k) {
  const Value* v = r.get(k);
  REQUIRE(v != nullptr);
  REQUIRE(std::holds_alternative<double>(*v));
  return std::get<double>(*v);
}

bool empty_cell(const Row& r, const std::string& k) {
  const Value* v = r.get(k);
  return v == nullptr || std::holds_alternative<std::monostate>(*v);
}

}  // namespace

TEST_CASE("the ranks' result parses back, null numbers as NaN") {
  const auto ms = parse_dp_worker_json(nlohmann::json::parse(kWorkerFixture));
  REQUIRE(ms.size() == 2);
  CHECK(ms[0].layer == "bet");
  CHECK(ms[0].ranks == 2);
  CHECK(ms[0].threads_per_rank == 1);
  CHECK(ms[0].params == 1000000);
  CHECK(ms[0].tokens_per_step == 8192);
  CHECK(ms[0].step_s == doctest::Approx(0.4));
  CHECK(ms[0].step_min_s == doctest::Approx(0.38));
  CHECK(ms[0].exposed_wait_s == doctest::Approx(0.01));
  CHECK(ms[0].exposed_wait_min_s == doctest::Approx(0.004));
  CHECK(ms[0].allreduce_s == doctest::Approx(0.04));
  CHECK(ms[0].buckets == 2);
  CHECK(ms[0].gradient_mb == doctest::Approx(3.8));
  CHECK(ms[0].error.empty());
  CHECK(std::isnan(ms[1].allreduce_s));
  CHECK(std::isnan(ms[1].exposed_wait_min_s));  // an optional field, absent
  CHECK(std::isnan(ms[1].final_loss));
}

TEST_CASE("the worker table round-trips through render's JSON") {
  DpMeasurement m;
  m.layer = "standard";
  m.ranks = 4;
  m.threads_per_rank = 3;
  m.params = 12345;
  m.tokens_per_step = 4096;
  m.step_s = 0.125;
  m.step_min_s = 0.1;
  m.exposed_wait_s = 0.002;
  m.exposed_wait_min_s = 0.001;
  m.allreduce_s = NAN;  // a null in JSON
  m.buckets = 3;
  m.gradient_mb = 0.5;
  m.final_loss = 1.5;
  const auto back = parse_dp_worker_json(nlohmann::json::parse(render({dp_worker_table({m})}, "json")));
  REQUIRE(back.size() == 1);
  CHECK(back[0].layer == "standard");
  CHECK(back[0].ranks == 4);
  CHECK(back[0].threads_per_rank == 3);
  CHECK(back[0].params == 12345);
  CHECK(back[0].step_s == doctest::Approx(0.125));
  CHECK(back[0].exposed_wait_s == doctest::Approx(0.002));
  CHECK(back[0].exposed_wait_min_s == doctest::Approx(0.001));
  CHECK(std::isnan(back[0].allreduce_s));
  CHECK(back[0].buckets == 3);
}

TEST_CASE("a malformed result is an error naming what is wrong") {
  CHECK_THROWS_AS(parse_dp_worker_json(nlohmann::json::parse("{}")), std::runtime_error);
  CHECK_THROWS_AS(parse_dp_worker_json(nlohmann::json::parse(R"({"tables": [{"rows": []}]})")), std::runtime_error);
  nlohmann::json j = nlohmann::json::parse(kWorkerFixture);
  j["tables"][0]["rows"][0].erase("tokens/step");
  CHECK_THROWS_WITH_AS(parse_dp_worker_json(j), doctest::Contains("tokens/step"), std::runtime_error);
  j = nlohmann::json::parse(kWorkerFixture);
  j["tables"][0]["rows"][0]["ms/step"] = "fast";
  CHECK_THROWS_WITH_AS(parse_dp_worker_json(j), doctest::Contains("ms/step"), std::runtime_error);
  j = nlohmann::json::parse(kWorkerFixture);
  j["tables"][0]["rows"][0]["ranks"] = 0;
  CHECK_THROWS_AS(parse_dp_worker_json(j), std::runtime_error);
}

TEST_CASE("scaling efficiency, comm share and the hidden fraction") {
  const auto ms = parse_dp_worker_json(nlohmann::json::parse(kWorkerFixture));
  DpMeasurement one;
  one.layer = "bet";
  one.ranks = 1;
  one.threads_per_rank = 2;
  one.tokens_per_step = 8192;
  one.step_s = 0.32;  // 25600 tokens/s against the ranks' 20480
  CHECK(dp_tokens_per_s(one) == doctest::Approx(25600));
  CHECK(dp_tokens_per_s(ms[0]) == doctest::Approx(20480));
  CHECK(dp_scaling_efficiency(one, ms[0]) == doctest::Approx(0.8));
  CHECK(dp_comm_share(ms[0]) == doctest::Approx(0.025));  // 10 ms of 400
  // 10 ms exposed of a 40 ms all-reduce: three quarters hidden.
  CHECK(dp_overlap_hidden(ms[0].exposed_wait_s, ms[0].allreduce_s) == doctest::Approx(0.75));
  // The exposed communication is the last rank's wait (4 ms) where the ranks said it,
  // the mean wait otherwise.
  CHECK(dp_exposed_comm(ms[0]) == doctest::Approx(0.004));
  CHECK(dp_exposed_comm(ms[1]) == doctest::Approx(0.05));
  // Clamped: waiting longer than the all-reduce takes (imbalance) is 0, not negative;
  // no wait at all is 1.
  CHECK(dp_overlap_hidden(0.05, 0.04) == 0.0);
  CHECK(dp_overlap_hidden(0.0, 0.04) == 1.0);
  // n/a: an all-reduce below the timer's resolution, or unknown times.
  CHECK(std::isnan(dp_overlap_hidden(0.0, 1e-9)));
  CHECK(std::isnan(dp_overlap_hidden(0.0, 0.0)));
  CHECK(std::isnan(dp_overlap_hidden(NAN, 0.04)));
  CHECK(std::isnan(dp_overlap_hidden(0.01, NAN)));
  // Unknown or zero times give NaN, never inf.
  DpMeasurement none = one;
  none.step_s = NAN;
  CHECK(std::isnan(dp_scaling_efficiency(none, ms[0])));
  CHECK(std::isnan(dp_scaling_efficiency(one, none)));
  none.step_s = 0;
  CHECK(std::isnan(dp_tokens_per_s(none)));
  CHECK(std::isnan(dp_comm_share(none)));
}

TEST_CASE("the report rows: efficiency on the ranks' row, n/a where the all-reduce is unknown") {
  const auto ms = parse_dp_worker_json(nlohmann::json::parse(kWorkerFixture));
  DpMeasurement one;
  one.layer = "bet";
  one.ranks = 1;
  one.threads_per_rank = 2;
  one.params = 1000000;
  one.tokens_per_step = 8192;
  one.step_s = 0.32;
  one.exposed_wait_s = 0;

  DpMeasurement ref = one;  // one rank with one rank's thread: 12800 tokens/s
  ref.threads_per_rank = 1;
  ref.step_s = 0.64;

  const Row base = dp_row(one, nullptr, nullptr, 25);
  CHECK(std::get<std::string>(*base.get("config")) == "1 rank x 2 threads");
  CHECK(num(base, "tokens/s") == doctest::Approx(25600));
  CHECK(empty_cell(base, "scaling efficiency"));
  CHECK(empty_cell(base, "speedup vs 1 rank x threads/rank"));
  CHECK(empty_cell(base, "overlap hidden"));
  CHECK(empty_cell(base, "buckets"));

  const Row many = dp_row(ms[0], &one, &ref, 25);
  CHECK(std::get<std::string>(*many.get("config")) == "2 ranks x 1 thread");
  CHECK(num(many, "ms/step") == doctest::Approx(400));
  CHECK(num(many, "scaling efficiency") == doctest::Approx(0.8));
  CHECK(num(many, "speedup vs 1 rank x threads/rank") == doctest::Approx(1.6));  // 20480 / 12800
  CHECK(num(many, "comm share") == doctest::Approx(0.025));
  CHECK(num(many, "comm wait ms/step") == doctest::Approx(10));
  CHECK(num(many, "exposed comm ms/step") == doctest::Approx(4));
  CHECK(num(many, "allreduce ms/step (blocking)") == doctest::Approx(40));
  CHECK(num(many, "overlap hidden") == doctest::Approx(0.9));  // 1 - 4 / 40
  CHECK(num(many, "bucket MB") == doctest::Approx(3.8 / 8).epsilon(1e-3));  // 3.8 MB of gradients: cut in 8
  CHECK(std::get<int64_t>(*many.get("buckets")) == 2);
  CHECK(std::get<std::string>(*many.get("status")) == "ok");

  const Row na = dp_row(ms[1], &one, &ref, 25);
  CHECK(std::get<std::string>(*na.get("overlap hidden")) == "n/a");

  // A failed run: its status says why, and no numbers are claimed for it.
  DpMeasurement failed = ms[0];
  failed.error = "mpirun -np 2 exited with status 1";
  const Row f = dp_row(failed, &one, &ref, 25);
  CHECK(std::get<std::string>(*f.get("status")) == "error: mpirun -np 2 exited with status 1");
  CHECK(empty_cell(f, "tokens/s"));
  CHECK(empty_cell(f, "scaling efficiency"));
  CHECK(empty_cell(f, "speedup vs 1 rank x threads/rank"));
  CHECK(empty_cell(f, "overlap hidden"));
}
