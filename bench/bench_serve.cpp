#include "bench/bench_serve.h"
#include "bench/peer_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <thread>
#include <tuple>

#include <nlohmann/json.hpp>

#include "bench/bench_infer.h"
#include "bench/http_client.h"
#include "bench/load_generator.h"
#include "bench/machine_baselines.h"
#include "bet_config.h"
#include "platform/allocator.h"
#include "platform/threads.h"
#include "runtime/server/server.h"

extern char** environ;

namespace bet::bench {

using nlohmann::json;

namespace {

constexpr double kHealthTarget = 20000;   // req/s on /health
constexpr double kP99TargetMs = 50;       // /v1/predict, 32 tokens, 64 connections
constexpr double kPeerRatioTarget = 5;    // /v1/predict throughput, x the FastAPI peer
constexpr int kTargetConnections = 64;
constexpr int kTextsPerLength = 64;       // distinct texts each load cycles through

const char* const kHealth = "GET /health";
const char* const kPredict = "POST /v1/predict";

struct Cell {
  std::string server;
  bool ours = false, batching = false;
  std::string route;
  int64_t tokens = 0;  // predict only
  int connections = 1;
  LoadResult res;
};

struct Load {
  std::string route;
  int64_t tokens = 0;
  std::vector<std::string> requests;
};

std::vector<Load> make_loads(const ServeBenchOptions& o) {
  std::vector<Load> loads;
  loads.push_back({kHealth, 0, {http_request("GET", "/health")}});
  for (int64_t n : o.tokens) {
    Load l{kPredict, n, {}};
    for (int i = 0; i < kTextsPerLength; ++i)
      l.requests.push_back(http_request("POST", "/v1/predict", json{{"text", bench_text(n, uint64_t(i))}}.dump()));
    loads.push_back(std::move(l));
  }
  return loads;
}

void run_cells(uint16_t port, const std::string& name, bool ours, bool batching, const std::vector<Load>& loads,
               const ServeBenchOptions& o, std::vector<Cell>& out) {
  for (const Load& l : loads)
    for (int conns : o.connections) {
      LoadOptions lo;
      lo.port = port;
      lo.connections = conns;
      lo.requests = l.requests;
      lo.warmup_s = o.warmup;
      lo.duration_s = o.seconds;
      lo.max_requests = o.max_requests;
      // A slow server (the peer at 64 connections) gets time for about one answer per
      // connection, so its rate is not read off a handful of responses.
      lo.min_requests = conns;
      lo.max_duration_s = o.seconds + 20;
      lo.request_timeout_s = 30;
      Cell c;
      c.server = name;
      c.ours = ours;
      c.batching = batching;
      c.route = l.route;
      c.tokens = l.tokens;
      c.connections = conns;
      c.res = run_load(lo);
      out.push_back(std::move(c));
    }
}

// The probabilities of one /v1/predict answer, by label ("" on failure, with *err).
std::map<std::string, double> probe(uint16_t port, const std::string& text, std::string* err) {
  std::map<std::string, double> p;
  HttpClient cl("127.0.0.1", port, std::chrono::seconds(30));
  auto r = cl.request("POST", "/v1/predict", json{{"text", text}}.dump(), "Content-Type: application/json\r\n");
  try {
    if (!r || r->status != 200) throw std::runtime_error(r ? "status " + std::to_string(r->status) : "no response");
    const json body = json::parse(r->body);  // kept: items() does not extend its lifetime
    for (auto& [k, v] : body.at("probabilities").items()) p[k] = v.get<double>();
    if (p.empty()) throw std::runtime_error("no probabilities in the answer");
  } catch (const std::exception& e) {
    *err = e.what();
    p.clear();
  }
  return p;
}

// The in-process server: the event loop on a thread of its own, stopped and joined on
// every way out.
class OurServer {
 public:
  OurServer(inference::ModelPredictor& pred, size_t max_batch, int threads, bool reserve = true,
            std::chrono::microseconds max_wait = std::chrono::microseconds(2000)) {
    server::ServerConfig cfg;
    cfg.host = "127.0.0.1";
    cfg.port = 0;
    cfg.max_batch = max_batch;
    cfg.max_wait = max_wait;
    cfg.reserve_worker_memory = reserve;
    cfg.version = BET_VERSION;
    cfg.log = [](std::string_view) {};
    srv_ = std::make_unique<server::HttpServer>(cfg, pred);
    srv_->bind();
    // run() builds the inference queue, whose worker takes this thread's pool size.
    thread_ = std::thread([this, threads] {
      platform::set_num_threads(threads);
      srv_->run();
    });
  }
  ~OurServer() {
    srv_->stop();
    thread_.join();
  }
  uint16_t port() const { return srv_->port(); }

 private:
  std::unique_ptr<server::HttpServer> srv_;
  std::thread thread_;
};

// bench/peer/serve_peer.py as a child process: started, asked for its port, and ended
// with SIGTERM (SIGKILL if it lingers) when this object goes.
class PeerServer {
 public:
  bool start(const std::vector<std::string>& args, const std::string& log_path, std::string* error) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) return *error = "pipe failed", false;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_addopen(&fa, 2, log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    const int rc = posix_spawnp(&pid_, args[0].c_str(), &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    ::close(fds[1]);
    if (rc != 0) {
      ::close(fds[0]);
      pid_ = -1;
      return *error = "could not start " + args[0], false;
    }
    // The first line: {"port": P, ...} or {"error": ...}. Loading torch takes seconds.
    std::string line;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(180);
    while (line.find('\n') == std::string::npos && std::chrono::steady_clock::now() < deadline) {
      pollfd pfd{fds[0], POLLIN, 0};
      if (poll(&pfd, 1, 200) <= 0) continue;
      char buf[4096];
      ssize_t n = ::read(fds[0], buf, sizeof buf);
      if (n <= 0) break;
      line.append(buf, size_t(n));
    }
    ::close(fds[0]);
    try {
      info_ = json::parse(line.substr(0, line.find('\n')));
      if (info_.contains("port")) return true;
      *error = info_.value("error", "no port");
    } catch (const std::exception&) {
      std::ifstream log(log_path);
      std::string l, last;
      while (std::getline(log, l))
        if (!l.empty()) last = l;
      *error = last.empty() ? "the peer printed no port" : last;
    }
    if (error->size() > 160) *error = error->substr(0, 157) + "...";
    return false;
  }
  ~PeerServer() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    for (int i = 0; i < 100; ++i) {
      if (waitpid(pid_, nullptr, WNOHANG) == pid_) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ::kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  uint16_t port() const { return uint16_t(info_.value("port", 0)); }
  const json& info() const { return info_; }

 private:
  pid_t pid_ = -1;
  json info_ = json::object();
};

// One sequential client sending /v1/predict for each of `lengths` in turn, with the
// worker's arena on or off: what a request costs in time, page faults and system
// allocations. Each length's oneDNN primitives are built by a pass before both runs and
// the caching allocator is emptied before each, so the two differ by the arena alone:
// round 1 meets every size class for the first time, round 2 is the steady state.
struct MemoryCell {
  bool arena = false;
  int round = 0;
  int64_t requests = 0;
  double ms = NAN, faults = NAN, system_allocs = NAN;  // per request
  double first_faults = NAN, first_system_allocs = NAN;  // per request, in the first repeat
  uint64_t arena_bytes = 0;
  std::string error;
};

std::vector<MemoryCell> memory_cells(inference::ModelPredictor& pred, int threads, const std::vector<int64_t>& lengths) {
  using clock = std::chrono::steady_clock;
  auto minflt = [] {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return double(ru.ru_minflt);
  };
  auto body = [](int64_t n, uint64_t salt) { return json{{"text", bench_text(n, salt)}}.dump(); };
  constexpr auto kNoWait = std::chrono::microseconds(0);  // a batch of one is sent at once
  constexpr int kRepeats = 3;  // off, on, off, on, ...: each cell keeps its fastest repeat
  std::vector<MemoryCell> out(4);
  {
    OurServer s(pred, 32, threads, false, kNoWait);
    HttpClient c("127.0.0.1", s.port(), std::chrono::seconds(60));
    for (int64_t n : lengths) c.request("POST", "/v1/predict", body(n, 99));
  }
  for (int rep = 0; rep < kRepeats; ++rep)
    for (bool arena : {false, true}) {
      CachingAllocator::host().empty_cache();
      OurServer s(pred, 32, threads, arena, kNoWait);
      HttpClient c("127.0.0.1", s.port(), std::chrono::seconds(60));
      // The first request waits for the worker's reservation; not measured.
      c.request("POST", "/v1/predict", body(lengths.back(), 98));
      for (int round = 1; round <= 2; ++round) {
        MemoryCell m;
        m.arena = arena;
        m.round = round;
        const double f0 = minflt();
        const uint64_t s0 = CachingAllocator::host().stats().system_allocs;
        const auto t0 = clock::now();
        for (size_t i = 0; i < lengths.size() && m.error.empty(); ++i) {
          // A fixed shuffle of the lengths, another per round.
          const int64_t n = lengths[(i * 17 + size_t(round) * 5) % lengths.size()];
          auto r = c.request("POST", "/v1/predict", body(n, uint64_t(round * 1000) + i));
          if (!r || r->status != 200) m.error = r ? "status " + std::to_string(r->status) : "no response";
          ++m.requests;
        }
        const double secs = std::chrono::duration<double>(clock::now() - t0).count();
        m.ms = 1e3 * secs / double(m.requests);
        m.faults = (minflt() - f0) / double(m.requests);
        m.system_allocs = double(CachingAllocator::host().stats().system_allocs - s0) / double(m.requests);
        if (const inference::InferenceArena* a = pred.worker_arena().arena())
          if (arena && a->arena()) m.arena_bytes = a->arena()->capacity();
        MemoryCell& cell = out[size_t(arena) * 2 + size_t(round - 1)];
        if (rep == 0) {
          m.first_faults = m.faults;
          m.first_system_allocs = m.system_allocs;
          cell = m;
        } else if (!m.error.empty() || m.ms < cell.ms) {
          m.requests += cell.requests;
          m.first_faults = cell.first_faults;
          m.first_system_allocs = cell.first_system_allocs;
          cell = m;
        } else {
          cell.requests += m.requests;
        }
      }
    }
  return out;
}

double max_abs_diff(const std::map<std::string, double>& a, const std::map<std::string, double>& b) {
  if (a.empty() || a.size() != b.size()) return NAN;
  double d = 0;
  for (const auto& [k, v] : a) {
    auto it = b.find(k);
    if (it == b.end()) return NAN;
    d = std::max(d, std::abs(v - it->second));
  }
  return d;
}

}  // namespace

int run_serve(const BenchOptions& opts, const ServeBenchOptions& o) {
  if (!valid_format(opts.format)) {
    std::cerr << "bench serve: unknown format '" << opts.format << "' (md, csv or json)\n";
    return 2;
  }
  if (o.connections.empty() || !(o.seconds > 0) || !(o.warmup >= 0) || o.max_requests < 1) {
    std::cerr << "bench serve: --connections needs values; --seconds and --max-requests must be positive\n";
    return 2;
  }
  for (int c : o.connections)
    if (c < 1 || c > 4096) return std::cerr << "bench serve: --connections must be in 1..4096\n", 2;
  for (int64_t n : o.tokens)
    if (n < 1) return std::cerr << "bench serve: --tokens must be >= 1\n", 2;
  if (opts.threads > 0) platform::set_num_threads(opts.threads);
  const int threads = platform::num_threads();
  const std::string load_before = load_average();

  BenchModel bm;
  try {
    bm = make_bench_model(o.model, o.seed);
  } catch (const std::exception& e) {
    std::cerr << "bench serve: " << e.what() << "\n";
    return 1;
  }
  inference::ModelPredictor pred(bm.loaded);
  const std::vector<Load> loads = make_loads(o);
  const std::string probe_text = bench_text(o.tokens.empty() ? 32 : o.tokens.front(), 0);

  std::vector<Cell> cells;
  std::string error, peer_status = "not run (--peer)", probe_error;
  std::map<std::string, double> ours_probe, peer_probe;
  try {
    for (size_t max_batch : {size_t(32), size_t(1)}) {
      OurServer s(pred, max_batch, threads);
      if (ours_probe.empty() && !o.tokens.empty()) ours_probe = probe(s.port(), probe_text, &probe_error);
      run_cells(s.port(), max_batch > 1 ? "betctl, batching (--max-batch 32)" : "betctl, no batching (--max-batch 1)",
                true, max_batch > 1, loads, o, cells);
    }
  } catch (const std::exception& e) {
    error = e.what();
  }
  // Memory per request, the worker's arena off and on: lengths spread up to the longest
  // --tokens (48 of them, so each length's oneDNN primitives stay in their cache).
  std::vector<MemoryCell> memory;
  if (error.empty() && !o.tokens.empty()) {
    const int64_t longest = std::min<int64_t>(*std::max_element(o.tokens.begin(), o.tokens.end()),
                                              bm.loaded->model->config().max_len);
    std::vector<int64_t> lengths;
    for (int64_t i = 0; i < 48; ++i) {
      const int64_t n = 1 + i * (longest - 1) / 47;
      if (lengths.empty() || n != lengths.back()) lengths.push_back(n);
    }
    try {
      memory = memory_cells(pred, threads, lengths);
    } catch (const std::exception& e) {
      error = std::string("memory cells: ") + e.what();
    }
  }
  if (o.peer && error.empty()) {
    std::string dir;
    try {
      dir = make_temp_dir();
      export_for_peer(bm, dir + "/model.safetensors");
      std::ofstream(dir + "/relabellings.json") << relabellings_json(*bm.loaded->model, o.tokens).dump();
      PeerServer peer;
      std::string why;
      if (peer.start({peer_python(), std::string(BET_SOURCE_DIR) + "/bench/peer/serve_peer.py", "--weights",
                      dir + "/model.safetensors", "--relabellings", dir + "/relabellings.json", "--threads",
                      std::to_string(threads)},
                     dir + "/peer.log", &why)) {
        const json& i = peer.info();
        peer_status = "bench/peer/serve_peer.py: FastAPI " + i.value("fastapi", "?") + " + uvicorn " +
                      i.value("uvicorn", "?") + ", PyTorch " + i.value("torch", "?") + " eager, " +
                      std::to_string(i.value("threads", 0)) + " threads, one forward per request";
        if (!o.tokens.empty()) peer_probe = probe(peer.port(), probe_text, &probe_error);
        run_cells(peer.port(), "fastapi peer", false, false, loads, o, cells);
      } else {
        peer_status = "unavailable: " + why;
      }
    } catch (const std::exception& e) {
      peer_status = std::string("unavailable: ") + e.what();
    }
    remove_tree(dir);
  }

  // Peer rows by (route, tokens, connections), for the ratios.
  std::map<std::tuple<std::string, int64_t, int>, const Cell*> peer_cells;
  for (const Cell& c : cells)
    if (!c.ours) peer_cells[{c.route, c.tokens, c.connections}] = &c;

  auto num = [](double v) { return std::isfinite(v) ? Value(v) : Value(); };
  Table t;
  t.title = "bench serve";
  const double agree = max_abs_diff(ours_probe, peer_probe);

  t.add_meta("cpu", cpu_model_name())
      .add_meta("threads", int64_t(threads))
      .add_meta("model", bm.description)
      .add_meta("server", "HttpServer + ModelPredictor (what `betctl serve` runs) in this process, 127.0.0.1, "
                          "ephemeral port; --max-wait-us 2000")
      .add_meta("load", "closed loop, one epoll thread, keep-alive connections; each cell " +
                            format_value(Value(o.warmup)) + " s warm-up, then up to " + format_value(Value(o.seconds)) +
                            " s (longer, up to 20 s more, until one response per connection) or " +
                            std::to_string(o.max_requests) + " responses; predict bodies {\"text\"} of " +
                            std::to_string(kTextsPerLength) + " distinct texts per length (bytes = tokens)")
      .add_meta("latency", "first request byte written to last response byte read; p50/p99 nearest rank")
      .add_meta("peer", peer_status)
      .add_meta("answers agree (max |dp|, one text)", num(agree))
      .add_meta("targets", "/health >= 20000 req/s and /v1/predict (batching) >= 5x the peer at 64 connections; "
                           "p99 < 50 ms for 32-token /v1/predict at 64 connections (batching)")
      .add_meta("load average", load_before + " (start), " + load_average() + " (end)");
  if (!error.empty()) t.add_meta("error", error);
  if (!probe_error.empty()) t.add_meta("probe error", probe_error);

  bool ours_failed = !error.empty();
  for (const Cell& c : cells) {
    const LoadResult& r = c.res;
    const Cell* pc = nullptr;
    if (c.ours) {
      auto it = peer_cells.find({c.route, c.tokens, c.connections});
      if (it != peer_cells.end()) pc = it->second;
    }
    const double ratio = pc && pc->res.requests_per_s > 0 ? r.requests_per_s / pc->res.requests_per_s : NAN;
    std::vector<std::string> targets, shorts;
    if (c.ours && c.connections == kTargetConnections) {
      if (c.route == kHealth) {
        targets.push_back(">= 20000 req/s");
        if (!(r.requests_per_s >= kHealthTarget)) shorts.push_back("req/s");
      } else if (c.batching) {
        if (c.tokens == 32) {
          targets.push_back("p99 < 50 ms");
          if (!(r.p99_ms < kP99TargetMs)) shorts.push_back("p99");
        }
        targets.push_back(">= 5x peer");
        if (pc && !(ratio >= kPeerRatioTarget)) shorts.push_back("x peer");
      }
    }
    if (r.errors() > 0) shorts.push_back("errors");
    if (c.ours && r.ok == 0) ours_failed = true;
    std::string status = shorts.empty() ? (targets.empty() ? "-" : "pass") : "short: ";
    for (size_t i = 0; i < shorts.size(); ++i) status += (i ? ", " : "") + shorts[i];
    std::string target;
    for (size_t i = 0; i < targets.size(); ++i) target += (i ? "; " : "") + targets[i];

    Row row;
    row.set("server", c.server)
        .set("route", c.route)
        .set("tokens", c.tokens > 0 ? Value(c.tokens) : Value())
        .set("connections", int64_t(c.connections))
        .set("responses", r.responses)
        .set("s", r.seconds)
        .set("req/s", r.requests_per_s)
        .set("p50 ms", num(r.p50_ms))
        .set("p99 ms", num(r.p99_ms))
        .set("max ms", num(r.max_ms))
        .set("errors", r.errors())
        .set("x peer", num(ratio))
        .set("target", target.empty() ? "-" : target)
        .set("status", status)
        .set("first error", r.first_error);
    t.add(std::move(row));
  }
  Table mt;
  mt.title = "bench serve: memory per request";
  mt.add_meta("load", "one keep-alive connection, /v1/predict, --max-batch 32 --max-wait-us 0; 48 text lengths "
                      "up to the longest --tokens, shuffled, each once per round; every length's oneDNN primitives "
                      "built before both runs, the caching allocator emptied before each; 3 repeats, arena off and "
                      "on alternating, each row the fastest repeat (requests: all of them), and the first repeat's counts (a fresh heap)")
      .add_meta("arena", "the inference worker's arena (ServerConfig::reserve_worker_memory), reserved before the "
                         "first request; round 1 meets each size class for the first time, round 2 is steady state");
  for (const MemoryCell& m : memory) {
    Row row;
    row.set("arena", m.arena ? "on" : "off")
        .set("round", int64_t(m.round))
        .set("requests", m.requests)
        .set("ms/request", num(m.ms))
        .set("page faults/request", num(m.faults))
        .set("system allocs/request", num(m.system_allocs))
        .set("first repeat: page faults/request", num(m.first_faults))
        .set("first repeat: system allocs/request", num(m.first_system_allocs))
        .set("arena MiB", m.arena ? Value(double(m.arena_bytes) / double(1 << 20)) : Value())
        .set("error", m.error);
    if (!m.error.empty()) ours_failed = true;
    mt.add(std::move(row));
  }
  const int rc = emit(memory.empty() ? std::vector<Table>{t} : std::vector<Table>{t, mt}, opts);
  return rc ? rc : (ours_failed ? 1 : 0);
}

}  // namespace bet::bench
