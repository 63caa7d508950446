// The pieces of inference below the request level: one forward over token rows, with
// what a response needs from each row, and lm text generation.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/bet_model.h"
#include "runtime/inference/predictor.h"

namespace bet::inference {

// What one row (one ensemble member) of a forward yields.
struct MemberOutput {
  std::vector<double> logits;  // raw (temperature 1): classify [C]; lm: next token [V]
  double attention_dispersion = 0;
  bool has_beta = false;  // last layer is `bet`: its Beta posterior at the last valid position
  double alpha = 0, beta = 0, posterior_mean = 0, posterior_variance = 0;
  bool has_cot = false;  // last layer's optimal_length at the last valid position
  double cot_length = 0;
};

// Rows x padded length one forward may hold (lm logits are [B, S, V], so less for them).
int64_t forward_token_budget(const model::BetModel& m);
// Whether `rows` sequences padded to `len` tokens fit one forward: within the token
// budget, and with the attention scores of every path and head ([rows, paths, heads,
// len, len] f32) within kAttentionBudget, so a batch of long texts runs as several
// cache-sized forwards instead of one that streams hundreds of MB through memory.
// While a ForwardRowCap (arena.h) lives on a thread, forward_fits also keeps the forwards formed
// there within its rows (an inference worker's arena is sized for that many, arena.h).
bool forward_fits(const model::BetModel& m, int64_t rows, int64_t len);

// One forward over `rows` (each >= 1 token), padded to the longest. With `mc_dropout`
// the model's dropout sites are on, drawing from the stream keyed by the model's
// inference seed from offset 0 (so the masks are a function of the rows alone), and
// the attention relabellings keep their inference keys.
std::vector<MemberOutput> forward_rows(const model::BetModel& m, const std::vector<const std::vector<int32_t>*>& rows,
                                       bool mc_dropout);

// `s` with every byte that is not part of a valid UTF-8 sequence replaced by U+FFFD:
// a byte-level model's token or text may end inside a character, and JSON needs UTF-8.
std::string utf8_safe(std::string_view s);

// Autoregressive sampling for lm models (product.md /v1/generate). Throws InputError
// for a classifier, a field out of range or a generation over the limits' cost.
nlohmann::json generate_text(const LoadedModel& L, const GenerateRequest& req, const RequestLimits& limits);

}  // namespace bet::inference
