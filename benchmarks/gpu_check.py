"""The GPU kit: a few minutes on a CUDA machine, one results table.

Run whenever a CUDA GPU is at hand (``python benchmarks/gpu_check.py``); on a machine without one
it says why it skips and exits 0 without touching the table. It measures, for YOLOv3 (Darknet-53)
at 416x416 with NMS in the graph (seeded random weights: timing and parity do not need trained ones):

- TorchScript on CUDA, fp32 and fp16: batch-1 latency and batch-32 throughput, both through the
  runtime's backend (uint8 frames in host memory in, numpy out: what ``edgedet run`` pays) and with
  the frames already on the device (what the network itself costs);
- ONNX Runtime's CUDA provider with IO binding (input and outputs bound on the device, so the
  timing is the session's, not PCIe copies), when ``onnxruntime-gpu`` is importable and has it;
- GPU parity of both against the eager model (``edgedet.parity``: the reference runs on the same
  GPU, fp16 against fp16).

Targets (from the issue that asked for the kit): yolov3 416 batch 1 <= 5 ms on the CUDA provider;
TorchScript fp16 batch 32 >= 2000 images/s (the course's anchor: 29 ms per image on a Titan X).
The table goes to ``benchmarks/results/gpu.md`` (``--out`` to change).
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

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "gpu.md"
MODEL, SIZE = "yolov3", (416, 416)


def skip_reason() -> str | None:
    """Why this machine cannot run the kit, or None."""
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed"
    if not torch.cuda.is_available():
        return f"no CUDA device (torch {torch.__version__} sees none)"
    return None


def _p50(times: list[float]) -> float:
    return statistics.median(times)


def _time(fn, warmup: int, iters: int, sync) -> list[float]:
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def frames(batch: int) -> np.ndarray:
    from edgedet.bench import bench_frames

    return bench_frames(batch, SIZE)


def torchscript_rows(path: Path, label: str, iters: int) -> list[dict]:
    import torch

    from edgedet.runtime.backends import create_backend

    rows = []
    backend = create_backend(path, "torchscript", "cuda", max_batch=32)
    sync = torch.cuda.synchronize
    for batch in (1, 32):
        x = frames(batch)
        t = _time(lambda: backend.run(x), 5, iters, sync)
        rows.append({"what": f"TorchScript CUDA {label}, runtime (host frames in, numpy out)", "batch": batch,
                     "p50_ms": _p50(t), "img_s": batch * 1e3 / _p50(t)})
        on_device = torch.from_numpy(x).cuda()
        module = backend.module
        with torch.inference_mode():
            t = _time(lambda: module(on_device), 5, iters, sync)
        rows.append({"what": f"TorchScript CUDA {label}, frames on the device", "batch": batch,
                     "p50_ms": _p50(t), "img_s": batch * 1e3 / _p50(t)})
    return rows


def ort_cuda_rows(path: Path, iters: int) -> tuple[list[dict], str]:
    """ONNX Runtime CUDA provider with IO binding; ``(rows, note)``."""
    try:
        import onnxruntime as ort
    except ImportError:
        return [], "onnxruntime is not importable"
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return [], f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (install onnxruntime-gpu)"
    from edgedet.runtime.metadata import read_metadata

    meta = read_metadata(path)
    session = ort.InferenceSession(str(path), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    if session.get_providers()[0] != "CUDAExecutionProvider":
        return [], f"the CUDA provider did not load (session runs on {', '.join(session.get_providers())})"
    rows = []
    for batch in (1, 32):
        x = ort.OrtValue.ortvalue_from_numpy(frames(batch), "cuda", 0)
        binding = session.io_binding()
        binding.bind_ortvalue_input(meta.input.name, x)
        for name in meta.outputs:
            binding.bind_output(name, "cuda", 0)

        def run():
            session.run_with_iobinding(binding)

        t = _time(run, 5, iters, binding.synchronize_outputs)
        rows.append({"what": "ONNX Runtime CUDA provider, IO binding (fp32)", "batch": batch,
                     "p50_ms": _p50(t), "img_s": batch * 1e3 / _p50(t)})
    return rows, f"onnxruntime {ort.__version__}"


def parity_rows(paths: dict[str, Path]) -> list[tuple[str, str]]:
    from edgedet.parity.runner import ParityOptions, check_file

    out = []
    for label, path in paths.items():
        report = check_file(path, ParityOptions(samples=4, batch=4, providers=["cuda"]))
        for b in report.backends:
            if "cuda" in b.backend:
                out.append((f"{label} on {b.backend}", b.status.upper() + (f" ({b.reason})" if b.reason else "")))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    reason = skip_reason()
    if reason:
        print(f"gpu_check: skipped: {reason}; {args.out} is left as it is")
        return 0
    import torch

    from edgedet.export.api import ExportOptions, export_model

    start = time.perf_counter()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = {}
        for label, half, formats in (("fp32", False, ("onnx", "torchscript")), ("fp16", True, ("torchscript",))):
            files = export_model(MODEL, tmp / label, ExportOptions(formats=formats, imgsz=SIZE, half=half, check=False),
                                 random_init=True, say=lambda m: None)
            for f in files:
                paths[f"{f.format} {label}"] = f.path
        rows += torchscript_rows(paths["torchscript fp32"], "fp32", args.iters)
        rows += torchscript_rows(paths["torchscript fp16"], "fp16", args.iters)
        ort_rows, ort_note = ort_cuda_rows(paths["onnx fp32"], args.iters)
        rows += ort_rows
        parity = parity_rows(paths)
    for r in rows:
        print(f"{r['what']:<62} batch {r['batch']:>2}: p50 {r['p50_ms']:8.2f} ms  {r['img_s']:9.1f} img/s")
    for what, verdict in parity:
        print(f"parity {what}: {verdict}")
    lines = [
        "# GPU check: YOLOv3 (Darknet-53) 416x416, NMS in the graph", "",
        f"Made by `benchmarks/gpu_check.py` in {time.perf_counter() - start:.0f} s.", "",
        f"- GPU: {torch.cuda.get_device_name(0)}; torch {torch.__version__} (CUDA {torch.version.cuda}); "
        f"{ort_note}", f"- host: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs", "",
        "| what | batch | p50 ms | images/s |", "|---|---:|---:|---:|"]
    lines += [f"| {r['what']} | {r['batch']} | {r['p50_ms']:.2f} | {r['img_s']:.0f} |" for r in rows]
    if not ort_rows:
        lines += ["", f"ONNX Runtime CUDA provider: not measured: {ort_note}."]
    lines += ["", "| parity against eager on the same GPU | verdict |", "|---|---|"]
    lines += [f"| {what} | {verdict} |" for what, verdict in parity]
    cuda_b1 = [r["p50_ms"] for r in ort_rows if r["batch"] == 1]
    fp16_b32 = [r["img_s"] for r in rows if r["batch"] == 32 and r["what"].startswith("TorchScript CUDA fp16, frames")]
    lines += ["", "Targets: yolov3 416 batch 1 <= 5 ms on the CUDA provider: "
              + (f"{cuda_b1[0]:.2f} ms" if cuda_b1 else "not measured")
              + "; TorchScript fp16 batch 32 >= 2000 images/s: "
              + (f"{fp16_b32[0]:.0f} images/s (frames on the device)" if fp16_b32 else "not measured") + "."]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
