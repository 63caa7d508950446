# Helpers shared by the sanitizer scripts of tests/fuzz (sourced, not run).

# Sets CXX to a clang++ (CXX_FUZZ overrides). Without one: exit 77 (meson's "skipped")
# outside CI, and 1 in CI (env CI set), where a missing toolchain must fail the run.
find_clang() {
  CXX="${CXX_FUZZ:-}"
  if [ -z "$CXX" ]; then
    for c in clang++ clang++-19 clang++-18 clang++-17 clang++-16 clang++-15 clang++-14; do
      if command -v "$c" >/dev/null 2>&1; then CXX="$c"; break; fi
    done
  fi
  if [ -n "$CXX" ] && ! command -v "$CXX" >/dev/null 2>&1; then CXX=""; fi
  # clang without its runtime libraries (libclang-rt-*-dev) cannot link libFuzzer.
  local probe="${TMPDIR:-/tmp}/bet_fuzz_probe_$$"
  if [ -n "$CXX" ] && ! echo 'extern "C" int LLVMFuzzerTestOneInput(const char*, unsigned long) { return 0; }' |
      "$CXX" -x c++ -fsanitize=fuzzer,address,undefined - -o "$probe" >/dev/null 2>&1; then
    echo "${0##*/}: $CXX cannot link -fsanitize=fuzzer,address,undefined" >&2
    CXX=""
  fi
  rm -f "$probe"
  if [ -z "$CXX" ]; then
    echo "${0##*/}: clang++ with libFuzzer not found (tools/setup installs clang and libclang-rt-14-dev)" >&2
    if [ -n "${CI:-}" ]; then exit 1; fi
    echo "${0##*/}: SKIPPED (not in CI)" >&2
    exit 77
  fi
}

# compile_objects OUTDIR "FLAGS" SOURCE...: compiles each source to OUTDIR/<name>.o,
# skipping those whose object is newer than the source and every header it read (from
# its .d file) and whose flags are unchanged. Sets OBJECTS.
compile_objects() {
  local out="$1" flags="$2"
  shift 2
  mkdir -p "$out"
  if [ "$(cat "$out/flags" 2>/dev/null)" != "$CXX $flags" ]; then
    rm -f "$out"/*.o "$out"/*.d
    printf '%s' "$CXX $flags" > "$out/flags"
  fi
  OBJECTS=()
  local src obj stale dep
  for src in "$@"; do
    obj="$out/$(echo "${src#"$ROOT"/}" | tr '/' '_' | sed 's/\.cpp$/.o/')"
    OBJECTS+=("$obj")
    stale=0
    if [ ! -f "$obj" ] || [ ! -f "${obj%.o}.d" ]; then
      stale=1
    else
      for dep in $(sed -e 's/^[^:]*://' -e 's/\\$//' "${obj%.o}.d"); do
        if [ ! -e "$dep" ] || [ "$dep" -nt "$obj" ]; then stale=1; break; fi
      done
    fi
    if [ "$stale" = 1 ]; then
      # shellcheck disable=SC2086
      "$CXX" $flags -MMD -MF "${obj%.o}.d" -c "$src" -o "$obj"
    fi
  done
}
