"""Cost of turning a graph's instance masks into source-frame masks and COCO RLE, per frame.

The frames: MNIST-Clutter sample 8 at 320x320 (8 digits, builtin glyphs), and for scale sample 8
at 720x1280 (also 8 digits), as a camera gives them. The graph's ``masks``
output is simulated exactly as an instance segmenter gives it: each ground-truth mask letterboxed
into the network input and cropped to its box, in ``K = 100`` rows (the default ``max_det``) of
which the first 8 are valid. Two ways of mapping them back, each followed by COCO RLE of every
instance (what ``--save-json`` writes) and timed together:

- ``full frame``: each valid row's letterbox crop resized to the whole frame
  (:func:`edgedet.runtime.letterbox.mask_to_source`, nearest), then encoded as a full-frame mask.
- ``box region`` (the runtime's way, :func:`edgedet.runtime.masks.masks_to_source`): only each
  box's pixels are sampled from the graph's mask, and the RLE is built from the crop.

Also timed: ``full frame, all K rows`` (the same full-frame way over all 100 rows, as code that
ignored ``num_dets`` would do), and the drawing of the 8 masks (fill, outline, legend).

Usage: python benchmarks/instance_masks.py [--iters 200]
Writes benchmarks/results/instance_masks.md. Needs no torch (the clutter generator is numpy).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from functools import partial
from pathlib import Path

import numpy as np

from edgedet.data.synthetic import Clutter
from edgedet.runtime.draw import draw_instance_masks
from edgedet.runtime.letterbox import letterbox, mask_to_source
from edgedet.runtime.masks import encode_mask, masks_to_source

REPO = Path(__file__).resolve().parents[1]
K = 100


def graph_masks(sample: dict, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, object]:
    """``(masks [K, H, W] uint8, boxes in frame pixels [8, 4], letterbox)`` as a graph would give them."""
    _, lb = letterbox(sample["image"], size)
    out = np.zeros((K, *size), np.uint8)
    ys, xs = np.mgrid[:size[0], :size[1]] + 0.5
    for i, (mask, box) in enumerate(zip(sample["masks"], sample["boxes"])):
        x1, y1, x2, y2 = box * lb.scale + [lb.pad_x, lb.pad_y, lb.pad_x, lb.pad_y]
        out[i] = letterbox(mask[..., None], size, 0)[0][..., 0] * ((xs >= x1) & (xs < x2) & (ys >= y1) & (ys < y2))
    return out, sample["boxes"].astype(np.float32), lb


def full_frame(masks: np.ndarray, boxes: np.ndarray, lb, rows: int) -> list[dict]:
    return [encode_mask(mask_to_source(masks[i], lb)) for i in range(rows)]


def box_region(masks: np.ndarray, boxes: np.ndarray, lb, size: tuple[int, int]) -> list[dict]:
    mapped = masks_to_source(masks[:len(boxes)], boxes, lb, size)
    return [mapped.rle(i) for i in range(len(mapped))]


def draw(image: np.ndarray, mapped, labels: np.ndarray) -> np.ndarray:
    return draw_instance_masks(image.copy(), mapped, labels, [str(d) for d in range(10)])


def timed(fn, iters: int) -> float:
    for _ in range(5):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=200)
    args = parser.parse_args()
    frames = {"320x320": Clutter(size=320, max_digits=10, glyphs="builtin")[8],
              "720x1280": Clutter(size=(720, 1280), max_digits=10, glyphs="builtin")[8]}
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    load_before = os.getloadavg()[0]
    rows = []
    for frame, size in (("320x320", (320, 320)), ("320x320", (128, 128)), ("720x1280", (320, 320))):
        sample = frames[frame]
        n = len(sample["labels"])
        masks, boxes, lb = graph_masks(sample, size)
        # The two ways agree on what they produce (nearest vs bilinear differ only at edges when enlarging).
        a, b = full_frame(masks, boxes, lb, n), box_region(masks, boxes, lb, size)
        agree = "identical" if a == b else "edge pixels differ (nearest vs bilinear)"
        full_ms = timed(partial(full_frame, masks, boxes, lb, n), args.iters)
        box_ms = timed(partial(box_region, masks, boxes, lb, size), args.iters)
        all_ms = timed(partial(full_frame, masks, boxes, lb, K), max(10, args.iters // 10))
        mapped = masks_to_source(masks[:n], boxes, lb, size)
        draw_ms = timed(partial(draw, sample["image"], mapped, sample["labels"]), args.iters)
        rows.append((frame, n, size, full_ms, box_ms, all_ms, draw_ms, agree))
        print(size, f"full {full_ms:.2f} ms, box {box_ms:.2f} ms, all K {all_ms:.2f} ms, draw {draw_ms:.2f} ms")
    load_after = os.getloadavg()[0]
    lines = [
        "# Instance masks: graph output -> source-frame masks + COCO RLE",
        "",
        f"`python benchmarks/instance_masks.py --iters {args.iters}` on {cpu} ({os.cpu_count()} logical cores), "
        f"Python {platform.python_version()}, load average {load_before:.1f} before / {load_after:.1f} after "
        "(the machine was shared with other work: compare the columns of a row, not absolute times).",
        "",
        f"MNIST-Clutter frames; the graph's masks are K = {K} rows, one per digit valid. "
        "Median milliseconds per frame of mapping every instance to the frame and COCO-encoding it.",
        "",
        "| frame | instances | network input | full frame (valid rows) | box region (runtime) | "
        "full frame, all K rows | drawing the masks | results |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for frame, n, (h, w), full_ms, box_ms, all_ms, draw_ms, agree in rows:
        lines.append(f"| {frame} | {n} | {h}x{w} | {full_ms:.2f} | {box_ms:.2f} | {all_ms:.2f} | {draw_ms:.2f} "
                     f"| {agree} |")
    lines += ["", "Ways compared: see the docstring of `benchmarks/instance_masks.py`.", ""]
    out = REPO / "benchmarks" / "results" / "instance_masks.md"
    out.write_text("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
