// The .bet container: round trips, and rejection of every kind of damage.
#include <doctest/doctest.h>

#include <unistd.h>

#include <dirent.h>
#include <fcntl.h>

#include <filesystem>
#include <fstream>

#include <xxhash.h>
#include <zstd.h>

#include "engine/allocator.h"
#include "engine/ops.h"
#include "engine/random.h"
#include "runtime/checkpoint/bet_format.h"
#include "runtime/io/atomic_file.h"
#include "runtime/io/mapped_file.h"
#include "tests/checkpoint_fixtures.h"

using namespace bet;
using namespace bet::runtime;
using namespace bet::testing;

namespace {

NamedTensorList sample_tensors() {
  Generator g(11);
  NamedTensorList t;
  t.emplace_back("embed.weight", g.normal({37, 16}, 0, 0.02));
  t.emplace_back("layers.0.attn.lam", Tensor::scalar(1.25));
  t.emplace_back("f64", g.uniform({3, 5}, -1, 1, DType::F64));
  t.emplace_back("ids", Tensor::from_vector<int64_t>({1, -2, 3, 1LL << 40}, {4}));
  t.emplace_back("i32", Tensor::from_vector<int32_t>({7, 8, 9}, {3, 1}));
  t.emplace_back("empty", Tensor::zeros({0, 8}));
  // a non-contiguous view is saved as its logical contents
  Tensor base = g.uniform({4, 6});
  t.emplace_back("transposed", transpose(base, 0, 1));
  return t;
}

void check_equal(const NamedTensorList& a, const NamedTensorList& b) {
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    CHECK(a[i].first == b[i].first);
    CHECK(a[i].second.dtype() == b[i].second.dtype());
    CHECK(a[i].second.shape() == b[i].second.shape());
    Tensor x = a[i].second.contiguous(), y = b[i].second.contiguous();
    CHECK(std::memcmp(x.raw_data(), y.raw_data(), x.nbytes()) == 0);
  }
}

uint64_t u64_at(std::string_view s, size_t at) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t(uint8_t(s[at + size_t(i)])) << (8 * i);
  return v;
}

// `file` with `extra` appended to its data and its index passed through `edit` (offsets
// as stored; the extra data starts at the returned json's "extra_at"), every checksum
// of the index and footer recomputed, so the damage reaches the frame checks.
std::string rebuild(const std::string& file, const std::string& extra,
                    const std::function<void(nlohmann::json& index, uint64_t extra_at)>& edit) {
  const size_t foot = file.size() - 40;
  const uint64_t index_at = u64_at(file, foot), index_len = u64_at(file, foot + 8);
  nlohmann::json index = nlohmann::json::parse(file.substr(index_at, index_len));
  edit(index, index_at);
  std::string out = file.substr(0, index_at) + extra;
  const std::string idx = index.dump();
  std::string footer;
  auto put = [&](uint64_t v) {
    for (int i = 0; i < 8; ++i) footer.push_back(char((v >> (8 * i)) & 0xff));
  };
  put(out.size());
  put(idx.size());
  put(XXH3_64bits(idx.data(), idx.size()));
  put(XXH3_64bits(footer.data(), footer.size()));
  footer.append("BETFOOT1", 8);
  return out + idx + footer;
}

std::string checksum_of(std::string_view frame) {
  char b[17];
  std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(XXH3_64bits(frame.data(), frame.size())));
  return b;
}

// Caps the host allocator for a scope.
struct AllocatorLimit {
  explicit AllocatorLimit(uint64_t bytes) {
    CachingAllocator::host().set_limit(CachingAllocator::host().stats().bytes_in_use + bytes);
  }
  ~AllocatorLimit() { CachingAllocator::host().set_limit(0); }
};

std::string tmp_path(const char* name) {
  auto dir = std::filesystem::temp_directory_path() / ("bet_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

}  // namespace

TEST_CASE("byte-plane shuffle is invertible") {
  std::vector<uint8_t> in(4 * 7), mid(in.size()), out(in.size());
  for (size_t i = 0; i < in.size(); ++i) in[i] = uint8_t(i * 37 + 1);
  shuffle_bytes(in.data(), mid.data(), 7, 4);
  CHECK(mid[1] == in[4]);  // plane 0 holds byte 0 of each element
  unshuffle_bytes(mid.data(), out.data(), 7, 4);
  CHECK(in == out);
}

TEST_CASE("round trip through a file keeps header and every byte of every tensor") {
  nlohmann::json header = {{"config", {{"d_model", 16}}}, {"card", "test"}};
  auto tensors = sample_tensors();
  std::string path = tmp_path("round.bet");
  write_bet_file(path, header, tensors);
  BetContents back = read_bet_file(path);
  CHECK(back.header == header);
  check_equal(tensors, back.tensors);
  // compression pays on real weights: near-normal f32 shrinks
  Generator g(3);
  NamedTensorList big{{"w", g.normal({256, 256}, 0, 0.02)}};
  CHECK(encode_bet({}, big).size() < size_t(256 * 256 * 4));
}

TEST_CASE("every flipped byte is rejected with an error, never a crash") {
  std::string good = encode_bet({{"k", "v"}}, sample_tensors());
  REQUIRE_NOTHROW(decode_bet(good, "x.bet"));
  int rejected = 0, total = 0;
  for (size_t i = 0; i < good.size(); ++i) {
    for (uint8_t bit : {uint8_t(0x01), uint8_t(0x80)}) {
      std::string bad = good;
      bad[i] = char(uint8_t(bad[i]) ^ bit);
      ++total;
      try {
        decode_bet(bad, "x.bet");
      } catch (const Error& e) {
        ++rejected;
        CHECK(std::string(e.what()).rfind("x.bet", 0) == 0);  // names the file
      }
    }
  }
  CHECK(rejected == total);
}

TEST_CASE("truncation at any offset is rejected") {
  std::string good = encode_bet({{"k", 1}}, sample_tensors());
  for (size_t len = 0; len < good.size(); ++len) {
    CHECK_THROWS_AS(decode_bet(good.substr(0, len), "t.bet"), Error);
  }
  // appended garbage also breaks the footer
  CHECK_THROWS_AS(decode_bet(good + "x", "t.bet"), Error);
}

TEST_CASE("errors say what is wrong") {
  std::string good = encode_bet({}, sample_tensors());
  try {
    decode_bet(good.substr(0, good.size() / 2), "half.bet");
    FAIL("expected an error");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("truncated") != std::string::npos);
  }
  CHECK_THROWS_WITH_AS(read_bet_file(tmp_path("missing.bet")), doctest::Contains("cannot open"), Error);
}

TEST_CASE("atomic write replaces the file and leaves no temporary behind") {
  std::string path = tmp_path("atomic.txt");
  atomic_write_file(path, "old");
  atomic_write_file(path, "new contents");
  CHECK(read_file(path) == "new contents");
  for (auto& e : std::filesystem::directory_iterator(std::filesystem::path(path).parent_path()))
    CHECK(e.path().filename().string().find(".tmp.") == std::string::npos);
}

TEST_CASE("a frame is read only as the size its index entry declares") {
  Generator g(5);
  const NamedTensorList two{{"a", g.uniform({4})}, {"b", g.uniform({8})}};
  const std::string good = encode_bet({}, two);
  auto error = [](const std::string& bytes) { return error_of([&] { decode_bet(bytes, "f.bet"); }); };

  // a's entry pointing at b's frame (32 bytes of content, 16 declared).
  std::string bad = rebuild(good, "", [](nlohmann::json& idx, uint64_t) {
    for (const char* k : {"offset", "compressed_size", "checksum"}) idx[0][k] = idx[1][k];
  });
  CHECK(error(bad).find("f.bet: tensor 'a': frame states a size other than the index's raw size") != std::string::npos);

  // A frame that does not state its size, and two frames where one is declared.
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 0);
  std::string zeros(16, '\0'), unsized(ZSTD_compressBound(16), '\0');
  ZSTD_inBuffer in{zeros.data(), zeros.size(), 0};
  ZSTD_outBuffer out{unsized.data(), unsized.size(), 0};
  ZSTD_CCtx_setPledgedSrcSize(cctx, ZSTD_CONTENTSIZE_UNKNOWN);
  REQUIRE(ZSTD_compressStream2(cctx, &out, &in, ZSTD_e_continue) == 0);
  REQUIRE(ZSTD_compressStream2(cctx, &out, &in, ZSTD_e_end) == 0);
  unsized.resize(out.pos);
  ZSTD_freeCCtx(cctx);
  CHECK(ZSTD_getFrameContentSize(unsized.data(), unsized.size()) == ZSTD_CONTENTSIZE_UNKNOWN);
  bad = rebuild(good, unsized, [&](nlohmann::json& idx, uint64_t at) {
    idx[0]["offset"] = at;
    idx[0]["compressed_size"] = unsized.size();
    idx[0]["checksum"] = checksum_of(unsized);
  });
  CHECK(error(bad).find("tensor 'a': frame does not state its size") != std::string::npos);
  const std::string doubled = zero_frame(16) + zero_frame(16);
  bad = rebuild(good, doubled, [&](nlohmann::json& idx, uint64_t at) {
    idx[0]["offset"] = at;
    idx[0]["compressed_size"] = doubled.size();
    idx[0]["checksum"] = checksum_of(doubled);
  });
  CHECK(error(bad).find("tensor 'a': is not exactly one zstd frame") != std::string::npos);
}

TEST_CASE("what an index declares is checked, and shown to the caller, before anything is allocated") {
  auto& alloc = CachingAllocator::host();
  // 129 entries of 1 GiB each share one frame: 129 GiB declared in a file of ~5 MB. The
  // limit stands in for the machine: were any of it allocated, the test would fail
  // rather than exhaust memory.
  std::vector<CraftedTensor> table;
  for (int i = 0; i < 129; ++i) {
    std::string name = "t";  // (not "t" + to_string: GCC 12 warns falsely on that)
    name += std::to_string(i);
    table.push_back({name, DType::F32, {int64_t(1) << 28}});
  }
  const std::string huge = craft_bet({{"k", 1}}, table);
  {
    AllocatorLimit limit(uint64_t(1) << 20);
    CHECK_THROWS_WITH_AS(decode_bet(huge, "h.bet"),
                         doctest::Contains("h.bet: the tensors declare more than 137438953472 bytes together"), Error);
  }

  // Within the total, the caller's check sees the header and the table first, and may refuse.
  table.resize(4);
  const std::string four = craft_bet({{"k", 2}}, table);
  alloc.reset_peak();
  const uint64_t before = alloc.stats().bytes_in_use;
  int calls = 0;
  auto refuse = [&](const nlohmann::json& header, const std::vector<BetIndexEntry>& index) {
    ++calls;
    CHECK(header["k"] == 2);
    REQUIRE(index.size() == 4);
    CHECK(index[3].name == "t3");
    CHECK(index[3].dtype == DType::F32);
    CHECK(index[3].shape == Shape{int64_t(1) << 28});
    CHECK(index[3].raw_size == uint64_t(1) << 30);
    fail("f.bet: refused by the caller");
  };
  CHECK_THROWS_WITH_AS(decode_bet(four, "f.bet", refuse), "f.bet: refused by the caller", Error);
  CHECK(calls == 1);
  CHECK(alloc.stats().peak_bytes_in_use - before < (uint64_t(1) << 20));

  // Allocation failure is an error naming the tensor.
  AllocatorLimit limit(uint64_t(1) << 20);
  CHECK_THROWS_WITH_AS(decode_bet(four, "f.bet"),
                       doctest::Contains("f.bet: tensor 't0': out of memory allocating 1073741824 bytes"), Error);
}

TEST_CASE("shapes: a zero among huge dims is as bounded as any other shape") {
  uint64_t n = 7;
  CHECK(checked_stored_shape({3, 0, 5}, "w", &n) == Shape{3, 0, 5});
  CHECK(n == 0);
  CHECK(checked_stored_shape({}, "w", &n).empty());
  CHECK(n == 1);
  auto error = [](const std::vector<uint64_t>& dims) {
    return error_of([&] {
      uint64_t m = 0;
      checked_stored_shape(dims, "w", &m);
    });
  };
  const uint64_t big = uint64_t(1) << 39;
  CHECK(error({big, 0, big}) ==
        "w: shape [549755813888, 0, 549755813888] is too large (over 1099511627776 elements, counting a 0 dim as 1)");
  CHECK(error({uint64_t(1) << 41}).find("is too large") != std::string::npos);
  CHECK(error({~uint64_t(0), 0}).find("is too large") != std::string::npos);
  CHECK(error(std::vector<uint64_t>(17, 1)) == "w: shape has 17 dims, over the limit of 16");
}

namespace {

// Lines of /proc/self/maps and entries of /proc/self/fd: a mapping or descriptor left
// behind by each load shows up in these.
size_t count_maps() {
  std::ifstream in("/proc/self/maps");
  size_t n = 0;
  for (std::string line; std::getline(in, line);) ++n;
  return n;
}
size_t count_fds() {
  size_t n = 0;
  for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

void write_bytes(const std::string& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
  REQUIRE(out.good());
}

}  // namespace

TEST_CASE("mapped load: the same header and tensors as the read() path, bit for bit") {
  nlohmann::json header = {{"config", {{"d_model", 16}}}, {"card", "mapped"}};
  NamedTensorList tensors = sample_tensors();
  // Frames larger than a page and the 128 KiB decompression chunk, several per thread.
  Generator g(7);
  for (int i = 0; i < 6; ++i) tensors.emplace_back("big" + std::to_string(i), g.normal({300 + i, 257}, 0, 0.02));
  tensors.emplace_back("big.f64", g.normal({129, 1031}, 0, 1, DType::F64));
  const std::string path = tmp_path("mapped.bet");
  write_bet_file(path, header, tensors);
  BetContents mapped = read_bet_file(path, {}, LoadMode::Map);
  BetContents read = read_bet_file(path, {}, LoadMode::Read);
  CHECK(mapped.header == header);
  CHECK(read.header == header);
  check_equal(tensors, mapped.tensors);
  check_equal(read.tensors, mapped.tensors);
  // The tensors own their memory: they outlive the mapping, which is gone by now.
  {
    MappedFile m(path);
    CHECK(m.mapped());
    CHECK(m.size() == std::filesystem::file_size(path));
    CHECK(m.bytes() == read_file(path));
  }
  check_equal(tensors, mapped.tensors);
  // The index check sees the same table through either path.
  for (LoadMode mode : {LoadMode::Map, LoadMode::Read}) {
    size_t seen = 0;
    read_bet_file(path, [&](const nlohmann::json&, const std::vector<BetIndexEntry>& t) { seen = t.size(); }, mode);
    CHECK(seen == tensors.size());
  }
}

TEST_CASE("mapped load: a missing, empty, truncated or damaged file or a directory is an error naming it") {
  const std::string good = encode_bet({{"k", 1}}, sample_tensors());
  auto error = [](const std::string& path, LoadMode mode) {
    return error_of([&] { read_bet_file(path, {}, mode); });
  };
  for (LoadMode mode : {LoadMode::Map, LoadMode::Read}) {
    CAPTURE(int(mode));
    const std::string missing = tmp_path("nothing-here.bet");
    CHECK(error(missing, mode).rfind(missing + ": cannot open: No such file or directory", 0) == 0);

    const std::string dir = tmp_path("a-directory.bet");
    std::filesystem::create_directories(dir);
    CHECK(error(dir, mode) == dir + ": is a directory");

    const std::string empty = tmp_path("empty.bet");
    write_bytes(empty, "");
    CHECK(error(empty, mode).rfind(empty + ": not a .bet file (0 bytes is too short", 0) == 0);

    const std::string cut = tmp_path("cut.bet");
    for (size_t len : {size_t(1), size_t(40), good.size() / 2, good.size() - 1}) {
      write_bytes(cut, good.substr(0, len));
      const std::string e = error(cut, mode);
      CHECK(e.rfind(cut + ": ", 0) == 0);
      CHECK(e.find("truncated") != std::string::npos);
    }

    const std::string damaged = tmp_path("damaged.bet");
    for (size_t at : {size_t(3), size_t(20), good.size() / 3, good.size() / 2, good.size() - 50, good.size() - 3}) {
      std::string bad = good;
      bad[at] = char(uint8_t(bad[at]) ^ 0x10);
      write_bytes(damaged, bad);
      CHECK(error(damaged, mode).rfind(damaged + ": ", 0) == 0);
    }
  }
}

TEST_CASE("MappedFile: files that cannot be mapped are read; a file changed under the mapping is an error") {
  // /proc files report size 0 yet have contents: read(), not an empty mapping.
  MappedFile status("/proc/self/status");
  CHECK(!status.mapped());
  CHECK(status.bytes().find("Name:") != std::string_view::npos);

  // A pipe: no size, cannot be mapped.
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  REQUIRE(::write(fds[1], "through a pipe", 14) == 14);
  ::close(fds[1]);
  {
    MappedFile piped("/proc/self/fd/" + std::to_string(fds[0]));
    CHECK(!piped.mapped());
    CHECK(piped.bytes() == "through a pipe");
  }
  ::close(fds[0]);

  // Move-only, and a moved file keeps its bytes (a short read-into-memory one too).
  const std::string small = tmp_path("small.txt");
  write_bytes(small, "abc");
  MappedFile a(small);
  CHECK(a.mapped());
  MappedFile b(std::move(a));
  CHECK(b.bytes() == "abc");
  CHECK(a.size() == 0);
  MappedFile c("/proc/self/comm");
  const std::string comm(c.bytes());
  MappedFile d(std::move(c));
  CHECK(d.bytes() == comm);
  d = std::move(b);
  CHECK(d.bytes() == "abc");
  CHECK_NOTHROW(d.check_unchanged());

  // Grown in place while mapped (growing never faults; shrinking can raise SIGBUS,
  // see mapped_file.h): reported, not used.
  {
    std::ofstream out(small, std::ios::binary | std::ios::app);
    out << "def";
  }
  CHECK(error_of([&] { d.check_unchanged(); }).rfind(small + ": changed while being read (3 bytes when opened, now 6", 0) == 0);

  // A file replaced by rename (as every betctl writer does) leaves the mapped one whole.
  const std::string path = tmp_path("replaced.bet");
  write_bet_file(path, {{"v", 1}}, sample_tensors());
  MappedFile old(path);
  const std::string before(old.bytes());
  write_bet_file(path, {{"v", 2}}, {});
  CHECK(old.bytes() == before);
  CHECK_NOTHROW(old.check_unchanged());
  CHECK(decode_bet(old.bytes(), path).header["v"] == 1);
  CHECK(read_bet_file(path).header["v"] == 2);
}

TEST_CASE("mapped load: no mapping or descriptor is left behind, loaded or refused") {
  const std::string path = tmp_path("leak.bet");
  write_bet_file(path, {{"k", 1}}, sample_tensors());
  const std::string bad = tmp_path("leak-bad.bet");
  std::string bytes = encode_bet({{"k", 1}}, sample_tensors());
  bytes[bytes.size() / 2] ^= 0x01;
  write_bytes(bad, bytes);
  // Warm up anything allocated once (thread pools, allocator arenas).
  for (int i = 0; i < 5; ++i) {
    read_bet_file(path);
    CHECK_THROWS_AS(read_bet_file(bad), Error);
  }
  const size_t maps = count_maps(), fds = count_fds();
  for (int i = 0; i < 1000; ++i) {
    BetContents c = read_bet_file(path);
    REQUIRE(c.tensors.size() == sample_tensors().size());
    REQUIRE_THROWS_AS(read_bet_file(bad), Error);
    REQUIRE_THROWS_AS(read_bet_file(tmp_path("leak-missing.bet")), Error);
  }
  CHECK(count_fds() == fds);
  // The allocator may map or unmap a region of its own meanwhile; 1000 leaked mappings
  // would add 1000 lines.
  CHECK(count_maps() <= maps + 8);
}
