"""OpenVINO against ONNX Runtime on the same exported graphs, every shipped family.

For each model with a shipped checkpoint: export its ONNX graph (NMS in the graph, the shipped
weights), then time it with ``edgedet bench``'s own code on ``onnxruntime``, ``openvino`` (f32)
and ``openvino-bf16`` (where the CPU has bf16), at batch 1 and 8, in interleaved rounds; each row
carries the float32 MatMul peak probed next to it and the share of the CPU other processes took.
Writes ``benchmarks/results/openvino.md``. Accuracy of bf16 is ``edgedet parity --bf16``'s job.

    python benchmarks/openvino_speed.py [--rounds 3] [--iters 30]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "openvino.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--batch", default="1,8")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    try:
        import openvino
    except ImportError:
        print('openvino_speed: skipped: OpenVINO is not installed (pip install "edgedet[openvino]")')
        return 0
    import onnxruntime

    from edgedet import samples
    from edgedet.bench import bench_files, cpu_name
    from edgedet.export.api import ExportOptions, export_model

    batches = tuple(int(b) for b in args.batch.split(","))
    backends = ["onnxruntime", "openvino"]
    if "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        backends.append("openvino-bf16")
    start = time.perf_counter()
    load_before = os.getloadavg()[0]
    rows: dict[tuple, list] = {}
    with tempfile.TemporaryDirectory() as tmp:
        graphs = []
        for name in samples.shipped_models():
            files = export_model(name, tmp, ExportOptions(formats=("onnx",), check=False),
                                 weights=str(samples.checkpoint(name)), say=lambda m: None)
            graphs.append(files[0].path)
        for r in range(args.rounds):
            for path in graphs:
                # one backend at a time, in a rotating order, so no backend always runs first
                order = backends[r % len(backends):] + backends[:r % len(backends)]
                for backend in order:
                    for rec in bench_files([path], (backend,), "cpu", batches, warmup=5, iters=args.iters):
                        rows.setdefault((rec.model, rec.backend, rec.batch), []).append(rec)
            print(f"round {r + 1}/{args.rounds} done ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    load_after = os.getloadavg()[0]
    lines = ["# OpenVINO against ONNX Runtime: the same graphs, every shipped family", "",
             f"`python benchmarks/openvino_speed.py --rounds {args.rounds} --iters {args.iters}` in "
             f"{time.perf_counter() - start:.0f} s.", "",
             f"- CPU: {cpu_name()}, {os.cpu_count()} logical cores; load average {load_before:.1f} before, "
             f"{load_after:.1f} after",
             f"- onnxruntime {onnxruntime.__version__}, OpenVINO {openvino.__version__}, Python "
             f"{platform.python_version()}",
             "- graphs: the shipped checkpoints exported with NMS in the graph (uint8 frames in); "
             "threads: the physical cores; ONNX Runtime's idle threads sleep (as `edgedet run`)",
             "- p50 is the median over rounds of each round's median; `peak` is the float32 MatMul peak "
             "(ONNX Runtime's kernel) probed next to the rows; `others` the CPU share other processes "
             "took (max over rounds)", "",
             "| model | batch | ONNX Runtime p50 ms | OpenVINO f32 p50 ms | f32 / ORT | "
             + ("OpenVINO bf16 p50 ms | bf16 / ORT | " if "openvino-bf16" in backends else "")
             + "peak GFLOP/s | others |",
             "|---|---:|---:|---:|---:|" + ("---:|---:|" if "openvino-bf16" in backends else "") + "---:|---:|"]
    models = dict.fromkeys(m for m, _, _ in rows)
    for model in models:
        for batch in batches:
            def p50(backend):
                recs = rows.get((model, backend, batch), [])
                return statistics.median(r.p50_ms for r in recs) if recs else float("nan")
            recs = [r for (m, _, b), rs in rows.items() if m == model and b == batch for r in rs]
            ort_ms, f32_ms = p50("onnxruntime"), p50("openvino")
            cells = [model, str(batch), f"{ort_ms:.2f}", f"{f32_ms:.2f}", f"{f32_ms / ort_ms:.2f}"]
            if "openvino-bf16" in backends:
                bf16_ms = p50("openvino-bf16")
                cells += [f"{bf16_ms:.2f}", f"{bf16_ms / ort_ms:.2f}"]
            peak = max(r.gemm_gflops for r in recs)
            others = max((r.others_busy or 0.0) for r in recs)
            cells += [f"{peak:.0f}", f"{others:.0%}"]
            lines.append("| " + " | ".join(cells) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
