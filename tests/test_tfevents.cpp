// TensorBoard event files: CRC32C framing, and the Event protobufs decoded by protoc.
#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "bet_config.h"
#include "runtime/io/atomic_file.h"
#include "runtime/logging/crc32c.h"
#include "runtime/logging/tfevents.h"

using namespace bet::runtime;

namespace {

std::vector<std::string> read_records(const std::string& bytes) {
  std::vector<std::string> out;
  size_t at = 0;
  while (at < bytes.size()) {
    REQUIRE(at + 12 <= bytes.size());
    uint64_t len = 0;
    std::memcpy(&len, bytes.data() + at, 8);
    uint32_t len_crc = 0;
    std::memcpy(&len_crc, bytes.data() + at + 8, 4);
    CHECK(len_crc == masked_crc32c(bytes.data() + at, 8));
    REQUIRE(at + 12 + len + 4 <= bytes.size());
    std::string payload = bytes.substr(at + 12, len);
    uint32_t crc = 0;
    std::memcpy(&crc, bytes.data() + at + 12 + len, 4);
    CHECK(crc == masked_crc32c(payload.data(), payload.size()));
    out.push_back(payload);
    at += 12 + len + 4;
  }
  return out;
}

std::string run(const std::string& cmd) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p);
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  CHECK(pclose(p) == 0);
  return out;
}

}  // namespace

TEST_CASE("crc32c matches the RFC 3720 check values") {
  CHECK(crc32c("123456789", 9) == 0xE3069283u);
  std::string zeros(32, '\0');
  CHECK(crc32c(zeros.data(), 32) == 0x8A9136AAu);
  std::string ones(32, '\xff');
  CHECK(crc32c(ones.data(), 32) == 0x62A8AB43u);
}

TEST_CASE("event file records carry valid CRCs and decode with protoc") {
  auto dir = std::filesystem::temp_directory_path() / ("bet_tfevents_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::string path;
  {
    EventWriter w(dir.string());
    w.scalar("train/loss", 0.6931, 1);
    w.scalar("train/lr", 3e-4, 2);
    w.histogram("posterior/mean", {0.1, 0.2, 0.2, 0.9}, 2);
    w.flush();
    path = w.path();
  }
  auto records = read_records(read_file(path));
  REQUIRE(records.size() == 4);

  if (std::system("command -v protoc >/dev/null 2>&1") != 0) {
    if (std::getenv("CI")) FAIL("protoc not installed (tools/setup installs protobuf-compiler): required in CI");
    MESSAGE("protoc not installed (tools/setup installs protobuf-compiler); skipping decode (required in CI)");
    return;
  }
  const std::string proto_dir = std::string(BET_SOURCE_DIR) + "/tests/data";
  std::vector<std::string> decoded;
  for (size_t i = 0; i < records.size(); ++i) {
    auto rec = dir / ("rec" + std::to_string(i));
    std::ofstream(rec, std::ios::binary) << records[i];
    decoded.push_back(run("protoc --proto_path=" + proto_dir + " --decode=tensorboard.Event tensorboard_event.proto < " +
                          rec.string()));
  }
  CHECK(decoded[0].find("file_version: \"brain.Event:2\"") != std::string::npos);
  CHECK(decoded[1].find("tag: \"train/loss\"") != std::string::npos);
  CHECK(decoded[1].find("simple_value: 0.6931") != std::string::npos);
  CHECK(decoded[1].find("step: 1") != std::string::npos);
  CHECK(decoded[2].find("step: 2") != std::string::npos);
  CHECK(decoded[3].find("histo {") != std::string::npos);
  CHECK(decoded[3].find("num: 4") != std::string::npos);
  CHECK(decoded[3].find("max: 0.9") != std::string::npos);
  std::filesystem::remove_all(dir);
}
