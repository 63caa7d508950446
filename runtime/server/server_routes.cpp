// Request dispatch: routing, API keys, rate limits, the synchronous handlers, handing
// prediction jobs to the batching queue and turning finished jobs into responses.
#include <charconv>
#include <string>

#include "runtime/server/server_impl.h"

namespace bet::server {

namespace {

constexpr std::string_view kJson = "application/json";
constexpr std::string_view kMetricsType = "text/plain; version=0.0.4; charset=utf-8";
constexpr std::string_view kHealthBody = R"({"status":"ok"})";
constexpr std::string_view kReadyBody = R"({"status":"ready"})";

std::string_view route_label(size_t route) {
  return route < routes().size() ? routes()[route].path : std::string_view("other");
}

double ms_since(Clock::time_point t0, Clock::time_point t1) {
  return std::chrono::duration<double, std::milli>(t1 - t0).count();
}

// The first item the predictor could not answer. A batch answers as a whole: the
// client gets the status of that item (422, 413 or 400) and a message naming it,
// texts[i], rather than a 200 whose predictions mix answers and errors.
std::optional<ApiError> find_item_error(const InferenceJob& job) {
  if (job.kind == InferenceJob::Kind::kGenerate) return std::nullopt;
  for (size_t i = 0; i < job.results.size(); ++i) {
    if (job.results[i].ok()) continue;
    ApiError e = api_error(*job.results[i].issue);
    if (job.kind == InferenceJob::Kind::kBatch) e.message = "texts[" + std::to_string(i) + "]: " + e.message;
    return e;
  }
  return std::nullopt;
}

}  // namespace

void HttpServer::Impl::setup_metrics() {
  static_assert(std::tuple_size_v<std::remove_cvref_t<decltype(routes())>> + 1 == kRouteSlots,
                "one metrics slot per route plus one for unmatched requests");
  for (size_t r = 0; r < kRouteSlots; ++r)
    latency_[r] = &registry_.histogram("bet_http_request_duration_seconds",
                                       "Time from a complete request to its response, by route.",
                                       prom::latency_buckets(), {{"route", std::string(route_label(r))}});
  open_connections_ = &registry_.gauge("bet_http_open_connections", "Client connections currently open.");
  buffered_bytes_gauge_ = &registry_.gauge(
      "bet_http_buffered_bytes",
      "Heap bytes held by connection buffers: input, output, request bodies and headers.");
  body_bytes_gauge_ = &registry_.gauge(
      "bet_http_buffered_body_bytes",
      "Bytes of request bodies held (arriving or waiting for the model), out of max_buffered_body_bytes.");
  pooled_gauge_ = &registry_.gauge("bet_http_pooled_connections",
                                   "Closed connections' objects kept for reuse (at most max_spare_connections).");
  accepted_ = &registry_.counter("bet_http_connections_accepted_total", "Client connections accepted.");
  model_ready_ = &registry_.gauge("bet_model_ready", "1 when the model is loaded and serving, else 0.");
  reload_ok_ = &registry_.counter("bet_model_reloads_total", "Model reloads (SIGHUP), by result.",
                                  {{"result", "success"}});
  reload_failed_ = &registry_.counter("bet_model_reloads_total", "Model reloads (SIGHUP), by result.",
                                      {{"result", "failure"}});
  queue_metrics_.batch_size = &registry_.histogram(
      "bet_inference_batch_size", "Items per forward pass of the batching queue.",
      prom::power_of_two_buckets(static_cast<double>(std::max<size_t>(cfg_.max_batch, cfg_.max_batch_items))));
  queue_metrics_.batch_seconds = &registry_.histogram(
      "bet_inference_batch_duration_seconds", "Predictor time per forward pass.", prom::latency_buckets());
  queue_metrics_.queue_depth =
      &registry_.gauge("bet_inference_queue_depth", "Items waiting in the batching queue.");
  registry_.gauge("bet_model_info", "The model being served (value 1), labelled with its version.",
                  {{"version", "none"}});
}

void HttpServer::Impl::update_model_info() {
  std::string version = "none";
  std::string name;
  bool ready = false;
  try {
    ready = predictor_.ready();
    if (ready) {
      nlohmann::json info = predictor_.model_info();
      if (info.is_object()) {
        auto v = info.find("version");
        if (v != info.end()) version = v->is_string() ? v->get<std::string>() : dump_json(*v);
        auto n = info.find("name");
        if (n != info.end() && n->is_string()) name = n->get<std::string>();
      }
    }
  } catch (const std::exception& e) {
    log(std::string("model_info failed: ") + e.what());
  }
  model_ready_->set(ready ? 1 : 0);
  prom::Labels labels = {{"version", version}};
  if (!name.empty()) labels.emplace_back("name", name);
  // The label set of an info metric changes with the model ("name" may come or go), so
  // the family is replaced rather than updated. Remove and re-create are two steps: a
  // scrape in between sees no model info, which is harmless.
  registry_.remove_family("bet_model_info");
  registry_.gauge("bet_model_info", "The model being served (value 1), labelled with its version.", labels).set(1);
}

prom::Counter& HttpServer::Impl::request_counter(size_t route, int status) {
  if (status < 100 || status > 599) status = 500;
  prom::Counter*& slot = req_counters_[route][static_cast<size_t>(status)];
  if (!slot)
    slot = &registry_.counter("bet_http_requests_total", "HTTP requests answered, by route and status.",
                              {{"route", std::string(route_label(route))}, {"status", std::to_string(status)}});
  return *slot;
}

void HttpServer::Impl::respond(Connection* c, int status, std::string_view content_type, std::string_view body,
                               std::string_view extra_headers) {
  ResponseHead h;
  h.status = status;
  h.content_type = content_type;
  h.keep_alive = c->keep_alive && !draining_ && !c->close_after_write;
  h.http10 = c->http10;
  h.head_only = c->head;
  h.date = date_.now();
  h.extra_headers = extra_headers;
  write_response(c->out, h, body);
  if (!h.keep_alive) c->close_after_write = true;
  request_counter(c->route, status).inc();
  latency_[std::min(c->route, kRouteSlots - 1)]->observe(
      std::chrono::duration<double>(Clock::now() - c->started).count());
  c->parser.reset();
  c->sent_continue = false;
}

void HttpServer::Impl::respond_error(Connection* c, int status, std::string_view code, std::string_view message,
                                     std::string_view extra_headers) {
  respond(c, status, kJson, error_json(code, message), extra_headers);
}

void HttpServer::Impl::handle_parse_error(Connection* c) {
  // The stream cannot be re-synchronised after a framing error: answer, then close.
  const HttpParser& p = c->parser;
  c->route = routes().size();
  c->head = false;
  c->keep_alive = false;
  c->http10 = p.request().version_minor == 0;
  c->started = Clock::now();
  c->in.clear();
  c->linger = true;  // the client may still be sending what we refused
  int status = p.error_status();
  respond_error(c, status, error_code_for(status), p.error_message());
  c->close_after_write = true;
}

void HttpServer::Impl::handle_request(Connection* c) {
  HttpRequest& req = c->parser.request();
  c->started = Clock::now();
  c->keep_alive = req.keep_alive;
  c->http10 = req.version_minor == 0;
  c->head = false;
  timer_remove(c);

  RouteMatch m = match_route(req.method, req.path());
  c->route = m.index;
  if (m.result == RouteResult::kNotFound) {
    respond_error(c, 404, "not_found", "no route for " + std::string(req.path()));
    return;
  }
  c->head = m.head;
  const Route& route = *m.route;
  if (m.result == RouteResult::kMethodNotAllowed) {
    extra_headers_.assign("Allow: ").append(route.allow).append("\r\n");
    respond_error(c, 405, "method_not_allowed",
                  std::string(req.method) + " is not allowed on " + std::string(route.path) + "; use " +
                      std::string(route.allow),
                  extra_headers_);
    return;
  }

  if (route.needs_key && (keys_.enabled() || limiter_.enabled())) {
    std::optional<size_t> key;
    if (keys_.enabled()) {
      int retry_after = 1;
      if (!auth_failures_.would_allow(c->peer, c->started, &retry_after)) {
        extra_headers_.assign("Retry-After: ").append(std::to_string(retry_after)).append("\r\n");
        respond_error(c, 429, "rate_limited",
                      "too many requests with a wrong or missing API key from this address; retry after the "
                      "Retry-After delay",
                      extra_headers_);
        return;
      }
      const std::string* auth = req.header("authorization");
      std::optional<std::string_view> token = auth ? ApiKeys::bearer_token(*auth) : std::nullopt;
      if (token) key = keys_.find(*token);
      if (!key) {
        auth_failures_.allow(c->peer, c->started, nullptr);  // the failure takes a token
        respond_error(c, 401, "unauthorized",
                      auth ? "wrong API key" : "missing API key: send 'Authorization: Bearer <key>'",
                      "WWW-Authenticate: Bearer\r\n");
        return;
      }
    }
    if (limiter_.enabled()) {
      scratch_.assign(key ? "key:" : "ip:");
      if (key) scratch_.append(std::to_string(*key));
      else scratch_.append(c->peer);
      int retry_after = 1;
      if (!limiter_.allow(scratch_, c->started, &retry_after)) {
        extra_headers_.assign("Retry-After: ").append(std::to_string(retry_after)).append("\r\n");
        respond_error(c, 429, "rate_limited", "over the rate limit; retry after the Retry-After delay",
                      extra_headers_);
        return;
      }
    }
  }

  switch (route.handler) {
    case Handler::kHealth:
      respond(c, 200, kJson, kHealthBody);
      return;
    case Handler::kReady:
      if (predictor_.ready()) respond(c, 200, kJson, kReadyBody);
      else respond_error(c, 503, "not_ready", "the model is not loaded yet", "Retry-After: 1\r\n");
      return;
    case Handler::kOpenApi:
      respond(c, 200, kJson, openapi_body_);
      return;
    case Handler::kMetrics:
      model_ready_->set(predictor_.ready() ? 1 : 0);
      scratch_.clear();
      registry_.write(scratch_);
      respond(c, 200, kMetricsType, scratch_);
      return;
    case Handler::kModel:
      if (!predictor_.ready()) {
        respond_error(c, 503, "not_ready", "the model is not loaded yet", "Retry-After: 1\r\n");
        return;
      }
      try {
        respond(c, 200, kJson, dump_json(predictor_.model_info()));
      } catch (const std::exception& e) {
        respond_error(c, 500, "internal_error", e.what());
      }
      return;
    case Handler::kPredict:
    case Handler::kPredictBatch:
    case Handler::kGenerate:
      break;
  }

  if (!predictor_.ready()) {
    respond_error(c, 503, "not_ready", "the model is not loaded yet", "Retry-After: 1\r\n");
    return;
  }
  if (route.handler == Handler::kGenerate && !predictor_.can_generate()) {
    respond_error(c, 400, "not_a_language_model", "the loaded model does not generate text");
    return;
  }
  // The body is decoded on the queue's intake thread (decode_job): the event loop
  // does no work that grows with a request's size beyond moving its bytes.
  auto job = std::make_unique<InferenceJob>();
  job->kind = route.handler == Handler::kPredict        ? InferenceJob::Kind::kPredict
              : route.handler == Handler::kPredictBatch ? InferenceJob::Kind::kBatch
                                                        : InferenceJob::Kind::kGenerate;
  job->body = std::move(req.body);
  dispatch_job(c, std::move(job));
}

void HttpServer::Impl::decode_job(InferenceJob& job) const {
  ApiError err;
  bool ok = false;
  switch (job.kind) {
    case InferenceJob::Kind::kPredict:
      job.items.emplace_back();
      ok = parse_predict(job.body, api_limits_, &job.items.back(), &err);
      break;
    case InferenceJob::Kind::kBatch:
      ok = parse_batch(job.body, api_limits_, &job.items, &err);
      break;
    case InferenceJob::Kind::kGenerate:
      ok = parse_generate(job.body, api_limits_, &job.generate, &err);
      break;
  }
  if (!ok) job.error = std::move(err);
}

void HttpServer::Impl::dispatch_job(Connection* c, std::unique_ptr<InferenceJob> job) {
  job->owner = c;
  job->owner_generation = c->generation;
  std::unique_ptr<InferenceJob> refused = queue_->submit(std::move(job));
  if (refused) {
    respond_error(c, 503, "overloaded", "the server is stopping", "Retry-After: 1\r\n");
    return;
  }
  c->inflight = true;
  ++inflight_jobs_;
  // The body now lives in the job; the parser may go on to the next request later.
  c->parser.reset();
}

void HttpServer::Impl::finish_job(std::unique_ptr<InferenceJob> job) {
  auto* c = static_cast<Connection*>(job->owner);
  --inflight_jobs_;
  c->inflight = false;
  if (c->closed || c->generation != job->owner_generation) {
    // The client went away while the model worked; its connection waited for this.
    if (c->closed) graveyard_.push_back(c);
    return;
  }
  double latency = ms_since(c->started, Clock::now());
  if (!job->error) job->error = find_item_error(*job);
  if (job->error) {
    const ApiError& e = *job->error;
    if (e.status >= 500 && e.status != 503) log(e.message);
    if (e.retry_after_s > 0)
      extra_headers_.assign("Retry-After: ").append(std::to_string(e.retry_after_s)).append("\r\n");
    else
      extra_headers_.clear();
    respond_error(c, e.status, e.code, e.message, extra_headers_);
  } else {
    nlohmann::json out;
    bool ok = true;
    if (job->kind == InferenceJob::Kind::kPredict) {
      ok = job->results.size() == 1 && job->results[0].answer.is_object();
      if (ok) out = std::move(job->results[0].answer);
    } else if (job->kind == InferenceJob::Kind::kBatch) {
      out = nlohmann::json::object();
      nlohmann::json& preds = out["predictions"] = nlohmann::json::array();
      for (auto& r : job->results) preds.push_back(std::move(r.answer));
    } else {
      ok = job->generated.is_object();
      if (ok) out = std::move(job->generated);
    }
    if (!ok) {
      respond_error(c, 500, "internal_error", "the predictor returned a malformed result");
    } else {
      out["latency_ms"] = latency;
      respond(c, 200, kJson, dump_json(out));
    }
  }
  pump(c);
}

}  // namespace bet::server
