"""ViT localizer: Pre-LN against Post-LN attention blocks on one recipe, with and without warm-up.

Xiong et al. 2020 ("On Layer Normalization in the Transformer Architecture") show that Pre-LN
transformers train without a learning-rate warm-up, while the original Post-LN order needs one.
Every run here is the same ``vit`` recipe (same data, seed, learning rate, schedule length), only
``norm_first`` and ``warmup_epochs`` change; the cosine decay follows the warm-up (or starts at once
without one). Each run is ``edgedet.train.trainer.train``, the code ``edgedet train`` runs, whose CLI
has no warm-up option; the runs go to a temporary folder.

Usage: python benchmarks/vit_norm_order.py [--epochs 4] [--n 2000] [--lr 0.001,0.004] [--warmups 0,1]
       [--val-images N] [--threads 1] [--jobs 1]
Writes benchmarks/results/vit.md (the final figures of every run and each run's curve).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from edgedet.bench import cpu_name, gemm_gflops
from edgedet.train.options import TrainingError, TrainOptions
from edgedet.train.trainer import train

REPO = Path(__file__).resolve().parents[1]
MODEL_CONFIG = {"dim": 64, "depth": 4, "heads": 4, "mlp_ratio": 2.0, "stem_channels": 32}


def _cpu_busy() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the whole machine, from /proc/stat; None where it is missing."""
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    except OSError:
        return None
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(ticks) - ticks[3] - ticks[4]) / hz, sum(ticks) / hz


def run(norm_first: bool, warmup: float, lr: float, args: argparse.Namespace, root: Path) -> dict:
    name = f"{'pre' if norm_first else 'post'}-ln-lr{lr:g}-warmup{warmup:g}"
    torch.set_num_threads(args.threads)
    options = TrainOptions(model="vit", data=f"digits-loc:glyphs=builtin,n={args.n}", epochs=args.epochs,
                           batch=args.batch, lr=lr, warmup_epochs=warmup, device="cpu", seed=args.seed,
                           patience=0, out=str(root / name), val_images=args.val_images,
                           model_config={**MODEL_CONFIG, "norm_first": norm_first})
    start, busy = time.perf_counter(), _cpu_busy()
    try:
        result = train(options, say=lambda m: None, progress=False)
    except TrainingError as e:  # a diverged loss is a result here, not a failure of the script
        print(f"{name:28} {e}")
        return {"name": name, "norm_first": norm_first, "warmup": warmup, "lr": lr, "curve": [],
                "seconds": time.perf_counter() - start, "load": None, "best_epoch": None, "best": {},
                "error": str(e)}
    seconds, busy_end = time.perf_counter() - start, _cpu_busy()
    load = None
    if busy and busy_end and busy_end[1] > busy[1]:
        load = (busy_end[0] - busy[0]) / (busy_end[1] - busy[1])
    curve = [(row["val/accuracy"], row["val/mean_iou"], row["train/loss"]) for row in result.history]
    last = result.history[-1]
    print(f"{name:28} accuracy {last['val/accuracy']:.4f}  mean_iou {last['val/mean_iou']:.4f}  "
          f"loss {last['train/loss']:.4f}  {seconds:.0f} s")
    return {"name": name, "norm_first": norm_first, "warmup": warmup, "lr": lr, "curve": curve, "seconds": seconds,
            "load": load, "best_epoch": result.best_epoch, "best": result.best_metrics}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--n", type=int, default=2000,
                        help="images per epoch (fresh each epoch) and in the validation split")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", default="0.001,0.004", help="peak learning rates, comma-separated")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warmups", default="0,1", help="warm-up epochs, comma-separated")
    parser.add_argument("--val-images", type=int, default=None,
                        help="validate on the first N validation images (default: all --n)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (separate processes)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "vit.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    gemm = gemm_gflops(seconds=0.3, threads=args.threads)
    plan = [(norm_first, float(warmup), float(lr)) for lr in args.lr.split(",") for norm_first in (True, False)
            for warmup in args.warmups.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        if args.jobs > 1:  # one process per run, so each keeps its own torch threads
            context = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
                runs = list(pool.map(run, *zip(*plan), *([x] * len(plan) for x in (args, Path(tmp)))))
        else:
            runs = [run(*step, args, Path(tmp)) for step in plan]

    cfg = ", ".join(f"{k} {v:g}" for k, v in MODEL_CONFIG.items())
    lrs = ", ".join(sorted({f"{r['lr']:g}" for r in runs}))
    lines = [
        "# ViT localizer: Pre-LN vs Post-LN attention blocks",
        "",
        f"Same recipe for every row: `vit` ({cfg}, patch 6, no dropout) on "
        f"`digits-loc:glyphs=builtin,n={args.n}` (fresh training images every epoch), {args.epochs} epochs, "
        f"batch {args.batch}, AdamW, cosine decay to 1 %, seed {args.seed}; only the peak learning rate "
        f"({lrs}), the block order (`norm_first`) and the linear warm-up from 1 % of the peak change. Figures are the "
        f"first {args.val_images or args.n} images of the validation split after the last epoch"
        f"{f' ({args.jobs} runs at a time, one process each)' if args.jobs > 1 else ''}. Produced by `benchmarks/vit_norm_order.py`.",
        "",
        f"- CPU: {cpu_name()}, {os.cpu_count()} cores, {args.threads} torch thread(s); sgemm "
        f"{gemm:.0f} GFLOP/s at the start; torch {torch.__version__}; Python {platform.python_version()}",
        "- Machine load: the busy share of all cores during each run (other jobs shared the machine, so "
        "the times are upper bounds).",
        "",
        "| peak lr | blocks | warm-up | accuracy | mean IoU | train loss | best epoch (accuracy, IoU) | time | machine busy |",
        "|---|---|---|---:|---:|---:|---|---:|---:|",
    ]
    for r in runs:
        order = "Pre-LN" if r["norm_first"] else "Post-LN"
        if not r["curve"]:
            lines.append(f"| {r['lr']:g} | {order} | {r['warmup']:g} epoch | diverged | - | - | - | "
                         f"{r['seconds'] / 60:.1f} min | - |")
            continue
        acc, iou, loss = r["curve"][-1]
        best = f"{r['best_epoch']} ({r['best'].get('accuracy', float('nan')):.4f}, " \
               f"{r['best'].get('mean_iou', float('nan')):.4f})"
        load = "-" if r["load"] is None else f"{r['load']:.0%}"
        lines.append(f"| {r['lr']:g} | {order} | {r['warmup']:g} epoch | {acc:.4f} | "
                     f"{iou:.4f} | {loss:.4f} | {best} | {r['seconds'] / 60:.1f} min | {load} |")
    lines += ["", "Curves (validation accuracy / mean IoU after each epoch):", ""]
    for r in runs:
        points = ", ".join(f"{a:.3f}/{i:.3f}" for a, i, _ in r["curve"]) or r.get("error", "")
        lines.append(f"- {r['name']}: {points}")
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
