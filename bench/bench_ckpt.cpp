#include "bench/bench_ckpt.h"
#include "bench/timing.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "bench/bench_train_profile.h"
#include "bench/machine_baselines.h"
#include "bench/peer_process.h"
#include "bet_config.h"
#include "platform/threads.h"
#include "runtime/checkpoint/checkpoint.h"
#include "runtime/checkpoint/safetensors.h"
#include "runtime/io/atomic_file.h"
#include "runtime/tokenizer/tokenizer.h"

namespace bet::bench {

namespace fs = std::filesystem;

std::vector<std::pair<int64_t, int64_t>> parse_ckpt_shapes(const std::string& spec) {
  std::vector<std::pair<int64_t, int64_t>> out;
  std::stringstream in(spec);
  for (std::string item; std::getline(in, item, ',');) {
    const auto x = item.find('x');
    int64_t d = 0, l = 0;
    size_t used_d = 0, used_l = 0;
    try {
      if (x != std::string::npos) {
        d = std::stoll(item.substr(0, x), &used_d);
        l = std::stoll(item.substr(x + 1), &used_l);
      }
    } catch (const std::exception&) {
      d = l = 0;
    }
    if (x == std::string::npos || used_d != x || used_l != item.size() - x - 1 || d < 4 || d % 4 || l < 1)
      throw std::invalid_argument("--ckpt-shapes: '" + item +
                                  "' is not DxL (d_model, a multiple of the 4 heads, x layers), e.g. 256x4");
    out.emplace_back(d, l);
  }
  if (out.empty()) throw std::invalid_argument("--ckpt-shapes: no shapes given");
  return out;
}

namespace {

// Clean pages (the file was fsynced) leave the page cache on this hint; no root needed.
void evict_from_cache(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  ::fdatasync(fd);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

model::ModelConfig ckpt_model_config(int64_t d, int64_t layers) {
  model::ModelConfig c;
  c.task = model::Task::Classify;
  c.layer = model::LayerKind::Bet;
  c.d_model = d;
  c.heads = 4;
  c.layers = layers;
  c.max_len = 256;
  c.k_permutations = 3;
  c.vocab_size = 259;  // the byte tokenizer's
  c.num_classes = 2;
  c.validate();
  return c;
}

struct CkptCase {
  std::string model, contents;  // "d256 x 4 layers", "production, init"
  int64_t params = 0;
  runtime::Checkpoint ck;
  std::string stem;  // file name stem in the bench folder
};

struct CkptResult {
  std::vector<double> save, load, encode, decode, raw_write, raw_read;
  std::vector<double> load_read, load_map;  // read_bet_file, LoadMode::Read and ::Map
  uint64_t raw_bytes = 0, file_bytes = 0;
  std::string mismatch;  // first difference of a load from the save, "" when exact
  std::string error;
  std::string peer_input;  // safetensors export for the peer
};

CkptResult bench_case(const CkptCase& c, const CkptBenchOptions& o, const std::string& dir) {
  CkptResult r;
  const std::string path = dir + "/" + c.stem + ".bet", raw_path = dir + "/" + c.stem + ".raw";
  try {
    autograd::NoGradGuard ng;
    const runtime::NamedTensorList tensors = runtime::checkpoint_tensors(c.ck);
    std::string raw;
    for (const auto& [n, t0] : tensors) {
      Tensor t = t0.contiguous();
      raw.append(static_cast<const char*>(t.raw_data()), t.nbytes());
    }
    r.raw_bytes = raw.size();
    const runtime::NamedTensorList want = runtime::checkpoint_tensors(c.ck);
    runtime::Checkpoint loaded;
    for (int rep = 0; rep < o.reps; ++rep) {
      // Each repetition does every operation once, so a change in machine load hits
      // them alike.
      auto t0 = Clock::now();
      std::string bytes = runtime::encode_bet(runtime::checkpoint_header(c.ck), tensors, o.zstd_level);
      r.encode.push_back(seconds_since(t0));
      t0 = Clock::now();
      runtime::Checkpoint decoded = runtime::checkpoint_from_contents(runtime::decode_bet(bytes, path), path);
      r.decode.push_back(seconds_since(t0));
      decoded = {};
      bytes.clear();
      bytes.shrink_to_fit();

      t0 = Clock::now();
      runtime::save_checkpoint(path, c.ck, o.zstd_level);
      r.save.push_back(seconds_since(t0));
      t0 = Clock::now();
      runtime::atomic_write_file(raw_path, raw);
      r.raw_write.push_back(seconds_since(t0));

      if (o.drop_cache) evict_from_cache(path);
      loaded = {};
      t0 = Clock::now();
      loaded = runtime::load_checkpoint(path);
      r.load.push_back(seconds_since(t0));
      if (o.drop_cache) evict_from_cache(raw_path);
      t0 = Clock::now();
      std::string back = runtime::read_file(raw_path);
      r.raw_read.push_back(seconds_since(t0));
      if (back.size() != raw.size()) throw std::runtime_error(raw_path + ": read back " + std::to_string(back.size()) + " bytes");
      back = {};

      // The same file through both paths of read_bet_file (first one, then the other,
      // alternating by repetition so neither always goes first), each verified.
      for (int k = 0; k < 2; ++k) {
        const bool map = (k == 0) == (rep % 2 == 0);
        if (o.drop_cache) evict_from_cache(path);
        t0 = Clock::now();
        runtime::Checkpoint via = runtime::checkpoint_from_contents(
            runtime::read_bet_file(path, {}, map ? runtime::LoadMode::Map : runtime::LoadMode::Read), path);
        (map ? r.load_map : r.load_read).push_back(seconds_since(t0));
        std::string differs = tensor_list_mismatch(c.ck.weights, via.weights);
        if (differs.empty()) differs = tensor_list_mismatch(c.ck.optimizer, via.optimizer);
        if (!differs.empty() && r.mismatch.empty()) r.mismatch = (map ? "mmap load: " : "read() load: ") + differs;
      }
    }
    r.file_bytes = uint64_t(fs::file_size(path));
    if (r.mismatch.empty()) r.mismatch = tensor_list_mismatch(c.ck.weights, loaded.weights);
    if (r.mismatch.empty()) r.mismatch = tensor_list_mismatch(c.ck.optimizer, loaded.optimizer);
    if (r.mismatch.empty() && loaded.kind != c.ck.kind) r.mismatch = "kind " + loaded.kind + ", saved " + c.ck.kind;
    if (o.peer) {
      r.peer_input = dir + "/" + c.stem + ".safetensors";
      runtime::export_safetensors(r.peer_input, want, {{"kind", c.ck.kind}});
    }
  } catch (const std::exception& e) {
    r.error = e.what();
  }
  std::error_code ec;
  fs::remove(path, ec);
  fs::remove(raw_path, ec);
  return r;
}

struct PeerRun {
  bool ok = false;
  std::string error, torch;
  std::map<std::string, nlohmann::json> by_input;
};

PeerRun run_peer(const std::vector<std::string>& inputs, const CkptBenchOptions& o, const std::string& dir,
                 int threads) {
  PeerRun r;
  std::ostringstream args;
  args << "--reps " << o.reps << " --threads " << threads << " --dir " << shell_quote(dir)
       << (o.drop_cache ? " --drop-cache" : "");
  for (const auto& in : inputs) args << " " << shell_quote(in);
  PeerOutput out = run_peer_script("ckpt_peer.py", args.str());
  if (!out.ok) {
    r.error = out.error;
    return r;
  }
  try {
    r.torch = out.result.value("torch", "");
    for (auto& e : out.result.at("results")) r.by_input[e.at("input").get<std::string>()] = e;
    r.ok = true;
  } catch (const std::exception& e) {
    r.error = std::string("unexpected peer output: ") + e.what();
  }
  return r;
}

}  // namespace

int run_ckpt(const BenchOptions& opts, const CkptBenchOptions& c) {
  if (!valid_format(opts.format)) {
    std::cerr << "bench ckpt: unknown format '" << opts.format << "' (md, csv or json)\n";
    return 2;
  }
  std::vector<std::pair<int64_t, int64_t>> shapes;
  try {
    shapes = parse_ckpt_shapes(c.shapes);
  } catch (const std::exception& e) {
    std::cerr << "bench ckpt: " << e.what() << "\n";
    return 2;
  }
  CkptBenchOptions o = c;
  if (opts.quick) {  // the first shape only, fewer repetitions
    shapes.resize(1);
    o.reps = std::min(o.reps, 3);
  }
  if (c.reps < 1 || c.train_steps < 0 || c.zstd_level < 1 || c.zstd_level > 19) {
    std::cerr << "bench ckpt: --ckpt-reps must be >= 1, --ckpt-train-steps >= 0, --zstd-level in 1..19\n";
    return 2;
  }
  if (opts.threads > 0) platform::set_num_threads(opts.threads);
  const int threads = platform::num_threads();
  const std::string load_before = load_average();

  std::string dir = c.dir;
  bool own_dir = false;
  try {
    if (dir.empty()) {
      dir = (fs::temp_directory_path() / ("betctl-bench-ckpt-" + std::to_string(::getpid()))).string();
      own_dir = true;
    }
    runtime::make_dirs(dir);
  } catch (const std::exception& e) {
    std::cerr << "bench ckpt: " << e.what() << "\n";
    return 2;
  }

  const nlohmann::json tokenizer = runtime::make_byte_tokenizer()->to_json();
  std::vector<CkptCase> cases;
  std::vector<CkptResult> results;
  auto run_case = [&](CkptCase cc) {
    results.push_back(bench_case(cc, o, dir));
    cc.ck = {};  // the tensors alias the live model
    cases.push_back(std::move(cc));
  };
  bool failed = false;
  for (auto [d, layers] : shapes) {
    const std::string name = "d" + std::to_string(d) + " x " + std::to_string(layers) + " layers";
    const std::string stem = "d" + std::to_string(d) + "l" + std::to_string(layers);
    try {
      // The model as `betctl train` initialises it (seed 0), and a small fixed batch
      // to take a few AdamW steps on, so moments and weights look trained-on.
      TrainSetup s(ckpt_model_config(d, layers), 8, 64);
      int64_t params = 0;
      for (auto& [n, t] : s.model->named_parameters()) params += t.numel();
      auto make = [&](const std::string& kind, const std::string& contents, const std::string& file) {
        CkptCase cc;
        cc.model = name;
        cc.contents = contents;
        cc.params = params;
        cc.stem = stem + "-" + file;
        const optim::Optimizer* opt = kind == "training" ? &s.trainer->optimizer() : nullptr;
        cc.ck = runtime::make_checkpoint(*s.model, opt, tokenizer, kind);
        cc.ck.training_state = {{"step", c.train_steps}, {"seed", 0}};
        return cc;
      };
      run_case(make("production", "production, weights at init", "prod-init"));
      if (c.train_steps > 0) {
        for (int i = 0; i < c.train_steps; ++i) s.step(i);
        const std::string after = " after " + std::to_string(c.train_steps) + " AdamW steps";
        run_case(make("production", "production, weights" + after, "prod-trained"));
        run_case(make("training", "training, weights + AdamW m, v" + after, "train-trained"));
      } else {
        run_case(make("training", "training, weights + AdamW state at init", "train-init"));
      }
    } catch (const std::exception& e) {
      CkptCase cc;
      cc.model = name;
      cases.push_back(cc);
      CkptResult r;
      r.error = e.what();
      results.push_back(r);
    }
  }

  PeerRun peer;
  if (c.peer) {
    std::vector<std::string> inputs;
    for (auto& r : results)
      if (!r.peer_input.empty()) inputs.push_back(r.peer_input);
    if (!inputs.empty()) peer = run_peer(inputs, o, dir, threads);
    else peer.error = "no checkpoint to compare";
  }

  Table tab;
  tab.title = "bench ckpt";
  tab.add_meta("cpu", cpu_model_name())
      .add_meta("threads", int64_t(threads))
      .add_meta("folder", dir + (c.drop_cache ? " (page cache dropped before each read)"
                                              : " (reads hit the page cache: the file was just written)"))
      .add_meta("model", "bet layer, classify, 4 heads, max_len 256, k 3, byte vocabulary (259), 2 classes; "
                         "weights from the model's own initialisation (seed 0, as betctl train), then a few "
                         "AdamW steps on a random batch (non-zero moments, no exact zeros or ones left in "
                         "biases and norms). Weights trained for long compress differently: take the size "
                         "ratios as indicative")
      .add_meta("MB", "10^6 bytes of raw tensor data (fp32, plus the i64 AdamW step counts in training rows)")
      .add_meta("save", "runtime::save_checkpoint: byte-plane shuffle, zstd level " + std::to_string(c.zstd_level) +
                            " (one thread), xxh3 checksums, temp file + fsync + rename + fsync dir")
      .add_meta("load", "runtime::load_checkpoint: map the file, verify every checksum, decompress, unshuffle; "
                        "then compared bit for bit with the saved tensors (verified)")
      .add_meta("load read() / mmap", "the same file loaded through both paths of read_bet_file in the same "
                                      "repetition: LoadMode::Read (read() the whole file into a zero-filled "
                                      "buffer, then decode: the old path) and LoadMode::Map (decode straight "
                                      "from a read-only mapping); both verified bit for bit. mmap vs read(): "
                                      "read() time / mmap time")
      .add_meta("encode / decode", "the same without the file: encode_bet / decode_bet in memory")
      .add_meta("raw", "the same raw bytes, unencoded: write + fsync + rename + fsync dir, then read (the disk)")
      .add_meta("peer", c.peer ? "bench/peer/ckpt_peer.py: torch.save (same fsync + rename) / torch.load of the "
                                 "same tensors, exported as safetensors; runs after ours"
                               : "not run (--peer)")
      .add_meta("timing", "median of " + std::to_string(o.reps) + " repetitions (each: encode, decode, save, raw "
                          "write, load, raw read, load read() and mmap)")
      .add_meta("load average", load_before + " (start), " + load_average() + " (end)");
  auto num = [](double v) { return std::isfinite(v) ? Value(v) : Value(); };
  for (size_t i = 0; i < cases.size(); ++i) {
    const CkptCase& cc = cases[i];
    const CkptResult& r = results[i];
    Row row;
    row.set("model", cc.model).set("checkpoint", cc.contents);
    if (!r.error.empty()) {
      row.set("status", "error: " + r.error);
      tab.add(row);
      failed = true;
      continue;
    }
    const double mb = double(r.raw_bytes) * 1e-6;
    const double save = median(r.save), load = median(r.load);
    nlohmann::json pj;
    if (peer.ok) {
      auto it = peer.by_input.find(r.peer_input);
      if (it != peer.by_input.end()) pj = it->second;
    }
    const bool peer_ok = pj.is_object() && pj.value("error", std::string()).empty() && pj.contains("save_ms");
    const double psave = peer_ok ? pj["save_ms"].get<double>() * 1e-3 : NAN;
    const double pload = peer_ok ? pj["load_ms"].get<double>() * 1e-3 : NAN;
    const double pbytes = peer_ok ? pj["file_bytes"].get<double>() : NAN;
    std::string status = r.mismatch.empty() ? "pass" : "FAIL: load differs: " + r.mismatch;
    if (!r.mismatch.empty()) failed = true;
    if (pj.is_object() && !pj.value("verified", false)) status += "; peer load differs: " + pj.value("error", std::string());
    std::string peer_text = !c.peer      ? "not run (--peer)"
                            : peer_ok    ? "torch " + peer.torch + " save/load"
                            : !peer.ok   ? "unavailable: " + peer.error
                                         : "error: " + pj.value("error", std::string("no result"));
    row.set("params", cc.params)
        .set("MB", mb)
        .set("file MB", double(r.file_bytes) * 1e-6)
        .set("size vs raw", double(r.file_bytes) / double(r.raw_bytes))
        .set("save MB/s", mb / save)
        .set("load MB/s", mb / load)
        .set("load read() MB/s", mb / median(r.load_read))
        .set("load mmap MB/s", mb / median(r.load_map))
        .set("mmap vs read()", median(r.load_read) / median(r.load_map))
        .set("encode MB/s", mb / median(r.encode))
        .set("decode MB/s", mb / median(r.decode))
        .set("raw write MB/s", mb / median(r.raw_write))
        .set("raw read MB/s", mb / median(r.raw_read))
        .set("peer", peer_text)
        .set("peer save MB/s", num(mb / psave))
        .set("peer load MB/s", num(mb / pload))
        .set("save vs peer", num(psave / save))
        .set("load vs peer", num(pload / load))
        .set("size vs torch file", num(double(r.file_bytes) / pbytes))
        .set("verified", r.mismatch.empty())
        .set("status", status);
    tab.add(row);
  }

  for (auto& r : results) {
    std::error_code ec;
    if (!r.peer_input.empty()) fs::remove(r.peer_input, ec);
  }
  if (own_dir) {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  int rc = emit({tab}, opts);
  return rc ? rc : (failed ? 1 : 0);
}

}  // namespace bet::bench
