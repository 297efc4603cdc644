#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing (Xvfb, nasm, FFmpeg, Chromium,
# ChromeDriver, Python virtualenvs for the chart and PTX checks, cargo-deny, cargo-fuzz), then
# format, the dependencies' licences and sources, lints, unit, integration and end-to-end tests,
# benchmarks compiled and run once, a short fuzz of every fuzz target, the CUDA kernel's PTX
# check and the Helm chart checks.
set -euo pipefail
cd "$(dirname "$0")"
. scripts/deps.sh
need_test_tools
install_missing

step() { printf '\n==> %s (%d s so far)\n' "$*" "$SECONDS"; }

step "format"
cargo fmt --all --check

step "licences and sources of every dependency (cargo-deny, deny.toml)"
install_cargo_deny
for manifest in Cargo.toml fuzz/Cargo.toml; do
  cargo deny --manifest-path "$manifest" --locked check licenses bans sources
done

step "lints"
cargo clippy --locked --workspace --all-targets -- -D warnings

step "build (the integration tests run the playpod binary)"
cargo build --locked -p playpod

step "unit, integration and end-to-end tests"
cargo test --locked --workspace

step "benchmarks compile and run once"
cargo test --locked -p playpod-benches --benches

step "fuzz smoke (each input target for about a minute, the framebuffer header and H.264 unit splitting for 30 s; README: the long run)"
install_cargo_fuzz
for target in input_parse input_parse_diff; do
  mkdir -p "fuzz/corpus/$target"
  cargo fuzz run --sanitizer none "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" \
    -- -dict=fuzz/input.dict -max_total_time=60
done
for target in framebuffer_header h264_units; do
  mkdir -p "fuzz/corpus/$target"
  cargo fuzz run --sanitizer none "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" \
    -- -max_total_time=30
done

step "CUDA kernel: the committed PTX is current and assembles for Turing to Hopper"
ffi/cuda/generate-ptx.sh --check

if [ -x tests/charts/check.sh ]; then
  step "Helm charts and Kubernetes manifests"
  tests/charts/check.sh
fi

step "all tests passed"
