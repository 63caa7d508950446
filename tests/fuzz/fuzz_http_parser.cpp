// libFuzzer target for the HTTP/1.1 request parser. The first input byte picks how the
// rest is split into feed() calls, so the fuzzer explores piece boundaries as well as
// content; every piece must be taken whole unless a message ended inside it, and no
// state may grow past the configured limits. Built by tests/fuzz/run_fuzz.sh.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "runtime/server/http_parser.h"

using bet::server::HttpParser;
using bet::server::ParserLimits;
using bet::server::ParseStatus;

#define FUZZ_ASSERT(cond) \
  do {                    \
    if (!(cond)) std::abort(); \
  } while (0)

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  ParserLimits lim;
  lim.max_header_bytes = 1024;
  lim.max_body_bytes = 2048;
  lim.max_headers = 16;
  HttpParser p(lim);
  size_t step = 1 + (data[0] % 17);  // 1..17 bytes per feed; 17 means "everything at once"
  const char* in = reinterpret_cast<const char*>(data + 1);
  size_t len = size - 1;
  size_t at = 0;
  while (at < len) {
    size_t n = step == 17 ? len - at : (step < len - at ? step : len - at);
    size_t used = p.feed(in + at, n);
    FUZZ_ASSERT(used <= n);
    const auto& q = p.request();
    FUZZ_ASSERT(q.method.size() <= 32);
    FUZZ_ASSERT(q.target.size() <= lim.max_header_bytes);
    FUZZ_ASSERT(q.body.size() <= lim.max_body_bytes);
    FUZZ_ASSERT(q.header_count <= lim.max_headers);
    at += used;
    if (p.status() == ParseStatus::kComplete) {
      if (q.has_content_length && !q.chunked) FUZZ_ASSERT(q.body.size() == q.content_length);
      p.reset();
    } else if (p.status() == ParseStatus::kError) {
      int s = p.error_status();
      FUZZ_ASSERT(s == 400 || s == 413 || s == 431 || s == 501 || s == 505);
      FUZZ_ASSERT(p.feed(in + at, len - at) == 0);  // a failed parser takes nothing more
      break;
    } else {
      FUZZ_ASSERT(used == n);
    }
  }
  return 0;
}
