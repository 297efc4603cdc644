#!/usr/bin/env bash
# What a demo pod costs, thread by thread: runs `playpod demo` with one video viewer and one audio
# listener attached (ws-viewer), waits 4 s (with --paused the game is stopped with SIGSTOP after 3),
# then reads the CPU time of each of its threads over --seconds, from /proc. Several binaries are
# measured in turns, round after round, so that two builds compare within one run:
#
#   benches/thread-cpu.sh [--paused] [--seconds 10] [--rounds 3] [BINARY ...] [-- DEMO ARGS]
#
# BINARY defaults to target/release/playpod (built when missing). One line per run, e.g.
#   playpod  paused  total 150 ms  playpod-audio-e 20 ms  playpod-frames 30 ms  ...
# Times are multiples of the kernel's 10 ms tick: compare rounds, not single runs.
set -euo pipefail
cd "$(dirname "$0")/.."

paused=0
seconds=10
rounds=3
binaries=()
demo_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --paused) paused=1 ;;
    --seconds) seconds=$2; shift ;;
    --rounds) rounds=$2; shift ;;
    --) shift; demo_args=("$@"); break ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "thread-cpu: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) binaries+=("$1") ;;
  esac
  shift
done
case "$seconds$rounds" in
  *[!0-9]*) echo "thread-cpu: --seconds and --rounds take whole numbers" >&2; exit 2 ;;
esac
if [ ${#binaries[@]} -eq 0 ]; then
  binaries=(target/release/playpod)
fi
if [ ! -x target/release/playpod ] || [ ! -x target/release/ws-viewer ]; then
  cargo build --release -p playpod -p playpod-benches
fi
for bin in "${binaries[@]}"; do
  [ -x "$bin" ] || { echo "thread-cpu: $bin is not an executable" >&2; exit 2; }
done

work=$(mktemp -d)
demo=
cleanup() {
  if [ -n "$demo" ] && kill -0 "$demo" 2>/dev/null; then
    pkill -CONT -P "$demo" 2>/dev/null || true
    kill -TERM "$demo" 2>/dev/null || true
    wait "$demo" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# CPU ticks of each thread, by name (threads of one name added up).
threads() {
  for task in /proc/"$1"/task/*; do
    printf '%s %s\n' "$(tr ' ' _ <"$task/comm")" "$(awk '{print $14 + $15}' "$task/stat")"
  done | awk '{ticks[$1] += $2} END {for (name in ticks) print name, ticks[name]}' | sort
}

measure() {
  local bin=$1 port=$((18300 + RANDOM % 500))
  "$bin" demo --listen "127.0.0.1:$port" "${demo_args[@]}" >"$work/out" 2>"$work/err" &
  demo=$!
  for _ in $(seq 100); do grep -q 'open http' "$work/out" && break; sleep 0.1; done
  local url
  url=$(grep -o 'http://[^ ]*' "$work/out" | head -1) || { cat "$work/err" >&2; exit 1; }
  local ws=${url/http:/ws:}
  target/release/ws-viewer "${ws}video" $((seconds + 8)) >/dev/null 2>&1 &
  local viewer=$!
  target/release/ws-viewer "${ws}audio" $((seconds + 8)) >/dev/null 2>&1 &
  local listener=$!
  sleep 3
  local game
  game=$(pgrep -P "$demo" -f ' game' | head -1)
  if [ "$paused" = 1 ] && [ -n "$game" ]; then kill -STOP "$game"; fi
  sleep 1
  threads "$demo" >"$work/before"
  sleep "$seconds"
  threads "$demo" >"$work/after"
  local report
  report=$(join "$work/before" "$work/after" |
    awk '{ms = ($3 - $2) * 10; total += ms; if (ms > 0) line = line sprintf("  %s %d ms", $1, ms)}
         END {printf "total %d ms%s", total, line}')
  printf '%s  %s  %s\n' "$(basename "$bin")" "$([ "$paused" = 1 ] && echo paused || echo running)" "$report"
  if [ -n "$game" ]; then kill -CONT "$game" 2>/dev/null || true; fi
  kill -TERM "$demo"
  wait "$demo" 2>/dev/null || true
  demo=
  kill "$viewer" "$listener" 2>/dev/null || true
  wait "$viewer" "$listener" 2>/dev/null || true
}

for _ in $(seq "$rounds"); do
  for bin in "${binaries[@]}"; do
    measure "$bin"
  done
done
