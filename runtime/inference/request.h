// What a client may ask of a model, and the one place that says whether a request is
// acceptable. The server (HTTP bodies), `betctl predict` (--text, --input lines) and the
// benches all build these types and all go through check_predict()/check_generate(),
// which ModelPredictor calls before any work: there is no second copy of a limit.
//
// Two stages, kept apart on purpose:
//   decode_*: JSON -> typed request. Shape and types only ("permutations" must be an
//             integer), plus the item count of a batch, which must be refused before
//             the request is queued.
//   check_*:  typed request -> accepted, or an InputIssue naming the field and bound.
//             Ranges, text sizes and the request's cost on the given model.
// An InputIssue carries a kind, never an HTTP status: the server maps kinds to statuses
// (runtime/server/api.h), the CLI to exit codes.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "model/config.h"

namespace bet::inference {

struct PredictRequest {
  std::string text;                 // used when chunks is empty
  std::vector<std::string> chunks;  // "chunks": [...]: one document in pieces
  bool return_uncertainty = true;
  std::optional<int> permutations;  // absent: 1
  int mc_dropout = 0;               // 0: deterministic
  std::optional<double> temperature;  // absent: the model's calibrated temperature
  // The client gave neither permutations nor mc_dropout (and no --default-mc-dropout
  // filled one in), so the request runs the members the model's uncertainty signal
  // needs (uncertainty_signal.h): mc_dropout K for mc_dropout:SIGNAL@K, and so on.
  // decode_predict and decode_batch set it; a request built in code keeps exactly the
  // members it names unless it sets this. Ignored when either field is set.
  bool signal_members = false;
};

struct GenerateRequest {
  std::string prompt;
  std::optional<int> max_tokens;  // at most one of max_tokens and cot_auto is set
  bool cot_auto = false;          // "cot": "auto": the model's optimal length as budget
  std::optional<double> temperature;  // 0: greedy
  std::optional<int> top_k;
  std::optional<double> top_p;
  std::optional<uint64_t> seed;
};

enum class InputIssueKind {
  kBadRequest,        // the body is not what the route takes (shape, types)
  kBadField,          // a field's value is out of its range
  kEmptyText,         // a text (or every chunk) is empty or has no tokens
  kTextTooLong,       // over max_text_bytes
  kTooManyItems,      // a batch over max_batch_items
  kTooMuchWork,       // the request would cost more than max_request_gflop on this model
  kNotALanguageModel  // generate on a classifier
};

// The API's error code for a kind: "bad_request", "bad_field", "empty_text", ...
std::string_view issue_code(InputIssueKind kind);

struct InputIssue {
  InputIssueKind kind = InputIssueKind::kBadRequest;
  std::string message;  // names the field at fault and the bound
};

// A request the model cannot answer as given (thrown by the single-request paths:
// ModelPredictor::predict, generate).
class InputError : public Error {
 public:
  explicit InputError(InputIssue issue) : Error(issue.message), issue_(std::move(issue)) {}
  InputError(InputIssueKind kind, const std::string& message) : InputError(InputIssue{kind, message}) {}
  InputIssueKind kind() const { return issue_.kind; }
  std::string_view code() const { return issue_code(issue_.kind); }
  const InputIssue& issue() const { return issue_; }

 private:
  InputIssue issue_;
};

// Every bound on a request, with the defaults `betctl serve` and `betctl predict` use.
struct RequestLimits {
  static constexpr int kMaxMembers = 64;  // permutations and mc_dropout
  // A temperature divides the logits: below 1e-2 every answer is one-hot anyway and a
  // subnormal one overflows them; above 1e2 every answer is uniform.
  static constexpr double kMinTemperature = 1e-2;
  static constexpr double kMaxTemperature = 1e2;
  static constexpr int kMaxGenerateTokens = 65536;
  // The attention scores of one row (paths x heads x len^2 f32) cannot be split across
  // forwards: 2^28 of them are 1 GiB. A model trained with a long --max-len answers
  // texts up to the length that fits and 413 beyond.
  static constexpr int64_t kMaxRowAttentionScores = int64_t(1) << 28;

  size_t max_text_bytes = 1u << 20;  // --max-text-bytes: per text, or per document of chunks
  size_t max_batch_items = 64;       // --max-batch-items
  // --default-mc-dropout: mc_dropout when the body has none. When above 0 it wins over
  // the members of the model's uncertainty signal (the body then counts as giving
  // mc_dropout), so a server keeps doing what its operator set explicitly.
  int default_mc_dropout = 0;
  double max_request_gflop = 500;    // --max-request-gflop: estimated forward work per request
};

// JSON bodies (server) and JSONL lines (`betctl predict --input`). On failure: false and
// *issue. decode_batch fails with kTooManyItems past limits.max_batch_items.
bool decode_predict(const nlohmann::json& body, const RequestLimits& limits, PredictRequest* out, InputIssue* issue);
bool decode_batch(const nlohmann::json& body, const RequestLimits& limits, std::vector<PredictRequest>* out,
                  InputIssue* issue);
bool decode_generate(const nlohmann::json& body, GenerateRequest* out, InputIssue* issue);

// The model-independent checks: ranges, text sizes.
std::optional<InputIssue> check_predict(const PredictRequest& req, const RequestLimits& limits);
std::optional<InputIssue> check_generate(const GenerateRequest& req, const RequestLimits& limits);

// Estimated cost of `rows` forwards of `len` tokens each on a model: GFLOP of the
// matrix products (2 x tokens x weights, plus the attention's 4 x len^2 x d_model per
// path and layer), and the attention scores one row holds at once.
struct ForwardCost {
  double gflop = 0;
  int64_t row_attention_scores = 0;
};
ForwardCost forward_cost(const model::ModelConfig& cfg, int64_t rows, int64_t len);
// kTooMuchWork when `cost` is over the limits; `what` says what the cost is of.
std::optional<InputIssue> check_cost(const ForwardCost& cost, const RequestLimits& limits, const std::string& what);

}  // namespace bet::inference
