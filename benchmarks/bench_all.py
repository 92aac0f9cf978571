"""``edgedet bench --backends onnxruntime,openvino --json`` for every registered model, one table.

Runs the CLI itself (``python -m edgedet bench --model NAME ...``, random weights exported on the
fly) for each name ``edgedet models`` lists, at batch 1 and, for models under 10 GFLOPs, batch 8;
gathers the JSON records into ``benchmarks/results/bench_all.json`` and a table in
``benchmarks/results/bench_all.md``. Each record carries the MatMul peak measured next to it and
whether other processes used the CPU meanwhile (``under_load``): rerun the rows marked so.

Usage: python benchmarks/bench_all.py [--backends onnxruntime,openvino] [--iters 20] [--models a,b]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgedet.bench import cpu_name  # noqa: E402
from edgedet.models import get_entry, list_models, model_gflops  # noqa: E402
from edgedet.models.registry import create_model  # noqa: E402

# Models above this many GFLOPs per image are timed at batch 1 only (batch 8 of Darknet-53 at 416
# would take minutes per backend on a 2-core CPU).
BATCH8_LIMIT = 10.0


def bench_one(name: str, backends: str, batches: str, iters: int, out: Path) -> list[dict]:
    cmd = [sys.executable, "-m", "edgedet", "bench", "--model", name, "--backends", backends, "--batch", batches,
           "--iters", str(iters), "--json", str(out)]
    print("$ " + " ".join(cmd[1:]), flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True)
    print(done.stdout.rstrip(), flush=True)
    if done.returncode != 0:
        print(done.stderr.rstrip(), file=sys.stderr)
        return [{"model": name, "error": (done.stderr.strip().splitlines() or ["failed"])[-1]}]
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="onnxruntime,openvino")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--models", default=None, help="comma-separated (default: every registered model)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "bench_all.md")
    args = parser.parse_args()
    names = args.models.split(",") if args.models else list_models()
    unknown = [n for n in names if n not in list_models()]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(list_models())}")
    load_before = os.getloadavg()[0]
    records: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            cfg = get_entry(name).config
            gflops = model_gflops(create_model(name), tuple(cfg.input_size))
            batches = "1,8" if gflops < BATCH8_LIMIT else "1"
            records += bench_one(name, args.backends, batches, args.iters, Path(tmp) / f"{name}.json")
    load_after = os.getloadavg()[0]
    args.out.with_suffix(".json").write_text(json.dumps(records, indent=1) + "\n")
    lines = ["# `edgedet bench` on every registered model", "",
             f"`edgedet bench --model NAME --backends {args.backends} --iters {args.iters} --json ...` per model "
             f"(random weights, the model's default input size; batch 8 only under {BATCH8_LIMIT:g} GFLOPs). "
             "Produced by `benchmarks/bench_all.py`; the records are in `bench_all.json`.", "",
             f"- CPU: {cpu_name()}, {os.cpu_count()} logical cores; Python {platform.python_version()}",
             f"- Machine load (1-minute average): {load_before:.2f} before, {load_after:.2f} after; `*`: "
             "bench saw other processes use more than 10 % of the CPU during that row", "",
             "| model | backend | precision | batch | input | p50 ms | images/s | GFLOP/s | MatMul peak | of peak |",
             "|---|---|---|---:|---|---:|---:|---:|---:|---:|"]
    for r in records:
        if "error" in r:
            lines.append(f"| {r['model']} | error: {r['error']} | | | | | | | | |")
            continue
        mark = " *" if r.get("under_load") else ""
        lines.append(f"| {r['model']} | {r['backend']} | {r['precision']} | {r['batch']} | "
                     f"{r['imgsz'][0]}x{r['imgsz'][1]} | {r['p50_ms']:.2f}{mark} | {r['fps']:.1f} | "
                     f"{r['achieved_gflops']:.1f} | {r['gemm_gflops']:.0f} | {r['fraction_of_gemm']:.0%} |")
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out} and {args.out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
