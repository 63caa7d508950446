#include "runtime/logging/tfevents.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "engine/error.h"
#include "runtime/io/atomic_file.h"
#include "runtime/logging/crc32c.h"

namespace bet::runtime {

namespace pb {
void varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(char(uint8_t(v) | 0x80));
    v >>= 7;
  }
  out.push_back(char(v));
}
void tag(std::string& out, int field, int wire_type) { varint(out, (uint64_t(field) << 3) | uint64_t(wire_type)); }
void fixed64_double(std::string& out, int field, double v) {
  tag(out, field, 1);
  char b[8];
  std::memcpy(b, &v, 8);
  out.append(b, 8);
}
void fixed32_float(std::string& out, int field, float v) {
  tag(out, field, 5);
  char b[4];
  std::memcpy(b, &v, 4);
  out.append(b, 4);
}
void bytes(std::string& out, int field, const std::string& s) {
  tag(out, field, 2);
  varint(out, s.size());
  out += s;
}
}  // namespace pb

namespace {

double wall_time() {
  using namespace std::chrono;
  return duration<double>(system_clock::now().time_since_epoch()).count();
}

// Event { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
std::string event(int64_t step, const std::string* file_version, const std::string* summary) {
  std::string e;
  pb::fixed64_double(e, 1, wall_time());
  pb::tag(e, 2, 0);
  pb::varint(e, uint64_t(step));
  if (file_version) pb::bytes(e, 3, *file_version);
  if (summary) pb::bytes(e, 5, *summary);
  return e;
}

void put_u64(std::string& s, uint64_t v) {
  for (int i = 0; i < 8; ++i) s.push_back(char((v >> (8 * i)) & 0xff));
}
void put_u32(std::string& s, uint32_t v) {
  for (int i = 0; i < 4; ++i) s.push_back(char((v >> (8 * i)) & 0xff));
}

}  // namespace

std::string frame_record(const std::string& payload) {
  std::string r;
  put_u64(r, payload.size());
  put_u32(r, masked_crc32c(r.data(), 8));
  r += payload;
  put_u32(r, masked_crc32c(payload.data(), payload.size()));
  return r;
}

EventWriter::EventWriter(const std::string& dir) {
  make_dirs(dir);
  char host[256] = "localhost";
  ::gethostname(host, sizeof host - 1);
  path_ = dir + "/events.out.tfevents." + std::to_string(int64_t(wall_time())) + "." + host + "." +
          std::to_string(::getpid());
  file_ = std::fopen(path_.c_str(), "wb");
  BET_CHECK(file_, path_, ": cannot create event file");
  const std::string version = "brain.Event:2";
  write_record(event(0, &version, nullptr));
  flush();
}

EventWriter::~EventWriter() {
  if (file_) std::fclose(file_);
}

void EventWriter::write_record(const std::string& payload) {
  std::string r = frame_record(payload);
  BET_CHECK(std::fwrite(r.data(), 1, r.size(), file_) == r.size(), path_, ": write failed");
}

void EventWriter::scalar(const std::string& tag, double value, int64_t step) {
  // Summary { repeated Value value = 1; }  Value { string tag = 1; float simple_value = 2; }
  std::string v;
  pb::bytes(v, 1, tag);
  pb::fixed32_float(v, 2, float(value));
  std::string s;
  pb::bytes(s, 1, v);
  write_record(event(step, nullptr, &s));
}

void EventWriter::histogram(const std::string& tag, const std::vector<double>& values, int64_t step) {
  // HistogramProto { double min = 1, max = 2, num = 3, sum = 4, sum_squares = 5;
  //                  repeated double bucket_limit = 6 [packed], bucket = 7 [packed]; }
  double lo = values.empty() ? 0 : *std::min_element(values.begin(), values.end());
  double hi = values.empty() ? 0 : *std::max_element(values.begin(), values.end());
  double sum = 0, sq = 0;
  for (double x : values) {
    sum += x;
    sq += x * x;
  }
  const int nb = 30;
  std::vector<double> limits, counts(nb, 0.0);
  double width = (hi - lo) / nb;
  if (width <= 0) width = 1e-12;
  for (int i = 1; i <= nb; ++i) limits.push_back(i == nb ? std::max(hi, lo + width * nb) : lo + width * i);
  for (double x : values) counts[std::min(nb - 1, std::max(0, int((x - lo) / width)))] += 1;
  std::string h;
  pb::fixed64_double(h, 1, lo);
  pb::fixed64_double(h, 2, hi);
  pb::fixed64_double(h, 3, double(values.size()));
  pb::fixed64_double(h, 4, sum);
  pb::fixed64_double(h, 5, sq);
  auto packed = [&](int field, const std::vector<double>& xs) {
    std::string p;
    for (double x : xs) {
      char b[8];
      std::memcpy(b, &x, 8);
      p.append(b, 8);
    }
    pb::bytes(h, field, p);
  };
  packed(6, limits);
  packed(7, counts);
  std::string v;
  pb::bytes(v, 1, tag);
  pb::bytes(v, 5, h);
  std::string s;
  pb::bytes(s, 1, v);
  write_record(event(step, nullptr, &s));
}

void EventWriter::flush() {
  if (file_) std::fflush(file_);
}

}  // namespace bet::runtime
