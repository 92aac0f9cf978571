"""``edgedet run`` throughput against bare ``session.run`` on the same frames (ONNX Runtime, CPU).

yolov3-tiny at 416x416 on a 640x480 video. Measurements on the same frames, interleaved so
that drift on a shared machine hits them alike, median of ``--reps``:

- ``bare session.run``: the frames letterboxed up front, then only ``session.run`` in a loop
  (batch 1, intra-op threads = physical cores), once per spinning mode of ONNX Runtime's idle
  intra-op threads (``SPIN_MODES``: ``off`` sleep, ``in-run`` spin only while a run is in
  progress, ``on`` ONNX Runtime's default). The ceiling is the fastest of them.
- ``pipeline, --save + --save-json``: :func:`edgedet.runtime.pipeline.run_pipeline` as
  ``edgedet run --save OUT.mp4 --save-json OUT.jsonl`` runs it: capture thread decoding the video,
  letterbox + inference on the main thread, writer thread drawing, encoding mp4v and writing JSON;
  once per spinning mode.
- ``pipeline, no outputs``: the same without drawing and writing (the runtime's spinning mode).
- ``serial loop``: the same work as the first pipeline row in one thread (read, letterbox,
  inference, decode, draw, encode, JSON, one after the other): what the threads buy.

The detector's weights are random but "busy" (BatchNorm calibrated on the video's first frame,
prediction biases spread around a centre), so frames carry boxes to draw: two scenes, about 15
boxes per frame (a street) and about 60 (a crowd). Needs torch for the export only.

On a machine whose cores are all busy with inference, nothing hides the other stages' CPU time:
the pipeline can reach at most ``cores / (inference CPU + other stages' CPU)`` frames per second.
The script measures both per frame (inference: the process's CPU time over the bare loop; the
capture threads' decoding and letterboxing and the writer's drawing, mp4v and MJPG encoding and JSON
lines: the process's CPU time, part by part) and prints that ceiling. The serial loop row shows what is left for threads to win on such a machine.

On a shared Linux machine, other sessions' jobs take their share of the cores whatever this
process's nice value (the scheduler balances login sessions, "autogroups"). Raise this shell's share
for the measurement with ``echo -15 > /proc/$$/autogroup`` (as root) before running the script.

Usage: python benchmarks/pipeline_fps.py [--frames 200] [--reps 3] [--imgsz 416]
Writes benchmarks/results/pipeline_fps.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgedet.bench import cpu_name
from edgedet.runtime.api import load_model  # noqa: E402
from edgedet.runtime.backends import DEFAULT_SPINNING, SPIN_MODES, create_backend, physical_cores  # noqa: E402
from edgedet.runtime.draw import draw_status  # noqa: E402
from edgedet.runtime.letterbox import letterbox  # noqa: E402
from edgedet.runtime.pipeline import RunOptions, run_pipeline  # noqa: E402
from edgedet.runtime.sources import open_sources, read_image  # noqa: E402

DEFAULT_SPIN = DEFAULT_SPINNING  # the mode `edgedet run` uses (the choice this script's figures support)
PHOTO = REPO.parent / "shared" / "reference" / "darknet" / "dog.jpg"



def make_video(path: Path, frames: int) -> Path:
    """A 640x480 30 fps mp4v video panning across a photo (or a synthetic scene without it)."""
    photo = read_image(PHOTO) if PHOTO.is_file() else None
    if photo is None:
        rng = np.random.default_rng(0)
        photo = cv2.GaussianBlur(rng.integers(0, 256, (576, 768, 3), dtype=np.uint8), (0, 0), 3)
    wide = cv2.resize(photo, (960, 540))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (640, 480))
    for i in range(frames):
        x = int((np.sin(i / 40) * 0.5 + 0.5) * (960 - 640))
        writer.write(np.ascontiguousarray(wide[30:510, x:x + 640]))
    writer.release()
    return path


def export_busy_detector(out_dir: Path, imgsz: int, first_frame: np.ndarray, bias: float) -> Path:
    import torch

    from edgedet.bench import lively
    from edgedet.export.deploy import NMSSettings, build_deploy_module
    from edgedet.export.metadata import build_metadata
    from edgedet.export.onnx import OnnxNMS, export_onnx
    from edgedet.models import create_model

    torch.manual_seed(0)
    model = create_model("yolov3-tiny", input_size=(imgsz, imgsz))
    framed, _ = letterbox(first_frame, (imgsz, imgsz))
    lively(model, framed[None], bias)
    settings = NMSSettings()
    module, names = build_deploy_module(model, nms=settings, nms_module=OnnxNMS(settings))
    metadata = build_metadata(model, imgsz=(imgsz, imgsz), input_format="uint8", dynamic=False, half=False,
                              nms=settings, output_names=names, source={"kind": "random-init (busy)"},
                              export_args={}, graph_format="onnx")
    path = out_dir / f"yolov3-tiny-{bias}.onnx"
    export_onnx(module, torch.from_numpy(np.stack([framed, framed])), path, names, metadata, False)
    return path


def read_all(video: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def bare_fps(graph: Path, frames: list[np.ndarray], imgsz: int, threads: int, spin: str) -> tuple[float, float]:
    """Frames per second of a bare ``session.run`` loop and the process CPU milliseconds per frame.
    The session is the runtime backend's own (same options, spinning mode ``spin``), run directly."""
    session = create_backend(graph, "onnxruntime", providers="cpu", threads=threads, spinning=spin).session
    inputs = [np.ascontiguousarray(letterbox(f, (imgsz, imgsz))[0][None]) for f in frames]
    for x in inputs[:5]:
        session.run(None, {"images": x})
    start, cpu = time.perf_counter(), time.process_time()
    for x in inputs:
        session.run(None, {"images": x})
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return len(inputs) / seconds, cpu / len(inputs) * 1e3


def pipeline_fps(model, video: Path, out_dir: Path, save: bool) -> tuple[float, dict]:
    options = RunOptions(progress=False, save=out_dir / "out.mp4" if save else None,
                         save_json=out_dir / "out.jsonl" if save else None)
    summary = run_pipeline(model, open_sources(str(video)), options, say_err=lambda m: None)
    return summary.fps, summary.to_dict()


def stage_cpu(model, video: Path, frames: list[np.ndarray], imgsz: int, out_dir: Path) -> dict[str, float]:
    """CPU milliseconds per frame of what the pipeline does besides inference, one part at a time:
    the capture threads' decoding and letterboxing, the writer's drawing, encoding and JSON lines.
    Process CPU time, since FFmpeg decodes and encodes on threads of its own; the loaded model's
    idle threads sleep meanwhile (spinning off), so nothing else runs."""
    results = [model(f) for f in frames]
    parts: dict[str, float] = {}

    def clock(name, fn):
        start = time.process_time()
        fn()
        parts[name] = (time.process_time() - start) / len(frames) * 1e3

    clock("decode the video", lambda: read_all(video))
    clock("letterbox", lambda: [letterbox(f, (imgsz, imgsz)) for f in frames])

    copies = [f.copy() for f in frames]
    clock("draw boxes and labels", lambda: [r.plot(c, copy=False) for r, c in zip(results, copies)])
    clock("draw the FPS line", lambda: [draw_status(c, "51.2 FPS") for c in copies])
    for fourcc, suffix in (("mp4v", "mp4"), ("MJPG", "avi")):
        writer = cv2.VideoWriter(str(out_dir / f"cost.{suffix}"), cv2.VideoWriter_fourcc(*fourcc), 30,
                                 (frames[0].shape[1], frames[0].shape[0]))
        clock(f"encode {fourcc}", lambda: [writer.write(c) for c in copies])
        writer.release()
    with open(out_dir / "cost.jsonl", "w") as js:
        clock("JSON line", lambda: [js.write(json.dumps(r.to_dict()) + "\n") for r in results])
    return parts


def serial_fps(model, video: Path, out_dir: Path) -> float:
    """Everything the saving pipeline does, on one thread."""
    cap = cv2.VideoCapture(str(video))
    writer = None
    n = 0
    start = time.perf_counter()
    with open(out_dir / "serial.jsonl", "w") as js:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            result = model(frame)
            drawn = result.plot(frame, copy=False)
            draw_status(drawn, "FPS")
            if writer is None:
                writer = cv2.VideoWriter(str(out_dir / "serial.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 30,
                                         (frame.shape[1], frame.shape[0]))
            writer.write(drawn)
            js.write(json.dumps(result.to_dict()) + "\n")
            n += 1
    writer.release()
    cap.release()
    return n / (time.perf_counter() - start)


# Prediction-bias centres giving about 15 (a street scene) and about 60 (a crowd) detections per
# frame on the benchmark video.
SCENES = {"street": -2.35, "crowd": -2.1}


def measure(graph: Path, video: Path, frames: list[np.ndarray], tmp: Path, imgsz: int, reps: int,
            threads: int) -> tuple[dict[str, list[float]], dict, float, dict[str, list[float]]]:
    models = {spin: load_model(graph, spinning=spin) for spin in SPIN_MODES}
    detections = float(np.mean([len(models["off"](f)) for f in frames[::10]]))
    rows: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    stages: dict = {}
    for rep in range(reps):
        for spin in SPIN_MODES:
            fps, ms = bare_fps(graph, frames, imgsz, threads, spin)
            rows.setdefault(f"bare session.run, spinning {spin}", []).append(fps)
            cpu.setdefault(spin, []).append(ms)
        for spin in SPIN_MODES:
            fps, doc = pipeline_fps(models[spin], video, tmp, save=True)
            rows.setdefault(f"pipeline, --save + --save-json, spinning {spin}", []).append(fps)
            if spin == DEFAULT_SPIN:
                stages = doc["stages"]
        rows.setdefault(f"pipeline, no outputs, spinning {DEFAULT_SPIN}", []).append(
            pipeline_fps(models[DEFAULT_SPIN], video, tmp, save=False)[0])
        rows.setdefault("serial loop (same work as --save + --save-json)", []).append(
            serial_fps(models[DEFAULT_SPIN], video, tmp))
        print(f"  rep {rep + 1}: " + ", ".join(f"{v[-1]:.1f}" for v in rows.values()), flush=True)
    return rows, stages, detections, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--imgsz", type=int, default=416)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "pipeline_fps.md")
    args = parser.parse_args()
    threads = physical_cores()
    lines = [
        "# `edgedet run` throughput vs bare `session.run`",
        "",
        f"yolov3-tiny {args.imgsz}x{args.imgsz}, ONNX Runtime CPU provider, batch 1, on a {args.frames}-frame "
        f"640x480 mp4v video. Median of {args.reps} interleaved repetitions. Produced by "
        "`benchmarks/pipeline_fps.py`.",
        "",
        f"- CPU: {cpu_name()}, {threads} physical cores usable (= ORT intra-op threads); a shared machine, "
        "so absolute figures drift between runs (other jobs come and go); compare rows within a table",
        f"- onnxruntime {ort.__version__}, OpenCV {cv2.__version__}, numpy {np.__version__}, "
        f"Python {platform.python_version()}",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        video = make_video(tmp / "clip.mp4", args.frames)
        frames = read_all(video)
        for scene, bias in SCENES.items():
            graph = export_busy_detector(tmp, args.imgsz, frames[0], bias)
            print(f"{scene}:", flush=True)
            load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
            rows, stages, detections, cpu = measure(graph, video, frames, tmp, args.imgsz, args.reps, threads)
            parts = stage_cpu(load_model(graph), video, frames, args.imgsz, tmp)
            load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
            medians = {k: statistics.median(v) for k, v in rows.items()}
            bare = max(v for k, v in medians.items() if k.startswith("bare"))
            lines += ["", f"## {scene}: about {detections:.0f} detections per frame", "",
                      f"Machine load (1-minute average, {threads} cores) {load_before:.1f} before, "
                      f"{load_after:.1f} after.", "",
                      "| what runs | FPS (median) | runs | vs the faster bare row |", "|---|---:|---|---:|"]
            for name, values in rows.items():
                lines.append(f"| {name} | {medians[name]:.1f} | {', '.join(f'{v:.1f}' for v in values)} | "
                             f"{medians[name] / bare * 100:.0f}% |")
            lines += ["", "Per-stage milliseconds of the last saving pipeline run (p50 / p95; wall time on "
                      "its own thread, so a stage waiting for a core counts that wait):", "",
                      "| stage | p50 ms | p95 ms |", "|---|---:|---:|"]
            lines += [f"| {k} | {v['p50']:.2f} | {v['p95']:.2f} |" for k, v in stages.items()]
            infer = {k: statistics.median(v) for k, v in cpu.items()}
            lines += ["", "CPU milliseconds per frame (inference: the whole process during the bare loop, all "
                      "ONNX Runtime threads, spinning included; the other parts: the process, one part at a "
                      "time over all frames, FFmpeg's own threads included):", "", "| work | CPU ms per frame |", "|---|---:|"]
            lines += [f"| inference, spinning {k} | {v:.2f} |" for k, v in infer.items()]
            lines += [f"| {k} | {v:.2f} |" for k, v in parts.items()]
            other = sum(v for k, v in parts.items() if k != "encode MJPG")
            quiet = sum(v for k, v in parts.items() if k in ("decode the video", "letterbox"))
            for spin in ("off", "in-run"):
                for what, extra in (("decoding, letterboxing, drawing, mp4v, JSON", other),
                                    ("decoding and letterboxing only (no outputs)", quiet)):
                    limit = threads * 1e3 / (infer[spin] + extra)
                    ceiling = min(limit, medians[f"bare session.run, spinning {spin}"])
                    lines.append(f"\nWith every core busy, a pipeline doing this work (inference spinning {spin}; "
                                 f"{what}: {infer[spin] + extra:.1f} CPU ms per frame) can reach at most {threads} "
                                 f"cores / that = {limit:.1f} FPS, {ceiling / bare * 100:.0f}% of the faster bare row.")
    lines += ["", "## Speed work, before and after", "",
              "Measured while building the pipeline (same script and machine; micro-benchmarks in CPU time):", "",
              "- letterbox: a per-channel pad fill of the whole buffer became a scalar fill of the border "
              "only, and full-width content is resized straight into the buffer: 0.55 -> 0.09 ms per "
              "640x480 frame into 320x320;",
              "- ONNX Runtime's idle intra-op threads sleep instead of spinning (ONNX Runtime's default is to "
              "spin): the capture and writer threads need those cycles, and on this shared machine spinning "
              "slowed even bare inference (the two bare rows above);",
              "- drawing: plain Python numbers in the per-box loop instead of numpy scalars and np.clip: "
              "4.4 -> 3.4 ms CPU for 58 boxes on a 640x480 frame (OpenCV's anti-aliased text is most of "
              "the rest);",
              "- drawing: each tag (its filled box and anti-aliased text) rendered once per text, style and "
              "colour and then copied into the frame, pixel for pixel what OpenCV draws in place: 1.77 -> "
              "0.77 ms CPU for 60 boxes on a 640x480 frame (AMD EPYC, scores changing a little every frame);",
              "- letterboxing moved from the inference thread to the capture threads;",
              "- first measurement, before all of the above (busy machine, about 58 boxes per frame, bare "
              "with ONNX Runtime's default options): pipeline with --save and --save-json 85 % of bare, "
              "serial loop 74 %."]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
