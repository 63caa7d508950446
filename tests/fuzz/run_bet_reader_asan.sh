#!/usr/bin/env bash
# The .bet reader under AddressSanitizer + UndefinedBehaviorSanitizer: builds the reader
# and the few engine files it needs with clang (objects cached in OUT), runs the
# corruption sweep (test_bet_reader_asan.cpp: every bit of every byte flipped, every
# truncation, damaged frames and index entries behind valid checksums), then fuzzes
# the reader for N seconds (default 30 or $BET_FUZZ_SECONDS; 0 skips the fuzzing),
# seeded by the sweep.
# Exits nonzero on any failure, crash, leak or sanitizer report.
#   tests/fuzz/run_bet_reader_asan.sh [SECONDS] [extra libFuzzer flags...]
# Why not a -Db_sanitize=address meson build: see tests/fuzz/bet_reader_support.cpp.
set -euo pipefail
SECONDS_TO_RUN="${1:-${BET_FUZZ_SECONDS:-30}}"
shift || true
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="${FUZZ_OUT:-${TMPDIR:-/tmp}/bet_fuzz_bet_reader}"
# shellcheck source=tests/fuzz/lib.sh
source "$ROOT/tests/fuzz/lib.sh"
find_clang

# meson writes bet_config.h; this CPU-only build writes its own.
mkdir -p "$OUT/include"
printf '#pragma once\n#define BET_HAVE_CUDA 0\n#define BET_SOURCE_DIR "%s"\n#define BET_VERSION "sanitizer"\n' "$ROOT" \
  > "$OUT/include/bet_config.h.new"
cmp -s "$OUT/include/bet_config.h.new" "$OUT/include/bet_config.h" || mv "$OUT/include/bet_config.h.new" "$OUT/include/bet_config.h"

SAN="-fsanitize=address,undefined -fno-sanitize-recover=all"
FLAGS="-std=c++20 -g -O1 -fno-omit-frame-pointer $SAN -fsanitize=fuzzer-no-link -I$ROOT -I$OUT/include"
compile_objects "$OUT/obj" "$FLAGS" \
  "$ROOT/runtime/checkpoint/bet_format.cpp" "$ROOT/runtime/io/atomic_file.cpp" "$ROOT/runtime/io/mapped_file.cpp" \
  "$ROOT/runtime/io/bounded_json.cpp" \
  "$ROOT/engine/tensor.cpp" "$ROOT/engine/storage.cpp" "$ROOT/engine/ops/dispatch.cpp" \
  "$ROOT/platform/allocator.cpp" "$ROOT/platform/arena.cpp" "$ROOT/platform/shape.cpp" "$ROOT/platform/device.cpp" "$ROOT/platform/memory.cpp" \
  "$ROOT/tests/fuzz/bet_reader_support.cpp"
LIB_OBJECTS=("${OBJECTS[@]}")
compile_objects "$OUT/obj" "$FLAGS" "$ROOT/tests/fuzz/test_bet_reader_asan.cpp" "$ROOT/tests/test_main.cpp"
TEST_OBJECTS=("${OBJECTS[@]}")
compile_objects "$OUT/obj" "$FLAGS" "$ROOT/tests/fuzz/fuzz_bet_reader.cpp"
FUZZ_OBJECTS=("${OBJECTS[@]}")
# shellcheck disable=SC2086
"$CXX" $SAN "${LIB_OBJECTS[@]}" "${TEST_OBJECTS[@]}" -lzstd -lxxhash -o "$OUT/test_bet_reader_asan"
# shellcheck disable=SC2086
"$CXX" $SAN -fsanitize=fuzzer "${LIB_OBJECTS[@]}" "${FUZZ_OBJECTS[@]}" -lzstd -lxxhash -o "$OUT/fuzz_bet_reader"

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
rm -rf "$OUT/seeds"
mkdir -p "$OUT/corpus" "$OUT/artifacts"
# The sweep prints doctest's summary line, which tools/test counts.
BET_FUZZ_SEEDS="$OUT/seeds" "$OUT/test_bet_reader_asan"
if [ "$SECONDS_TO_RUN" != 0 ]; then
  "$OUT/fuzz_bet_reader" -max_total_time="$SECONDS_TO_RUN" -max_len=16384 -timeout=10 -error_exitcode=1 -timeout_exitcode=1 -rss_limit_mb=2048 \
    -artifact_prefix="$OUT/artifacts/" -print_final_stats=1 "$@" "$OUT/corpus" "$OUT/seeds"
fi
