#include "runtime/data/batching.h"

#include <algorithm>

#include "engine/ops.h"
#include "engine/random.h"
#include "runtime/tokenizer/tokenizer.h"

namespace bet::runtime {

int64_t Batch::tokens() const {
  int64_t n = 0;
  for (auto l : lengths) n += l;
  return n;
}

Batch slice_rows(const Batch& b, int64_t begin, int64_t end) {
  const int64_t B = b.ids.size(0);
  BET_CHECK(0 <= begin && begin < end && end <= B, "slice_rows: rows [", begin, ", ", end, ") of a batch of ", B);
  if (begin == 0 && end == B) return b;
  Batch out;
  out.ids = slice(b.ids, 0, begin, end).contiguous();
  out.lengths.assign(b.lengths.begin() + begin, b.lengths.begin() + end);
  if (b.labels.defined()) out.labels = slice(b.labels, 0, begin, end).contiguous();
  if (b.targets.defined()) out.targets = slice(b.targets, 0, begin, end).contiguous();
  if (!b.indices.empty()) out.indices.assign(b.indices.begin() + begin, b.indices.begin() + end);
  return out;
}

std::vector<std::vector<int64_t>> plan_epoch(const std::vector<int64_t>& lengths, int64_t batch_size, uint64_t seed,
                                             int64_t epoch, bool bucket) {
  BET_CHECK(batch_size >= 1, "batch size must be >= 1, got ", batch_size);
  Generator g(mix_key({seed, uint64_t(epoch), 0xe90c}));
  std::vector<int64_t> order = g.permutation(int64_t(lengths.size()));
  if (bucket) {
    const size_t window = size_t(batch_size) * 50;
    for (size_t at = 0; at < order.size(); at += window) {
      auto end = order.begin() + long(std::min(order.size(), at + window));
      std::stable_sort(order.begin() + long(at), end,
                       [&](int64_t a, int64_t b) { return lengths[size_t(a)] < lengths[size_t(b)]; });
    }
  }
  std::vector<std::vector<int64_t>> batches;
  for (size_t at = 0; at < order.size(); at += size_t(batch_size))
    batches.emplace_back(order.begin() + long(at), order.begin() + long(std::min(order.size(), at + size_t(batch_size))));
  auto perm = g.permutation(int64_t(batches.size()));
  std::vector<std::vector<int64_t>> shuffled(batches.size());
  for (size_t i = 0; i < perm.size(); ++i) shuffled[i] = std::move(batches[size_t(perm[i])]);
  return shuffled;
}

Batch make_classify_batch(const std::vector<EncodedSequence>& data, const std::vector<int64_t>& indices,
                          int64_t max_len) {
  const int64_t B = int64_t(indices.size());
  int64_t S = 1;
  for (int64_t i : indices) S = std::max<int64_t>(S, std::min<int64_t>(max_len, int64_t(data[size_t(i)].ids.size())));
  Batch b;
  b.ids = Tensor::zeros({B, S}, DType::I64);
  b.labels = Tensor::empty({B}, DType::I64);
  int64_t* ids = b.ids.data<int64_t>();
  for (int64_t r = 0; r < B; ++r) {
    const auto& seq = data[size_t(indices[size_t(r)])];
    BET_CHECK(!seq.ids.empty(), "batch: example ", indices[size_t(r)], " has no tokens");
    int64_t n = std::min<int64_t>(max_len, int64_t(seq.ids.size()));
    for (int64_t t = 0; t < n; ++t) ids[r * S + t] = seq.ids[size_t(t)];
    b.lengths.push_back(n);
    b.labels.data<int64_t>()[r] = seq.label;
  }
  b.indices = indices;
  return b;
}

Batch make_lm_batch(const std::vector<EncodedSequence>& data, const std::vector<int64_t>& indices, int64_t max_len) {
  const int64_t B = int64_t(indices.size());
  int64_t S = 1;
  for (int64_t i : indices) S = std::max<int64_t>(S, std::min<int64_t>(max_len, int64_t(data[size_t(i)].ids.size())));
  Batch b;
  b.ids = Tensor::zeros({B, S}, DType::I64);
  b.targets = Tensor::full({B, S}, -100.0, DType::I64);
  int64_t* ids = b.ids.data<int64_t>();
  int64_t* tg = b.targets.data<int64_t>();
  for (int64_t r = 0; r < B; ++r) {
    const auto& seq = data[size_t(indices[size_t(r)])];
    BET_CHECK(!seq.ids.empty(), "batch: example ", indices[size_t(r)], " has no tokens");
    int64_t n = std::min<int64_t>(max_len, int64_t(seq.ids.size()));
    ids[r * S] = kBos;
    for (int64_t t = 1; t < n; ++t) ids[r * S + t] = seq.ids[size_t(t - 1)];
    for (int64_t t = 0; t < n; ++t) tg[r * S + t] = seq.ids[size_t(t)];
    b.lengths.push_back(n);
  }
  b.indices = indices;
  return b;
}

std::vector<EncodedSequence> chunk_stream(const std::vector<int32_t>& stream, int64_t max_len) {
  std::vector<EncodedSequence> out;
  for (size_t at = 0; at < stream.size(); at += size_t(max_len)) {
    EncodedSequence s;
    s.ids.assign(stream.begin() + long(at), stream.begin() + long(std::min(stream.size(), at + size_t(max_len))));
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace bet::runtime
