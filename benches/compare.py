#!/usr/bin/env python3
"""Side by side, in one run, on the same Xvfb display showing the same content (by default the
built-in plasma, stamped: every pixel changes every frame; `--scene pong`: the demo game, not
stamped, no quality scores), 768x768 at 60 fps, 2.5 Mbit/s:

  - `playpod pod` (reads the framebuffer in place; one WebSocket viewer attached, so it really
    encodes and sends) and the platform's FFmpeg peer (x11grab -draw_mouse 0 + libx264
    ultrafast/zerolatency/yuv420p): CPU ms per frame, share of one core, achieved fps, kbit/s,
    and PSNR/SSIM of the decoded stream against the exact source frames;
  - the cost of fan-out: playpod with 1, 10 and 50 spectators (one `ws-viewer --connections N`
    process): the pod's CPU per frame, the encoder's p99 and frame ready -> ring p99 over the
    measuring window (from the /metrics histogram buckets, interpolated like Prometheus'
    histogram_quantile), and whether every viewer got every frame.

    benches/compare.sh [--seconds 15] [--rounds 2] [--fanout 1,10,50 | --no-fanout] [--scene plasma]
                       [--paused]

`--paused` stops the game (SIGSTOP) once it has drawn its first second: a paused game, the
picture still. playpod then sends a frame a second (nothing drawn: X DAMAGE; nothing encoded);
a third row runs it with `--every-frame`, encoding every tick as FFmpeg does.

Frames per second and CPU per frame count the stream's ticks (60 a second): playpod sends no
frame on a tick with nothing new on the screen, so a viewer's picture is as current as with a
frame on every tick; how many it really encoded is said under the table.

(compare.sh installs what is missing and builds the release binaries, then runs this script with
the same arguments; `python3 benches/compare.py ...` works once they are there.)

Each round runs playpod, then FFmpeg, then each fan-out step, one after the other, measuring each
process's user+system CPU over the same window after a warm-up. Quality: the game stamps each
frame's number into its top-left corner (`playpod game --stamp`); the viewer saves playpod's
stream (`ws-viewer --save`), FFmpeg writes its own; both are decoded by FFmpeg and scored by the
`quality` bin, which regenerates each decoded frame's source from its stamp (whole streams,
warm-up included; frames whose stamp does not read are counted, not scored). Quality is scored
for the plasma only (the pong scene depends on timing, it cannot be regenerated).

Writes markdown tables to stdout and bench-results/compare.md, and a chart to
bench-results/compare.png (matplotlib, if installed; compare.sh installs it).
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
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(ROOT, "target", "release")
RESULTS = os.path.join(ROOT, "bench-results")
TICK = os.sysconf("SC_CLK_TCK")
SIZE = "768x768"
FPS = 60
TOKEN = "benchbenchbenchbench0123456789ab"


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port):
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


def metric(text, name):
    """A counter or gauge of the pod's /metrics text."""
    m = re.search(rf"^playpod_{name}(?:_total)? ([0-9.e+-]+)$", text, re.M)
    if not m:
        raise RuntimeError(f"/metrics has no playpod_{name}")
    return float(m.group(1))


def buckets(text, name):
    """Cumulative histogram buckets [(upper bound, count)], +Inf last."""
    found = [(float(le), float(v)) for le, v in
             re.findall(rf'^playpod_{name}_bucket\{{le="([^"]+)"\}} ([0-9.e+-]+)$', text, re.M)]
    if not found:
        raise RuntimeError(f"/metrics has no histogram playpod_{name}")
    return sorted(found)


def bucket_delta(before, after):
    return [(le, a - b) for (le, a), (_, b) in zip(after, before)]


def histogram_quantile(q, cumulative):
    """Prometheus' histogram_quantile over cumulative buckets: linear inside the bucket that
    holds the rank; the first bucket starts at 0; a rank in +Inf gives the highest finite bound."""
    total = cumulative[-1][1] if cumulative else 0
    if total <= 0:
        return None
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in cumulative:
        if count >= rank:
            if le == float("inf"):
                return prev_le
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return prev_le


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def readyz(port):
    """The pod's /readyz JSON (also when it answers 503)."""
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5).read()
    except urllib.error.HTTPError as err:
        body = err.read()
    return json.loads(body)


def start_pod(display, fb, bitrate_kbps, extra=(), log=None):
    """`playpod pod` on the framebuffer, with `extra` arguments (such as `--encoder openh264`);
    its log is appended to the file `log`, if given."""
    port = free_port()
    with open(log or os.devnull, "ab") as stderr:
        pod = subprocess.Popen(
            [os.path.join(RELEASE, "playpod"), "pod", "--display", display, "--framebuffer", fb,
             "--listen", f"127.0.0.1:{port}", "--token", TOKEN, "--size", SIZE, "--fps", str(FPS),
             "--bitrate-kbps", str(bitrate_kbps), *extra],
            stdout=subprocess.DEVNULL, stderr=stderr)
    for _ in range(200):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return pod, port
        except OSError:
            if pod.poll() is not None:
                break
            time.sleep(0.05)
    stop(pod)
    raise RuntimeError("playpod pod did not come up" + (f" (its log: {log})" if log else " (run it by hand to see why)"))


def start_viewer(port, seconds, connections=1, save=None):
    cmd = [os.path.join(RELEASE, "ws-viewer"), f"ws://127.0.0.1:{port}/play/{TOKEN}/video",
           f"{seconds:g}", "--connections", str(connections)]
    if save:
        cmd += ["--save", save]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE)


def viewer_result(viewer):
    out = viewer.communicate()[0]
    try:
        return json.loads(out)
    except ValueError:
        raise RuntimeError(f"ws-viewer printed no totals (exit {viewer.returncode})")


def ticks(m0, m1):
    """The stream's ticks between two scrapes: frames encoded and ticks with nothing new."""
    return sum(metric(m1, name) - metric(m0, name) for name in ("frames_encoded", "frames_unchanged"))


def measure_playpod(display, fb, seconds, warmup, bitrate_kbps, save, extra=()):
    pod, port = start_pod(display, fb, bitrate_kbps, extra)
    try:
        viewer = start_viewer(port, warmup + seconds + 2, save=save)
        time.sleep(warmup)
        m0, c0, t0 = scrape(port), cpu_seconds(pod.pid), time.time()
        time.sleep(seconds)
        m1, c1, t1 = scrape(port), cpu_seconds(pod.pid), time.time()
        seen = viewer_result(viewer)
    finally:
        stop(pod)
    return {"cpu_s": c1 - c0, "wall": t1 - t0, "frames": ticks(m0, m1),
            "encoded": metric(m1, "frames_encoded") - metric(m0, "frames_encoded"),
            "bits": (metric(m1, "encoded_bytes") - metric(m0, "encoded_bytes")) * 8,
            "viewer_frames": seen["frames"], "viewer_missed": seen["missed"]}


def progress_frames(path):
    try:
        with open(path) as f:
            found = re.findall(r"^frame=(\d+)", f.read(), re.M)
        return int(found[-1]) if found else 0
    except FileNotFoundError:
        return 0


def measure_ffmpeg(display, seconds, warmup, bitrate_kbps, workdir, out):
    progress = os.path.join(workdir, "ffmpeg.progress")
    errors = os.path.join(workdir, "ffmpeg.log")
    # -draw_mouse 0: playpod's framebuffer holds no cursor, so neither picture does.
    with open(errors, "w") as stderr:
        ff = subprocess.Popen(
            ["ffmpeg", "-v", "error", "-f", "x11grab", "-draw_mouse", "0", "-framerate", str(FPS),
             "-video_size", SIZE, "-i", display, "-c:v", "libx264", "-preset", "ultrafast",
             "-tune", "zerolatency", "-pix_fmt", "yuv420p", "-b:v", f"{bitrate_kbps}k",
             "-progress", progress, "-stats_period", "0.1", "-flush_packets", "1", "-y", "-f", "h264",
             out],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        time.sleep(warmup)
        # On a loaded machine FFmpeg can take longer to write its first bytes; if it died, say why.
        deadline = time.time() + 10
        while not os.path.exists(out) and ff.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        if not os.path.exists(out) or ff.poll() is not None:
            with open(errors, errors="replace") as f:
                tail = " | ".join(f.read().splitlines()[-5:])
            raise RuntimeError(f"ffmpeg wrote nothing in {warmup} s (exit {ff.poll()}): {tail}")
        c0, f0, s0, t0 = cpu_seconds(ff.pid), progress_frames(progress), os.path.getsize(out), time.time()
        time.sleep(seconds)
        c1, f1, s1, t1 = cpu_seconds(ff.pid), progress_frames(progress), os.path.getsize(out), time.time()
    finally:
        # SIGTERM: FFmpeg finishes the file cleanly.
        stop(ff)
    return {"cpu_s": c1 - c0, "frames": f1 - f0, "wall": t1 - t0, "bits": (s1 - s0) * 8}


def measure_fanout(display, fb, seconds, warmup, bitrate_kbps, connections, extra=(), log=None):
    pod, port = start_pod(display, fb, bitrate_kbps, extra, log)
    try:
        viewer = start_viewer(port, warmup + seconds + 2, connections=connections)
        time.sleep(warmup)
        m0, c0, v0, t0 = scrape(port), cpu_seconds(pod.pid), cpu_seconds(viewer.pid), time.time()
        time.sleep(seconds)
        m1, c1, v1, t1 = scrape(port), cpu_seconds(pod.pid), cpu_seconds(viewer.pid), time.time()
        seen = viewer_result(viewer)
        ready = readyz(port)
    finally:
        stop(pod)
    counter = lambda name: metric(m1, name) - metric(m0, name)  # noqa: E731
    return {
        "cpu_s": c1 - c0, "viewer_cpu_s": v1 - v0, "wall": t1 - t0,
        "frames": ticks(m0, m1), "bits": counter("encoded_bytes") * 8,
        "keyframes": counter("keyframes"), "lags": counter("viewer_lags"),
        "viewers": metric(m1, "viewers"),
        "encode": bucket_delta(buckets(m0, "encode_seconds"), buckets(m1, "encode_seconds")),
        "ready": bucket_delta(buckets(m0, "frame_ready_to_ring_seconds"),
                              buckets(m1, "frame_ready_to_ring_seconds")),
        "convert": bucket_delta(buckets(m0, "convert_seconds"), buckets(m1, "convert_seconds")),
        "encode_sum": metric(m1, "encode_seconds_sum") - metric(m0, "encode_seconds_sum"),
        "viewer": seen,
        "readyz": ready,
    }


def score(stream, seed):
    """Decodes `stream` with FFmpeg and scores it with the quality bin."""
    decode = subprocess.Popen(
        ["ffmpeg", "-v", "error", "-i", stream, "-fps_mode", "passthrough", "-f", "rawvideo",
         "-pix_fmt", "yuv420p", "-"], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    quality = subprocess.run(
        [os.path.join(RELEASE, "quality"), "--size", SIZE, "--seed", str(seed), "-"],
        stdin=decode.stdout, capture_output=True, text=True)
    decode.stdout.close()
    decode.wait()
    if quality.returncode != 0 or decode.returncode != 0:
        raise RuntimeError(f"scoring {os.path.basename(stream)} failed: {quality.stderr.strip()}")
    return json.loads(quality.stdout)


def merge_quality(scores):
    """Several rounds' scores: means weighted by scored frames, minima over all."""
    scored = sum(s["scored"] for s in scores)
    out = {"frames": sum(s["frames"] for s in scores), "scored": scored,
           "unreadable": sum(s["unreadable"] for s in scores),
           "repeats": sum(s["repeats"] for s in scores)}
    for key in ["psnr_y", "psnr_yuv", "ssim_y"]:
        parts = [(s[key]["mean"], s["scored"]) for s in scores if s[key]["mean"] is not None]
        out[key] = sum(m * n for m, n in parts) / scored if scored else None
        mins = [s[key]["min"] for s in scores if s[key].get("min") is not None]
        out[key + "_min"] = min(mins) if mins else None
    return out


def ms(seconds):
    return None if seconds is None else seconds * 1000


def fmt(value, spec, missing="n/a"):
    return missing if value is None else format(value, spec)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=15, help="measuring window of each run (15)")
    ap.add_argument("--warmup", type=float, default=3, help="seconds before each window (3)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of every run (2)")
    ap.add_argument("--scene", default="plasma", choices=["plasma", "pong"],
                    help="what the game shows (plasma; quality is scored for the plasma only)")
    ap.add_argument("--seed", type=int, default=1, help="the game's seed (1)")
    ap.add_argument("--bitrate-kbps", type=int, default=2500)
    ap.add_argument("--fanout", default="1,10,50", help="spectator counts of the fan-out runs (1,10,50)")
    ap.add_argument("--no-fanout", action="store_true", help="skip the fan-out runs")
    ap.add_argument("--paused", action="store_true",
                    help="stop the game after its first second (a paused game) and add a run of "
                         "playpod --every-frame")
    ap.add_argument("--keep", action="store_true", help="keep the work directory with the streams")
    ap.add_argument("--pod-arg", action="append", default=[], metavar="ARG",
                    help="an argument for every `playpod pod` of the run, e.g. --pod-arg=--pin-core=1 "
                         "(repeatable)")
    args = ap.parse_args()
    if args.seconds <= 0 or args.warmup < 0 or args.rounds < 1:
        ap.error("--seconds must be above 0, --warmup at least 0, --rounds at least 1")
    fanout = []
    if not args.no_fanout:
        try:
            fanout = [int(n) for n in args.fanout.split(",") if n.strip()]
        except ValueError:
            ap.error(f"--fanout takes counts separated by commas, such as 1,10,50, not {args.fanout!r}")
        if not fanout or any(n < 1 or n > 10_000 for n in fanout):
            ap.error("--fanout counts must be between 1 and 10000")
    for tool, package in [("Xvfb", "xvfb"), ("ffmpeg", "ffmpeg")]:
        if not shutil.which(tool):
            sys.exit(f"compare.py: {tool} is missing; run benches/compare.sh, which installs it "
                     f"(or apt-get install {package})")
    for binary in ["playpod", "ws-viewer", "quality"]:
        if not os.path.exists(os.path.join(RELEASE, binary)):
            sys.exit("compare.py: build first: cargo build --release -p playpod -p playpod-benches "
                     "(benches/compare.sh does it)")
    scored_scene = args.scene == "plasma"

    workdir = tempfile.mkdtemp(prefix="playpod-compare-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    display_n = next(n for n in range(410, 500)
                     if not os.path.exists(f"/tmp/.X11-unix/X{n}") and not os.path.exists(f"/tmp/.X{n}-lock"))
    display = f":{display_n}"
    xvfb = subprocess.Popen(["Xvfb", display, "-screen", "0", f"{SIZE}x24", "-nolisten", "tcp", "-fbdir", workdir],
                            stderr=subprocess.DEVNULL)
    fb = os.path.join(workdir, "Xvfb_screen0")
    game = None
    runs = {"playpod": [], "ffmpeg": []}
    if args.paused:
        runs["every_frame"] = []
    fan = {n: [] for n in fanout}
    streams = {"playpod": [], "ffmpeg": []}
    started = time.time()
    try:
        for _ in range(200):
            if os.path.exists(fb) and os.path.exists(f"/tmp/.X11-unix/X{display_n}"):
                break
            time.sleep(0.05)
        else:
            raise RuntimeError(f"Xvfb {display} did not start")
        game = subprocess.Popen(
            [os.path.join(RELEASE, "playpod"), "game", "--display", display, "--scene", args.scene,
             "--seed", str(args.seed), "--size", SIZE, "--fps", str(FPS), "--no-sound"]
            # The stamp carries the frame number the scoring needs; pong stays as players see it.
            + (["--stamp"] if scored_scene else []),
            stderr=subprocess.DEVNULL)
        time.sleep(1)
        if args.paused:
            game.send_signal(signal.SIGSTOP)
        for r in range(args.rounds):
            print(f"round {r + 1}/{args.rounds}: playpod", file=sys.stderr)
            save = os.path.join(workdir, f"playpod-{r}.h264")
            runs["playpod"].append(measure_playpod(display, fb, args.seconds, args.warmup, args.bitrate_kbps, save,
                                                   args.pod_arg))
            streams["playpod"].append(save)
            if args.paused:
                print(f"round {r + 1}/{args.rounds}: playpod --every-frame", file=sys.stderr)
                save = os.path.join(workdir, f"every-frame-{r}.h264")
                runs["every_frame"].append(measure_playpod(display, fb, args.seconds, args.warmup,
                                                           args.bitrate_kbps, save, ["--every-frame", *args.pod_arg]))
            print(f"round {r + 1}/{args.rounds}: ffmpeg", file=sys.stderr)
            out = os.path.join(workdir, f"ffmpeg-{r}.h264")
            runs["ffmpeg"].append(measure_ffmpeg(display, args.seconds, args.warmup, args.bitrate_kbps, workdir, out))
            streams["ffmpeg"].append(out)
            for n in fanout:
                print(f"round {r + 1}/{args.rounds}: playpod with {n} spectator(s)", file=sys.stderr)
                fan[n].append(measure_fanout(display, fb, args.seconds, args.warmup, args.bitrate_kbps, n,
                                             args.pod_arg))
        if game.poll() is not None:
            raise RuntimeError("the game stopped during the run")
        if args.paused:
            game.send_signal(signal.SIGCONT)
        stop(game)
        stop(xvfb)
        measured = time.time() - started
        # Scoring after the measurements, so that it takes no CPU from them.
        quality = {}
        if scored_scene:
            for name in streams:
                print(f"scoring {name}", file=sys.stderr)
                quality[name] = merge_quality([score(s, args.seed) for s in streams[name]])
        scored_in = time.time() - started - measured
    finally:
        if game:
            if args.paused:
                game.send_signal(signal.SIGCONT)
            stop(game)
        stop(xvfb)
        if args.keep:
            print(f"compare.py: streams kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    def total(items, key):
        return sum(item[key] for item in items)

    rows = {}
    for name, items in runs.items():
        frames, wall, cpu = total(items, "frames"), total(items, "wall"), total(items, "cpu_s")
        rows[name] = {"ms_per_frame": cpu * 1000 / max(frames, 1), "core_share": cpu / wall,
                      "fps": frames / wall, "kbps": total(items, "bits") / wall / 1000}
    ratio = rows["playpod"]["ms_per_frame"] / rows["ffmpeg"]["ms_per_frame"]

    lines = [
        f"Scene `{args.scene}` (seed {args.seed}{', stamped' if scored_scene else ''}"
        f"{', paused: the game stopped after its first second' if args.paused else ''}), {SIZE} at {FPS} fps, target {args.bitrate_kbps} kbit/s, "
        f"{args.rounds} round(s) x {args.seconds:g} s windows after {args.warmup:g} s warm-up, "
        f"{os.cpu_count()} CPUs; one run, one display, the same content for both."
        + (f" Every `playpod pod` given {' '.join(args.pod_arg)}." if args.pod_arg else ""),
        "",
        "| | CPU ms/frame | share of one core | fps | kbit/s | PSNR-Y dB (min) | PSNR-YUV dB | SSIM-Y (min) | frames scored / unreadable |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    labels = [("playpod", "playpod pod (framebuffer in place + yuvutils + openh264)"),
              ("ffmpeg", "ffmpeg x11grab + libx264 ultrafast/zerolatency")]
    if args.paused:
        labels.insert(1, ("every_frame", "playpod pod --every-frame"))
    for name, label in labels:
        r = rows[name]
        q = quality.get(name)
        if q:
            quality_cells = (f"{fmt(q['psnr_y'], '.2f')} ({fmt(q['psnr_y_min'], '.2f')}) | {fmt(q['psnr_yuv'], '.2f')} | "
                             f"{fmt(q['ssim_y'], '.4f')} ({fmt(q['ssim_y_min'], '.4f')}) | {q['scored']} / {q['unreadable']}")
        else:
            quality_cells = "n/a | n/a | n/a | n/a"
        lines.append(f"| {label} | {r['ms_per_frame']:.2f} | {r['core_share'] * 100:.1f} % | {r['fps']:.1f} | "
                     f"{r['kbps']:.0f} | {quality_cells} |")
    encoded = total(runs["playpod"], "encoded")
    lines += ["", f"playpod / ffmpeg CPU per frame: **{ratio:.2f}x** (target: at most 0.35x)",
              f"playpod encoded {encoded:.0f} of its {total(runs['playpod'], 'frames'):.0f} ticks; the "
              "others had nothing new on the screen and sent nothing."]
    if args.paused:
        every = rows["every_frame"]["ms_per_frame"] / rows["ffmpeg"]["ms_per_frame"]
        lines.append(f"playpod --every-frame / ffmpeg CPU per frame: **{every:.2f}x**")
    if quality:
        gap = quality["playpod"]["psnr_y"] - quality["ffmpeg"]["psnr_y"]
        lines.append(f"PSNR-Y playpod - ffmpeg: **{gap:+.2f} dB** (target: no worse than -0.5 dB)")
    lines += [
        "",
        "playpod reads Xvfb's framebuffer in place (`playpod pod --framebuffer`); FFmpeg captures the same "
        "display through x11grab (`-draw_mouse 0`, as the framebuffer holds no cursor). CPU is user+system "
        "time of each process over the window; fps and kbit/s are what each encoder produced in it.",
    ]
    if quality:
        lines.append(
            "Quality: each whole stream (warm-up included) decoded by FFmpeg; every decoded frame scored "
            "against its source, regenerated from the frame number stamped in it and converted with the "
            "textbook BT.601 formulas (`quality` bin). PSNR: mean of per-frame values; YUV = (6 Y + U + V) / 8; "
            "SSIM: 8x8 windows at a stride of 4, as x264 and FFmpeg's `ssim` filter. Frames whose stamp "
            "does not read are not scored.")
    else:
        lines.append("Quality: n/a for the pong scene (its frames depend on timing and cannot be regenerated); "
                     "use `--scene plasma`.")

    fan_rows = []
    if fanout:
        lines += ["", f"Fan-out: playpod with N spectators (one `ws-viewer --connections N` process on the same "
                      f"machine), {args.rounds} x {args.seconds:g} s windows:", "",
                  "| spectators | pod CPU ms/frame | share of one core | fps | encode mean / p99 ms | "
                  "ready -> ring p99 ms | frames per viewer (min-max) | frames missed | viewer lags | viewer process CPU |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for n in fanout:
            items = fan[n]
            frames, wall, cpu = total(items, "frames"), total(items, "wall"), total(items, "cpu_s")
            enc = [(le, sum(item["encode"][i][1] for item in items)) for i, (le, _) in enumerate(items[0]["encode"])]
            rdy = [(le, sum(item["ready"][i][1] for item in items)) for i, (le, _) in enumerate(items[0]["ready"])]
            enc_count = enc[-1][1]
            row = {
                "n": n, "ms_per_frame": cpu * 1000 / max(frames, 1), "core_share": cpu / wall, "fps": frames / wall,
                "encode_mean": total(items, "encode_sum") / enc_count * 1000 if enc_count else None,
                "encode_p99": ms(histogram_quantile(0.99, enc)),
                "ready_p99": ms(histogram_quantile(0.99, rdy)),
                "min_frames": min(item["viewer"]["min_frames"] for item in items),
                "max_frames": max(item["viewer"]["max_frames"] for item in items),
                "missed": sum(item["viewer"]["missed"] for item in items),
                "failed": sum(item["viewer"]["failed"] for item in items),
                "lags": total(items, "lags"),
                "viewer_share": total(items, "viewer_cpu_s") / wall,
            }
            fan_rows.append(row)
            lines.append(
                f"| {n} | {row['ms_per_frame']:.2f} | {row['core_share'] * 100:.1f} % | {row['fps']:.1f} | "
                f"{fmt(row['encode_mean'], '.2f')} / {fmt(row['encode_p99'], '.2f')} | {fmt(row['ready_p99'], '.2f')} | "
                f"{row['min_frames']}-{row['max_frames']} | {row['missed']:.0f}"
                f"{' (' + str(row['failed']) + ' failed)' if row['failed'] else ''} | {row['lags']:.0f} | "
                f"{row['viewer_share'] * 100:.1f} % |")
        first, last = fan_rows[0], fan_rows[-1]
        if first["encode_p99"] and last["encode_p99"] is not None and last is not first:
            change = (last["encode_p99"] / first["encode_p99"] - 1) * 100
            lines += ["", f"Encoder p99 with {last['n']} spectators vs {first['n']}: **{change:+.1f} %** "
                          f"(target: under +5 % at 50)"]
        lines += ["", "p99 from the /metrics histogram buckets' increase over the window, interpolated inside "
                      "the bucket like Prometheus' `histogram_quantile` (bucket bounds 3, 4, 5, 6, 8, 10 ms: a p99 "
                      "is good to about a bucket's width). Frames per viewer are over each viewer's whole "
                      "connection (warm-up included); frames missed are gaps in the sequence numbers each "
                      "viewer received (0: every viewer got every frame from its first keyframe on)."]
    lines += ["", f"Measuring took {measured:.0f} s, scoring {scored_in:.0f} s."]
    text = "\n".join(lines)
    print(text)
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "compare.md"), "w") as f:
        f.write(text + "\n")
    chart(rows, quality, fan_rows, args)
    print(json.dumps({"runs": runs, "quality": quality, "fanout": fan_rows}), file=sys.stderr)


def chart(rows, quality, fan_rows, args):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("compare.py: matplotlib is missing, so no chart: run benches/compare.sh (it installs "
              "python3-matplotlib), or apt-get install python3-matplotlib", file=sys.stderr)
        return
    names = ["playpod", "ffmpeg"]
    colours = ["#2a7ab0", "#d9822b"]
    panels = 2 + (2 if quality else 0) + (1 if fan_rows else 0)
    fig, axes = plt.subplots(1, panels, figsize=(3.6 * panels, 4.0))
    ax = axes[0]
    bars = ax.bar(names, [rows[n]["ms_per_frame"] for n in names], color=colours)
    ax.bar_label(bars, fmt="%.2f")
    ax.set_ylim(0, max(rows[n]["ms_per_frame"] for n in names) * 1.15)
    ax.axhline(0.35 * rows["ffmpeg"]["ms_per_frame"], color="grey", linestyle=":", linewidth=1,
               label="target: 0.35x ffmpeg")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("CPU per frame (ms)")
    ax = axes[1]
    bars = ax.bar(names, [rows[n]["kbps"] for n in names], color=colours)
    ax.bar_label(bars, fmt="%.0f")
    ax.set_ylim(0, max([rows[n]["kbps"] for n in names] + [args.bitrate_kbps]) * 1.15)
    ax.axhline(args.bitrate_kbps, color="grey", linestyle=":", linewidth=1)
    ax.set_title("bitrate (kbit/s)")
    panel = 2
    if quality:
        for key, title, digits, floor in [("psnr_y", "PSNR-Y (dB)", "%.2f", 6.0),
                                          ("ssim_y", "SSIM-Y", "%.4f", 0.02)]:
            ax = axes[panel]
            panel += 1
            values = [quality[n][key] for n in names]
            bars = ax.bar(names, values, color=colours)
            ax.bar_label(bars, fmt=digits)
            top = max(values) + floor / 3
            ax.set_ylim(min(values) - floor, min(top, 1.0) if key == "ssim_y" else top)
            ax.set_title(f"{title}, vs the source")
    if fan_rows:
        ax = axes[panel]
        xs = [str(r["n"]) for r in fan_rows]
        ax.plot(xs, [r["encode_p99"] for r in fan_rows], "o-", label="encode p99")
        ax.plot(xs, [r["ready_p99"] for r in fan_rows], "s-", label="ready -> ring p99")
        ax.plot(xs, [r["ms_per_frame"] for r in fan_rows], "^--", label="pod CPU / frame")
        ax.set_xlabel("spectators")
        ax.set_ylabel("ms")
        highest = max(v for r in fan_rows for v in (r["encode_p99"], r["ready_p99"], r["ms_per_frame"])
                      if v is not None)
        ax.set_ylim(0, highest * 1.15)
        ax.legend(fontsize=8, loc="lower right")
        ax.set_title("playpod fan-out")
    fig.suptitle(f"{args.scene}, {SIZE} at {FPS} fps, {args.bitrate_kbps} kbit/s")
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS, "compare.png"), dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    try:
        main()
    except RuntimeError as err:
        sys.exit(f"compare.py: {err}")
