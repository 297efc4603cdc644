#!/usr/bin/env python3
"""Side by side, in one run: CPU time per frame of `playpod pod` and of the platform's FFmpeg peer
(x11grab + libx264 ultrafast/zerolatency/yuv420p), on the same Xvfb display showing the same
content (the built-in plasma: every pixel changes every frame), 768x768 at 60 fps, 2.5 Mbit/s.

    cargo build --release -p playpod -p playpod-benches
    python3 benches/compare.py [--seconds 15] [--rounds 2] [--scene plasma]

Each round runs playpod (with one WebSocket viewer attached, so it really encodes and sends)
and then FFmpeg, measuring user+system CPU of the process over the same window after a warm-up.
Writes a markdown table to stdout and to bench-results/compare.md.
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(ROOT, "target", "release")
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metric(port, name):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    m = re.search(rf"^playpod_{name}_total (\d+)", text, re.M)
    return int(m.group(1))


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def measure_playpod(display, fb, size, seconds, warmup, bitrate_kbps):
    port = free_port()
    token = "benchbenchbenchbench0123456789ab"
    pod = subprocess.Popen(
        [os.path.join(RELEASE, "playpod"), "pod", "--display", display, "--framebuffer", fb,
         "--listen", f"127.0.0.1:{port}", "--token", token, "--size", size,
         "--bitrate-kbps", str(bitrate_kbps)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.05)
        viewer = subprocess.Popen(
            [os.path.join(RELEASE, "ws-viewer"), f"ws://127.0.0.1:{port}/play/{token}/video",
             str(int(warmup + seconds + 2))], stdout=subprocess.PIPE)
        time.sleep(warmup)
        c0, f0, b0, t0 = cpu_seconds(pod.pid), metric(port, "frames_encoded"), metric(port, "encoded_bytes"), time.time()
        time.sleep(seconds)
        c1, f1, b1, t1 = cpu_seconds(pod.pid), metric(port, "frames_encoded"), metric(port, "encoded_bytes"), time.time()
        seen = json.loads(viewer.communicate()[0])
    finally:
        stop(pod)
    frames = f1 - f0
    return {"cpu_s": c1 - c0, "frames": frames, "wall": t1 - t0, "bits": (b1 - b0) * 8,
            "viewer_frames": seen["frames"]}


def progress_frames(path):
    try:
        with open(path) as f:
            found = re.findall(r"^frame=(\d+)", f.read(), re.M)
        return int(found[-1]) if found else 0
    except FileNotFoundError:
        return 0


def measure_ffmpeg(display, size, seconds, warmup, bitrate_kbps, workdir):
    progress = os.path.join(workdir, "ffmpeg.progress")
    out = os.path.join(workdir, "ffmpeg.h264")
    ff = subprocess.Popen(
        ["ffmpeg", "-v", "error", "-f", "x11grab", "-framerate", "60", "-video_size", size,
         "-i", display, "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
         "-pix_fmt", "yuv420p", "-b:v", f"{bitrate_kbps}k", "-progress", progress, "-flush_packets", "1", "-y",
         "-f", "h264", out],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(warmup)
        c0, f0, s0, t0 = cpu_seconds(ff.pid), progress_frames(progress), os.path.getsize(out), time.time()
        time.sleep(seconds)
        c1, f1, s1, t1 = cpu_seconds(ff.pid), progress_frames(progress), os.path.getsize(out), time.time()
    finally:
        stop(ff)
    return {"cpu_s": c1 - c0, "frames": f1 - f0, "wall": t1 - t0, "bits": (s1 - s0) * 8}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--warmup", type=float, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--scene", default="plasma", choices=["plasma", "pong"])
    ap.add_argument("--bitrate-kbps", type=int, default=2500)
    args = ap.parse_args()
    for tool in ["Xvfb", "ffmpeg"]:
        if not shutil.which(tool):
            sys.exit(f"compare.py: {tool} is missing (apt-get install xvfb ffmpeg)")
    for binary in ["playpod", "ws-viewer"]:
        if not os.path.exists(os.path.join(RELEASE, binary)):
            sys.exit("compare.py: build first: cargo build --release -p playpod -p playpod-benches")
    size = "768x768"
    workdir = tempfile.mkdtemp(prefix="playpod-compare-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    display_n = next(n for n in range(410, 500) if not os.path.exists(f"/tmp/.X11-unix/X{n}"))
    display = f":{display_n}"
    xvfb = subprocess.Popen(["Xvfb", display, "-screen", "0", f"{size}x24", "-nolisten", "tcp", "-fbdir", workdir],
                            stderr=subprocess.DEVNULL)
    fb = os.path.join(workdir, "Xvfb_screen0")
    game = None
    try:
        for _ in range(200):
            if os.path.exists(fb) and os.path.exists(f"/tmp/.X11-unix/X{display_n}"):
                break
            time.sleep(0.05)
        game = subprocess.Popen([os.path.join(RELEASE, "playpod"), "game", "--display", display, "--scene", args.scene],
                                stderr=subprocess.DEVNULL)
        time.sleep(1)
        runs = {"playpod": [], "ffmpeg": []}
        for r in range(args.rounds):
            runs["playpod"].append(measure_playpod(display, fb, size, args.seconds, args.warmup, args.bitrate_kbps))
            runs["ffmpeg"].append(measure_ffmpeg(display, size, args.seconds, args.warmup, args.bitrate_kbps, workdir))
    finally:
        if game:
            stop(game)
        stop(xvfb)
        shutil.rmtree(workdir, ignore_errors=True)

    def total(name, key):
        return sum(run[key] for run in runs[name])

    rows = {}
    for name in runs:
        frames, wall, cpu = total(name, "frames"), total(name, "wall"), total(name, "cpu_s")
        rows[name] = {
            "ms_per_frame": cpu * 1000 / max(frames, 1),
            "core_share": cpu / wall,
            "fps": frames / wall,
            "kbps": total(name, "bits") / wall / 1000,
        }
    ratio = rows["playpod"]["ms_per_frame"] / rows["ffmpeg"]["ms_per_frame"]
    lines = [
        f"Scene `{args.scene}`, {size} at 60 fps, target {args.bitrate_kbps} kbit/s, "
        f"{args.rounds} x {args.seconds:g} s each, {os.cpu_count()} CPUs, measured in one run.",
        "",
        "| | CPU ms/frame | share of one core | fps | kbit/s |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, label in [("playpod", "playpod pod (in place + yuvutils + openh264)"),
                        ("ffmpeg", "ffmpeg x11grab + libx264 ultrafast")]:
        r = rows[name]
        lines.append(f"| {label} | {r['ms_per_frame']:.2f} | {r['core_share'] * 100:.1f} % | {r['fps']:.1f} | {r['kbps']:.0f} |")
    lines += ["", f"playpod / ffmpeg CPU per frame: **{ratio:.2f}x** (target: at most 0.35x)"]
    text = "\n".join(lines)
    print(text)
    os.makedirs(os.path.join(ROOT, "bench-results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench-results", "compare.md"), "w") as f:
        f.write(text + "\n")
    print(json.dumps(runs), file=sys.stderr)


if __name__ == "__main__":
    main()
