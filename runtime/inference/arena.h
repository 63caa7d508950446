// The memory of an inference worker: one host arena (platform/arena.h) sized for the
// largest forward the worker runs on its model, so that once it is reserved, serving
// requests of every admitted size makes no system allocation for tensors and faults
// in no new page (the arena's pages are faulted in when it is reserved and stay
// resident, between requests too).
//
// "Largest": the batcher (predictor.cpp) packs rows into forwards while forward_fits()
// allows: token and attention-score budgets and, on the worker, at most max_rows rows
// (ForwardRowCap; more rows run as more forwards). So for every padded length there is
// a most-rows forward; the arena is sized by measuring the peak tensor bytes of those
// at the lengths L, L/2, ..., 1 (L: the longest row a request may hold), and of the
// Monte Carlo forwards [mc_rows, len] at the same lengths (a Monte Carlo request runs
// its members as one forward). What a forward needs grows with rows x len and
// rows x len^2 only, so the peak of the measured ones bounds the others, up to the
// slack the arena keeps for fragmentation.
//
// A request beyond that (a Monte Carlo request with more members than mc_rows, which
// cannot be split) still runs: what the arena cannot hold comes from the caching
// allocator, counted as arena misses, and the arena is whole again for the next ones.
//
// It knows models and forwards, nothing of servers: a server's worker asks its
// predictor to reserve one (Predictor::prepare_worker).
#pragma once
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "model/bet_model.h"
#include "platform/arena.h"

namespace bet::inference {

// While it lives, forward_fits (forward.h) admits forwards of at most `max_rows` rows
// on the calling thread (0: no cap), so the batcher runs more rows as more forwards.
class ForwardRowCap {
 public:
  explicit ForwardRowCap(int64_t max_rows) noexcept;
  ~ForwardRowCap();
  ForwardRowCap(const ForwardRowCap&) = delete;
  ForwardRowCap& operator=(const ForwardRowCap&) = delete;

 private:
  int64_t prev_;
};

// (rows, padded length) of the largest forwards forward_rows may be given on `m` with
// at most `max_rows` rows: for len = L, L/2, ..., 1, the most rows forward_fits admits.
std::vector<std::pair<int64_t, int64_t>> largest_forwards(const model::BetModel& m, int64_t max_rows);

struct ArenaSizing {
  int64_t max_rows = 32;  // rows per deterministic forward (a server: items per batch)
  int64_t mc_rows = 0;    // members of the Monte Carlo requests to cover (0: none)
};

class InferenceArena {
 public:
  explicit InferenceArena(ArenaSizing sizing);

  // Sizes the arena for `m` unless it is already sized for this model: runs the largest
  // forwards in a measuring region (address space only; what they touch is unmapped
  // after; their oneDNN primitives are built on the way), then reserves a prefaulted
  // arena of 1.5 times their peak. Throws bet::Error when the system refuses the memory.
  void reserve_for(const std::shared_ptr<const model::BetModel>& m);
  bool reserved_for(const model::BetModel& m) const { return arena_ && sized_for_.lock().get() == &m; }

  platform::HostArena* arena() const { return arena_.get(); }
  // The peak tensor bytes of the largest forwards (by arena block size), as measured.
  uint64_t measured_peak() const { return measured_peak_; }
  const ArenaSizing& sizing() const { return sizing_; }

 private:
  ArenaSizing sizing_;
  std::unique_ptr<platform::HostArena> arena_;
  std::weak_ptr<const model::BetModel> sized_for_;
  uint64_t measured_peak_ = 0;
};

// The arena of one inference worker thread, resized when the model it serves changes
// (a reload). ModelPredictor holds one; the server's worker starts it.
class WorkerArena {
 public:
  // The arena and the forward row cap of the worker while a request runs.
  class Scope {
   public:
    Scope(platform::HostArena* arena, int64_t max_rows) noexcept : arena_(arena), rows_(max_rows) {}

   private:
    platform::ArenaScope arena_;
    ForwardRowCap rows_;
  };

  // The calling thread becomes the worker; sizes the arena for `m` now (when given) so
  // the first request finds it ready.
  void start(ArenaSizing sizing, const std::shared_ptr<const model::BetModel>& m);
  // On the worker thread: resizes the arena for `m` when it was sized for another model,
  // and returns a scope making it the thread's arena (and capping forwards at the rows
  // it was sized for). On any other thread, before start(), for a model on a GPU or when
  // the system refused the memory: a scope that changes nothing.
  Scope enter(const std::shared_ptr<const model::BetModel>& m);
  // The arena (nullptr before start()); read it where no request runs.
  const InferenceArena* arena() const { return arena_.get(); }

 private:
  std::unique_ptr<InferenceArena> arena_;
  std::weak_ptr<const model::BetModel> refused_for_;  // reserving failed for this model: not retried
};

}  // namespace bet::inference
