#include "runtime/io/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

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
  ::fstat(fd, &st);
  std::string out;
  out.resize(size_t(st.st_size));
  size_t done = 0;
  while (done < out.size()) {
    ssize_t r = ::read(fd, out.data() + done, out.size() - done);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    done += size_t(r);
  }
  ::close(fd);
  out.resize(done);
  return out;
}

}  // namespace bet::runtime
