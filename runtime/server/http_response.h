// Serialising responses straight into a connection's output buffer. The head is built
// with appends of precomputed pieces (status line, cached Date), so a small response
// costs no allocation once the buffer has grown.
#pragma once
#include <ctime>
#include <string>
#include <string_view>

#include "runtime/server/buffer.h"

namespace bet::server {

// "Not Found" for 404; "Unknown" for codes we never send.
std::string_view status_reason(int status);

// The IMF-fixdate for the Date header, recomputed at most once per second.
class HttpDate {
 public:
  std::string_view now();  // e.g. "Sun, 06 Nov 1994 08:49:37 GMT"
 private:
  std::time_t last_ = -1;
  char text_[40] = {};
  size_t len_ = 0;
};

struct ResponseHead {
  int status = 200;
  std::string_view content_type = "application/json";
  bool keep_alive = true;
  bool http10 = false;       // HTTP/1.0 client: say "keep-alive" explicitly when keeping
  bool head_only = false;    // HEAD: headers (with the body's length), no body
  std::string_view date;     // from HttpDate
  std::string_view extra_headers;  // complete "Name: value\r\n" lines
};

void write_response(Buffer& out, const ResponseHead& head, std::string_view body);

// {"error": {"code": code, "message": message}}, serialised by nlohmann::json so any
// message text is escaped correctly.
std::string error_json(std::string_view code, std::string_view message);
// The machine-readable code the server uses for each error status.
std::string_view error_code_for(int status);

}  // namespace bet::server
