"""Train each family to its accuracy target with ``edgedet train`` and score it with ``edgedet val``.

Usage (from the repository root)::

    python benchmarks/accuracy/train_targets.py localizer          # one recipe
    python benchmarks/accuracy/train_targets.py localizer grid     # several, one after another
    python benchmarks/accuracy/train_targets.py --list
    python benchmarks/accuracy/train_targets.py --report           # markdown rows of finished runs

Every recipe runs the real command line (``python -m edgedet train ...`` then ``python -m edgedet
val --json``) in ``runs/accuracy/<recipe>/`` and writes ``summary.json`` there: the commands, the
figures, wall and CPU time, the machine and its load. ``--report`` turns the summaries into the rows
of ``benchmarks/results/accuracy.md``. Datasets use ``glyphs=builtin`` so a run gives the same
pictures on every machine (with MNIST on disk, ``auto`` would pick it instead).

``unet-pennfudan`` needs the Penn-Fudan set on disk: ``--pennfudan PATH`` (holds PNGImages/).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUNS = Path("runs/accuracy")

# name -> (train arguments, {metric: target}, the seed's figures)
RECIPES: dict[str, tuple[list[str], dict[str, float], str]] = {
    "localizer": (["--model", "localizer", "--data", "digits-loc:glyphs=builtin", "--epochs", "15", "--batch", "32",
                   "--lr", "0.004", "--cfg", "dropout=0", "--cfg", "widths=[24,48,96]", "--cfg", "hidden=256"],
                  {"accuracy": 0.99, "mean_iou": 0.85}, "accuracy 0.959, IoU 0.733"),
    "grid": (["--model", "grid", "--data", "digits-grid:glyphs=builtin", "--epochs", "40", "--batch", "32",
              "--lr", "0.004", "--cfg", "widths=[24,48]", "--cfg", "cell_channels=256"],
             {"accuracy": 0.995, "mean_iou": 0.93}, "accuracy 0.981, IoU 0.919"),
    # Wants a GPU (3.8 min on one H100): half width, input 256 (the 128-pixel
    # scenes upscaled, so the strides 32 and 16 give 8x8 and 16x16 grids).
    "yolov3-tiny": (["--model", "yolov3-tiny", "--data", "clutter:glyphs=builtin,n=5000", "--epochs", "20",
                     "--batch", "64", "--imgsz", "256", "--lr", "0.004", "--cfg", "width=0.5", "--box-loss", "giou",
                     "--device", "cuda", "--workers", "12"],
                    {"map50": 0.95, "map50_95": 0.70}, "never measured"),
    # Darknet-53 YOLOv3, prepared for one GPU in about 8 minutes (not yet run on one): mixed
    # precision, channels-last (both automatic on CUDA), new samples drawn by 12 workers every epoch,
    # validation on 500 images. 144k training images: the yolov3-tiny recipe moved ~440 images/s
    # through the same data pipeline on an H100, so the data side fits 8 minutes with room; at 256 px
    # the network is ~25 GFLOPs forward per image, ~75 with the backward pass, ~11 PFLOP in all.
    "yolov3": (["--model", "yolov3", "--data", "clutter:glyphs=builtin,n=6000", "--epochs", "24",
                "--batch", "64", "--imgsz", "256", "--lr", "0.002", "--box-loss", "giou",
                "--device", "cuda", "--workers", "12", "--amp", "--val-images", "500"],
               {"map50": 0.95, "map50_95": 0.70}, "never measured"),
    # The earlier CPU sample: a quarter-width model at 128, short of the target.
    "yolov3-tiny-cpu": (["--model", "yolov3-tiny", "--data", "clutter:glyphs=builtin,n=5000", "--epochs", "30",
                         "--batch", "32", "--lr", "0.004", "--cfg", "width=0.25", "--box-loss", "giou"],
                        {"map50": 0.95, "map50_95": 0.70}, "never measured"),
    "unet": (["--model", "unet", "--data", "clutter:glyphs=builtin,n=2000", "--epochs", "35", "--batch", "16",
              "--cfg", "base_width=8"],
             {"mean_iou": 0.85}, "-"),
    "unet-pennfudan": (["--model", "unet", "--data", "pennfudan:{pennfudan}", "--imgsz", "256", "--epochs", "60",
                        "--batch", "8", "--class-weights", "1,2"],
                       {"mean_iou": 0.75}, "test mean IoU 0.703"),
}


def machine() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "gpu": gpu, "torch": torch.__version__,
            "python": platform.python_version()}


def run_recipe(name: str, pennfudan: str | None, extra: list[str]) -> dict:
    args, targets, seed = RECIPES[name]
    if "{pennfudan}" in " ".join(args):
        if not pennfudan:
            raise SystemExit(f"{name} needs --pennfudan PATH")
        args = [a.replace("{pennfudan}", pennfudan) for a in args]
    out = RUNS / name
    train_cmd = ["edgedet", "train", *args, "--out", str(out), "--exist-ok", *extra]
    val_cmd = ["edgedet", "val", "--weights", str(out / "best.pt"), "--json", str(out / "val.json")]
    load_before = os.getloadavg()
    start, cpu0 = time.time(), resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-m", "edgedet", *train_cmd[1:]], check=True, cwd=REPO)
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    seconds = time.time() - start
    subprocess.run([sys.executable, "-m", "edgedet", *val_cmd[1:]], check=True, cwd=REPO)
    val = json.loads((REPO / out / "val.json").read_text())
    history = _last_history(REPO / out / "last.pt")
    summary = {
        "recipe": name, "train_command": " ".join(train_cmd), "val_command": " ".join(val_cmd),
        "targets": targets, "seed_figures": seed,
        "metrics": {k: val[k] for k in ("accuracy", "mean_iou", "map50", "map50_95", "pixel_accuracy") if k in val},
        "reached": {k: val.get(k, 0.0) >= v for k, v in targets.items()},
        "train_seconds": seconds, "train_cpu_seconds": (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime),
        "epochs_run": len(history), "best_epoch": _best_epoch(REPO / out / "best.pt"),
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "machine": machine(), "finished": time.strftime("%Y-%m-%d %H:%M"),
    }
    (REPO / out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return summary


def _last_history(path: Path) -> list:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)["train"].get("history", [])


def _best_epoch(path: Path) -> int | None:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)["train"].get("epoch")


def report() -> str:
    rows = ["| recipe | seed's figure | target | measured | reached | epochs (best) | train time | hardware |",
            "|---|---|---|---|---|---|---|---|"]
    for name in RECIPES:
        path = REPO / RUNS / name / "summary.json"
        if not path.is_file():
            continue
        s = json.loads(path.read_text())
        target = ", ".join(f"{k} ≥ {v}" for k, v in s["targets"].items())
        measured = ", ".join(f"{k} {s['metrics'][k]:.4f}" for k in s["targets"] if k in s["metrics"])
        reached = "yes" if all(s["reached"].values()) else "no"
        m = s["machine"]
        hw = m["gpu"] or f"{m['cpu']}, {m['cores']} cores"
        rows.append(f"| {name} | {s['seed_figures']} | {target} | {measured} | {reached} | "
                    f"{s['epochs_run']} ({s['best_epoch']}) | {s['train_seconds'] / 60:.1f} min "
                    f"(CPU {s['train_cpu_seconds'] / 60:.1f} min) | {hw} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipes", nargs="*", help=f"any of: {', '.join(RECIPES)}")
    parser.add_argument("--pennfudan", help="Penn-Fudan folder for unet-pennfudan")
    parser.add_argument("--list", action="store_true", help="print the recipes' commands")
    parser.add_argument("--report", action="store_true", help="markdown rows of the finished runs")
    args, extra = parser.parse_known_args()
    if args.list:
        for name, (train_args, targets, _) in RECIPES.items():
            print(f"{name}: edgedet train {' '.join(train_args)} --out {RUNS / name}   # {targets}")
        return
    if args.report:
        print(report())
        return
    unknown = [r for r in args.recipes if r not in RECIPES]
    if unknown or not args.recipes:
        parser.error(f"name recipes from: {', '.join(RECIPES)}")
    for name in args.recipes:
        run_recipe(name, args.pennfudan, extra)


if __name__ == "__main__":
    main()
