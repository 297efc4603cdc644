#!/usr/bin/env bash
# What the low rendition costs while someone watches it: `playpod demo` (768x768 plasma, every
# pixel changing, 2.5 Mbit/s; no sound) with one viewer of the full picture, then with that
# viewer and one of the low rendition (`ws-viewer --low`), in turns, the pod's CPU time (user +
# system, all its threads) read from /proc over the same window each time.
#
#   benches/low-rendition-cpu.sh [--rounds N] [--seconds S]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=2
seconds=10
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    *) echo "usage: $0 [--rounds N] [--seconds S]" >&2; exit 2 ;;
  esac
done
. scripts/deps.sh
need_runtime
need_program bc bc
install_missing
cargo build --release -p playpod -p playpod-benches
log=$(mktemp)
target/release/playpod demo --scene plasma --no-audio --listen 127.0.0.1:0 >"$log" 2>&1 &
demo=$!
trap 'kill $demo 2>/dev/null; wait $demo 2>/dev/null; rm -f "$log"' EXIT
url=
for _ in $(seq 100); do
  url=$(grep -o 'http://[^ ]*' "$log" | head -1 || true)
  [ -n "$url" ] && break
  sleep 0.1
done
[ -n "$url" ] || { cat "$log" >&2; echo "the demo did not start" >&2; exit 1; }
video="ws${url#http}video"
ticks=$(getconf CLK_TCK)
cpu() { awk '{ print $14 + $15 }' "/proc/$demo/stat"; }
# Viewers start, settle for 2 s, then the window.
measure() {
  local pids=()
  target/release/ws-viewer "$video" $((seconds + 4)) >/dev/null &
  pids+=($!)
  if [ "$1" = low ]; then
    target/release/ws-viewer --low "$video" $((seconds + 4)) >/dev/null &
    pids+=($!)
  fi
  sleep 2
  local before after
  before=$(cpu)
  sleep "$seconds"
  after=$(cpu)
  wait "${pids[@]}"
  # ms of CPU per second of stream (60 frames).
  echo "scale=1; ($after - $before) * 1000 / $ticks / $seconds" | bc
}
echo "| round | one full viewer: pod CPU ms/s | + one low-rendition viewer: pod CPU ms/s | ratio |"
echo "|---|---:|---:|---:|"
for round in $(seq "$rounds"); do
  full=$(measure full)
  both=$(measure low)
  echo "| $round | $full | $both | $(echo "scale=2; $both / $full" | bc) |"
done
