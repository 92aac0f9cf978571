"""What NMS inside the graph costs: full graph vs raw graph, ONNX Runtime CPU, yolov3-tiny 416.

Exports yolov3-tiny twice from the same weights — with NMS folded in and with ``--no-nms`` (raw
decoded predictions) — and times both in ONNX Runtime's CPU provider at batch 1 and 8 on a real
photo. NMS cost depends on how many candidates pass the score threshold, so two weight sets are
timed:

- ``training init``: edgedet's initialisation (objectness starts near 0.01): almost no
  candidates, like a trained detector on an empty scene;
- ``busy``: BatchNorm calibrated on the photo and prediction biases spread around -2.1: about a
  hundred (box, class) candidates above the 0.25 threshold, a busy street scene's worth;
- ``crowded``: biases around -1: thousands of candidates, far more than a trained detector gives
  (the worst case; edgedet caps NMS input at 3000 boxes per image).

Usage: python benchmarks/nms_overhead.py [--image PHOTO] [--iters 50] [--threads N]
Writes benchmarks/results/nms_overhead.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import torch

from edgedet.bench import cpu_name, lively
from edgedet.export.deploy import NMSSettings, build_deploy_module
from edgedet.export.onnx import OnnxNMS, export_onnx
from edgedet.models import create_model
from edgedet.runtime.letterbox import letterbox

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGE = REPO.parent / "shared" / "reference" / "darknet" / "dog.jpg"



def time_session(path: Path, x: np.ndarray, iters: int, threads: int) -> list[float]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for _ in range(10):
        session.run(None, {"images": x})
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        session.run(None, {"images": x})
        times.append((time.perf_counter() - start) * 1e3)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--threads", type=int, default=0, help="ORT intra-op threads (0: ORT default)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "nms_overhead.md")
    args = parser.parse_args()
    image = cv2.imread(str(args.image))
    if image is None:
        raise SystemExit(f"error: cannot read {args.image}")
    frame, _ = letterbox(image, (416, 416))
    settings = NMSSettings()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for weights, bias in (("training init", None), ("busy", -2.1), ("crowded", -1.0)):
            torch.manual_seed(0)
            model = create_model("yolov3-tiny").eval()
            if bias is not None:
                lively(model, frame[None], bias)
            paths = {}
            for kind, nms in (("raw", None), ("nms", settings)):
                module, names = build_deploy_module(model, nms=nms, nms_module=OnnxNMS(settings) if nms else None)
                paths[kind] = export_onnx(module, torch.from_numpy(np.stack([frame, frame])),
                                          Path(tmp) / f"{kind}.onnx", names, {"model": "yolov3-tiny", "task": "detection"},
                                          dynamic_hw=False)
            for batch in (1, 8):
                x = np.ascontiguousarray(np.repeat(frame[None], batch, axis=0))
                session = ort.InferenceSession(str(paths["nms"]), providers=["CPUExecutionProvider"])
                dets = session.run(["num_dets"], {"images": x[:1]})[0][0]
                raw_pred = ort.InferenceSession(str(paths["raw"]), providers=["CPUExecutionProvider"]).run(None, {"images": x[:1]})[0][0]
                candidates = int(((raw_pred[:, 4:5] * raw_pred[:, 5:]) > settings.conf).sum())
                # Interleave the two graphs so drift on a shared machine hits both alike.
                raw_t, nms_t = [], []
                for _ in range(3):
                    raw_t += time_session(paths["raw"], x, args.iters // 3 + 1, args.threads)
                    nms_t += time_session(paths["nms"], x, args.iters // 3 + 1, args.threads)
                raw_p50, nms_p50 = statistics.median(raw_t), statistics.median(nms_t)
                rows.append((weights, batch, candidates, int(dets), raw_p50, nms_p50, (nms_p50 / raw_p50 - 1) * 100))
                print(f"{weights:13s} batch {batch}: candidates {candidates:5d} dets {int(dets):3d}  raw p50 "
                      f"{raw_p50:7.2f} ms  nms p50 {nms_p50:7.2f} ms  overhead {rows[-1][-1]:+.1f}%", flush=True)
    lines = [
        "# NMS in the graph: overhead over the raw graph",
        "",
        "yolov3-tiny 416x416, ONNX Runtime CPU provider, p50 of "
        f"{args.iters} runs per graph (interleaved), photo `{args.image.name}` letterboxed. "
        "Produced by `benchmarks/nms_overhead.py`.",
        "",
        f"- CPU: {cpu_name()}, {torch.get_num_threads()} torch threads visible; ORT threads: "
        f"{args.threads or 'default'}",
        f"- onnxruntime {ort.__version__}, torch {torch.__version__}, Python {platform.python_version()}",
        "",
        "| weights | batch | candidates > conf (image 1) | detections (image 1) | raw p50 ms | full p50 ms | overhead |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for weights, batch, cand, dets, raw_p50, nms_p50, over in rows:
        lines.append(f"| {weights} | {batch} | {cand} | {dets} | {raw_p50:.2f} | {nms_p50:.2f} | {over:+.1f}% |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
