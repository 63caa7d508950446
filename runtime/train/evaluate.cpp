#include "runtime/train/evaluate.h"

#include <algorithm>

namespace bet::runtime {

model::SeqContext batch_context(const Batch& b, const model::BetModel& m) {
  const Device dev = m.device();
  model::SeqContext ctx = model::SeqContext::from_lengths(b.lengths, b.ids.size(1), m.config().causal(), m.dtype(), dev);
  ctx.sequence_index = Tensor::from_vector<int64_t>(b.indices, {int64_t(b.indices.size())}).to(dev);
  return ctx;
}

std::map<std::string, double> validation_metrics(const EvalResult& r, model::Task task, bool synthetic) {
  std::map<std::string, double> m{{"val/loss", r.loss}, {"val/order_dispersion", r.order_dispersion}};
  if (task == model::Task::Classify) m["val/accuracy"] = r.accuracy;
  if (task == model::Task::LM) {
    m["val/perplexity"] = r.perplexity();
    m["val/bits_per_token"] = r.bits_per_token();
  }
  if (synthetic) m["val/excess_over_bayes"] = r.excess_over_bayes();
  if (std::isfinite(r.posterior_mean)) {
    m["val/posterior_mean"] = r.posterior_mean;
    m["val/posterior_variance"] = r.posterior_variance;
  }
  return m;
}

bool higher_is_better(const std::string& metric) {
  return metric.find("accuracy") != std::string::npos || metric.find("f1") != std::string::npos;
}

std::string validation_metric_key(const std::string& user_name) {
  return user_name.rfind("val/", 0) == 0 ? user_name : "val/" + user_name;
}

EvalResult evaluate(const model::BetModel& m, const std::vector<EncodedSequence>& data, int64_t batch_size,
                    const SyntheticSpec* spec) {
  autograd::NoGradGuard no_grad;
  const auto& cfg = m.config();
  EvalResult r;
  double loss_sum = 0, disp_sum = 0, pm_sum = 0, pv_sum = 0, bayes_sum = 0;
  int64_t correct = 0, seqs = 0;
  std::vector<double> pos_model, pos_bayes, pos_count;
  for (size_t at = 0; at < data.size(); at += size_t(batch_size)) {
    std::vector<int64_t> idx;
    for (size_t i = at; i < std::min(data.size(), at + size_t(batch_size)); ++i) idx.push_back(int64_t(i));
    Batch b = cfg.task == model::Task::Classify ? make_classify_batch(data, idx, cfg.max_len)
                                                : make_lm_batch(data, idx, cfg.max_len);
    model::SeqContext ctx = batch_context(b, m);
    model::ForwardOutput out = m.forward(b.ids.to(m.device()), ctx);
    const int64_t B = b.ids.size(0), S = b.ids.size(1);
    seqs += B;
    auto disp = out.attention_dispersion.to_vector<double>();
    for (double d : disp) disp_sum += d;
    if (!out.layers.empty() && out.layers.back().posterior_mean.defined()) {
      auto pm = model::at_last_valid(out.layers.back().posterior_mean, ctx).to_vector<double>();
      auto pv = model::at_last_valid(out.layers.back().posterior_variance, ctx).to_vector<double>();
      for (int64_t i = 0; i < B; ++i) {
        pm_sum += pm[size_t(i)];
        pv_sum += pv[size_t(i)];
      }
    }
    if (cfg.task == model::Task::Classify) {
      Tensor lsm = log_softmax(out.logits, 1);
      auto lp = lsm.to_vector<double>();
      auto lg = out.logits.to_vector<double>();
      auto labels = b.labels.to_vector<int64_t>();
      const int64_t C = out.logits.size(1);
      for (int64_t i = 0; i < B; ++i) {
        loss_sum -= lp[size_t(i * C + labels[size_t(i)])];
        int64_t arg = int64_t(std::max_element(lg.begin() + i * C, lg.begin() + (i + 1) * C) - (lg.begin() + i * C));
        correct += arg == labels[size_t(i)];
        r.logits.emplace_back(lg.begin() + i * C, lg.begin() + (i + 1) * C);
        r.labels.push_back(labels[size_t(i)]);
      }
      r.n += B;
    } else {
      const int64_t V = out.logits.size(2);
      Tensor lsm = log_softmax(out.logits, 2);
      auto lp = lsm.to_vector<double>();
      auto tg = b.targets.to_vector<int64_t>();
      for (int64_t i = 0; i < B; ++i) {
        const auto& seq = data[size_t(idx[size_t(i)])].ids;
        std::vector<double> bayes;
        if (spec) bayes = exact_bayes_nll(*spec, std::vector<int32_t>(seq.begin(), seq.begin() + b.lengths[size_t(i)]));
        for (int64_t t = 0; t < b.lengths[size_t(i)]; ++t) {
          const double nll = -lp[size_t((i * S + t) * V + tg[size_t(i * S + t)])];
          loss_sum += nll;
          r.n++;
          if (spec) {
            if (pos_model.size() <= size_t(t)) {
              pos_model.resize(size_t(t) + 1, 0.0);
              pos_bayes.resize(size_t(t) + 1, 0.0);
              pos_count.resize(size_t(t) + 1, 0.0);
            }
            pos_model[size_t(t)] += nll;
            pos_bayes[size_t(t)] += bayes[size_t(t)];
            pos_count[size_t(t)] += 1;
            bayes_sum += bayes[size_t(t)];
          }
        }
      }
    }
  }
  r.loss = r.n ? loss_sum / double(r.n) : NAN;
  if (cfg.task == model::Task::Classify && r.n) r.accuracy = double(correct) / double(r.n);
  if (spec && r.n) {
    r.bayes_loss = bayes_sum / double(r.n);
    for (size_t t = 0; t < pos_count.size(); ++t) {
      r.model_loss_at.push_back(pos_model[t] / pos_count[t]);
      r.bayes_loss_at.push_back(pos_bayes[t] / pos_count[t]);
    }
  }
  if (seqs) {
    r.order_dispersion = disp_sum / double(seqs);
    if (cfg.layer == model::LayerKind::Bet) {
      r.posterior_mean = pm_sum / double(seqs);
      r.posterior_variance = pv_sum / double(seqs);
    }
  }
  return r;
}

}  // namespace bet::runtime
