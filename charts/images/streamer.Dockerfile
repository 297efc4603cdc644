# syntax=docker/dockerfile:1
# The playpod image: `playpod pod` streams a session's display (the default command) and
# `playpod control` runs the control plane (the playpod chart's Deployment). Multi-stage,
# runs as UID 10001. Build from the repository root:
#   docker build -f charts/images/streamer.Dockerfile -t ghcr.io/playpod/streamer:0.1.0 .
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
# nasm: openh264's assembly; without it the encoder builds but is ~3x slower. pkg-config,
# libopus-dev and libpulse-dev: the system libopus and libpulse that playpod links (audio).
RUN apt-get update \
 && apt-get install -y --no-install-recommends nasm pkg-config libopus-dev libpulse-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p playpod --bin playpod \
 && strip target/release/playpod

FROM debian:bookworm-slim
# libopus0 and libpulse0: the shared libraries playpod links (the game's sound, recorded from
# PulseAudio and encoded to Opus).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libopus0 libpulse0 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 playpod \
 && useradd --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin playpod
COPY --from=build /src/target/release/playpod /usr/local/bin/playpod
USER 10001:10001
EXPOSE 8080
# Kubernetes uses the pod's probes; this is for plain `docker run` (streamer on 8080).
HEALTHCHECK --interval=30s --timeout=3s \
  CMD ["/bin/bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && grep -q ' 200 ' <&3"]
ENTRYPOINT ["/usr/local/bin/playpod"]
CMD ["pod", "--display", ":0", "--framebuffer", "/run/playpod/fb/Xvfb_screen0", "--listen", "[::]:8080", "--wait-for-display", "60"]
