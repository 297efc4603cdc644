# Sourced by demo.sh and test.sh: installs the Debian packages a command needs, only when the
# program they provide is missing. Needs root or sudo (CI runs as root).

# need_program PROGRAM PACKAGE: queue PACKAGE if PROGRAM is not on PATH.
need_program() {
  command -v "$1" >/dev/null 2>&1 || missing_packages+=("$2")
}

# need_file FILE PACKAGE: queue PACKAGE if FILE does not exist (libraries, headers).
need_file() {
  [ -e "$1" ] || missing_packages+=("$2")
}

install_missing() {
  [ ${#missing_packages[@]} -eq 0 ] && return 0
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
      sudo="sudo"
    else
      echo "playpod: missing packages: ${missing_packages[*]}; install them as root (apt-get install ${missing_packages[*]})" >&2
      exit 1
    fi
  fi
  echo "playpod: installing ${missing_packages[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  # Some packages (prometheus) start a system service when installed. The tests run their own
  # servers; nothing may keep running: a policy-rc.d forbids service starts during the install
  # (invoke-rc.d and deb-systemd-invoke obey it; containers without systemd included), unless
  # the machine already has one.
  local policy=/usr/sbin/policy-rc.d added_policy="" status=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod 755 "$policy"
    added_policy=1
  fi
  $sudo apt-get install -y -qq --no-install-recommends "${missing_packages[@]}" >/dev/null || status=$?
  if [ -n "$added_policy" ]; then
    $sudo rm -f "$policy"
  fi
  [ "$status" -eq 0 ] || exit "$status"
  # Nor start at the next boot where systemd runs.
  if [[ " ${missing_packages[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
    $sudo systemctl disable --now prometheus.service >/dev/null 2>&1 || true
  fi
  missing_packages=()
}

missing_packages=()

# What building and running playpod needs everywhere.
need_runtime() {
  need_program Xvfb xvfb
  need_program xauth xauth
  # openh264 builds its assembly with nasm; without it the encoder is silently ~3x slower.
  need_program nasm nasm
  need_program cc gcc
  need_program c++ g++
  need_program pkg-config pkg-config
  # Game audio: the demo's sound server, and the system libpulse and libopus playpod links.
  need_program pulseaudio pulseaudio
  need_file /usr/include/pulse/simple.h libpulse-dev
  need_file /usr/include/opus/opus.h libopus-dev
}

# What the tests need on top: an independent decoder, a real browser and its driver.
need_test_tools() {
  need_runtime
  need_program ffmpeg ffmpeg
  need_program chromium chromium
  need_program chromedriver chromium-driver
  need_program python3 python3
  # The chart checks make a virtualenv; Debian's python3 needs python3-venv for that.
  if command -v python3 >/dev/null 2>&1 && ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    missing_packages+=(python3-venv)
  fi
  need_program curl curl
  # A real Prometheus server scraping a running pod (tests/tests/prometheus.rs).
  need_program prometheus prometheus
}

# What benches/compare.sh needs on top of the runtime: FFmpeg (the peer, and the independent decoder
# of both streams) and matplotlib for the chart, in the system Python that Debian's package serves.
need_compare_tools() {
  need_runtime
  need_program ffmpeg ffmpeg
  need_program python3 python3
  if ! { python3 -c 'import matplotlib' || /usr/bin/python3 -c 'import matplotlib'; } >/dev/null 2>&1; then
    missing_packages+=(python3-matplotlib)
  fi
}

# cargo-fuzz (the fuzz smoke of test.sh), from crates.io when missing. Its targets build on stable
# with `--sanitizer none`.
install_cargo_fuzz() {
  cargo fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked
}

# cargo-deny (the licence and source check of test.sh, deny.toml), from crates.io when missing.
install_cargo_deny() {
  cargo deny --version >/dev/null 2>&1 || cargo install cargo-deny --version 0.20.2 --locked
}
