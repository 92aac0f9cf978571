"""INT8 vs fp32 on the CPU: size, speed and COCO mAP of the shipped yolov3-tiny clutter detector.

Exports the shipped ``edgedet/samples/checkpoints/yolov3-tiny.pt`` to ONNX (NMS in the graph, conf
0.001 as for mAP) and quantises it with ``edgedet export --int8`` (ONNX Runtime static QDQ,
calibrated on training frames); then runs both graphs with the runtime's ONNX Runtime CPU backend
on the validation split of ``clutter`` and scores them with the same COCO evaluator ``edgedet val``
uses.

Usage: python benchmarks/int8_accuracy.py [--weights CKPT] [--images 500] [--calib 128]
Writes benchmarks/results/int8_accuracy.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgedet import samples
from edgedet.bench import cpu_name
from edgedet.data import build_dataset
from edgedet.export.api import ExportOptions, export_model
from edgedet.export.deploy import NMSSettings
from edgedet.runtime.backends import create_backend
from edgedet.runtime.letterbox import letterbox
from edgedet.train.checkpoint import load_checkpoint
from edgedet.train.metrics import coco_map

REPO = Path(__file__).resolve().parents[1]



def evaluate(path: Path, frames: list[np.ndarray], truth: list[tuple[np.ndarray, np.ndarray]], classes: int):
    backend = create_backend(path, "onnxruntime", providers=["cpu"])
    detections, times = [], []
    for frame in frames:
        start = time.perf_counter()
        num, boxes, scores, labels = backend.run(frame[None])
        times.append((time.perf_counter() - start) * 1e3)
        n = int(num[0])
        detections.append((boxes[0, :n], scores[0, :n], labels[0, :n]))
    return coco_map(detections, truth, classes), statistics.median(times[5:])


def full_size_speed(calib: int, rounds: int = 3) -> list[tuple[str, float, float]]:
    """(format, MB, p50 ms) of full-width yolov3-tiny 416 as fp32 and int8 ONNX graphs."""
    from edgedet.bench import bench_frames, time_call

    with tempfile.TemporaryDirectory() as tmp:
        options = ExportOptions(formats=("onnx",), imgsz=(416, 416), int8=True, calib_samples=calib,
                                calib_data="clutter:glyphs=builtin,size=416", check=False)
        files = export_model("yolov3-tiny", tmp, options, random_init=True, say=lambda m: None)
        backends = [(f, create_backend(f.path, "onnxruntime", providers=["cpu"])) for f in files]
        x = bench_frames(1, (416, 416))
        times: dict[str, list[float]] = {f.format: [] for f in files}
        for _ in range(rounds):
            for f, backend in backends:
                times[f.format].append(statistics.median(time_call(lambda: backend.run(x), 5, 30)))
        rows = [(f.format, f.path.stat().st_size / 1e6, statistics.median(times[f.format])) for f in files]
    for fmt, mb, p50 in rows:
        print(f"full-width {fmt:10s} {mb:6.2f} MB  p50 {p50:6.2f} ms", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=samples.checkpoint("yolov3-tiny"))
    parser.add_argument("--data", default="clutter:glyphs=builtin")
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--calib", type=int, default=128)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "int8_accuracy.md")
    args = parser.parse_args()
    ckpt = load_checkpoint(args.weights)
    size = (ckpt["input"]["height"], ckpt["input"]["width"])
    dataset = build_dataset(args.data, split="val")
    frames, truth = [], []
    for i in range(min(args.images, len(dataset))):
        sample = dataset[i]
        framed, lb = letterbox(sample["image"], size)
        frames.append(framed)
        boxes = sample["boxes"] * lb.scale + np.array([lb.pad_x, lb.pad_y, lb.pad_x, lb.pad_y], np.float32)
        truth.append((boxes, sample["labels"]))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        options = ExportOptions(formats=("onnx",), nms=NMSSettings(conf=0.001, iou=0.6, max_det=100), int8=True,
                                calib_data=args.data, calib_samples=args.calib, check=False)
        files = export_model(ckpt["model"], tmp, options, weights=str(args.weights), say=lambda m: None)
        for f in files:
            metrics, p50 = evaluate(f.path, frames, truth, len(ckpt["class_names"]))
            rows.append((f.format, f.path.stat().st_size / 1e6, p50, metrics["map50"], metrics["map50_95"]))
            print(f"{f.format:10s} {rows[-1][1]:6.2f} MB  p50 {p50:6.2f} ms  mAP@0.5 {metrics['map50']:.4f}  "
                  f"mAP@0.5:0.95 {metrics['map50_95']:.4f}", flush=True)
    fp32, int8 = rows[0], rows[1]
    full = full_size_speed(args.calib)
    lines = [
        "# INT8 vs fp32 (ONNX Runtime CPU)", "",
        f"`{args.weights.name}` ({ckpt['model']}, {size[0]}x{size[1]}), {len(frames)} validation images of "
        f"`{args.data}`, batch 1, calibration on {args.calib} training frames. Produced by "
        "`benchmarks/int8_accuracy.py`.", "",
        f"- CPU: {cpu_name()}; onnxruntime {ort.__version__}; Python {platform.python_version()}", "",
        "| graph | size MB | p50 ms | mAP@0.5 | mAP@0.5:0.95 |", "|---|---:|---:|---:|---:|",
    ]
    for fmt, mb, p50, m50, m5095 in rows:
        lines.append(f"| {fmt} | {mb:.2f} | {p50:.2f} | {m50:.4f} | {m5095:.4f} |")
    lines += ["", f"INT8 is {fp32[2] / int8[2]:.2f}x the speed of fp32 and loses "
              f"{(fp32[3] - int8[3]) * 100:.2f} mAP@0.5 points ({(fp32[4] - int8[4]) * 100:.2f} at 0.5:0.95)."]
    lines += ["", "Speed only, full-width yolov3-tiny at 416x416 (seeded random weights, so no accuracy; calibrated "
              "on the same number of 416x416 clutter frames), batch 1, median of 3 interleaved rounds:", "",
              "| graph | size MB | p50 ms |", "|---|---:|---:|"]
    lines += [f"| {fmt} | {mb:.2f} | {p50:.2f} |" for fmt, mb, p50 in full]
    lines += ["", f"There INT8 is {full[0][2] / full[1][2]:.2f}x the speed of fp32."]
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
