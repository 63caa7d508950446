#include "runtime/inference/arena.h"

#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cmath>

#include "platform/memory.h"
#include "runtime/inference/forward.h"
#include "runtime/inference/request.h"

namespace bet::inference {

namespace {

// The WorkerArena whose worker the calling thread is. Thread-local rather than a
// thread id: a new thread may get the id of one that has ended (a server restarted on
// the same predictor without the arena must not find its predecessor's).
thread_local const WorkerArena* t_worker_of = nullptr;

// The longest row a request may hold on `m`: max_len, less where one row's attention
// scores would pass RequestLimits::kMaxRowAttentionScores (check_cost refuses those).
int64_t longest_row(const model::BetModel& m) {
  const model::ModelConfig& cfg = m.config();
  int64_t len = std::max<int64_t>(1, cfg.max_len);
  while (len > 1 && forward_cost(cfg, 1, len).row_attention_scores > RequestLimits::kMaxRowAttentionScores) --len;
  return len;
}

// Runs `shapes` once each on the calling thread, as Monte Carlo forwards with `mc`.
void run_forwards(const model::BetModel& m, const std::vector<std::pair<int64_t, int64_t>>& shapes, bool mc) {
  for (auto [rows, len] : shapes) {
    std::vector<std::vector<int32_t>> ids(size_t(rows), std::vector<int32_t>(size_t(len), 1));
    std::vector<const std::vector<int32_t>*> ptrs;
    for (const auto& r : ids) ptrs.push_back(&r);
    forward_rows(m, ptrs, mc);
  }
}

// Address space to measure in: half the machine's memory, as a power of two (only
// the pages the forwards touch are ever backed).
size_t measuring_bytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  const size_t phys = pages > 0 && page > 0 ? size_t(pages) * size_t(page) : size_t(1) << 32;
  return std::min(std::bit_floor(phys / 2), size_t(1) << 40);
}

}  // namespace

std::vector<std::pair<int64_t, int64_t>> largest_forwards(const model::BetModel& m, int64_t max_rows) {
  std::vector<std::pair<int64_t, int64_t>> out;
  max_rows = std::max<int64_t>(1, max_rows);
  for (int64_t len = longest_row(m);; len = (len + 1) / 2) {
    // forward_fits is monotone in rows: the most it admits, by bisection.
    int64_t lo = 1, hi = max_rows;
    while (lo < hi) {
      const int64_t mid = lo + (hi - lo + 1) / 2;
      if (forward_fits(m, mid, len)) lo = mid;
      else hi = mid - 1;
    }
    out.emplace_back(lo, len);
    if (len == 1) break;
  }
  return out;
}

InferenceArena::InferenceArena(ArenaSizing sizing) : sizing_(sizing) {
  sizing_.max_rows = std::max<int64_t>(1, sizing_.max_rows);
  sizing_.mc_rows = std::max<int64_t>(0, sizing_.mc_rows);
}

void InferenceArena::reserve_for(const std::shared_ptr<const model::BetModel>& m) {
  if (reserved_for(*m)) return;
  const auto shapes = largest_forwards(*m, sizing_.max_rows);
  std::vector<std::pair<int64_t, int64_t>> mc_shapes;
  if (sizing_.mc_rows > 0 && m->config().dropout > 0)
    for (auto [rows, len] : shapes) mc_shapes.emplace_back(sizing_.mc_rows, len);
  // Address space only, but a system that does not overcommit may refuse that much:
  // then less, down to 256 MiB.
  std::unique_ptr<platform::HostArena> region;
  for (size_t bytes = measuring_bytes();; bytes /= 2) {
    try {
      region = std::make_unique<platform::HostArena>(bytes, /*prefault=*/false);
      break;
    } catch (const Error&) {
      if (bytes <= (size_t(256) << 20)) throw;
    }
  }
  platform::HostArena& measuring = *region;
  {
    platform::ArenaScope scope(&measuring);
    run_forwards(*m, shapes, false);
    run_forwards(*m, mc_shapes, true);
  }
  const platform::ArenaStats s = measuring.stats();
  BET_CHECK(s.misses == 0, "inference arena: the largest forwards need more than ", measuring.capacity(),
            " bytes at once");
  measured_peak_ = s.peak_bytes_in_use;
  arena_.reset();  // the old model's, before the new one is mapped
  // Half as much again: room for the fragmentation other mixes of sizes may leave.
  arena_ = std::make_unique<platform::HostArena>(measured_peak_ + measured_peak_ / 2);
  sized_for_ = m;
}

void WorkerArena::start(ArenaSizing sizing, const std::shared_ptr<const model::BetModel>& m) {
  t_worker_of = this;
  arena_ = std::make_unique<InferenceArena>(sizing);
  refused_for_.reset();
  if (m) enter(m);
}

WorkerArena::Scope WorkerArena::enter(const std::shared_ptr<const model::BetModel>& m) {
  // A model on a GPU keeps its tensors in device memory: nothing for a host arena.
  if (!arena_ || !m || t_worker_of != this || !platform::host_backed(m->device()))
    return Scope(platform::current_arena(), 0);
  if (!arena_->reserved_for(*m) && refused_for_.lock() != m) {
    try {
      arena_->reserve_for(m);
    } catch (const std::exception&) {
      // No memory for the arena: this model is served from the caching allocator.
      refused_for_ = m;
    }
  }
  if (!arena_->reserved_for(*m)) return Scope(platform::current_arena(), 0);
  return Scope(arena_->arena(), arena_->sizing().max_rows);
}

}  // namespace bet::inference
