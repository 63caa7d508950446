#include "runtime/server/openapi.h"

#include "runtime/server/router.h"

namespace bet::server {

namespace {

using nlohmann::json;

// Schemas written as JSON text: easier to review against product.md than builder calls.
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
      "properties": {
        "version": {"type": "string"},
        "parameters": {"type": "integer"},
        "config": {"type": "object", "additionalProperties": true},
        "metrics": {"type": "object", "additionalProperties": true},
        "calibration": {"type": "object", "additionalProperties": true}
      },
      "additionalProperties": true
    },
    "PredictOptions": {
      "type": "object",
      "properties": {
        "return_uncertainty": {"type": "boolean", "default": true},
        "permutations": {"type": "integer", "minimum": 1, "maximum": 1024},
        "mc_dropout": {"type": "integer", "minimum": 0, "maximum": 1024},
        "temperature": {"type": "number", "minimum": 0, "exclusiveMinimum": true, "maximum": 1000}
      }
    },
    "PredictRequest": {
      "allOf": [
        {"$ref": "#/components/schemas/PredictOptions"},
        {
          "type": "object",
          "properties": {
            "text": {"type": "string", "minLength": 1},
            "chunks": {"type": "array", "minItems": 1, "items": {"type": "string"}}
          },
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
      "properties": {
        "alpha": {"type": "number"},
        "beta": {"type": "number"},
        "posterior_mean": {"type": "number"},
        "posterior_variance": {"type": "number"}
      }
    },
    "Uncertainty": {
      "type": "object",
      "properties": {
        "epistemic": {"type": "number"},
        "aleatoric": {"type": "number"},
        "total": {"type": "number"},
        "order_dispersion": {"type": "number"},
        "beta": {"$ref": "#/components/schemas/Beta"}
      }
    },
    "Prediction": {
      "type": "object",
      "properties": {
        "label": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
        "probabilities": {
          "oneOf": [
            {"type": "array", "items": {"type": "number"}},
            {"type": "object", "additionalProperties": {"type": "number"}}
          ]
        },
        "confidence": {"type": "number"},
        "uncertainty": {"$ref": "#/components/schemas/Uncertainty"},
        "cot_length": {"type": "integer"},
        "truncated": {"type": "boolean"}
      },
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
        "max_tokens": {"type": "integer", "minimum": 1, "maximum": 65536},
        "cot": {"type": "string", "enum": ["auto"]},
        "temperature": {"type": "number", "minimum": 0},
        "top_k": {"type": "integer", "minimum": 0},
        "top_p": {"type": "number", "minimum": 0, "exclusiveMinimum": true, "maximum": 1},
        "seed": {"type": "integer", "minimum": 0}
      },
      "description": "At most one of max_tokens and cot."
    },
    "GenerateResponse": {
      "type": "object",
      "required": ["text", "latency_ms"],
      "properties": {
        "text": {"type": "string"},
        "tokens": {"type": "integer"},
        "cot_budget": {"type": "integer"},
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
      res["413"] = error_response("Body larger than --max-body");
      res["422"] = error_response("Empty text, or text over --max-text-bytes");
      res["503"] = error_response("The model is not loaded yet, or the queue is full");
      break;
    case Handler::kPredictBatch:
      op["summary"] = "Classify several texts";
      op["requestBody"] = json_body("BatchPredictRequest");
      res["200"] = json_response("One prediction per text, in order", "BatchPredictResponse");
      res["400"] = error_response("Malformed JSON or invalid fields");
      res["413"] = error_response("Body larger than --max-body, or more texts than --max-batch-items");
      res["422"] = error_response("An empty text, or one over --max-text-bytes");
      res["503"] = error_response("The model is not loaded yet, or the queue is full");
      break;
    case Handler::kGenerate:
      op["summary"] = "Generate a continuation (language models)";
      op["requestBody"] = json_body("GenerateRequest");
      res["200"] = json_response("The generated text", "GenerateResponse");
      res["400"] = error_response("Malformed JSON, invalid fields, or a model that does not generate");
      res["413"] = error_response("Body larger than --max-body");
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
  json& paths = doc["paths"];
  paths = json::object();
  for (const Route& r : routes()) {
    std::string method = r.method == "GET" ? "get" : "post";
    paths[std::string(r.path)][method] = operation(r, options.api_keys);
  }
  return doc;
}

}  // namespace bet::server
