#include "runtime/train/training_data.h"

#include <algorithm>
#include <sstream>
#include <string_view>

#include "engine/error.h"
#include "runtime/data/dataset.h"

namespace bet::runtime {

int64_t TrainingData::batches_per_epoch(int64_t batch_size) const {
  return (int64_t(train.size()) + batch_size - 1) / batch_size;
}

Batch TrainingData::batch(int64_t epoch, int64_t index, int64_t batch_size, int64_t max_len, uint64_t seed) {
  if (planned_epoch_ != epoch) {
    plan_ = plan_epoch(train_lengths, batch_size, seed, epoch);
    planned_epoch_ = epoch;
  }
  BET_CHECK(index >= 0 && index < int64_t(plan_.size()), "data: batch ", index, " out of range for epoch ", epoch);
  return task == model::Task::Classify ? make_classify_batch(train, plan_[size_t(index)], max_len)
                                       : make_lm_batch(train, plan_[size_t(index)], max_len);
}

Batch TrainingData::synthetic_batch(int64_t step, int64_t batch_size, uint64_t seed) const {
  std::vector<EncodedSequence> seqs(static_cast<size_t>(batch_size));
  std::vector<int64_t> idx(static_cast<size_t>(batch_size));
  for (int64_t r = 0; r < batch_size; ++r) {
    uint64_t i = uint64_t(step) * uint64_t(batch_size) + uint64_t(r);
    seqs[size_t(r)].ids = synthetic_sequence(spec, seed, i);
    idx[size_t(r)] = r;
  }
  Batch b = make_lm_batch(seqs, idx, spec.length);
  for (int64_t r = 0; r < batch_size; ++r) b.indices[size_t(r)] = step * batch_size + r;
  return b;
}

std::vector<EncodedSequence> encode_examples(const Tokenizer& tok, const std::vector<std::string>& texts,
                                             const std::vector<int64_t>& labels, model::Task task, int64_t max_len) {
  std::vector<EncodedSequence> out;
  if (task == model::Task::LM) {
    std::vector<int32_t> stream;
    for (const auto& t : texts) {
      auto ids = tok.encode(t);
      stream.insert(stream.end(), ids.begin(), ids.end());
      stream.push_back(kEos);
    }
    return chunk_stream(stream, max_len);
  }
  out.reserve(texts.size());
  // Only the first max_len ids are kept. Byte ids are the text's bytes, so the byte
  // tokenizer needs only that prefix: on long texts (e-mails) encoding them whole was
  // most of the time `betctl train` spent loading data.
  const bool bytewise = tok.kind() == "byte";
  for (size_t i = 0; i < texts.size(); ++i) {
    EncodedSequence s;
    std::string_view text = texts[i];
    if (bytewise && int64_t(text.size()) > max_len) text = text.substr(0, size_t(max_len));
    s.ids = tok.encode(text);
    if (int64_t(s.ids.size()) > max_len) {
      s.ids.resize(size_t(max_len));
      s.ids.shrink_to_fit();
    }
    if (s.ids.empty()) s.ids.push_back(kEos);  // a text of only unknown bytes still has a token
    s.label = labels.empty() ? -1 : labels[i];
    out.push_back(std::move(s));
  }
  return out;
}

namespace {

std::unique_ptr<Tokenizer> make_tokenizer(const std::string& spec, const std::vector<std::string>& texts) {
  if (spec == "byte") return make_byte_tokenizer();
  if (spec.rfind("spm:", 0) == 0) return load_spm_tokenizer(spec.substr(4));
  if (spec.rfind("spm-train:", 0) == 0) {
    int vocab = 0;
    try {
      vocab = std::stoi(spec.substr(10));
    } catch (...) {
      fail("--tokenizer: '", spec, "': expected spm-train:VOCAB with a number");
    }
    return train_spm_tokenizer(texts, vocab);
  }
  fail("--tokenizer: '", spec, "' is not one of byte, spm:FILE, spm-train:VOCAB");
}

// Moves the texts out of `ds` (its examples keep their labels and lines).
void split_fields(TextDataset& ds, std::vector<std::string>* texts, std::vector<int64_t>* labels) {
  texts->reserve(ds.examples.size());
  labels->reserve(ds.examples.size());
  for (auto& e : ds.examples) {
    texts->push_back(std::move(e.text));
    labels->push_back(e.label);
  }
}

}  // namespace

TrainingData load_training_data(TrainConfig& cfg, std::string* log, std::unique_ptr<Tokenizer> given) {
  TrainingData d;
  std::ostringstream msg;
  if (cfg.data.empty()) {
    d.synthetic = true;
    d.spec.kind = cfg.synthetic.empty() ? "bernoulli" : cfg.synthetic;
    d.spec.length = cfg.seq_len;
    d.spec.categories = cfg.categories;
    d.spec.validate();
    BET_CHECK(cfg.task.empty() || cfg.task == "lm", "--task ", cfg.task, ": synthetic data trains lm models");
    d.task = model::Task::LM;
    BET_CHECK(cfg.tokenizer.empty() || cfg.tokenizer == "byte", "--tokenizer: synthetic data uses the byte tokenizer");
    d.tokenizer = given ? std::move(given) : make_byte_tokenizer();
    for (int64_t i = 0; i < cfg.synthetic_val; ++i) {
      EncodedSequence s;
      // Validation sequences come from a stream disjoint from training (another key).
      s.ids = synthetic_sequence(d.spec, cfg.seed ^ 0x7a11da7aULL, uint64_t(i));
      d.val.push_back(std::move(s));
    }
    msg << "data: synthetic " << d.spec.kind << ", " << d.spec.length << " outcomes per sequence\n";
    BET_CHECK(cfg.seq_len <= cfg.model.max_len, "--seq-len ", cfg.seq_len, " exceeds --max-len ", cfg.model.max_len);
  } else {
    BET_CHECK(cfg.synthetic.empty(), "--synthetic and --data are exclusive");
    d.task = model::parse_task(cfg.task.empty() ? "classify" : cfg.task);
    ReadOptions ro;
    ro.text_field = cfg.text_field;
    ro.label_field = cfg.label_field;
    ro.skip_bad = cfg.skip_bad;
    ro.need_labels = d.task == model::Task::Classify;
    if (d.task == model::Task::LM && cfg.data.size() > 4 && cfg.data.substr(cfg.data.size() - 4) == ".txt")
      ro.format = DataFormat::Text;
    TextDataset all = read_dataset(cfg.data, ro), train, val;
    d.skipped = all.skipped;
    for (const auto& r : all.skip_reasons) msg << "skipped: " << r << "\n";
    if (!cfg.val.empty()) {
      ReadOptions vo = ro;
      vo.known_labels = all.labels;
      if (!cfg.model.labels.empty()) vo.known_labels = cfg.model.labels;
      train = std::move(all);
      val = read_dataset(cfg.val, vo);
    } else {
      split_validation(all, cfg.val_split, cfg.seed, &train, &val);
    }
    d.labels = train.labels;
    std::vector<std::string> tr_texts, va_texts;
    std::vector<int64_t> tr_labels, va_labels;
    split_fields(train, &tr_texts, &tr_labels);
    split_fields(val, &va_texts, &va_labels);
    const std::string tok = cfg.tokenizer.empty() ? "spm-train:8000" : cfg.tokenizer;
    d.tokenizer = given ? std::move(given) : make_tokenizer(tok, tr_texts);
    d.train = encode_examples(*d.tokenizer, tr_texts, tr_labels, d.task, cfg.model.max_len);
    d.val = encode_examples(*d.tokenizer, va_texts, va_labels, d.task, cfg.model.max_len);
    msg << "data: " << cfg.data << ": " << train.examples.size() << " train, " << val.examples.size()
        << " validation records";
    if (d.skipped) msg << ", " << d.skipped << " bad records skipped";
    msg << "; tokenizer " << tok << " (vocab " << d.tokenizer->vocab_size() << ")\n";
  }
  for (const auto& s : d.train) d.train_lengths.push_back(int64_t(s.ids.size()));
  cfg.model.task = d.task;
  // The model's vocabulary is the tokenizer's, so any checkpoint serves text. (Synthetic
  // outcomes use ids 3..3+C-1 only; the head learns the other byte ids away quickly.)
  cfg.model.vocab_size = d.tokenizer->vocab_size();
  if (d.task == model::Task::Classify) {
    cfg.model.num_classes = int64_t(d.labels.size());
    cfg.model.labels = d.labels;
  }
  if (log) *log = msg.str();
  return d;
}

}  // namespace bet::runtime
