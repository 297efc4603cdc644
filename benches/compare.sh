#!/usr/bin/env bash
# The side-by-side comparison in one command: installs what is missing (Xvfb, FFmpeg, matplotlib),
# builds the release binaries and runs benches/compare.py with the arguments given, e.g.
#
#   benches/compare.sh --seconds 15 --rounds 2 [--fanout 1,10,50 | --no-fanout] [--scene pong]
#                       [--pod-arg=--pin-core=1 ...]
#
# Writes bench-results/compare.md and bench-results/compare.png.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
need_compare_tools
install_missing
cargo build --release -p playpod -p playpod-benches
# The Python that has matplotlib: the one on PATH, or the system one the Debian package serves.
python=python3
for candidate in python3 /usr/bin/python3; do
  if "$candidate" -c 'import matplotlib' >/dev/null 2>&1; then
    python=$candidate
    break
  fi
done
exec "$python" benches/compare.py "$@"
