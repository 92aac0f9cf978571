"""The localizer made fully convolutional (``edgedet export --fully-conv``) as a detector on digits-scene.

Exports a localizer checkpoint (default: the shipped ``edgedet/samples/checkpoints/localizer.pt``)
with ``--fully-conv`` to ONNX at the scene size (240x320) under a few NMS settings, runs each graph
with the runtime (``edgedet.runtime.load_model``, ONNX Runtime CPU backend; frames are the scene
size, so the letterbox is the identity) on the validation split of ``digits-scene`` and scores the
detections with the COCO evaluator ``edgedet val`` uses (faster-coco-eval).

It also measures how far a window of the dense map is from the localizer run on that window cut
out of the frame: the conv stack's 3x3 convolutions are zero-padded, so near a window's border the
dense network sees neighbouring pixels where the crop saw padding (see
:func:`edgedet.models.localizer.fully_convolutional`).

Usage: python benchmarks/fully_conv.py [--weights CKPT] [--images 300] [--label TEXT] [--append]
Writes benchmarks/results/fully_conv.md (``--append`` adds the rows of another checkpoint).
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
import torch

from edgedet import samples
from edgedet.bench import cpu_name
from edgedet.data import build_dataset
from edgedet.export.api import ExportOptions, export_model
from edgedet.export.deploy import NMSSettings
from edgedet.models.localizer import fully_convolutional
from edgedet.models.weights import build_model, resolve_weights
from edgedet.ops.boxes import box_iou
from edgedet.ops.localizer import decode_localizer
from edgedet.runtime import load_model
from edgedet.train.metrics import coco_map

REPO = Path(__file__).resolve().parents[1]
DATA = "digits-scene:glyphs=builtin"
# (conf, iou, agnostic): the export default, then low thresholds as for mAP, class-aware and agnostic.
SETTINGS = [(0.25, 0.45, False), (0.01, 0.45, False), (0.01, 0.45, True), (0.01, 0.3, True)]


FINE_TUNING = [
    "## Fine-tuning", "",
    "Rows labelled *dense fine-tune* come from a checkpoint made by `benchmarks/fully_conv_finetune.py` (not "
    "shipped): the shipped localizer trained further through the dense forward on whole `digits-scene` "
    "training canvases (120x160, 1-4 digits; every window's target is the largest digit wholly inside it, "
    "else none; the localizer's own loss; BatchNorm statistics frozen), AdamW lr 3e-4 one-cycle, 300 steps "
    "of 16 canvases, 12.4 min on this CPU under load:", "",
    "```",
    "OMP_NUM_THREADS=1 nice -n 5 python benchmarks/fully_conv_finetune.py --out runs/fc_dense.pt --steps 300 --batch 16",
    "python benchmarks/fully_conv.py --weights runs/fc_dense.pt --append --label \"dense fine-tune, 300 steps\"",
    "```", "",
    "A first attempt, fine-tuning with `edgedet train` on 48x60 windows cut out of scenes, was stopped before "
    "its first epoch ended when the window-vs-crop gap below showed that crops are not what the dense network "
    "sees; it has no row, and its window dataset was dropped.", "",
]


def load_scenes(count: int) -> tuple[list[np.ndarray], list[tuple[np.ndarray, np.ndarray]]]:
    dataset = build_dataset(DATA, split="val")
    frames, truth = [], []
    for i in range(min(count, len(dataset))):
        sample = dataset[i]
        frames.append(np.repeat(sample["image"], 3, axis=2))  # grey -> BGR, as a camera delivers
        truth.append((sample["boxes"], sample["labels"]))
    return frames, truth


def evaluate(path: Path, frames: list[np.ndarray], truth: list) -> tuple[dict, float]:
    model = load_model(path, backend="onnxruntime", providers="cpu")
    detections, times = [], []
    for frame in frames:
        start = time.perf_counter()
        result = model(frame)
        times.append((time.perf_counter() - start) * 1e3)
        detections.append((result.boxes, result.scores, result.labels))
    return coco_map(detections, truth, len(model.class_names), model.class_names), statistics.median(times[3:])


def window_vs_crop(weights: str, frames: list[np.ndarray], count: int = 8) -> dict[str, float]:
    """Dense windows against the localizer on the same windows cut out of the frame."""
    model = build_model("localizer", resolve_weights("localizer", weights))
    dense = fully_convolutional(model)
    wh, ww = model.cfg.input_size
    stride = dense.stride
    logit_diff, score_diff, ious, agree, present = [], [], [], [], 0
    with torch.no_grad():
        for frame in frames[:count]:
            x = torch.from_numpy(frame[..., :1].copy()).permute(2, 0, 1)[None].float() / 255  # grey
            heads = dense(x)[0]  # (5 + C, gh, gw)
            _, h, w = x.shape[1:]
            rows = [(i, j) for i in range(heads.shape[1]) for j in range(heads.shape[2])
                    if i * stride + wh <= h and j * stride + ww <= w]
            crops = torch.cat([x[..., i * stride:i * stride + wh, j * stride:j * stride + ww] for i, j in rows])
            crop_out = model(crops)
            dense_out = torch.stack([heads[:, i, j] for i, j in rows])
            logit_diff.append((crop_out - dense_out).abs().max().item())
            cs, cb, cl, _ = decode_localizer(crop_out, (wh, ww))
            ds, db, dl, _ = decode_localizer(dense_out, (wh, ww))
            score_diff.append((cs - ds).abs().mean().item())
            sure = cs > 0.5
            present += int(sure.sum())
            ious += box_iou(cb[sure], db[sure]).diagonal().tolist()
            agree += (cl[sure] == dl[sure]).tolist()
    return {"windows_images": min(count, len(frames)), "max_logit_diff": max(logit_diff),
            "mean_score_diff": statistics.mean(score_diff), "present": present,
            "box_iou": statistics.mean(ious) if ious else float("nan"),
            "label_agreement": statistics.mean(agree) if agree else float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=samples.checkpoint("localizer"))
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--label", default="shipped localizer.pt, no retraining")
    parser.add_argument("--append", action="store_true", help="add rows to the existing table")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "fully_conv.md")
    args = parser.parse_args()
    frames, truth = load_scenes(args.images)
    load_before = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for conf, iou, agnostic in SETTINGS:
            name = f"fc-{conf}-{iou}-{int(agnostic)}"
            options = ExportOptions(formats=("onnx",), fully_conv=True, name=name, check=False,
                                    nms=NMSSettings(conf=conf, iou=iou, max_det=100, agnostic=agnostic))
            [f] = export_model("localizer", tmp, options, weights=str(args.weights), say=lambda m: None)
            metrics, p50 = evaluate(f.path, frames, truth)
            rows.append((conf, iou, agnostic, metrics["map50"], metrics["map50_95"], metrics["num_detections"], p50))
            print(f"conf {conf} iou {iou} agnostic {agnostic}: mAP@0.5 {metrics['map50']:.4f} "
                  f"mAP@0.5:0.95 {metrics['map50_95']:.4f} detections {metrics['num_detections']} "
                  f"p50 {p50:.1f} ms", flush=True)
    gap = window_vs_crop(str(args.weights), frames)
    print(gap)
    load = f"1-minute load average {load_before:.1f} at the start and {os.getloadavg()[0]:.1f} at the end"
    objects = sum(len(t[1]) for t in truth)
    table = [f"| {args.label} | {conf} | {iou} | {'agnostic' if agnostic else 'per class'} | {m50:.4f} | "
             f"{m5095:.4f} | {dets} | {p50:.1f} |" for conf, iou, agnostic, m50, m5095, dets, p50 in rows]
    table.append(f"| ({args.label}: {load}) | | | | | | | |")
    gap_line = (f"- {args.label}: on {gap['windows_images']} scenes, windows inside the frame: largest |logit "
                f"difference| {gap['max_logit_diff']:.3f}, mean |p_c difference| {gap['mean_score_diff']:.4f}; "
                f"of the {gap['present']} windows whose crop says a digit is present (p_c > 0.5), box IoU "
                f"dense vs crop {gap['box_iou']:.4f} on average and the same label for "
                f"{gap['label_agreement'] * 100:.1f}%.")
    if args.append and args.out.exists():
        text = args.out.read_text()
        head, _, tail = text.partition("\n\n## Window vs crop\n")
        args.out.write_text(head + "\n" + "\n".join(table) + "\n\n## Window vs crop\n" + tail.rstrip("\n") + "\n"
                            + gap_line + "\n")
        print(f"appended to {args.out}")
        return
    lines = [
        "# Fully convolutional localizer on digits-scene", "",
        f"The localizer exported with `edgedet export --model localizer --fully-conv` (240x320 frames, windows "
        f"48x60 every 8 pixels, score = p_c x class probability, NMS in the graph) and run with the runtime's "
        f"ONNX Runtime CPU backend, batch 1, on {len(frames)} validation scenes of `{DATA}` ({objects} digits). "
        f"mAP by faster-coco-eval, as `edgedet val`. Produced by `benchmarks/fully_conv.py`.", "",
        f"- CPU: {cpu_name()} (2 cores, shared with other jobs); onnxruntime {ort.__version__}; torch "
        f"{torch.__version__}; Python {platform.python_version()}. Latency is per frame through the runtime "
        f"(letterbox, graph, mapping back), measured while other jobs loaded the machine ({load}): "
        f"indicative only.", "",
        "| checkpoint | conf | NMS IoU | NMS | mAP@0.5 | mAP@0.5:0.95 | detections | p50 ms |",
        "|---|---:|---:|---|---:|---:|---:|---:|",
        *table, "", "## Window vs crop", "",
        "The dense map against the localizer run on each window cut out of the frame (torch, fp32):", "",
        gap_line,
    ]
    lines[lines.index("## Window vs crop"):lines.index("## Window vs crop")] = FINE_TUNING
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
