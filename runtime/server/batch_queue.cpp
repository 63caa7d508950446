#include "runtime/server/batch_queue.h"

#include <exception>

#include "kernels/cpu/threads.h"
#include "runtime/server/api.h"

namespace bet::server {

BatchQueue::BatchQueue(Predictor& predictor, BatchQueueOptions options, Completion on_done,
                       BatchQueueMetrics metrics)
    : predictor_(predictor), options_(options), on_done_(std::move(on_done)), metrics_(metrics) {
  if (options_.max_batch == 0) options_.max_batch = 1;
  // OpenMP gives a new thread the process's default pool size, not the one --threads
  // set on the thread building the queue, so the worker takes that one explicitly.
  const int threads = kernels::cpu::num_threads();
  worker_ = std::thread([this, threads] {
    kernels::cpu::set_num_threads(threads);
    run();
  });
}

BatchQueue::~BatchQueue() { stop(); }

std::unique_ptr<InferenceJob> BatchQueue::submit(std::unique_ptr<InferenceJob> job) {
  size_t w = weight(*job);
  {
    std::lock_guard lock(mu_);
    if (stopping_ || (queued_items_ > 0 && queued_items_ + w > options_.max_queue_items)) return job;
    job->enqueued = std::chrono::steady_clock::now();
    queue_.push_back(std::move(job));
    queued_items_ += w;
    if (metrics_.queue_depth) metrics_.queue_depth->set(static_cast<double>(queued_items_));
  }
  cv_.notify_one();
  return nullptr;
}

void BatchQueue::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable() && worker_.get_id() != std::this_thread::get_id()) worker_.join();
}

size_t BatchQueue::depth() const {
  std::lock_guard lock(mu_);
  return queued_items_;
}

void BatchQueue::run() {
  using Kind = InferenceJob::Kind;
  std::vector<std::unique_ptr<InferenceJob>> taken;
  while (true) {
    taken.clear();
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and everything queued has run
      if (queue_.front()->kind != Kind::kGenerate) {
        // Give requests arriving together the chance to share one forward pass.
        auto deadline = queue_.front()->enqueued + options_.max_wait;
        cv_.wait_until(lock, deadline, [&] { return stopping_ || queued_items_ >= options_.max_batch; });
      }
      size_t items = 0;
      if (queue_.front()->kind == Kind::kGenerate) {
        items = 1;
        taken.push_back(std::move(queue_.front()));
        queue_.pop_front();
      } else {
        while (!queue_.empty() && queue_.front()->kind != Kind::kGenerate &&
               (taken.empty() || items + queue_.front()->items.size() <= options_.max_batch)) {
          items += queue_.front()->items.size();
          taken.push_back(std::move(queue_.front()));
          queue_.pop_front();
        }
      }
      queued_items_ -= items;
      if (metrics_.queue_depth) metrics_.queue_depth->set(static_cast<double>(queued_items_));
    }

    if (taken.front()->kind == Kind::kGenerate) {
      InferenceJob& job = *taken.front();
      try {
        job.generated = predictor_.generate(job.generate);
      } catch (const RequestError& e) {
        job.error = e.what();
        job.error_status = e.status();
        job.error_code = e.code();
      } catch (const std::exception& e) {
        job.error = e.what();
      } catch (...) {
        job.error = "generation failed";
      }
    } else {
      run_predict(taken);
    }
    for (auto& job : taken) on_done_(std::move(job));
  }
}

void BatchQueue::run_predict(std::vector<std::unique_ptr<InferenceJob>>& jobs) {
  std::vector<PredictRequest> all;
  for (auto& job : jobs)
    for (auto& item : job->items) all.push_back(std::move(item));

  std::vector<nlohmann::json> results;
  results.reserve(all.size());
  std::string error;
  // Normally all.size() <= max_batch; only a single oversized batch job is split.
  std::vector<PredictRequest> slice;
  for (size_t off = 0; off < all.size() && error.empty(); off += options_.max_batch) {
    size_t n = std::min(options_.max_batch, all.size() - off);
    const std::vector<PredictRequest>* batch = &all;
    if (n != all.size()) {
      slice.clear();
      for (size_t i = 0; i < n; ++i) slice.push_back(std::move(all[off + i]));
      batch = &slice;
    }
    auto t0 = std::chrono::steady_clock::now();
    try {
      std::vector<nlohmann::json> out = predictor_.predict_batch(*batch);
      if (out.size() != n) {
        error = "predictor returned " + std::to_string(out.size()) + " results for " + std::to_string(n) + " inputs";
      } else {
        for (auto& r : out) results.push_back(std::move(r));
      }
    } catch (const std::exception& e) {
      error = e.what();
    } catch (...) {
      error = "prediction failed";
    }
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (metrics_.batch_size) metrics_.batch_size->observe(static_cast<double>(n));
    if (metrics_.batch_seconds) metrics_.batch_seconds->observe(secs);
  }

  size_t at = 0;
  for (auto& job : jobs) {
    size_t n = job->items.size();
    if (!error.empty()) {
      job->error = error;
    } else {
      job->results.assign(std::make_move_iterator(results.begin() + static_cast<std::ptrdiff_t>(at)),
                          std::make_move_iterator(results.begin() + static_cast<std::ptrdiff_t>(at + n)));
    }
    at += n;
  }
}

}  // namespace bet::server
