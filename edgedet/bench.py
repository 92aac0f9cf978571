"""``edgedet bench``: latency and throughput of a model on each backend, against the hardware.

Every row reports p50 / p95 latency of one batch, images per second, the model's GFLOPs per image,
the GFLOP/s it achieved, and that as a fraction of this machine's float32 matrix-multiply peak
measured right next to the row with ONNX Runtime's own MatMul (:func:`gemm_gflops`): how close the
backend gets to what the hardware can do. Rows computed in bf16 (``openvino-bf16``) can exceed 100 %:
the float32 peak is not their limit.

Backends: ``eager`` (the PyTorch deploy wrapper: preprocessing, model, decoding, NMS),
``torchscript``, ``onnxruntime`` and ``opencv`` (the exported graphs through the runtime's
backends). With ``--model NAME`` the graphs are exported on the fly from seeded random weights;
with files, the graphs given are timed (``eager`` then needs the reference the metadata names).
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from edgedet.errors import EdgedetError

__all__ = ["BenchRecord", "BenchError", "cpu_name", "gemm_gflops", "time_call", "bench_model", "bench_files", "format_records",
           "BACKENDS"]

BACKENDS = ("eager", "torchscript", "onnxruntime", "openvino", "openvino-bf16", "openvino-f16", "opencv")


class BenchError(EdgedetError):
    """Options that cannot be benchmarked."""


@dataclass
class BenchRecord:
    model: str
    backend: str
    providers: str
    batch: int
    imgsz: list[int]
    precision: str
    p50_ms: float
    p95_ms: float
    fps: float
    gflops: float  # per image
    achieved_gflops: float
    gemm_gflops: float
    fraction_of_gemm: float
    iters: int
    note: str = ""
    others_busy: float | None = None  # share of the machine's CPU time other processes used meanwhile
    under_load: bool = False  # others_busy above LOAD_FLAG: the figures understate this machine


def cpu_name() -> str:
    """The processor's model name, for results tables."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


_MATMUL_SESSIONS: dict[tuple[int, int], object] = {}


def _matmul_session(n: int, threads: int):
    """An ONNX Runtime session of one ``[n, n] @ [n, n]`` float32 MatMul (built once per size)."""
    key = (n, threads)
    if key not in _MATMUL_SESSIONS:
        import onnxruntime as ort
        from onnx import TensorProto, helper

        spec = [n, n]
        graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "matmul",
                                  [helper.make_tensor_value_info("a", TensorProto.FLOAT, spec),
                                   helper.make_tensor_value_info("b", TensorProto.FLOAT, spec)],
                                  [helper.make_tensor_value_info("c", TensorProto.FLOAT, spec)])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "1")  # the best it can do
        _MATMUL_SESSIONS[key] = ort.InferenceSession(model.SerializeToString(), options,
                                                     providers=["CPUExecutionProvider"])
    return _MATMUL_SESSIONS[key]


def gemm_gflops(n: int = 1024, seconds: float = 1.0, threads: int | None = None) -> float:
    """This machine's float32 matrix-multiply peak as the runtime reaches it: ONNX Runtime's own
    MatMul kernel (MLAS sgemm) on ``n x n @ n x n``, best of repeated runs.

    Each product is ``2 n^3`` FLOPs. The best (not the mean) run is the hardware's limit as far as
    this process can reach it. The kernel is the one the exported graphs' convolutions and matrix
    products run on, not torch's, so a row's fraction is of what the runtime itself can do here.
    Threads: ``threads`` or the physical cores this process may use.
    """
    from edgedet.runtime.cpu import physical_cores

    session = _matmul_session(n, int(threads or physical_cores()))
    rng = np.random.default_rng(0)
    feeds = {"a": rng.standard_normal((n, n), dtype=np.float32), "b": rng.standard_normal((n, n), dtype=np.float32)}
    for _ in range(3):
        session.run(None, feeds)
    best = float("inf")
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        session.run(None, feeds)
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9


# A row is flagged as measured under load when other processes used more than this share of the
# machine's CPU time while it ran.
LOAD_FLAG = 0.10


def _cpu_seconds() -> tuple[float, float, float] | None:
    """(busy seconds of all CPUs, total seconds of all CPUs, this process's CPU seconds), or None
    where /proc/stat is not there."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    ticks = [int(v) for v in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    hz = os.sysconf("SC_CLK_TCK")
    own = os.times()
    return (sum(ticks[:8]) - idle) / hz, sum(ticks[:8]) / hz, own.user + own.system


class MachineProbe:
    """The machine's limit and load, measured right next to each timed row.

    The sgemm rate (:func:`gemm_gflops`) is taken just before and just after a row, and the row
    is judged against the better of the two, so a row never looks closer to the machine's limit
    because the probe happened to run in a busy moment. Meanwhile /proc/stat says how much CPU time
    other processes took; above :data:`LOAD_FLAG` the row is flagged as measured under load.
    """

    def __init__(self, seconds: float = 0.3, threads: int | None = None) -> None:
        self.seconds, self.threads = seconds, threads

    def measure(self, run: Callable[[], list[float]]) -> tuple[list[float], float, float | None]:
        """``(times, gemm GFLOP/s, others' busy share or None)`` of ``run()``."""
        before = gemm_gflops(seconds=self.seconds, threads=self.threads)
        start = _cpu_seconds()
        times = run()
        end = _cpu_seconds()
        after = gemm_gflops(seconds=self.seconds, threads=self.threads)
        others = None
        if start is not None and end is not None and end[1] > start[1]:
            busy, total, own = (e - s for e, s in zip(end, start))
            others = min(1.0, max(0.0, (busy - own) / total))
        return times, max(before, after), others


def time_call(fn: Callable[[], object], warmup: int, iters: int) -> list[float]:
    """Milliseconds of ``iters`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def _record(model: str, backend: str, providers: str, batch: int, imgsz: tuple[int, int], precision: str,
            measured: tuple[list[float], float, float | None], gflops: float, note: str = "") -> BenchRecord:
    times, gemm, others = measured
    p50 = statistics.median(times)
    p95 = float(np.percentile(times, 95))
    achieved = gflops * batch / (p50 / 1e3)
    return BenchRecord(model, backend, providers, batch, list(imgsz), precision, round(p50, 3), round(p95, 3),
                       round(batch * 1e3 / p50, 2), round(gflops, 4), round(achieved, 2), round(gemm, 2),
                       round(achieved / gemm, 4) if gemm > 0 else 0.0, len(times), note,
                       None if others is None else round(others, 3), bool(others is not None and others > LOAD_FLAG))


def bench_frames(batch: int, imgsz: tuple[int, int], seed: int = 0) -> np.ndarray:
    """``batch`` copies of one real clutter frame letterboxed to ``imgsz``: uint8 BGR ``[B, H, W, 3]``, the graphs' input."""
    from edgedet.data import build_dataset
    from edgedet.runtime.letterbox import letterbox

    image = build_dataset("clutter:glyphs=builtin", split="val")[seed]["image"]
    frame = letterbox(image, imgsz)[0]
    return np.ascontiguousarray(np.repeat(frame[None], batch, axis=0))


def graph_rows(path: Path, backends: Sequence[str], providers: str, batches: Sequence[int],
               imgsz: tuple[int, int], gflops: float, probe: MachineProbe, warmup: int, iters: int,
               say: Callable[[str], None]) -> list[BenchRecord]:
    """Time the exported graph at ``path`` on each of ``backends`` that can run it, one record per batch size."""
    from edgedet.runtime.backends import create_backend
    from edgedet.runtime.metadata import read_metadata

    meta = read_metadata(path)
    rows = []
    for name in backends:
        if name == "eager":
            continue
        if (name == "torchscript") != (path.suffix == ".torchscript"):
            continue
        try:
            backend = create_backend(path, name, providers if name == "onnxruntime" else "auto",
                                     max_batch=max(batches), metadata=meta)
        except EdgedetError as e:
            say(f"  {name}: skipped ({e})")
            continue
        for batch in batches:
            x = bench_frames(batch, imgsz)
            try:
                measured = probe.measure(lambda: time_call(lambda: backend.run(x), warmup, iters))
            except Exception as e:  # e.g. OpenCV loading a graph it cannot run
                say(f"  {name} batch {batch}: skipped ({str(e).splitlines()[0][:160]})")
                continue
            rows.append(_record(meta.model, name, ",".join(backend.providers), batch, imgsz, meta.precision,
                                measured, gflops))
            say(f"  {name} batch {batch}: p50 {rows[-1].p50_ms:.2f} ms, {rows[-1].fps:.1f} img/s")
    return rows


def eager_rows(module: torch.nn.Module, model: str, batches: Sequence[int], imgsz: tuple[int, int], half: bool,
               gflops: float, probe: MachineProbe, warmup: int, iters: int,
               say: Callable[[str], None]) -> list[BenchRecord]:
    """Time the PyTorch deploy wrapper ``module`` (preprocessing, model, decoding, NMS), one record per batch size."""
    rows = []
    for batch in batches:
        x = torch.from_numpy(bench_frames(batch, imgsz))
        with torch.inference_mode():
            measured = probe.measure(lambda: time_call(lambda: module(x), warmup, iters))
        rows.append(_record(model, "eager", "torch-cpu", batch, imgsz, "fp16" if half else "fp32", measured, gflops))
        say(f"  eager batch {batch}: p50 {rows[-1].p50_ms:.2f} ms, {rows[-1].fps:.1f} img/s")
    return rows


def bench_model(name: str, backends: Sequence[str] = BACKENDS, providers: str = "auto",
                batches: Sequence[int] = (1,), imgsz: tuple[int, int] | None = None, half: bool = False,
                warmup: int = 5, iters: int = 20, say: Callable[[str], None] = lambda m: None) -> list[BenchRecord]:
    """Export ``name`` (seeded random weights) and time it on each backend."""
    from edgedet.export.api import ExportOptions, export_model
    from edgedet.export.deploy import NMSSettings, build_deploy_module
    from edgedet.models import create_model, get_entry, model_gflops

    from edgedet.export.options import imgsz_problem

    get_entry(name)
    _check_backends(backends)
    problem = imgsz_problem(imgsz)
    if problem:
        raise BenchError(problem)
    probe = MachineProbe()
    with tempfile.TemporaryDirectory() as tmp:
        formats = tuple("torchscript" if b == "torchscript" else "onnx" for b in backends if b != "eager")
        files = export_model(name, tmp, ExportOptions(formats=tuple(dict.fromkeys(formats)) or ("onnx",),
                                                      imgsz=imgsz, half=half, check=False),
                             random_init=True, say=lambda m: None) if formats else []
        torch.manual_seed(0)
        model = create_model(name, **({"input_size": imgsz} if imgsz else {})).eval()
        size = tuple(model.cfg.input_size)
        gflops = model_gflops(model)
        say(f"{name} at {size[0]}x{size[1]}: {gflops:.2f} GFLOPs per image")
        rows = []
        if "eager" in backends:
            nms = NMSSettings() if get_entry(name).task == "detection" else None
            module, _ = build_deploy_module(model, half=half, nms=nms)
            rows += eager_rows(module, name, batches, size, half, gflops, probe, warmup, iters, say)
        for f in files:
            rows += graph_rows(f.path, backends, providers, batches, size, gflops, probe, warmup, iters, say)
    return rows


def _check_backends(backends: Sequence[str]) -> None:
    bad = [b for b in backends if b not in BACKENDS]
    if bad or not backends:
        raise BenchError(f"unknown backend {', '.join(bad) or '(none)'}; choose from {', '.join(BACKENDS)}")


def bench_files(paths: Sequence[str | Path], backends: Sequence[str] = BACKENDS, providers: str = "auto",
                batches: Sequence[int] = (1,), warmup: int = 5, iters: int = 20,
                say: Callable[[str], None] = lambda m: None) -> list[BenchRecord]:
    """Time exported graphs on each backend that can run them (``eager`` from the recorded reference)."""
    from edgedet.models import create_model, model_gflops
    from edgedet.parity.reference import load_reference_model, reference_module
    from edgedet.runtime.metadata import read_metadata

    _check_backends(backends)
    metas = {Path(p): read_metadata(p) for p in paths}  # every file readable before any timing
    probe = MachineProbe()
    rows = []
    for path, meta in metas.items():
        size = meta.input.size
        with torch.device("meta"):
            meta_model = create_model(meta.model, **dict(meta.config, input_size=size))
        gflops = model_gflops(meta_model)
        say(f"{path}: {meta.model} at {size[0]}x{size[1]}, {gflops:.2f} GFLOPs per image")
        if "eager" in backends:
            model, _ = load_reference_model(meta, None, path)
            rows += eager_rows(reference_module(model, meta), meta.model, batches, size,
                                meta.precision == "fp16", gflops, probe, warmup, iters, say)
        rows += graph_rows(path, backends, providers, batches, size, gflops, probe, warmup, iters, say)
    return rows


def format_records(rows: Sequence[BenchRecord]) -> str:
    """A plain-text table of benchmark records; rows measured under load are marked and explained."""
    header = ("model", "precision", "backend", "providers", "batch", "imgsz", "p50 ms", "p95 ms", "img/s", "GFLOPs",
              "GFLOP/s", "peak", "of peak", "others' CPU")
    table = [header] + [(r.model, r.precision, r.backend, r.providers, str(r.batch), "x".join(map(str, r.imgsz)),
                         f"{r.p50_ms:.2f}", f"{r.p95_ms:.2f}", f"{r.fps:.1f}", f"{r.gflops:.2f}",
                         f"{r.achieved_gflops:.1f}", f"{r.gemm_gflops:.0f}", f"{r.fraction_of_gemm * 100:.0f}%",
                         "-" if r.others_busy is None else f"{r.others_busy * 100:.0f}%" + (" *" if r.under_load else ""))
                        for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i < 6 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()
             for row in table]
    if any(r.under_load for r in rows):
        lines.append(f"* measured under load: other processes used more than {LOAD_FLAG:.0%} of the CPU time "
                     f"meanwhile; rerun on a quiet machine")
    return "\n".join(lines)


def records_json(rows: Sequence[BenchRecord]) -> list[dict]:
    return [asdict(r) for r in rows]


__all__ += ["records_json", "eager_rows", "graph_rows", "bench_frames", "lively", "MachineProbe", "LOAD_FLAG"]


def lively(model: torch.nn.Module, frames: np.ndarray, bias: float | None = None) -> torch.nn.Module:
    """Make a seeded random model behave like a trained one, for benchmarks and tests of NMS.

    Fresh BatchNorm statistics (mean 0, var 1) shrink activations layer after layer, so an
    untrained detector's scores collapse to its biases: thousands of exactly tied scores, or no
    detections at all. BatchNorm takes its statistics from one batch of ``frames`` (uint8
    ``[B, H, W, 3]`` BGR, through the graphs' preprocessing); with ``bias``, every convolution bias
    is drawn from N(bias, 1), which spreads the detector's scores (lower means fewer candidates).

    Returns:
        the model, in eval mode.
    """
    from edgedet.export.deploy import Preprocess

    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.momentum = 1.0  # running statistics := one batch's
    model.train()
    with torch.no_grad():
        model(Preprocess(model.cfg.in_channels)(torch.from_numpy(np.ascontiguousarray(frames))))
        if bias is not None:
            for conv in (m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.bias is not None):
                torch.nn.init.normal_(conv.bias, bias, 1.0)
    return model.eval()
