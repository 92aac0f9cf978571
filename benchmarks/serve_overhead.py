"""What ``edgedet run --serve`` costs the pipeline: FPS with and without the live view.

The same graph and video as ``benchmarks/pipeline_fps.py`` (yolov3-tiny 320x320 with busy random
weights, about 17 detections per frame, on a 640x480 mp4v video; ONNX Runtime CPU, batch 1), run
through :func:`edgedet.runtime.pipeline.run_pipeline` as ``edgedet run`` runs it, in three
configurations, interleaved (the order rotates every repetition) so that drift on a shared machine
hits them alike:

- ``no --serve``: the pipeline without outputs;
- ``--serve, no client``: the same with a :class:`edgedet.runtime.serve.LiveView` listening on a
  free port of 127.0.0.1 and nobody connected: the cost the issue bounds (under 5 %);
- ``--serve, one client on /stream.mjpg``: for information, a separate process reading the MJPEG
  stream as fast as it comes (the live view then draws and JPEG-encodes frames on the client's
  thread; its CPU time competes with the pipeline's).

Each run is wrapped in :class:`edgedet.bench.MachineProbe`, which reports the share of the
machine's CPU time other processes used meanwhile (in the client row that includes the client
process itself). The overhead is given two ways: the ratio of the medians, and the median of the
per-repetition ratios (each repetition's runs follow one another within seconds).

Usage: python benchmarks/serve_overhead.py [--frames 300] [--reps 5] [--imgsz 320]
Writes benchmarks/results/serve.md. Needs torch for the export and the machine probe.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from edgedet.bench import LOAD_FLAG, MachineProbe, cpu_name  # noqa: E402
from edgedet.runtime.api import load_model  # noqa: E402
from edgedet.runtime.backends import physical_cores  # noqa: E402
from edgedet.runtime.pipeline import RunOptions, run_pipeline  # noqa: E402
from edgedet.runtime.serve import LiveView  # noqa: E402
from edgedet.runtime.sources import open_sources  # noqa: E402
from pipeline_fps import SCENES, export_busy_detector, make_video, read_all  # noqa: E402

CONFIGS = ("no --serve", "--serve, no client", "--serve, one client on /stream.mjpg")

# Reads the stream and throws it away, counting the bytes, until killed.
CLIENT = """
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=60) as r:
    while r.read(65536):
        pass
"""


def run_once(model, video: Path, config: str) -> tuple[float, float]:
    """``(FPS, this process's CPU milliseconds per frame)`` of one run in ``config``."""
    live = LiveView("127.0.0.1", 0) if config != CONFIGS[0] else None
    client = None
    try:
        if config == CONFIGS[2]:
            client = subprocess.Popen([sys.executable, "-c", CLIENT, live.url + "stream.mjpg"])
            deadline = time.monotonic() + 30
            while live.clients == 0 and time.monotonic() < deadline:  # connected before the first frame
                time.sleep(0.05)
            assert live.clients == 1, "the client did not connect"
        cpu = os.times()
        summary = run_pipeline(model, open_sources(str(video)), RunOptions(progress=False),
                               say_err=lambda m: None, live=live)
        spent = os.times()
        cpu_ms = (spent.user + spent.system - cpu.user - cpu.system) * 1e3 / max(summary.processed, 1)
        return summary.fps, cpu_ms
    finally:
        if live is not None:
            live.close()
        if client is not None:
            client.kill()
            client.wait()


def publish_us(model, video: Path, calls: int = 20000) -> float:
    """Microseconds one :meth:`LiveView.publish` takes with no client: the per-frame work the writer
    thread does for the live view (median of 20 batches; CPU time, so the machine's load matters less)."""
    frame = read_all(video)[0]
    result = model(frame)
    live = LiveView("127.0.0.1", 0)
    try:
        batches = []
        for _ in range(20):
            start = time.process_time()
            for _ in range(calls // 20):
                live.publish(result, frame, drawn=False, fps=30.0)
            batches.append((time.process_time() - start) / (calls // 20) * 1e6)
        return statistics.median(batches)
    finally:
        live.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "serve.md")
    args = parser.parse_args()
    threads = physical_cores()
    probe = MachineProbe(seconds=0.3)
    fps: dict[str, list[float]] = {c: [] for c in CONFIGS}
    others: dict[str, list[float]] = {c: [] for c in CONFIGS}
    cpu: dict[str, list[float]] = {c: [] for c in CONFIGS}
    gemm: list[float] = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        video = make_video(tmp / "clip.mp4", args.frames)
        graph = export_busy_detector(tmp, args.imgsz, read_all(video)[0], SCENES["street"])
        model = load_model(graph)
        detections = float(np.mean([len(model(f)) for f in read_all(video)[::10]]))
        publish = publish_us(model, video)
        run_once(model, video, CONFIGS[0])  # warm-up: file cache, ORT's first runs
        for rep in range(args.reps):
            order = CONFIGS[rep % 3:] + CONFIGS[:rep % 3]
            for config in order:
                ((value, cpu_ms),), flops, busy = probe.measure(lambda c=config: [run_once(model, video, c)])
                fps[config].append(value)
                cpu[config].append(cpu_ms)
                gemm.append(flops)
                if busy is not None:
                    others[config].append(busy)
            print(f"  rep {rep + 1}: " + ", ".join(f"{c}: {fps[c][-1]:.1f}" for c in CONFIGS), flush=True)
        model.close()
    load_after = os.getloadavg()[0]

    base = statistics.median(fps[CONFIGS[0]])
    lines = [
        "# `edgedet run --serve`: what the live view costs the pipeline",
        "",
        f"`python benchmarks/serve_overhead.py --frames {args.frames} --reps {args.reps} --imgsz {args.imgsz}`: "
        f"yolov3-tiny {args.imgsz}x{args.imgsz} (busy random weights, about {detections:.0f} detections per "
        f"frame), ONNX Runtime CPU provider, batch 1, a {args.frames}-frame 640x480 mp4v video, no other "
        f"outputs. {args.reps} interleaved repetitions; see the script's docstring.",
        "",
        f"- CPU: {cpu_name()}, {os.cpu_count()} logical / {threads} physical cores (= ORT intra-op threads); "
        f"sgemm probe {min(gemm):.0f}-{max(gemm):.0f} GFLOP/s over the runs",
        f"- onnxruntime {ort.__version__}, OpenCV {cv2.__version__}, numpy {np.__version__}, "
        f"Python {platform.python_version()}",
        f"- a shared machine: load average (1 min) {load_before:.1f} before, {load_after:.1f} after; the "
        "last column is the share of all CPU time other processes used during each configuration's runs "
        f"(median; above {LOAD_FLAG:.0%} the runs were measured under load)",
        "- CPU ms per frame: this process's user + system CPU time over the run / frames (all its threads, "
        "the live view's included; the client row's client process is not): less sensitive to the "
        "machine's load than FPS",
        "",
        "| configuration | FPS (median) | runs | spread (max - min) / median | vs no --serve (ratio of medians) | "
        "vs no --serve (median of per-repetition ratios) | CPU ms per frame (median) | others' CPU share |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for config in CONFIGS:
        median = statistics.median(fps[config])
        paired = statistics.median(v / b for v, b in zip(fps[config], fps[CONFIGS[0]], strict=True))
        busy = f"{statistics.median(others[config]):.0%}" if others[config] else "n/a"
        spread = (max(fps[config]) - min(fps[config])) / median
        lines.append(f"| {config} | {median:.1f} | {', '.join(f'{v:.1f}' for v in fps[config])} | {spread:.0%} | "
                     f"{median / base * 100:.1f}% | {paired * 100:.1f}% | {statistics.median(cpu[config]):.1f} | "
                     f"{busy} |")
    frame_ms = 1e3 / base
    lines += ["", "Where the spread of a row's runs is larger than the differences between rows, the FPS "
              "columns cannot resolve the live view's cost on this machine at this load; the CPU time per "
              "frame and the per-frame cost below can."]
    lines += ["", f"Per frame, the pipeline's only work for a live view nobody watches is one "
              f"`LiveView.publish` call: {publish:.1f} us of CPU time (median of 20 batches of 1000 calls), "
              f"{publish / 1e3 / frame_ms * 100:.3f}% of the {frame_ms:.1f} ms a frame took without --serve. "
              "Drawing, JPEG encoding and the JSON record are made only when a client asks, on its thread."]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
