"""CPU speed of the exported graphs against PyTorch eager and against the machine's sgemm rate.

For each model (yolov3-tiny 416, yolov3 416, unet 128 by default) this runs ``edgedet bench``'s
engine at batch 1 on the eager PyTorch deploy wrapper (preprocessing, model, decoding, NMS: the
same work as the graph), the TorchScript file and the ONNX graph through the runtime's ONNX
Runtime CPU backend, and, in the same process, torch's float32 matrix multiply (1024^3) as the
hardware reference. Graphs come from seeded random weights: the timing of the network does not
depend on the weights, and with these weights no box passes the score threshold, so the NMS cost
is the same (empty) for every backend.

Rounds alternate the backends (eager, torchscript, onnxruntime, eager, ...) so that a change in the
machine's load hits every backend alike; the table gives the median of the rounds' p50s, and the
ratio of ONNX Runtime to eager is taken within each round.

Usage: python benchmarks/cpu_speed.py [--models yolov3-tiny,yolov3,unet] [--rounds 3] [--iters 30]
Writes benchmarks/results/cpu_speed.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import onnxruntime as ort
import torch

from edgedet.bench import MachineProbe, cpu_name, eager_rows, graph_rows
from edgedet.export.api import ExportOptions, export_model
from edgedet.export.deploy import NMSSettings, build_deploy_module
from edgedet.models import create_model, get_entry, model_gflops

REPO = Path(__file__).resolve().parents[1]
SIZES = {"yolov3-tiny": (416, 416), "yolov3": (416, 416), "unet": (128, 128)}


def bench_one(name: str, rounds: int, warmup: int, iters: int) -> dict:
    size = SIZES.get(name)
    with tempfile.TemporaryDirectory() as tmp:
        files = export_model(name, tmp, ExportOptions(imgsz=size, check=False), random_init=True, say=lambda m: None)
        torch.manual_seed(0)
        model = create_model(name, **({"input_size": size} if size else {})).eval()
        size = tuple(model.cfg.input_size)
        gflops = model_gflops(model)
        nms = NMSSettings() if get_entry(name).task == "detection" else None
        module, _ = build_deploy_module(model, nms=nms)
        by_format = {f.format: f.path for f in files}
        per_round = []
        probe = MachineProbe()
        for r in range(rounds):
            rows = eager_rows(module, name, (1,), size, False, gflops, probe, warmup, iters, print)
            rows += graph_rows(by_format["torchscript"], ("torchscript",), "cpu", (1,), size, gflops, probe,
                                warmup, iters, print)
            rows += graph_rows(by_format["onnx"], ("onnxruntime",), "cpu", (1,), size, gflops, probe,
                                warmup, iters, print)
            gemm = max(row.gemm_gflops for row in rows)  # the probes right next to this round's rows
            per_round.append({row.backend: row for row in rows} | {"gemm": gemm})
            print(f"{name} round {r + 1}: sgemm {gemm:.1f} GFLOP/s, "
                  + ", ".join(f"{row.backend} {row.p50_ms:.2f} ms" for row in rows))
    return {"name": name, "size": size, "gflops": gflops, "rounds": per_round}


def table(results: list[dict]) -> list[str]:
    lines = ["| model | input | GFLOPs | backend | p50 ms (median of rounds) | img/s | GFLOP/s | of sgemm | vs eager (per round) |",
             "|---|---|---:|---|---:|---:|---:|---:|---|"]
    for res in results:
        for backend in ("eager", "torchscript", "onnxruntime"):
            rows = [r[backend] for r in res["rounds"] if backend in r]
            if not rows:
                continue
            p50 = statistics.median(r.p50_ms for r in rows)
            achieved = res["gflops"] / (p50 / 1e3)
            gemm = statistics.median(r["gemm"] for r in res["rounds"])
            speedups = [r["eager"].p50_ms / r[backend].p50_ms for r in res["rounds"] if backend in r]
            vs = "-" if backend == "eager" else ", ".join(f"{s:.2f}x" for s in speedups)
            lines.append(f"| {res['name']} | {res['size'][0]}x{res['size'][1]} | {res['gflops']:.2f} | {backend} | "
                         f"{p50:.2f} | {1e3 / p50:.1f} | {achieved:.1f} | {achieved / gemm * 100:.0f}% | {vs} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="yolov3-tiny,yolov3,unet")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "cpu_speed.md")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    start = time.time()
    results = [bench_one(name, args.rounds, args.warmup, args.iters) for name in args.models.split(",")]
    gemms = [r["gemm"] for res in results for r in res["rounds"]]
    lines = [
        "# CPU speed: ONNX Runtime and TorchScript against PyTorch eager, and against sgemm", "",
        f"- CPU: {cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"onnxruntime {ort.__version__} (CPU provider, the runtime's session options)",
        f"- torch sgemm 1024^3, measured before each round: {min(gemms):.1f} to {max(gemms):.1f} GFLOP/s",
        f"- machine load (1-minute average) {load_before:.2f} before, {os.getloadavg()[0]:.2f} after; "
        f"{time.time() - start:.0f} s in all",
        f"- batch 1, {args.rounds} rounds of {args.warmup} warm-up + {args.iters} timed runs per backend; "
        "uint8 BGR frames in, detections or masks out (preprocessing, decoding and NMS included everywhere)",
        "- GFLOPs per image count convolutions and matrix products, a multiply-add as two (darknet's count)",
        "", *table(results), "",
        "Reproduce: `python benchmarks/cpu_speed.py`.",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
