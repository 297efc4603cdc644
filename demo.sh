#!/usr/bin/env bash
# Runs the playpod demo: installs what is missing (Xvfb, nasm, ...), builds, and starts
# `playpod demo`, which prints the URL to open. Extra arguments go to `playpod demo`
# (see `./demo.sh --help`). Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")"
. scripts/deps.sh
need_runtime
install_missing
cargo build --release --locked -p playpod
exec target/release/playpod demo "$@"
