// Durable file replacement: write to a temporary name in the same directory, fsync
// it, rename it over the target, fsync the directory. A crash at any moment leaves
// either the old file or the new one, never a torn one.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace bet::runtime {

void atomic_write_file(const std::string& path, std::string_view bytes);
// The same for a file given in pieces, written in order (no joined copy is made).
void atomic_write_file(const std::string& path, const std::vector<std::string_view>& pieces);
std::string read_file(const std::string& path);
// Creates `dir` and its parents (mkdir -p); errors name the path.
void make_dirs(const std::string& dir);
void fsync_dir(const std::string& dir);

}  // namespace bet::runtime
