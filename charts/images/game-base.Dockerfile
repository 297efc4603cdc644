# syntax=docker/dockerfile:1
# The game side of a session: Xvfb (framebuffer on the shared in-memory volume) and PulseAudio
# (null sink "game"), started by playpod-game-entrypoint, which then runs the game given as
# arguments. Carries the playpod binary for the built-in `playpod game --scene pong`.
# Base other games on it:  FROM ghcr.io/playpod/game-base:0.1.0  + the emulator or game.
# Build from the repository root:
#   docker build -f charts/images/game-base.Dockerfile -t ghcr.io/playpod/game-base:0.1.0 .
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
# nasm: openh264's assembly. pkg-config, libopus-dev and libpulse-dev: the system libopus and
# libpulse that playpod links (audio).
RUN apt-get update \
 && apt-get install -y --no-install-recommends nasm pkg-config libopus-dev libpulse-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p playpod --bin playpod \
 && strip target/release/playpod

FROM debian:bookworm-slim
# xkb-data and x11-xkb-utils: Xvfb compiles its keymap at start (XTEST key events need it).
RUN apt-get update \
 && apt-get install -y --no-install-recommends xvfb x11-xkb-utils xkb-data pulseaudio \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 playpod \
 && useradd --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin playpod \
 && install -d -o 10001 -g 10001 /run/playpod /run/playpod/fb /run/playpod/pulse
COPY --from=build /src/target/release/playpod /usr/local/bin/playpod
COPY --chmod=0755 charts/images/game-entrypoint.sh /usr/local/bin/playpod-game-entrypoint
ENV DISPLAY=:0 \
    PLAYPOD_FB_DIR=/run/playpod/fb \
    PULSE_RUNTIME_PATH=/run/playpod/pulse \
    HOME=/tmp
USER 10001:10001
HEALTHCHECK --interval=30s --timeout=3s CMD ["/bin/sh", "-c", "test -S /tmp/.X11-unix/X0"]
ENTRYPOINT ["/usr/local/bin/playpod-game-entrypoint"]
CMD ["playpod", "game", "--display", ":0", "--scene", "pong"]
