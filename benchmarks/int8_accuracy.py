"""INT8 vs fp32 on the CPU: size, speed and COCO mAP of the shipped yolov3-tiny clutter detector.

Exports the shipped ``edgedet/samples/checkpoints/yolov3-tiny.pt`` to ONNX (NMS in the graph, conf
0.001 as for mAP) and quantises it with ``edgedet export --int8`` (ONNX Runtime static QDQ,
calibrated on training frames); then runs both graphs with the runtime's ONNX Runtime CPU backend
and OpenVINO backends on the validation split of ``clutter`` and scores them with the same COCO
evaluator ``edgedet val`` uses. Then times yolov3-tiny at three widths and input sizes, fp32 and
int8, on both backends (OpenVINO executes the same QDQ file with int8 kernels).

Usage: python benchmarks/int8_accuracy.py [--weights CKPT] [--images 500] [--calib 128] [--rounds 3] [--iters 30]
Writes benchmarks/results/int8_accuracy.md.
"""

from __future__ import annotations

import argparse
import os
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


def _vector_isa() -> str:
    """The CPU's vector extensions that int8 kernels use (Linux /proc/cpuinfo), e.g. "avx2, avx512_vnni"."""
    try:
        flags = set(next(line for line in Path("/proc/cpuinfo").read_text().splitlines()
                         if line.startswith("flags")).split(":", 1)[1].split())
    except (OSError, StopIteration):
        return "unknown"
    wanted = ("avx2", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8")
    return ", ".join(f for f in wanted if f in flags) or "none of avx2/avx512/vnni/amx"


def _openvino_version() -> str:
    try:
        import openvino
    except ImportError:
        return "not installed"
    return openvino.__version__



def evaluate(path: Path, frames: list[np.ndarray], truth: list[tuple[np.ndarray, np.ndarray]], classes: int,
             backend_name: str = "onnxruntime"):
    backend = create_backend(path, backend_name, providers=["cpu"])
    detections, times = [], []
    for frame in frames:
        start = time.perf_counter()
        num, boxes, scores, labels = backend.run(frame[None])
        times.append((time.perf_counter() - start) * 1e3)
        n = int(num[0])
        detections.append((boxes[0, :n], scores[0, :n], labels[0, :n]))
    return coco_map(detections, truth, classes), statistics.median(times[5:])


# (width, input size) of the yolov3-tiny graphs timed for speed: the quarter-width 128-pixel model
# of the earlier CPU sample, the shipped detector's size, full width at darknet's 416.
SPEED_SIZES = ((0.25, 128), (0.5, 256), (1.0, 416))
# Backend and graph of each speed column: ONNX Runtime and OpenVINO (f32 for the parts left in
# float) on the same fp32 and int8 QDQ files.
SPEED_COLUMNS = (("onnxruntime", "onnx"), ("onnxruntime", "onnx-int8"), ("openvino", "onnx"),
                 ("openvino", "onnx-int8"))


def speed_by_size(calib: int, rounds: int = 3, iters: int = 30) -> list[dict]:
    """p50 ms of yolov3-tiny (seeded random weights) at each of ``SPEED_SIZES`` as fp32 and int8
    ONNX graphs on ONNX Runtime and on OpenVINO, median of ``rounds`` interleaved rounds."""
    import torch

    from edgedet.bench import bench_frames, time_call
    from edgedet.models import create_model
    from edgedet.train.checkpoint import save_checkpoint

    rows = []
    for width, size in SPEED_SIZES:
        with tempfile.TemporaryDirectory() as tmp:
            torch.manual_seed(0)
            model = create_model("yolov3-tiny", width=width, input_size=(size, size)).eval()
            weights = save_checkpoint(Path(tmp) / "random.pt", model)
            options = ExportOptions(formats=("onnx",), int8=True, calib_samples=calib,
                                    calib_data=f"clutter:glyphs=builtin,size={size}", check=False)
            files = {f.format: f.path for f in export_model("yolov3-tiny", tmp, options, weights=str(weights),
                                                             say=lambda m: None)}
            backends = {(b, fmt): create_backend(files[fmt], b, providers=["cpu"]) for b, fmt in SPEED_COLUMNS}
            x = bench_frames(1, (size, size))
            times: dict = {key: [] for key in backends}
            for _ in range(rounds):
                for key, backend in backends.items():
                    times[key].append(statistics.median(time_call(lambda: backend.run(x), 5, iters)))
            p50 = {key: statistics.median(v) for key, v in times.items()}
            rows.append({"width": width, "size": size, "mb": {fmt: files[fmt].stat().st_size / 1e6 for fmt in files},
                         "p50": p50})
        print(f"width {width:g} {size}: " + "  ".join(f"{b} {fmt} {v:.2f} ms" for (b, fmt), v in p50.items()),
              flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=samples.checkpoint("yolov3-tiny"))
    parser.add_argument("--data", default="clutter:glyphs=builtin")
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--calib", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the speed table")
    parser.add_argument("--iters", type=int, default=30, help="timed runs per graph and round")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "int8_accuracy.md")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
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
        for backend_name in ("onnxruntime", "openvino"):
            for f in files:
                metrics, p50 = evaluate(f.path, frames, truth, len(ckpt["class_names"]), backend_name)
                rows.append((backend_name, f.format, f.path.stat().st_size / 1e6, p50, metrics["map50"],
                             metrics["map50_95"]))
                print(f"{backend_name:11s} {f.format:10s} {rows[-1][2]:6.2f} MB  p50 {p50:6.2f} ms  "
                      f"mAP@0.5 {metrics['map50']:.4f}  mAP@0.5:0.95 {metrics['map50_95']:.4f}", flush=True)
    sizes = speed_by_size(args.calib, args.rounds, args.iters)
    lines = [
        "# INT8 vs fp32 (CPU: ONNX Runtime and OpenVINO)", "",
        f"`{args.weights.name}` ({ckpt['model']}, {size[0]}x{size[1]}), {len(frames)} validation images of "
        f"`{args.data}`, batch 1, calibration on {args.calib} training frames. Produced by "
        "`benchmarks/int8_accuracy.py`.", "",
        f"- CPU: {cpu_name()}, {os.cpu_count()} cores, vector extensions: {_vector_isa()}; onnxruntime {ort.__version__}; openvino {_openvino_version()}; "
        f"Python {platform.python_version()}",
        f"- Machine load (1-minute average) {load_before:.1f} before, {os.getloadavg()[0]:.1f} after",
        "- OpenVINO runs the same QDQ file: it executes the quantised convolutions in int8 and what is left "
        "in float in f32 (`--backend openvino`)", "",
        "| backend | graph | size MB | p50 ms | mAP@0.5 | mAP@0.5:0.95 |", "|---|---|---:|---:|---:|---:|",
    ]
    for backend_name, fmt, mb, p50, m50, m5095 in rows:
        lines.append(f"| {backend_name} | {fmt} | {mb:.2f} | {p50:.2f} | {m50:.4f} | {m5095:.4f} |")
    for backend_name in ("onnxruntime", "openvino"):
        f32, i8 = [r for r in rows if r[0] == backend_name]
        lines += ["", f"On {backend_name}, INT8 is {f32[3] / i8[3]:.2f}x the speed of fp32 and loses "
                  f"{(f32[4] - i8[4]) * 100:.2f} mAP@0.5 points ({(f32[5] - i8[5]) * 100:.2f} at 0.5:0.95)."]
    lines += ["", "Speed only, yolov3-tiny at three widths and input sizes (seeded random weights, so no accuracy; "
              f"calibrated on {args.calib} clutter frames of the input size), batch 1, p50 ms, median of {args.rounds} "
              "interleaved rounds; in brackets the speed-up over the same backend's fp32:", "",
              "| width, input | fp32 MB | int8 MB | " + " | ".join(f"{b} {fmt}" for b, fmt in SPEED_COLUMNS) + " |",
              "|---|---:|---:|" + "---:|" * len(SPEED_COLUMNS)]
    for row in sizes:
        cells = []
        for b, fmt in SPEED_COLUMNS:
            v = row["p50"][(b, fmt)]
            cells.append(f"{v:.2f}" if fmt == "onnx" else f"{v:.2f} ({row['p50'][(b, 'onnx')] / v:.2f}x)")
        lines.append(f"| {row['width']:g}, {row['size']} | {row['mb']['onnx']:.2f} | {row['mb']['onnx-int8']:.2f} | "
                     + " | ".join(cells) + " |")
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
