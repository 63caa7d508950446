#!/usr/bin/env bash
# Builds the HTTP parser fuzz target with clang (libFuzzer + AddressSanitizer +
# UndefinedBehaviorSanitizer) without meson, and runs it for N seconds (default 60, or
# $BET_FUZZ_SECONDS).
# Exits nonzero when the fuzzer finds a crash, a leak or a sanitizer error.
#   tests/fuzz/run_fuzz.sh [SECONDS] [extra libFuzzer flags...]
# Needs clang and libclang-rt-dev (Debian: clang, libclang-rt-14-dev; tools/setup installs
# them). Without clang: skipped (exit 77) outside CI, a failure in CI (env CI set).
# Part of the test suite (tests/fuzz/meson.build).
set -euo pipefail
SECONDS_TO_RUN="${1:-${BET_FUZZ_SECONDS:-60}}"
shift || true
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="${FUZZ_OUT:-${TMPDIR:-/tmp}/bet_fuzz_http_parser}"
# shellcheck source=tests/fuzz/lib.sh
source "$ROOT/tests/fuzz/lib.sh"
find_clang
mkdir -p "$OUT/corpus" "$OUT/artifacts"
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
compile_objects "$OUT/obj" "-std=c++20 -g -O1 -fno-omit-frame-pointer $SAN -fsanitize=fuzzer-no-link -I$ROOT" \
  "$ROOT/tests/fuzz/fuzz_http_parser.cpp" "$ROOT/runtime/server/http_parser.cpp"
# shellcheck disable=SC2086
"$CXX" $SAN -fsanitize=fuzzer "${OBJECTS[@]}" -o "$OUT/fuzz_http_parser"

# Seed corpus: a few valid requests (first byte = split mode).
seed() { printf '%b' "$2" > "$OUT/corpus/$1"; }
seed get '\x05GET /health HTTP/1.1\r\nHost: a\r\n\r\n'
seed post '\x03POST /v1/predict HTTP/1.1\r\nHost: a\r\nContent-Length: 14\r\n\r\n{"text":"abc"}'
seed chunked '\x10POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4;e=1\r\nWiki\r\n5\r\npedia\r\n0\r\nT: x\r\n\r\n'
seed pipelined '\x00GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /x HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n'
seed expect '\x07PUT /e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi'

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
"$OUT/fuzz_http_parser" -max_total_time="$SECONDS_TO_RUN" -max_len=4096 -timeout=10 -error_exitcode=1 -timeout_exitcode=1 \
  -rss_limit_mb=1024 -artifact_prefix="$OUT/artifacts/" -print_final_stats=1 "$@" "$OUT/corpus"
