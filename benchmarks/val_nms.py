"""Validation NMS: the graphs' plain-operator NMS against torchvision's ``batched_nms``.

Validation runs at ``conf=0.001``, where an untrained detector passes nearly every box of every
class, so NMS decides how long an early epoch's validation takes. Both modules get the same
decoded candidates (random boxes in a 256x256 input, ``C`` classes, scores below 0.05 as an
untrained head gives them, or a trained-like handful above the threshold) and are timed on the CPU
and, where torch sees one, on CUDA. Their selections are checked to be equal before timing.

Usage: python benchmarks/val_nms.py [--images 8] [--boxes 1000] [--classes 10] [--iters 5]
Writes benchmarks/results/val_nms.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
from pathlib import Path

import torch

from edgedet.bench import cpu_name, time_call
from edgedet.export.deploy import TorchNMS
from edgedet.ops.nms import gather_detections
from edgedet.train.validate import EVAL_NMS, BatchedNMS

REPO = Path(__file__).resolve().parents[1]


def candidates(images: int, boxes: int, classes: int, trained: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(images, boxes, 2, generator=g) * 224
    wh = 8 + torch.rand(images, boxes, 2, generator=g) * 56
    xyxy = torch.cat((xy, xy + wh), dim=-1)
    if trained:  # a few confident boxes per image, the rest below the threshold
        scores = torch.rand(images, classes, boxes, generator=g) * 5e-4
        hot = torch.randint(0, boxes, (images, 20), generator=g)
        scores[torch.arange(images)[:, None], torch.randint(0, classes, (images, 20), generator=g), hot] = 0.9
    else:
        scores = torch.rand(images, classes, boxes, generator=g) * 0.05
    return xyxy, scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--boxes", type=int, default=1000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "val_nms.md")
    args = parser.parse_args()

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    graph_nms, fast_nms = TorchNMS(EVAL_NMS), BatchedNMS(EVAL_NMS)
    rows = []
    for case in ("untrained", "trained"):
        boxes, scores = candidates(args.images, args.boxes, args.classes, case == "trained")
        for device in devices:
            b, s = boxes.to(device), scores.to(device)
            # The graph NMS caps each class at max_det, batched_nms does not; the per-image max_det
            # cut that follows in every pipeline makes the detections equal.
            expected = gather_detections(graph_nms(b, s), b, s, EVAL_NMS.max_det)
            got = gather_detections(fast_nms(b, s), b, s, EVAL_NMS.max_det)
            if not all(torch.equal(x, y) for x, y in zip(expected, got)):
                raise SystemExit(f"error: the two NMS disagree ({case}, {device})")

            def timed(fn):
                def call():
                    fn(b, s)
                    if device == "cuda":
                        torch.cuda.synchronize()
                return statistics.median(time_call(call, 1, args.iters))

            slow, fast = timed(graph_nms), timed(fast_nms)
            kept = int(expected[0].sum())
            rows.append((case, device, kept, slow, fast))
            print(f"{case:9} {device:4} {kept:6} kept  plain {slow:9.1f} ms  batched_nms {fast:8.1f} ms  "
                  f"{slow / fast:5.1f}x")

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    lines = [
        "# Validation NMS: plain operators vs torchvision's batched_nms",
        "",
        f"{args.images} images x {args.boxes} boxes x {args.classes} classes, `conf={EVAL_NMS.conf}`, "
        f"`iou={EVAL_NMS.iou}`; median of {args.iters} calls. Produced by `benchmarks/val_nms.py`.",
        "",
        f"- CPU: {cpu_name()}; GPU: {gpu}; torch {torch.__version__}; Python {platform.python_version()}",
        "",
        "| candidates | device | detections kept | plain-operator NMS ms | batched_nms ms | speed-up |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for case, device, kept, slow, fast in rows:
        lines.append(f"| {case} | {device} | {kept} | {slow:.1f} | {fast:.1f} | {slow / fast:.1f}x |")
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
