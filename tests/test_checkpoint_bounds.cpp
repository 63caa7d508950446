// Checkpoints past the bounds, and out of memory, end to end. `betctl predict` and
// `betctl serve` on crafted files (every checksum valid) whose config is past a bound,
// whose tensor table declares far more than its config (a decompression bomb), or whose
// model is within bounds but too big for the memory the process is given: each exits 1
// with a message naming the file and what is wrong, never a signal. In process: the
// caching allocator survives an out-of-memory error unwinding (release never allocates),
// its byte limit is an ordinary error, and build_model names the file.
// argv[1] is the betctl binary (tests/meson.build).
#include <doctest/doctest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "engine/allocator.h"
#include "runtime/checkpoint/config_json.h"
#include "tests/alloc_hooks.h"
#include "tests/betctl_driver.h"
#include "tests/checkpoint_fixtures.h"

using namespace bet;
using namespace bet::runtime;
using namespace bet::testing;
using nlohmann::json;



namespace {

using bet::test::g_betctl;

struct Run {
  int rc = 0;  // exit code, or -signal
  std::string err;
};

// Runs betctl with `args` on one thread, stderr captured, within an address-space limit
// when `max_address_space` is set: the way to give a process less memory than the
// machine has (an allocation past it fails as on a full machine). A shell sets the limit
// (`ulimit -v`) and execs betctl. Killed after 120 s.
Run betctl(const std::vector<std::string>& args, uint64_t max_address_space = 0) {
  const std::string err_file = fresh_dir("runs") + "/stderr";
  // One thread, few malloc arenas: each thread reserves address space of its own.
  std::string cmd = "export OMP_NUM_THREADS=1 MALLOC_ARENA_MAX=2; ";
  if (max_address_space) cmd += "ulimit -v " + std::to_string(max_address_space >> 10) + " || exit 125; ";
  cmd += "exec '" + g_betctl + "'";
  for (const auto& a : args) cmd += " '" + a + "'";  // (no quotes in these arguments)
  Run r;
  r.rc = bet::test::run_process({"/bin/sh", "-c", cmd}, "", err_file, std::chrono::seconds(120));
  r.err = read_file(err_file);
  return r;
}

Run predict(const std::string& model, uint64_t max_address_space = 0) {
  return betctl({"predict", "--model", model, "--text", "hello", "--threads", "1"}, max_address_space);
}

// Under ASan an address-space limit is meaningless (the shadow memory alone exceeds it).
#if defined(__SANITIZE_ADDRESS__)
constexpr bool kCanLimitAddressSpace = false;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kCanLimitAddressSpace = false;
#else
constexpr bool kCanLimitAddressSpace = true;
#endif
#else
constexpr bool kCanLimitAddressSpace = true;
#endif

constexpr uint64_t kGiB = uint64_t(1) << 30;

}  // namespace

TEST_CASE("caching allocator: releasing memory allocates nothing, so an out-of-memory error can unwind") {
  // Sizes of classes no other test here uses, so caching them needs new free-list
  // entries. The allocator once kept its free lists in a std::map of vectors: caching a
  // block allocated, and when that failed inside a destructor unwinding an out-of-memory
  // error (a model of 10^9 layers), the process aborted.
  auto& alloc = CachingAllocator::host();
  const uint64_t cached_before = alloc.stats().bytes_cached;
  std::vector<Tensor> ts;
  for (int64_t n : {(int64_t(3) << 18) + 1, (int64_t(5) << 18) + 3, (int64_t(7) << 18) + 5, int64_t(11) << 19})
    ts.push_back(Tensor::empty({n}));
  uint64_t capacities = 0;
  for (const Tensor& t : ts) capacities += CachingAllocator::round_size(t.nbytes());
  bet::test::t_fail_new = true;  // from here every operator new throws
  ts.clear();
  bet::test::t_fail_new = false;
  CHECK(alloc.stats().bytes_cached == cached_before + capacities);
  // The blocks come back from the cache.
  const uint64_t hits = alloc.stats().cache_hits;
  Tensor again = Tensor::empty({int64_t(11) << 19});
  CHECK(alloc.stats().cache_hits == hits + 1);
}

TEST_CASE("caching allocator: past its byte limit an allocation is an ordinary error, and the counts stay right") {
  auto& alloc = CachingAllocator::host();
  const AllocatorStats s0 = alloc.stats();
  alloc.set_limit(s0.bytes_in_use + (uint64_t(8) << 20));
  CHECK_THROWS_WITH_AS(Tensor::empty({int64_t(4) << 20}), doctest::Contains("out of memory allocating 16777216 bytes"),
                       Error);
  CHECK(alloc.stats().bytes_in_use == s0.bytes_in_use);
  CHECK(alloc.stats().system_allocs == s0.system_allocs);
  { Tensor fits = Tensor::empty({int64_t(1) << 20}); }  // 4 MiB is within it
  alloc.set_limit(0);
  CHECK(alloc.limit() == 0);
  size_t cap = 0;
  CHECK_THROWS_WITH_AS(alloc.allocate(size_t(1) << 60, &cap),
                       doctest::Contains("out of memory allocating 1152921504606846976 bytes"), Error);
  CHECK(alloc.stats().bytes_in_use == s0.bytes_in_use);
  // Size classes as before; huge requests no longer loop forever.
  CHECK(CachingAllocator::round_size(1) == 64);
  CHECK(CachingAllocator::round_size(100) == 128);
  CHECK(CachingAllocator::round_size((size_t(1) << 20) + 1) == (size_t(5) << 18));
  CHECK(CachingAllocator::round_size(size_t(1) << 21) == (size_t(1) << 21));
  CHECK(CachingAllocator::round_size(~size_t(0)) == ~size_t(0));
}

TEST_CASE("build_model: running out of memory while building is an error naming the file; the process goes on") {
  model::ModelConfig cfg = small_config();
  cfg.d_model = 128;
  cfg.heads = 4;
  cfg.layers = 2;
  Generator g(3);
  model::BetModel m(cfg, g);
  const Checkpoint ck = make_checkpoint(m, nullptr, make_byte_tokenizer()->to_json(), "production");
  auto& alloc = CachingAllocator::host();
  alloc.set_limit(alloc.stats().bytes_in_use + (uint64_t(1) << 20));  // a quarter of the model
  const std::string e = error_of([&] { build_model(ck, "m.bet"); });
  alloc.set_limit(0);
  CHECK(e.rfind("m.bet: building the model: out of memory allocating ", 0) == 0);
  std::unique_ptr<model::BetModel> built = build_model(ck, "m.bet");
  check_lists_equal(m.named_parameters(), built->named_parameters());
}

TEST_CASE("betctl predict and serve refuse a checkpoint past the config bounds: exit 1, naming file and field") {
  const std::string dir = fresh_dir("bounds");
  Trained t = make_trained(5, 0);
  Checkpoint ck = make_checkpoint(*t.model, nullptr, make_byte_tokenizer()->to_json(), "production");
  const json header = checkpoint_header(ck);
  const NamedTensorList tensors = checkpoint_tensors(ck);
  const std::string good = dir + "/good.bet";
  write_bet_file(good, header, tensors);
  REQUIRE(predict(good).rc == 0);

  struct Case {
    const char* file;
    const char* field;
    json value;
    const char* expect;
  };
  const std::vector<Case> cases = {
      {"layers.bet", "layers", int64_t(1000000000), "header: config.layers: 1000000000 is out of range [1, 256]"},
      {"layers_float.bet", "layers", 1e9, "header: config.layers: expected an integer"},
      {"d_model.bet", "d_model", int64_t(1) << 31, "header: config.d_model: 2147483648 is out of range [2, 16384]"},
      {"vocab.bet", "vocab_size", int64_t(1) << 40,
       "header: config.vocab_size: 1099511627776 is out of range [4, 4194304]"},
      {"heads.bet", "heads", 0, "header: config.heads: 0 is out of range [1, 256]"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.file);
    json h = header;
    h["config"][c.field] = c.value;
    const std::string path = dir + "/" + c.file;
    write_bet_file(path, h, tensors);  // every checksum valid: the reader gets to the config
    const Run r = predict(path);
    CAPTURE(r.err);
    CHECK(r.rc == 1);
    CHECK(r.err.find(path + ": " + c.expect) != std::string::npos);
  }
  for (const char* file : {"layers.bet", "d_model.bet"}) {
    const Run r = betctl({"serve", "--model", dir + "/" + file, "--port", "0", "--threads", "1"});
    CAPTURE(r.err);
    CHECK(r.rc == 1);
    CHECK(r.err.find(dir + "/" + file + ": header: config.") != std::string::npos);
  }
}

TEST_CASE("betctl predict refuses a decompression bomb before decompressing it") {
  // A valid config and its tensors, plus 4 GiB of zeros in a few hundred KB; run within a
  // 1 GiB address space, so had the reader allocated what the file declares, it could not
  // have reported which tensor is wrong.
  if (!kCanLimitAddressSpace) return;
  const std::string dir = fresh_dir("bomb");
  const model::ModelConfig cfg = small_config();
  std::vector<CraftedTensor> table = model_table(cfg);
  table.push_back({"junk", DType::F32, {int64_t(1) << 30}});
  const std::string path = dir + "/bomb.bet";
  atomic_write_file(path, craft_bet(header_for(cfg), table));
  const Run r = predict(path, kGiB);
  CAPTURE(r.err);
  CHECK(r.rc == 1);
  CHECK(r.err.find(path + ": tensor 'junk' is not a parameter of the config's model") != std::string::npos);
}

TEST_CASE("betctl predict on a model within bounds but too big for its memory: exit 1, out of memory, no signal") {
  if (!kCanLimitAddressSpace) return;
  const std::string dir = fresh_dir("oom");
  model::ModelConfig cfg = small_config();
  cfg.d_model = 1024;
  cfg.heads = 8;

  // 2.7 GB of weights in a 1 GiB address space: reading the tensors fails.
  cfg.layers = 32;
  std::string path = dir + "/read.bet";
  atomic_write_file(path, craft_bet(header_for(cfg), model_table(cfg)));
  Run r = predict(path, kGiB);
  CAPTURE(r.err);
  CHECK(r.rc == 1);
  CHECK(r.err.find(path + ": tensor '") != std::string::npos);
  CHECK(r.err.find("': out of memory allocating ") != std::string::npos);

  // 590 MB: the tensors are read, building the model beside them fails (a half-built
  // model unwinding: where the allocator once aborted the process).
  cfg.layers = 7;
  path = dir + "/build.bet";
  atomic_write_file(path, craft_bet(header_for(cfg), model_table(cfg)));
  r = predict(path, kGiB);
  CAPTURE(r.err);
  CHECK(r.rc == 1);
  CHECK(r.err.find(path + ": building the model: out of memory allocating ") != std::string::npos);
}

int main(int argc, char** argv) { return bet::test::run_with_betctl_arg(argc, argv); }
