#include "runtime/io/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "engine/error.h"

namespace bet::runtime {

namespace {

std::string errno_str(int e) { return std::strerror(e); }

int64_t mtime_ns(const struct stat& st) { return int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec; }

}  // namespace

MappedFile::MappedFile(const std::string& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  BET_CHECK(fd_ >= 0, path, ": cannot open: ", errno_str(errno));
  try {
    open_contents();
  } catch (...) {
    release();  // no destructor runs for a constructor that throws
    throw;
  }
}

void MappedFile::open_contents() {
  const std::string& path = path_;
  struct stat st {};
  if (::fstat(fd_, &st) != 0) {
    fail(path, ": cannot read: ", errno_str(errno));
  }
  BET_CHECK(!S_ISDIR(st.st_mode), path, ": is a directory");
  mtime_ns_ = mtime_ns(st);
  if (S_ISREG(st.st_mode) && st.st_size > 0) {
    size_ = size_t(st.st_size);
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd_, 0);
    if (p != MAP_FAILED) {
      map_ = p;
      data_ = static_cast<const char*>(p);
      // No madvise: MADV_WILLNEED (readahead of the whole file for the parallel decoders)
      // made no measurable difference to bench ckpt, page cache hot or dropped (ext4 on
      // virtio, 2 threads), and the kernel's own readahead on faults stays in charge.
      return;
    }
    const int e = errno;
    // A file system that cannot map files (ENODEV) is read instead; anything else
    // (out of address space, over the map count) is an error.
    if (e != ENODEV) {
      fail(path, ": cannot map ", size_, " bytes: ", errno_str(e));
    }
    size_ = 0;
  }
  // read(): pipes and devices (no size, cannot be mapped), regular files that report
  // size 0 but have contents (/proc, some FUSE files), file systems without mmap. The
  // size is a hint only: read to the end, growing as needed.
  owned_.resize(S_ISREG(st.st_mode) && st.st_size > 0 ? size_t(st.st_size) + 1 : 4096);
  size_t done = 0;
  for (;;) {
    if (done == owned_.size()) owned_.resize(owned_.size() * 2);
    const ssize_t r = ::read(fd_, owned_.data() + done, owned_.size() - done);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) fail(path, ": cannot read: ", errno_str(errno));
    if (r == 0) break;
    done += size_t(r);
  }
  owned_.resize(done);
  data_ = owned_.data();
  size_ = done;
}

void MappedFile::release() noexcept {
  if (map_) ::munmap(map_, size_);
  if (fd_ >= 0) ::close(fd_);
  map_ = nullptr;
  fd_ = -1;
  owned_.clear();
  owned_.shrink_to_fit();
  data_ = nullptr;
  size_ = 0;
}

MappedFile::~MappedFile() { release(); }

MappedFile::MappedFile(MappedFile&& o) noexcept { *this = std::move(o); }

MappedFile& MappedFile::operator=(MappedFile&& o) noexcept {
  if (this == &o) return *this;
  release();
  path_ = std::move(o.path_);
  fd_ = std::exchange(o.fd_, -1);
  map_ = std::exchange(o.map_, nullptr);
  owned_ = std::move(o.owned_);
  size_ = std::exchange(o.size_, 0);
  // A short string's bytes live inside the object: point at the new home.
  data_ = map_ ? static_cast<const char*>(map_) : owned_.data();
  o.data_ = nullptr;
  o.owned_.clear();
  mtime_ns_ = o.mtime_ns_;
  return *this;
}

void MappedFile::check_unchanged() const {
  if (fd_ < 0 || !map_) return;  // read into memory: nothing can change under it
  struct stat st {};
  BET_CHECK(::fstat(fd_, &st) == 0, path_, ": cannot read: ", errno_str(errno));
  BET_CHECK(uint64_t(st.st_size) == uint64_t(size_) && mtime_ns(st) == mtime_ns_, path_,
            ": changed while being read (", size_, " bytes when opened, now ", st.st_size,
            "; was it rewritten in place?)");
}

}  // namespace bet::runtime
