#!/usr/bin/env bash
# Runs the README's serving example (the sh block between the serve-example markers)
# against a real `betctl serve`, on a small classifier trained here first, and checks
# what each of its commands printed. Keeps the README's serving section true.
# Usage: readme_serve.sh BETCTL README
set -euo pipefail
betctl=$(realpath "$1")
readme=$(realpath "$2")
work=$(mktemp -d)
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill -9 "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"

fail() { echo "readme_serve: $*" >&2; exit 1; }

# A small ham/spam classifier, trained in seconds.
for i in $(seq 1 60); do
  printf '{"text": "lunch on friday %d? see you at the office", "label": "ham"}\n' "$i"
  printf '{"text": "WIN A FREE CRUISE %d click here cheap meds", "label": "spam"}\n' "$i"
done > data.jsonl
"$betctl" train --data data.jsonl --task classify --d-model 16 --heads 2 --layers 1 --max-len 64 \
  --steps 20 --batch-size 8 --out run --threads 1 >train.log 2>&1 || { cat train.log; fail "training failed"; }
M=$(ls run/checkpoints/training/*.bet | tail -n 1)
[ -f "$M" ] || fail "no checkpoint written"

# A free port for the example's server.
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export B="$betctl" M PORT

block=$(awk '/<!-- serve-example -->/{on=1; next} /<!-- \/serve-example -->/{on=0} on' "$readme" | sed '/^```/d')
[ -n "$block" ] || fail "no serve-example block in $readme"
printf '%s\n' "$block" > example.sh
# The example's own `wait` returns the server's exit status; bound the whole run.
timeout 120 bash -euo pipefail example.sh >out.txt 2>server.log || {
  echo "--- output"; cat out.txt; echo "--- server log"; cat server.log; fail "the README example failed"
}

echo "--- output"; cat out.txt
lines=()
while IFS= read -r l; do lines+=("$l"); done <out.txt
[ "${#lines[@]}" -eq 5 ] || fail "expected 5 lines of output, got ${#lines[@]}"
grep -q '"status":"ready"' <<<"${lines[0]}" || fail "/ready: ${lines[0]}"
for f in '"label":' '"probabilities":' '"uncertainty":' '"members":4' '"latency_ms":'; do
  grep -q "$f" <<<"${lines[1]}" || fail "/v1/predict lacks $f: ${lines[1]}"
done
grep -q '"predictions":\[{' <<<"${lines[2]}" || fail "/v1/predict/batch: ${lines[2]}"
grep -q '"uncertainty"' <<<"${lines[2]}" && fail "return_uncertainty false still returned uncertainty"
grep -q '"code":"unauthorized"' <<<"${lines[3]}" || fail "no key: ${lines[3]}"
grep -q '"code":"empty_text"' <<<"${lines[4]}" || fail "empty text: ${lines[4]}"
grep -q 'reload done' server.log || fail "the SIGHUP reload is not in the server log"
echo "readme_serve: the README's serving example ran as written"
