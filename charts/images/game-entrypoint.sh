#!/bin/sh
# Entrypoint of the playpod game-base image: starts the virtual screen (Xvfb, framebuffer in
# $PLAYPOD_FB_DIR for the streamer to read in place) and the virtual sound card (PulseAudio with
# a null sink "game", socket $PULSE_RUNTIME_PATH/native for the streamer to record), then runs
# the game given as arguments. Ends with the game's exit status; SIGTERM stops all three.
# PulseAudio's own runtime directory is /tmp/pulse, not the socket's: it must be the user's, mode
# 0700, and a session pod's shared volume is an emptyDir owned by root (group the pod's fsGroup,
# mode 2777), which PulseAudio refuses.
#   playpod-game-entrypoint retroarch -L core.so rom.nes
set -eu

display=${DISPLAY:-:0}
screen=${PLAYPOD_SCREEN:-768x768x24}
fb_dir=${PLAYPOD_FB_DIR:-/run/playpod/fb}
pulse_dir=${PULSE_RUNTIME_PATH:-/run/playpod/pulse}
pulse_private=/tmp/pulse
number=${display#:}
number=${number%%.*}
x_socket=/tmp/.X11-unix/X$number

if [ "$#" -eq 0 ]; then
    echo "playpod-game-entrypoint: no game to run (give its command as arguments)" >&2
    exit 64
fi

mkdir -p "$fb_dir" "$pulse_dir"
mkdir -p -m 0700 "$pulse_private"
export DISPLAY="$display" PULSE_RUNTIME_PATH="$pulse_dir" PULSE_SERVER="unix:$pulse_dir/native"
export PULSE_SINK=game HOME="${HOME:-/tmp}"
# A low latency for the game's own PulseAudio stream (the original platform's setting).
export PULSE_LATENCY_MSEC="${PULSE_LATENCY_MSEC:-30}"

xvfb_pid=
pulse_pid=
game_pid=
stop() {
    for pid in $game_pid $pulse_pid $xvfb_pid; do
        kill -TERM "$pid" 2>/dev/null || true
    done
}
trap 'stop; wait; exit 143' TERM INT

Xvfb "$display" -screen 0 "$screen" -fbdir "$fb_dir" -nolisten tcp &
xvfb_pid=$!
tries=0
until [ -S "$x_socket" ]; do
    tries=$((tries + 1))
    if [ "$tries" -gt 100 ] || ! kill -0 "$xvfb_pid" 2>/dev/null; then
        echo "playpod-game-entrypoint: Xvfb did not start on $display" >&2
        stop
        exit 1
    fi
    sleep 0.1
done

PULSE_RUNTIME_PATH="$pulse_private" pulseaudio --daemonize=no --use-pid-file=no \
    --exit-idle-time=-1 --disallow-exit --log-target=stderr -n \
    --load="module-native-protocol-unix socket=$pulse_dir/native auth-anonymous=1" \
    --load="module-null-sink sink_name=game rate=48000 channels=2 norewinds=1" \
    --load="module-always-sink" &
pulse_pid=$!
tries=0
until [ -S "$pulse_dir/native" ]; do
    tries=$((tries + 1))
    if [ "$tries" -gt 100 ] || ! kill -0 "$pulse_pid" 2>/dev/null; then
        echo "playpod-game-entrypoint: PulseAudio did not start" >&2
        stop
        exit 1
    fi
    sleep 0.1
done

"$@" &
game_pid=$!
status=0
wait "$game_pid" || status=$?
game_pid=
stop
wait || true
exit "$status"
