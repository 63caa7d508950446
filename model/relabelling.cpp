#include "model/relabelling.h"

#include <mutex>
#include <unordered_map>

#include "engine/random.h"

namespace bet::model {

namespace {

// Distinct leading tags keep training, bidirectional and causal keys from ever sharing
// a stream, even for coinciding numbers.
constexpr uint64_t kTrainTag = 0x7261696e;   // "rain"
constexpr uint64_t kBidirTag = 0x62696469;   // "bidi"
constexpr uint64_t kCausalTag = 0x63617573;  // "caus"

std::vector<int64_t> draw_permutation(uint64_t key, int64_t n) {
  Generator g(key);
  return g.permutation(n);
}

// Inference keys repeat for every request of the same length (bidirectional) or for
// every request (causal); a permutation is cheap but not free at small batch sizes.
// The cache only memoises: an entry is exactly what draw_permutation returns.
class PermutationCache {
 public:
  std::vector<int64_t> get(uint64_t key, int64_t n) {
    const uint64_t ck = mix_key({key, uint64_t(n)});
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = map_.find(ck);
      if (it != map_.end() && it->second.first == key && int64_t(it->second.second.size()) == n)
        return it->second.second;
    }
    std::vector<int64_t> p = draw_permutation(key, n);
    std::lock_guard<std::mutex> lock(mu_);
    if (map_.size() >= kMaxEntries) map_.clear();  // bounded; a miss only costs a redraw
    map_[ck] = {key, p};
    return p;
  }

 private:
  static constexpr size_t kMaxEntries = 4096;
  std::mutex mu_;
  std::unordered_map<uint64_t, std::pair<uint64_t, std::vector<int64_t>>> map_;
};

PermutationCache& cache() {
  static PermutationCache c;
  return c;
}

void fill_bidirectional(const std::vector<int64_t>& perm, int64_t S, int64_t* out) {
  const int64_t n = int64_t(perm.size());
  for (int64_t t = 0; t < n; ++t) out[t] = perm[size_t(t)];
  for (int64_t t = n; t < S; ++t) out[t] = t;
}

}  // namespace

uint64_t training_relabel_key(uint64_t seed, uint64_t step, int64_t layer, int64_t path, int64_t sequence) {
  return mix_key({kTrainTag, seed, step, uint64_t(layer), uint64_t(path), uint64_t(sequence)});
}

uint64_t inference_relabel_key(uint64_t inference_seed, int64_t layer, int64_t path, int64_t n) {
  return mix_key({kBidirTag, inference_seed, uint64_t(layer), uint64_t(path), uint64_t(n)});
}

uint64_t inference_relabel_key(uint64_t inference_seed, int64_t layer, int64_t path) {
  return mix_key({kCausalTag, inference_seed, uint64_t(layer), uint64_t(path)});
}

std::vector<int64_t> bidirectional_relabelling(uint64_t key, int64_t n, int64_t S) {
  BET_CHECK(n >= 0 && n <= S, "relabelling: ", n, " valid positions in a sequence of ", S);
  std::vector<int64_t> out(static_cast<size_t>(S));
  fill_bidirectional(draw_permutation(key, n), S, out.data());
  return out;
}

std::vector<int64_t> causal_relabelling(uint64_t key, int64_t S, int64_t max_len) {
  BET_CHECK(S <= max_len, "relabelling: sequence length ", S, " exceeds max_len ", max_len);
  std::vector<int64_t> p = draw_permutation(key, max_len);
  p.resize(size_t(S));
  return p;
}

Tensor relabelling_ids(const SeqContext& ctx, int64_t layer, int64_t k, int64_t max_len,
                       uint64_t inference_seed) {
  const int64_t B = ctx.batch(), S = ctx.seq_len();
  BET_CHECK(!ctx.causal || S <= max_len, "relabelling: sequence length ", S, " exceeds max_len ", max_len);
  Tensor ids = Tensor::empty({k, B, S}, DType::I64);
  int64_t* out = ids.data<int64_t>();
  const std::vector<int64_t> lengths = ctx.lengths.to(DType::I64).to_vector<int64_t>();
  std::vector<int64_t> seq_index;
  if (ctx.sequence_index.defined()) {
    seq_index = ctx.sequence_index.to(DType::I64).to_vector<int64_t>();
    BET_CHECK(int64_t(seq_index.size()) == B, "relabelling: sequence_index has ", seq_index.size(),
              " entries for a batch of ", B);
  }
  for (int64_t p = 0; p < k; ++p) {
    std::vector<int64_t> causal_perm;
    if (ctx.causal && !ctx.training)  // one relabelling shared by the whole batch
      causal_perm = cache().get(inference_relabel_key(inference_seed, layer, p), max_len);
    for (int64_t b = 0; b < B; ++b) {
      int64_t* row = out + (p * B + b) * S;
      const int64_t n = lengths[size_t(b)];
      if (ctx.training) {
        const int64_t seq = seq_index.empty() ? b : seq_index[size_t(b)];
        const uint64_t key = training_relabel_key(ctx.seed, ctx.step, layer, p, seq);
        if (ctx.causal) {
          std::vector<int64_t> perm = draw_permutation(key, max_len);
          for (int64_t t = 0; t < S; ++t) row[t] = perm[size_t(t)];
        } else {
          fill_bidirectional(draw_permutation(key, n), S, row);
        }
      } else if (ctx.causal) {
        for (int64_t t = 0; t < S; ++t) row[t] = causal_perm[size_t(t)];
      } else {
        fill_bidirectional(cache().get(inference_relabel_key(inference_seed, layer, p, n), n), S, row);
      }
    }
  }
  return ids;  // on the host: its one reader (the folded paths' positions) reads it there
}

}  // namespace bet::model
