// Durable file replacement: write to a temporary name in the same directory, fsync
// it, rename it over the target, fsync the directory. A crash at any moment leaves
// either the old file or the new one, never a torn one.
#pragma once
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

namespace bet::runtime {

void atomic_write_file(const std::string& path, std::string_view bytes);
// The same for a file given in pieces, written in order (no joined copy is made).
void atomic_write_file(const std::string& path, const std::vector<std::string_view>& pieces);
// The whole file. Throws bet::Error naming the path when it cannot be opened, is a
// directory or a read fails (a directory opens fine and would otherwise read as empty).
std::string read_file(const std::string& path);
// Opens `path` for streaming reads (binary) with the same checks: "is a directory",
// "cannot open: <reason>". After reading, check_read(in, path) tells a read error
// apart from the end of the file (both just end a getline loop).
std::ifstream open_input_file(const std::string& path);
void check_read(const std::ifstream& in, const std::string& path);
// Creates `dir` and its parents (mkdir -p); errors name the path.
void make_dirs(const std::string& dir);
void fsync_dir(const std::string& dir);

}  // namespace bet::runtime
