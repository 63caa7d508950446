// TensorBoard event files: TFRecord framing (u64 length, masked CRC32C of the length,
// payload, masked CRC32C of the payload) around Event protobufs, encoded here by
// hand (the wire format is small: varints, fixed64/32 and length-delimited fields).
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace bet::runtime {

class EventWriter {
 public:
  // Creates DIR/events.out.tfevents.<time>.<host>.<pid> and writes the version event.
  explicit EventWriter(const std::string& dir);
  ~EventWriter();
  EventWriter(const EventWriter&) = delete;
  EventWriter& operator=(const EventWriter&) = delete;

  void scalar(const std::string& tag, double value, int64_t step);
  // A histogram of `values` (TensorBoard's HistogramProto: min, max, num, sum,
  // sum_squares, bucket limits and counts).
  void histogram(const std::string& tag, const std::vector<double>& values, int64_t step);
  void flush();
  const std::string& path() const { return path_; }

 private:
  void write_record(const std::string& payload);
  std::string path_;
  std::FILE* file_ = nullptr;
};

// Wire-format helpers (exposed for tests).
namespace pb {
void varint(std::string& out, uint64_t v);
void tag(std::string& out, int field, int wire_type);
void fixed64_double(std::string& out, int field, double v);
void fixed32_float(std::string& out, int field, float v);
void bytes(std::string& out, int field, const std::string& s);
}  // namespace pb

// One framed record (length, crc, payload, crc), for tests and readers.
std::string frame_record(const std::string& payload);

}  // namespace bet::runtime
