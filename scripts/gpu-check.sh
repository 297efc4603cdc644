#!/usr/bin/env bash
# The GPU check: runs playpod's GPU path (CUDA conversion, NVENC) on a machine that has an NVIDIA
# GPU but no Rust toolchain, no Xvfb and no PulseAudio, from a bundle built on a Debian 12
# build machine.
#
#   scripts/gpu-check.sh bundle   on the build machine: release builds of playpod, ws-viewer and
#                                 the `gpu` test, Xvfb, xkbcomp, the XKB data and the libraries
#                                 they need, in .gpu-check/ (ignored by git)
#   scripts/gpu-check.sh run      on the GPU machine, from the repository root, as root, with
#                                 .gpu-check/ copied there: the GPU tests, then the whole pipeline
#                                 (plasma, 768x768) with --encoder auto and --encoder openh264
#
# On the project's device machine: carry [".gpu-check"], command `scripts/gpu-check.sh run`,
# timeout_s 300 (the run takes about a minute, at most four). Everything goes to stdout and,
# when $OUT is set, to $OUT/gpu-check.log, with a summary in $OUT/gpu-check.md.
set -euo pipefail
cd "$(dirname "$0")/.."
bundle_dir=.gpu-check
here=$PWD/$bundle_dir
# The base C/C++ runtime (glibc's libraries, libstdc++, libgcc_s): the GPU machine has its own,
# newer; glibc's parts must come from one glibc.
base_runtime='^(ld-linux[^ ]*|lib(c|m|dl|pthread|rt|resolv|util|anl|mvec|stdc\+\+|gcc_s))\.so'

die() {
  echo "gpu-check: $*" >&2
  exit 1
}

# cargo_exe NAME CARGO-ARGS...: runs cargo (release) and prints the path of the executable NAME
# it reports in its JSON messages.
cargo_exe() {
  local name=$1
  shift
  cargo "$@" --release --message-format=json-render-diagnostics | python3 -c '
import json, sys
found = [m["executable"] for m in map(json.loads, sys.stdin)
         if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == sys.argv[1]]
sys.exit(f"cargo built no executable {sys.argv[1]}") if not found else print(found[-1])' "$name"
}

# The libraries PROGRAMS... load (ldd resolves the whole closure), base runtime left out:
# "soname path" lines.
libraries() {
  ldd "$@" | awk '$2 == "=>" { if ($3 == "not") { print "missing: " $1 > "/dev/stderr"; exit 1 } print $1, $3 }' |
    grep -Ev "$base_runtime" | sort -u
}

bundle() {
  local playpod viewer test_bin
  playpod=$(cargo_exe playpod build -p playpod)
  viewer=$(cargo_exe ws-viewer build -p playpod-benches --bin ws-viewer)
  test_bin=$(cargo_exe gpu test -p playpod-tests --test gpu --no-run)
  rm -rf "$bundle_dir"
  mkdir -p "$bundle_dir"/{release/deps,bin,libexec,lib,share/X11}
  # The test finds playpod at target/<profile>/playpod from target/<profile>/deps/<test>.
  cp "$playpod" "$viewer" "$bundle_dir/release/"
  cp "$test_bin" "$bundle_dir/release/deps/gpu"
  cp /usr/bin/Xvfb /usr/bin/xkbcomp "$bundle_dir/libexec/"
  cp -rL /usr/share/X11/xkb "$bundle_dir/share/X11/"
  local programs=("$bundle_dir"/release/{playpod,ws-viewer,deps/gpu} "$bundle_dir"/libexec/{Xvfb,xkbcomp})
  strip "${programs[@]}"
  local soname path
  libraries "${programs[@]}" |
    while read -r soname path; do cp -L "$path" "$bundle_dir/lib/$soname"; done
  # The carried programs with their libraries: the tests start `Xvfb` from PATH, and Xvfb runs
  # /usr/bin/xkbcomp (compiled in), which `run` links to bin/xkbcomp where it is missing.
  for program in Xvfb xkbcomp; do
    cat >"$bundle_dir/bin/$program" <<EOF
#!/bin/sh
# $program from the build machine, with its libraries (scripts/gpu-check.sh).
here=\$(dirname "\$(readlink -f "\$0")")/..
LD_LIBRARY_PATH="\$here/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "\$here/libexec/$program" "\$@"
EOF
    chmod +x "$bundle_dir/bin/$program"
  done
  git describe --always --dirty >"$bundle_dir/commit"
  # Self-contained: with lib/ first, every library resolves from lib/ or the base runtime.
  local outside
  outside=$(LD_LIBRARY_PATH="$here/lib" ldd "${programs[@]}" "$bundle_dir"/lib/* |
    awk '$2 == "=>" { print $1, $3 }' | grep -Ev "$base_runtime" | grep -v " $here/lib/" || true)
  [ -z "$outside" ] || die "libraries from outside the bundle: $outside"
  echo "gpu-check: $bundle_dir/ ($(($(du -sb "$bundle_dir" | cut -f1) / 1048576)) MiB, $(ls "$bundle_dir/lib" | wc -l)" \
    "libraries, built from $(cat "$bundle_dir/commit"))"
  du -sh "$bundle_dir"/* | sed 's/^/  /'
}

# ---- run: on the GPU machine ----

linked=()
pids=()
work=""

# Stops what `run` started and removes the links it made.
cleanup() {
  local pid link
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || continue
    timeout 3 tail --pid="$pid" -f /dev/null || kill -KILL "$pid" 2>/dev/null || true
  done
  for link in "${linked[@]}"; do rm -f "$link"; done
  [ -z "$work" ] || rm -rf "$work"
}

# link_if_missing PATH TARGET: a symbolic link PATH -> TARGET, where PATH does not exist.
link_if_missing() {
  [ -e "$1" ] && return 0
  mkdir -p "$(dirname "$1")"
  ln -s "$2" "$1"
  linked+=("$1")
  echo "linked $1 -> $2"
}

# Where the driver's libraries are, as the dynamic linker's cache says.
driver_libraries() {
  local cache so
  cache=$(ldconfig -p 2>/dev/null || true)
  for so in libcuda.so.1 libnvidia-encode.so.1; do
    echo "$so: $(awk -v so="$so" '$1 == so { print $NF; found = 1; exit }
      END { if (!found) print "missing" }' <<<"$cache")"
  done
}

# The tests that need a GPU or a display (not the kernel-on-the-CPU one: it needs a C++ compiler
# and this checkout's sources at the build machine's path).
gpu_tests() {
  timeout -k 10 120 env LD_LIBRARY_PATH="$here/lib" "$here/release/deps/gpu" --nocapture --test-threads=1 --exact \
    gpu_conversion_matches_the_cpu_reference nvenc_encodes_idr_on_demand_when_present \
    the_chosen_video_path_and_its_reason_are_reported
}

# The plasma on the bundle's Xvfb, streamed by `playpod pod` with --encoder auto, then with
# --encoder openh264 (the CPU conversion), measured by benches/compare.py's helpers.
compare_paths() {
  local n=470
  while [ -e "/tmp/.X11-unix/X$n" ] || [ -e "/tmp/.X$n-lock" ]; do n=$((n + 1)); done
  Xvfb ":$n" -screen 0 768x768x24 -nolisten tcp -noreset -fbdir "$work" 2>"$work/xvfb.log" &
  pids+=($!)
  for _ in $(seq 100); do
    [ -e "/tmp/.X11-unix/X$n" ] && [ -e "$work/Xvfb_screen0" ] && break
    sleep 0.1
  done
  [ -e "$work/Xvfb_screen0" ] || { echo "Xvfb :$n did not start"; return 1; }
  env LD_LIBRARY_PATH="$here/lib" "$here/release/playpod" game --display ":$n" --scene plasma --size 768x768 \
    --no-sound 2>"$work/game.log" &
  pids+=($!)
  sleep 1
  timeout -k 10 80 python3 - ":$n" "$work/Xvfb_screen0" "$here/release" "$here/lib" "$work" <<'EOF'
import json, os, sys
sys.path.insert(0, "benches")
import compare

display, fb, compare.RELEASE, os.environ["LD_LIBRARY_PATH"], work = sys.argv[1:]
seconds, warmup = 10, 2
lines = [f"{seconds} s windows after a {warmup} s warm-up, one viewer, 60 fps, 2500 kbit/s, {os.cpu_count()} CPUs.", "",
         "| --encoder | conversion | encoder | pod CPU ms/frame | frames | ready->ring p50 / p99 ms | "
         "encode p50 / p99 ms | convert p50 / p99 ms |", "|---|---|---|---:|---:|---:|---:|---:|"]
notes, conversions, failed = [], set(), False


def quantiles(cumulative):
    return " / ".join(compare.fmt(compare.ms(compare.histogram_quantile(q, cumulative)), ".2f") for q in (0.5, 0.99))


for choice in ["auto", "openh264"]:
    print(f"pod --encoder {choice}", flush=True)
    log = f"{work}/pod-{choice}.log"
    try:
        r = compare.measure_fanout(display, fb, seconds, warmup, 2500, 1, extra=["--encoder", choice, "--no-audio"],
                                   log=log)
    except Exception as err:  # the other run still goes ahead
        failed = True
        lines.append(f"| {choice} | failed: {err} | | | | | | |")
        with open(log, errors="replace") as f:
            tail = ["      " + line for line in f.read().splitlines()[-8:]]
        notes += [f"- `--encoder {choice}` failed; the end of its log:", "", *tail, ""]
        continue
    ready = r["readyz"]
    conversions.add(ready.get("conversion"))
    lines.append(f"| {choice} | {ready.get('conversion')} | {ready.get('encoder')} | "
                 f"{r['cpu_s'] * 1000 / max(r['frames'], 1):.2f} | {r['frames']:.0f} | {quantiles(r['ready'])} | "
                 f"{quantiles(r['encode'])} | {quantiles(r['convert'])} |")
    notes.append(f"- `--encoder {choice}` /readyz: `{json.dumps(ready)}`")
lines += [""] + notes
if conversions == {"cpu"} and not failed:
    lines += ["", "Both runs used the CPU conversion (no usable GPU here): this compares the CPU path with itself."]
lines += ["", "CPU: the pod's user+system time over the window (/proc/PID/stat). p50 / p99: from the /metrics "
          "histogram buckets' increase over the window (bounds 0.25, 0.5, 1, 2, 3, 4, 5, 6, 8, 10 ms, ...), "
          "interpolated like Prometheus' histogram_quantile."]
text = "\n".join(lines)
print(text)
with open(f"{work}/compare.md", "w") as f:
    f.write(text + "\n")
sys.exit(1 if failed else 0)
EOF
}

checks() {
  trap cleanup EXIT
  work=$(mktemp -d "$([ -d /dev/shm ] && echo /dev/shm || echo /tmp)/gpu-check.XXXXXX")
  echo "== playpod GPU check, bundle built from $(cat "$here/commit"), $(date -u +%FT%TZ), $(uname -r)"
  if command -v nvidia-smi >/dev/null; then
    timeout 20 nvidia-smi || echo "nvidia-smi failed: $?"
  else
    echo "no nvidia-smi"
  fi
  driver_libraries | tee "$work/libs"
  link_if_missing /usr/bin/xkbcomp "$here/bin/xkbcomp"
  link_if_missing /usr/share/X11/xkb "$here/share/X11/xkb"
  export PATH=$here/bin:$PATH NO_COLOR=1

  echo "== GPU tests"
  local tests_rc=0 compare_rc=0 log
  gpu_tests 2>&1 | tee "$work/tests" || tests_rc=$?
  echo "== Whole pipeline: plasma 768x768, --encoder auto vs --encoder openh264"
  compare_paths || compare_rc=$?
  for log in "$work"/pod-*.log "$work/game.log" "$work/xvfb.log"; do
    if [ -s "$log" ]; then echo "-- ${log##*/}" && cat "$log"; fi
  done

  {
    echo "# playpod GPU check"
    echo
    echo "Bundle built from $(cat "$here/commit"); run $(date -u +%FT%TZ) on $(nproc) CPUs."
    echo
    echo "- GPU: $(timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader \
      2>/dev/null | head -1 | grep . || echo 'none (no nvidia-smi or no GPU)')"
    sed 's/^/- /' "$work/libs"
    echo
    echo "## GPU tests (exit status $tests_rc)"
    echo
    sed -e '/^$/d' -e 's/^/    /' "$work/tests"
    echo
    echo "## Whole pipeline: plasma 768x768, --encoder auto vs --encoder openh264 (exit status $compare_rc)"
    echo
    cat "$work/compare.md" 2>/dev/null || echo "No result; see gpu-check.log."
  } >"$work/summary.md"
  echo "== Summary"
  cat "$work/summary.md"
  [ -z "${OUT:-}" ] || cp "$work/summary.md" "$OUT/gpu-check.md"
  [ "$tests_rc" -eq 0 ] && [ "$compare_rc" -eq 0 ]
}

run() {
  [ -x "$here/release/playpod" ] ||
    die "no $bundle_dir/ here: make it with scripts/gpu-check.sh bundle on the build machine and copy it along"
  [ "$(id -u)" -eq 0 ] || die "run as root (it may link /usr/bin/xkbcomp and /usr/share/X11/xkb)"
  checks 2>&1 | tee ${OUT:+"$OUT/gpu-check.log"}
}

case "${1:-}" in
  bundle) bundle ;;
  run) run ;;
  *) die "usage: scripts/gpu-check.sh bundle|run (see the comment at the top)" ;;
esac
