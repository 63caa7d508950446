#include "runtime/server/openapi.h"

#include "runtime/server/router.h"

namespace bet::server {

namespace {

using nlohmann::json;

// Schemas written as JSON text: easier to review against product.md than builder calls.
// They describe what the server really returns (tests/test_server_model.cpp validates
// the document with swagger-parser and checks real responses against it, every field
// declared). Where product.md leaves a choice open, the server and this document say:
//   - 422 is for text errors only ("empty_text": empty, or no tokens; "text_too_long");
//     every other invalid field is 400, whether the API or the model refuses it
//     (generate on a classifier, "cot": "auto" on a model without bet layers);
//   - a batch with one item the model cannot answer fails as a whole with that item's
//     status, the message naming texts[i] (as the API's own checks do);
//   - permutations and mc_dropout are bounded by the model's ensemble limit (64);
//   - "truncated" is always present (false when nothing was cut); "cot_length" is a
//     float, null without bet layers; "order_dispersion" is null unless the ensemble
//     has several orderings; "cot_budget" is null unless "cot": "auto" was asked;
//   - language models answer /v1/predict with the next token (token_id, top_tokens)
//     instead of probabilities by label;
//   - "uncertainty" names the model's uncertainty signal and its "score" in the same
//     answer, null when the request's own members cannot give that signal.
const char* kComponents = R"json({
  "securitySchemes": {
    "bearerAuth": {"type": "http", "scheme": "bearer"}
  },
  "schemas": {
    "Error": {
      "type": "object",
      "required": ["error"],
      "properties": {
        "error": {
          "type": "object",
          "required": ["code", "message"],
          "properties": {
            "code": {"type": "string", "description": "Machine-readable error code, e.g. payload_too_large."},
            "message": {"type": "string"}
          }
        }
      }
    },
    "Status": {
      "type": "object",
      "required": ["status"],
      "properties": {"status": {"type": "string"}}
    },
    "ModelInfo": {
      "type": "object",
      "description": "Config, parameter count, version, metrics and calibration of the loaded model.",
      "required": ["version", "task", "layer", "config", "parameter_count", "labels", "tokenizer", "calibration",
                   "uncertainty"],
      "properties": {
        "version": {"type": "string", "description": "The model card's semantic version, or \"unversioned\"."},
        "name": {"type": "string"},
        "task": {"type": "string", "enum": ["classify", "lm"]},
        "layer": {"type": "string", "enum": ["bet", "standard"]},
        "config": {"type": "object", "additionalProperties": true},
        "parameter_count": {"type": "integer", "minimum": 0},
        "labels": {"type": "array", "items": {"type": "string"}},
        "tokenizer": {"type": "string"},
        "calibration": {
          "type": "object",
          "required": ["temperature", "calibrated"],
          "properties": {"temperature": {"type": "number"}, "calibrated": {"type": "boolean"}}
        },
        "card": {"type": "object", "additionalProperties": true},
        "path": {"type": "string"},
        "kind": {"type": "string"},
        "metrics": {"type": "object", "additionalProperties": true},
        "created_at": {"type": "string"},
        "versions": {"type": "object", "additionalProperties": true},
        "device": {"type": "string", "description": "where the model computes: cpu or cuda:N"},
        "uncertainty": {"$ref": "#/components/schemas/UncertaintyChoice"}
      },
      "additionalProperties": true
    },
    "UncertaintyChoice": {
      "type": "object",
      "description": "The uncertainty signal every answer reports as uncertainty.score, and where it comes from.",
      "required": ["signal", "source"],
      "properties": {
        "signal": {"type": "string", "pattern": "^(single|orderings|mc_dropout|both):[a-z0-9_-]+(@[0-9]+)?$",
                   "description": "SETTING:SIGNAL[@K], e.g. single:1-confidence or mc_dropout:epistemic@8."},
        "source": {"type": "string", "enum": ["default", "calibration", "command line"],
                   "description": "default: single:1-confidence, the checkpoint stores no choice; calibration: stored by betctl calibrate --uncertainty; command line: --uncertainty."},
        "chosen": {"type": "string", "enum": ["auto", "given"]},
        "examples": {"type": "integer", "minimum": 0, "description": "Calibration examples it was measured on."},
        "errors": {"type": "integer", "minimum": 0},
        "candidates": {"type": "integer", "minimum": 0, "description": "Signals compared (auto)."},
        "error_auroc": {"type": "number", "nullable": true, "description": "Null when the calibration data had no errors."},
        "aurc": {"type": "number", "nullable": true},
        "accuracy_at_80": {"type": "number", "nullable": true},
        "accuracy_at_90": {"type": "number", "nullable": true},
        "note": {"type": "string"}
      }
    },
    "PredictOptions": {
      "type": "object",
      "properties": {
        "return_uncertainty": {"type": "boolean", "default": true},
        "permutations": {"type": "integer", "minimum": 1, "maximum": 64,
                         "description": "Ensemble of K orderings of the input (default 1). Give neither this nor mc_dropout to run the members of the model's uncertainty signal."},
        "mc_dropout": {"type": "integer", "minimum": 0, "maximum": 64,
                       "description": "Ensemble of K dropout masks (default --default-mc-dropout, else the members of the model's uncertainty signal when permutations is absent too)."},
        "temperature": {"type": "number", "minimum": 0.01, "maximum": 100,
                        "description": "Overrides the calibrated temperature."}
      }
    },
    "PredictRequest": {
      "allOf": [
        {"$ref": "#/components/schemas/PredictOptions"},
        {
          "type": "object",
          "properties": {
            "text": {"type": "string", "minLength": 1},
            "chunks": {"type": "array", "minItems": 1, "items": {"type": "string"},
                       "description": "One document in pieces; orderings move whole chunks."}
          },
          "oneOf": [{"required": ["text"]}, {"required": ["chunks"]}],
          "description": "Exactly one of text and chunks."
        }
      ]
    },
    "BatchPredictRequest": {
      "allOf": [
        {"$ref": "#/components/schemas/PredictOptions"},
        {
          "type": "object",
          "required": ["texts"],
          "properties": {
            "texts": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}}
          }
        }
      ]
    },
    "Beta": {
      "type": "object",
      "description": "The Beta posterior of the model's sufficient-statistics layer (bet layers only).",
      "required": ["alpha", "beta", "posterior_mean", "posterior_variance", "epistemic", "aleatoric"],
      "properties": {
        "alpha": {"type": "number"},
        "beta": {"type": "number"},
        "posterior_mean": {"type": "number"},
        "posterior_variance": {"type": "number"},
        "epistemic": {"type": "number"},
        "aleatoric": {"type": "number"}
      }
    },
    "Uncertainty": {
      "type": "object",
      "required": ["epistemic", "aleatoric", "total", "order_dispersion", "members", "signal", "score"],
      "properties": {
        "epistemic": {"type": "number"},
        "aleatoric": {"type": "number"},
        "total": {"type": "number"},
        "order_dispersion": {"type": "number", "nullable": true,
                             "description": "Null unless the ensemble has several orderings."},
        "members": {"type": "integer", "minimum": 1},
        "beta": {"$ref": "#/components/schemas/Beta"},
        "signal": {"type": "string", "description": "The model's uncertainty signal, SETTING:SIGNAL[@K] (see ModelInfo.uncertainty)."},
        "score": {"type": "number", "nullable": true,
                  "description": "The signal's value in this answer, higher = more uncertain; null when this request's members cannot give it (e.g. mc_dropout 0 for an mc_dropout signal)."}
      }
    },
    "TopToken": {
      "type": "object",
      "required": ["id", "text", "probability"],
      "properties": {"id": {"type": "integer"}, "text": {"type": "string"}, "probability": {"type": "number"}}
    },
    "Prediction": {
      "type": "object",
      "description": "Classifiers answer probabilities by label; language models the next token (token_id, top_tokens).",
      "required": ["label", "confidence", "cot_length", "truncated"],
      "properties": {
        "label": {"type": "string"},
        "probabilities": {"type": "object", "additionalProperties": {"type": "number"}},
        "token_id": {"type": "integer"},
        "top_tokens": {"type": "array", "items": {"$ref": "#/components/schemas/TopToken"}},
        "confidence": {"type": "number"},
        "uncertainty": {"$ref": "#/components/schemas/Uncertainty"},
        "attention_dispersion": {"type": "number"},
        "cot_length": {"type": "number", "nullable": true,
                       "description": "The model's optimal chain-of-thought length (bet layers), else null."},
        "truncated": {"type": "boolean", "description": "True when the text was cut to the model's max length."}
      },
      "anyOf": [{"required": ["probabilities"]}, {"required": ["token_id", "top_tokens"]}],
      "additionalProperties": true
    },
    "PredictResponse": {
      "allOf": [
        {"$ref": "#/components/schemas/Prediction"},
        {"type": "object", "required": ["latency_ms"], "properties": {"latency_ms": {"type": "number"}}}
      ]
    },
    "BatchPredictResponse": {
      "type": "object",
      "required": ["predictions", "latency_ms"],
      "properties": {
        "predictions": {"type": "array", "items": {"$ref": "#/components/schemas/Prediction"}},
        "latency_ms": {"type": "number"}
      }
    },
    "GenerateRequest": {
      "type": "object",
      "required": ["prompt"],
      "properties": {
        "prompt": {"type": "string", "minLength": 1},
        "max_tokens": {"type": "integer", "minimum": 1, "maximum": 65536, "description": "Default 64."},
        "cot": {"type": "string", "enum": ["auto"], "description": "The model's optimal_length as the budget."},
        "temperature": {"type": "number", "minimum": 0, "maximum": 100,
                        "description": "0: greedy; otherwise at least 0.01."},
        "top_k": {"type": "integer", "minimum": 0, "maximum": 1048576},
        "top_p": {"type": "number", "minimum": 0, "exclusiveMinimum": true, "maximum": 1},
        "seed": {"type": "integer", "minimum": 0}
      },
      "not": {"required": ["max_tokens", "cot"]},
      "description": "At most one of max_tokens and cot."
    },
    "GenerateResponse": {
      "type": "object",
      "required": ["text", "tokens", "stop", "cot_budget", "latency_ms"],
      "properties": {
        "text": {"type": "string"},
        "tokens": {"type": "integer", "minimum": 0},
        "stop": {"type": "string", "enum": ["length", "eos"]},
        "cot_budget": {"type": "integer", "nullable": true, "description": "With \"cot\": \"auto\", else null."},
        "latency_ms": {"type": "number"}
      },
      "additionalProperties": true
    }
  }
})json";

json error_response(const char* description) {
  return {{"description", description},
          {"content", {{"application/json", {{"schema", {{"$ref", "#/components/schemas/Error"}}}}}}}};
}

json json_response(const char* description, const char* schema) {
  return {{"description", description},
          {"content", {{"application/json", {{"schema", {{"$ref", std::string("#/components/schemas/") + schema}}}}}}}};
}

json json_body(const char* schema) {
  return {{"required", true},
          {"content", {{"application/json", {{"schema", {{"$ref", std::string("#/components/schemas/") + schema}}}}}}}};
}

json operation(const Route& r, bool keys) {
  json op;
  json& res = op["responses"];
  std::string id;
  for (char c : r.path.substr(1)) id.push_back((c == '/' || c == '-' || c == '.') ? '_' : c);
  op["operationId"] = std::string(r.method == "GET" ? "get_" : "post_") + id;
  switch (r.handler) {
    case Handler::kHealth:
      op["summary"] = "Liveness";
      res["200"] = json_response("The process is serving", "Status");
      break;
    case Handler::kReady:
      op["summary"] = "Readiness: 200 once the model is loaded";
      res["200"] = json_response("The model is loaded", "Status");
      res["503"] = error_response("The model is not loaded yet");
      break;
    case Handler::kModel:
      op["summary"] = "The loaded model: config, parameter count, version, metrics, calibration";
      res["200"] = json_response("Model information", "ModelInfo");
      res["503"] = error_response("The model is not loaded yet");
      break;
    case Handler::kPredict:
      op["summary"] = "Classify one text, with uncertainty";
      op["requestBody"] = json_body("PredictRequest");
      res["200"] = json_response("The prediction", "PredictResponse");
      res["400"] = error_response("Malformed JSON or invalid fields");
      res["413"] = error_response("Body larger than --max-body, or a request over --max-request-gflop");
      res["422"] = error_response("Empty text (or one with no tokens), or text over --max-text-bytes");
      res["503"] = error_response("The model is not loaded yet, or the queue is full");
      break;
    case Handler::kPredictBatch:
      op["summary"] = "Classify several texts";
      op["requestBody"] = json_body("BatchPredictRequest");
      res["200"] = json_response("One prediction per text, in order", "BatchPredictResponse");
      res["413"] = error_response(
          "Body larger than --max-body, more texts than --max-batch-items, or a text over --max-request-gflop");
      res["400"] = error_response("Malformed JSON or invalid fields; an item the model cannot answer fails the batch");
      res["422"] = error_response("An empty text (or one with no tokens), or one over --max-text-bytes; "
                                  "the message names texts[i]");
      res["503"] = error_response("The model is not loaded yet, or the queue is full");
      break;
    case Handler::kGenerate:
      op["summary"] = "Generate a continuation (language models)";
      op["requestBody"] = json_body("GenerateRequest");
      res["200"] = json_response("The generated text", "GenerateResponse");
      res["400"] = error_response(
          "Malformed JSON, invalid fields, a model that does not generate, or cot auto on a model without bet "
          "layers");
      res["413"] = error_response("Body larger than --max-body, or a generation over --max-request-gflop");
      res["422"] = error_response("Empty prompt, or one over --max-text-bytes");
      res["503"] = error_response("The model is not loaded yet, or the queue is full");
      break;
    case Handler::kMetrics:
      op["summary"] = "Prometheus metrics";
      res["200"] = {{"description", "Prometheus text exposition format 0.0.4"},
                    {"content", {{"text/plain", {{"schema", {{"type", "string"}}}}}}}};
      break;
    case Handler::kOpenApi:
      op["summary"] = "This document";
      res["200"] = {{"description", "The OpenAPI document"},
                    {"content", {{"application/json", {{"schema", {{"type", "object"}}}}}}}};
      break;
  }
  if (r.path == "/predict" || r.path == "/batch-predict" || r.path == "/model-info") {
    op["deprecated"] = true;
    op["description"] = "Alias kept for clients of the earlier API.";
  }
  res["405"] = error_response("Method not allowed (see the Allow header)");
  if (r.needs_key) {
    if (keys) op["security"] = json::array({{{"bearerAuth", json::array()}}});
    res["401"] = error_response("Missing or wrong API key (when keys are configured)");
    res["429"] = {{"description", "Over the rate limit"},
                  {"headers", {{"Retry-After", {{"description", "Seconds to wait"}, {"schema", {{"type", "integer"}}}}}}},
                  {"content", {{"application/json", {{"schema", {{"$ref", "#/components/schemas/Error"}}}}}}}};
  }
  res["default"] = error_response("Any other error (400 malformed request, 408, 431, 500, ...)");
  return op;
}

}  // namespace

nlohmann::json openapi_document(const OpenApiOptions& options) {
  json doc;
  doc["openapi"] = "3.0.3";
  doc["info"] = {{"title", "betctl serve"},
                 {"version", options.version},
                 {"description",
                  "Predictions with uncertainty from a Bayesian Expectation Transformer. "
                  "Errors are JSON {\"error\": {\"code\", \"message\"}}."}};
  doc["components"] = json::parse(kComponents);
  auto& schemas = doc["components"]["schemas"];
  schemas["BatchPredictRequest"]["allOf"][1]["properties"]["texts"]["maxItems"] = options.max_batch_items;
  schemas["BatchPredictRequest"]["allOf"][1]["properties"]["texts"]["items"]["description"] =
      "At most " + std::to_string(options.max_text_bytes) + " bytes of UTF-8.";
  schemas["PredictRequest"]["allOf"][1]["properties"]["text"]["description"] =
      "At most " + std::to_string(options.max_text_bytes) + " bytes of UTF-8.";
  schemas["PredictOptions"]["properties"]["permutations"]["maximum"] = options.max_members;
  schemas["PredictOptions"]["properties"]["mc_dropout"]["maximum"] = options.max_members;
  json& paths = doc["paths"];
  paths = json::object();
  for (const Route& r : routes()) {
    std::string method = r.method == "GET" ? "get" : "post";
    paths[std::string(r.path)][method] = operation(r, options.api_keys);
  }
  return doc;
}

}  // namespace bet::server
