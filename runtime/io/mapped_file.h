// A whole file, read-only, as one byte range: mmap(PROT_READ, MAP_PRIVATE) of a regular
// file, so a reader (decode_bet) works straight from the page cache with no read() into
// a zero-filled buffer. Files mmap cannot take (pipes, character devices, /proc files
// that report size 0, file systems without mmap) are read with read() into memory
// instead; bytes() looks the same either way.
//
// The hazard of a mapping: if another process truncates the file in place while it is
// mapped, touching a page past the new end raises SIGBUS. This type does not catch that
// (a handler would have to leave a decode running on OpenMP threads); it is documented
// and narrowed instead:
//   - the size is taken once, from fstat, and bytes() never reaches past it;
//   - check_unchanged() re-checks the open file's size and mtime after use, so a file
//     that changed under the reader is reported as an error, not used;
//   - betctl itself never rewrites a file in place (atomic_write_file writes a temp file
//     and renames it over), and a rename leaves the mapped inode whole, so only an outside
//     writer truncating the very file being loaded can trigger SIGBUS.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace bet::runtime {

class MappedFile {
 public:
  // Throws bet::Error naming `path`: "cannot open: <reason>", "is a directory",
  // "cannot read: <reason>" (fstat or read failed), "cannot map: <reason>". An empty
  // file is an empty view (readers reject it as too short).
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(MappedFile&& o) noexcept;
  MappedFile& operator=(MappedFile&& o) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const char* data() const { return data_; }
  size_t size() const { return size_; }
  std::string_view bytes() const { return {data_, size_}; }
  bool mapped() const { return map_ != nullptr; }  // false: read into memory (or empty)
  const std::string& path() const { return path_; }

  // Throws bet::Error "<path>: changed while being read (...)" when the open file's size
  // or modification time is no longer what it was when it was mapped.
  void check_unchanged() const;

 private:
  void open_contents();
  void release() noexcept;

  std::string path_;
  int fd_ = -1;                 // kept open for check_unchanged (a mapping does not need it)
  void* map_ = nullptr;         // the mapping, or null
  std::string owned_;           // the bytes when read() was used instead
  const char* data_ = nullptr;
  size_t size_ = 0;
  int64_t mtime_ns_ = 0;
};

}  // namespace bet::runtime
