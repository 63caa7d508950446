#include "runtime/server/batch_queue.h"

#include <exception>

#include "platform/threads.h"

namespace bet::server {

BatchQueue::BatchQueue(inference::Predictor& predictor, BatchQueueOptions options, Completion on_done,
                       BatchQueueMetrics metrics)
    : predictor_(predictor), options_(std::move(options)), on_done_(std::move(on_done)), metrics_(metrics) {
  if (options_.max_batch == 0) options_.max_batch = 1;
  // OpenMP gives a new thread the process's default pool size, not the one --threads
  // set on the thread building the queue, so the worker takes that one explicitly.
  const int threads = platform::num_threads();
  worker_ = std::thread([this, threads] {
    platform::set_num_threads(threads);
    if (options_.prepare_worker) {
      try {
        predictor_.prepare_worker(options_.max_batch);
      } catch (...) {
        // Serving without the reservation is still serving.
      }
    }
    run();
  });
  if (options_.decode) intake_thread_ = std::thread([this] { run_intake(); });
}

BatchQueue::~BatchQueue() { stop(); }

std::unique_ptr<InferenceJob> BatchQueue::submit(std::unique_ptr<InferenceJob> job) {
  if (!options_.decode) return enqueue(std::move(job));
  {
    std::lock_guard lock(mu_);
    if (intake_stopping_) return job;
    intake_.push_back(std::move(job));
  }
  intake_cv_.notify_one();
  return nullptr;
}

std::unique_ptr<InferenceJob> BatchQueue::enqueue(std::unique_ptr<InferenceJob> job) {
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
    intake_stopping_ = true;
  }
  intake_cv_.notify_all();
  // The intake thread queues what it holds before the worker is told to finish.
  if (intake_thread_.joinable() && intake_thread_.get_id() != std::this_thread::get_id()) intake_thread_.join();
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

void BatchQueue::run_intake() {
  while (true) {
    std::unique_ptr<InferenceJob> job;
    {
      std::unique_lock lock(mu_);
      intake_cv_.wait(lock, [&] { return intake_stopping_ || !intake_.empty(); });
      if (intake_.empty()) return;  // stopping, and everything submitted is decoded
      job = std::move(intake_.front());
      intake_.pop_front();
    }
    try {
      options_.decode(*job);
    } catch (const std::bad_alloc&) {
      job->error = ApiError{503, "overloaded", "out of memory decoding the request", 1};
    } catch (const std::exception& e) {
      job->error = ApiError{500, "internal_error", std::string("decoding the request failed: ") + e.what()};
    }
    job->body.clear();
    job->body.shrink_to_fit();
    if (!job->error) {
      job = enqueue(std::move(job));
      if (job) job->error = ApiError{503, "overloaded", "the inference queue is full", 1};
    }
    if (job) on_done_(std::move(job));
  }
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
      } catch (const inference::InputError& e) {
        job.error = api_error(e.issue());
      } catch (const std::exception& e) {
        job.error = ApiError{500, "internal_error", std::string("generation failed: ") + e.what()};
      } catch (...) {
        job.error = ApiError{500, "internal_error", "generation failed"};
      }
    } else {
      run_predict(taken);
    }
    for (auto& job : taken) on_done_(std::move(job));
  }
}

void BatchQueue::run_predict(std::vector<std::unique_ptr<InferenceJob>>& jobs) {
  std::vector<inference::PredictRequest> all;
  for (auto& job : jobs)
    for (auto& item : job->items) all.push_back(std::move(item));

  std::vector<inference::PredictOutcome> results;
  results.reserve(all.size());
  std::string error;
  // Normally all.size() <= max_batch; only a single oversized batch job is split.
  std::vector<inference::PredictRequest> slice;
  for (size_t off = 0; off < all.size() && error.empty(); off += options_.max_batch) {
    size_t n = std::min(options_.max_batch, all.size() - off);
    const std::vector<inference::PredictRequest>* batch = &all;
    if (n != all.size()) {
      slice.clear();
      for (size_t i = 0; i < n; ++i) slice.push_back(std::move(all[off + i]));
      batch = &slice;
    }
    auto t0 = std::chrono::steady_clock::now();
    try {
      std::vector<inference::PredictOutcome> out = predictor_.predict_batch(*batch);
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
      job->error = ApiError{500, "internal_error", "inference failed: " + error};
    } else {
      job->results.assign(std::make_move_iterator(results.begin() + static_cast<std::ptrdiff_t>(at)),
                          std::make_move_iterator(results.begin() + static_cast<std::ptrdiff_t>(at + n)));
    }
    at += n;
  }
}

}  // namespace bet::server
