"""``edgedet quickstart``: the whole product on the small checkpoints shipped with edgedet.

For each family it exports the shipped checkpoint to ONNX and TorchScript with NMS in the graph,
proves parity with PyTorch, times each backend and scores the checkpoint on validation data; then
renders a short video of clutter digits, runs the exported detector and segmenter on it with the
runtime, draws the training curves, and writes a Markdown report linking everything. The
checkpoints and their training logs come from :mod:`edgedet.samples` (package data, so an
installed wheel runs the quickstart as a checkout does).
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from edgedet import samples as shipped
from edgedet.errors import EdgedetError

__all__ = ["SAMPLES_DIR", "QuickstartError", "shipped_families", "render_clutter_video", "quickstart"]

SAMPLES_DIR = shipped.root()
# How the report and messages name the shipped folder: the same in a checkout and an installed wheel.
SHOWN_DIR = "edgedet/samples"
VIDEO_DATA = "clutter"


class QuickstartError(EdgedetError):
    """The shipped samples are missing or unusable."""


def shipped_families(samples: Path | None = None) -> list[tuple[str, str, str]]:
    """``(model, validation data, description)`` of every shipped checkpoint, in registry order.

    Each registered model with a checkpoint in the samples is included; its family spec says what
    it is (``summary``) and what it is scored on (``parity_data``, the first ``quickstart_images``
    validation images), so a new family with a shipped checkpoint joins the quickstart by itself.
    """
    from edgedet.models import get_entry, list_models

    have = set(shipped.shipped_models(samples))
    rows = []
    for name in list_models():
        if name in have:
            spec = get_entry(name).spec
            rows.append((name, f"{spec.parity_data},n={spec.quickstart_images}", spec.summary or name))
    if not rows:
        where = f"{SHOWN_DIR} ({SAMPLES_DIR})" if samples is None else str(samples)
        raise QuickstartError(f"no checkpoints of registered models in {where}/checkpoints; "
                              "reinstall edgedet (its wheel and a checkout both carry them)")
    return rows


@dataclass
class FamilyReport:
    model: str
    description: str
    checkpoint: str
    files: dict[str, str] = field(default_factory=dict)  # format -> path
    sizes_mb: dict[str, float] = field(default_factory=dict)
    parity: dict[str, str] = field(default_factory=dict)  # backend -> PASS/FAIL/SKIPPED (reason)
    latency_ms: dict[str, float] = field(default_factory=dict)  # backend -> p50 at batch 1
    metrics: dict[str, float] = field(default_factory=dict)
    val_images: int = 0
    plot: str = ""


def render_clutter_video(path: Path, frames: int = 48, size: int = 256, fps: int = 12) -> Path:
    """A short video of clutter digits drifting across the frame (deterministic, no network)."""
    from edgedet.data import build_dataset
    from edgedet.runtime.files import atomic_path

    dataset = build_dataset(f"{VIDEO_DATA}:glyphs=builtin,size={size},max_digits=6", split="val")
    scenes = max(1, frames // 12)
    with atomic_path(path) as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (size, size))
        if not writer.isOpened():
            raise QuickstartError("OpenCV cannot write mp4 video here (no mp4v encoder)")
        try:
            for k in range(frames):
                scene = dataset[k * scenes // frames]["image"]
                t = (k % (frames // scenes)) / max(1, frames // scenes - 1) - 0.5  # -0.5 .. 0.5 per scene
                shift = np.float32([[1, 0, 24 * t], [0, 1, 12 * t]])  # a slow pan
                writer.write(cv2.warpAffine(scene, shift, (size, size), borderMode=cv2.BORDER_REFLECT))
        finally:
            writer.release()
    return path


def _history(csv_path: Path) -> list[dict[str, float]]:
    with open(csv_path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def _family(name: str, data: str, description: str, out: Path, samples: Path | None,
            say: Callable[[str], None]) -> FamilyReport:
    from edgedet.bench import bench_files
    from edgedet.export.api import ExportOptions, export_model
    from edgedet.parity.runner import ParityOptions, check_file
    from edgedet.train.checkpoint import load_checkpoint
    from edgedet.train.plots import plot_history
    from edgedet.train.validate import validate_checkpoint

    ckpt = shipped.checkpoint(name, folder=samples)
    if ckpt is None:
        where = f"{SHOWN_DIR} ({SAMPLES_DIR})" if samples is None else str(samples)
        raise QuickstartError(f"checkpoints/{name}.pt is missing from {where}; "
                              "reinstall edgedet (its wheel and a checkout both carry it)")
    shown = f"{SHOWN_DIR}/checkpoints/{ckpt.name}" if samples is None else str(ckpt)
    report = FamilyReport(name, description, shown)
    say(f"[{name}] export to ONNX and TorchScript")
    for f in export_model(name, out / "graphs", ExportOptions(check=False), weights=str(ckpt), say=say):
        report.files[f.format] = str(f.path.relative_to(out))
        report.sizes_mb[f.format] = round(f.path.stat().st_size / 1e6, 2)
    say(f"[{name}] parity with PyTorch")
    for fmt, rel in report.files.items():
        result = check_file(out / rel, ParityOptions(samples=4, batch=4))
        for b in result.backends:
            report.parity[b.backend] = b.status.upper() + (f" ({b.reason})" if b.reason else "")
    say(f"[{name}] latency")
    rows = bench_files([out / rel for rel in report.files.values()], ("eager", "onnxruntime", "torchscript"),
                       warmup=3, iters=10)
    for r in rows:
        report.latency_ms.setdefault(r.backend, r.p50_ms)
    say(f"[{name}] accuracy of the shipped checkpoint on {data}")
    _, doc = validate_checkpoint(str(ckpt), data, progress=False)
    report.metrics = {k: round(float(v), 4) for k, v in doc.items()
                      if k in ("accuracy", "mean_iou", "map50", "map50_95", "mask_map50", "mask_map50_95",
                               "pixel_accuracy")}
    report.val_images = int(doc["images"])
    log = shipped.training_log(name, folder=samples)
    if log is not None:
        best_epoch = load_checkpoint(ckpt)["train"].get("epoch")
        plot = plot_history(_history(log), out / "plots" / f"{name}.png", best_epoch=best_epoch,
                            title=f"{name} training")
        report.plot = str(plot.relative_to(out))
    return report


def _markdown(families: list[FamilyReport], runs: dict[str, dict], video: str, seconds: float) -> str:
    lines = ["# edgedet quickstart", "",
             f"Everything below was produced by `edgedet quickstart` in {seconds:.0f} s on this machine, "
             f"from the checkpoints shipped with edgedet (`{SHOWN_DIR}/checkpoints`, trained with "
             "`edgedet train` on the synthetic datasets). Graphs take uint8 BGR frames and hold "
             "preprocessing, decoding and NMS.", "",
             "| model | ONNX size | parity | ONNX Runtime p50 (batch 1) | eager PyTorch p50 | validation |",
             "|---|---:|---|---:|---:|---|"]
    for fam in families:
        verdicts = {v.split(" ", 1)[0] for v in fam.parity.values()} - {"SKIPPED"}
        passed = [b for b, v in fam.parity.items() if v == "PASS"]
        parity = "FAIL" if verdicts - {"PASS"} else f"PASS ({len(passed)} backends)"
        score = ", ".join(f"{k} {v:.3f}" for k, v in fam.metrics.items() if k != "pixel_accuracy")
        lines.append(f"| {fam.model} | {fam.sizes_mb.get('onnx', 0):.2f} MB | {parity} | "
                     f"{fam.latency_ms.get('onnxruntime', float('nan')):.2f} ms | "
                     f"{fam.latency_ms.get('eager', float('nan')):.2f} ms | {score} |")
    lines.append("")
    for fam in families:
        lines += [f"## {fam.model}: {fam.description}", "",
                  "| | |", "|---|---|",
                  f"| checkpoint | `{fam.checkpoint}` |"]
        for fmt, rel in fam.files.items():
            lines.append(f"| {fmt} | [{rel}]({rel}) ({fam.sizes_mb[fmt]} MB) |")
        skipped = []
        for backend, verdict in fam.parity.items():
            if verdict.startswith("SKIPPED"):
                skipped.append(backend)
            else:
                lines.append(f"| parity, {backend} | {verdict} |")
        if skipped:
            lines.append(f"| parity, not run here | {', '.join(skipped)} (`edgedet parity FILE -v` says why) |")
        for backend, ms in fam.latency_ms.items():
            lines.append(f"| latency p50, batch 1, {backend} | {ms:.2f} ms |")
        for key, value in fam.metrics.items():
            lines.append(f"| {key} ({fam.val_images} validation images) | {value:.4f} |")
        lines.append("")
        if fam.plot:
            lines += [f"![{fam.model} training curves]({fam.plot})", ""]
    lines += ["## The runtime on a video", "", f"Source: [{video}]({video}), generated clutter digits.", ""]
    for name, run in runs.items():
        lines += [f"### {name}", "", f"- annotated video: [{run['video']}]({run['video']})",
                  f"- per-frame results: [{run['jsonl']}]({run['jsonl']})",
                  f"- {run['summary']}", "", f"![{name} frame]({run['frame']})", ""]
    return "\n".join(lines) + "\n"


def _middle_frame(video: Path, out: Path) -> Path:
    capture = cv2.VideoCapture(str(video))
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.set(cv2.CAP_PROP_POS_FRAMES, max(0, count // 2))
    ok, frame = capture.read()
    capture.release()
    if not ok:
        raise QuickstartError(f"cannot read back {video}")
    cv2.imwrite(str(out), frame)
    return out


def quickstart(out: str | Path = "quickstart", device: str = "cpu", samples: Path | None = None,
               say: Callable[[str], None] = print) -> Path:
    """Run the main job into ``out``; returns the report's path.

    ``samples``: a folder laid out like :mod:`edgedet.samples` to take the checkpoints from
    instead of the shipped ones.
    """
    from edgedet.runtime.files import atomic_write_bytes, check_writable_dir
    from edgedet.runtime.pipeline import RunOptions, run

    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise QuickstartError(f"--device must be cpu or cuda[:N], got {device!r}")
    from edgedet.train.trainer import resolve_device

    resolve_device(device)  # CUDA asked for on a machine without it: one error line before any work
    start = time.perf_counter()
    out = check_writable_dir(out)  # one error line before minutes of work
    table = shipped_families(samples)
    families = [_family(name, data, desc, out, samples, say) for name, data, desc in table]
    say("render a clutter video and run the exported graphs on it")
    video = render_clutter_video(out / "clutter.mp4")
    runs = {}
    providers = "auto" if device.startswith("cuda") else "cpu"
    for fam, (_, data, _) in zip(families, table):
        if not data.startswith(f"{VIDEO_DATA}:"):  # the video shows clutter digits: models made for them
            continue
        stem = f"clutter-{fam.model}"
        options = RunOptions(save=out / f"{stem}.mp4", save_json=out / f"{stem}.jsonl", progress=False)
        summary = run(out / fam.files["onnx"], str(video), options, providers=providers, say=lambda m: None,
                      say_err=lambda m: None)
        frame = _middle_frame(out / f"{stem}.mp4", out / f"{stem}.png")
        runs[fam.model] = {"video": f"{stem}.mp4", "jsonl": f"{stem}.jsonl", "frame": frame.name,
                           "summary": f"{summary.processed} frames at {summary.fps:.1f} FPS on "
                                      f"{', '.join(summary.providers)}"}
    report = out / "report.md"
    atomic_write_bytes(report, _markdown(families, runs, video.name, time.perf_counter() - start).encode())
    say(f"wrote {report} ({time.perf_counter() - start:.0f} s)")
    return report
