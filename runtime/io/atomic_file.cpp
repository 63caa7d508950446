#include "runtime/io/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "engine/error.h"

namespace bet::runtime {

namespace {
std::string parent_dir(const std::string& path) {
  auto p = std::filesystem::path(path).parent_path();
  return p.empty() ? "." : p.string();
}
std::string errno_str() { return std::strerror(errno); }
}  // namespace

void fsync_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  BET_CHECK(fd >= 0, dir, ": cannot open directory: ", errno_str());
  ::fsync(fd);
  ::close(fd);
}

void make_dirs(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  BET_CHECK(!ec, dir, ": cannot create directory: ", ec.message());
}

void atomic_write_file(const std::string& path, std::string_view bytes) {
  atomic_write_file(path, std::vector<std::string_view>{bytes});
}

void atomic_write_file(const std::string& path, const std::vector<std::string_view>& pieces) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  BET_CHECK(fd >= 0, tmp, ": cannot create: ", errno_str());
  for (std::string_view bytes : pieces) {
    size_t done = 0;
    while (done < bytes.size()) {
      ssize_t w = ::write(fd, bytes.data() + done, bytes.size() - done);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        std::string err = errno_str();
        ::close(fd);
        ::unlink(tmp.c_str());
        fail(tmp, ": write failed: ", err);
      }
      done += size_t(w);
    }
  }
  if (::fsync(fd) != 0) {
    std::string err = errno_str();
    ::close(fd);
    ::unlink(tmp.c_str());
    fail(tmp, ": fsync failed: ", err);
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    std::string err = errno_str();
    ::unlink(tmp.c_str());
    fail(path, ": rename failed: ", err);
  }
  fsync_dir(parent_dir(path));
}

std::string read_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  BET_CHECK(fd >= 0, path, ": cannot open: ", errno_str());
  struct stat st {};
  if (::fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
    ::close(fd);
    fail(path, ": is a directory");
  }
  // st_size is a hint only (a pipe says 0): read to the end, growing if needed. The
  // spare byte lets the final zero-length read happen without a reallocation.
  std::string out(size_t(std::max<off_t>(st.st_size, 0)) + 1, '\0');
  size_t done = 0;
  while (true) {
    if (done == out.size()) out.resize(out.size() * 2 + 4096);
    ssize_t r = ::read(fd, out.data() + done, out.size() - done);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      std::string err = errno_str();
      ::close(fd);
      fail(path, ": cannot read: ", err);
    }
    if (r == 0) break;
    done += size_t(r);
  }
  ::close(fd);
  out.resize(done);
  return out;
}

std::ifstream open_input_file(const std::string& path) {
  std::error_code ec;
  BET_CHECK(!std::filesystem::is_directory(path, ec), path, ": is a directory");
  errno = 0;
  std::ifstream in(path, std::ios::binary);
  if (!in.is_open()) fail(path, ": cannot open: ", errno ? errno_str() : std::string("unknown error"));
  return in;
}

void check_read(const std::ifstream& in, const std::string& path) {
  // libstdc++ turns a failed read(2) into badbit; a plain end of file sets only eof/fail.
  BET_CHECK(!in.bad(), path, ": cannot read: ", errno ? errno_str() : std::string("I/O error"));
}

}  // namespace bet::runtime
