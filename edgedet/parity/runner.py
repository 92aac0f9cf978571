"""``edgedet parity``: run an exported graph on every backend that can run it and compare each
with eager PyTorch, input by input and output by output.

Backends tried for an ``.onnx`` file: ONNX Runtime on the CPU, CUDA and TensorRT providers, and
OpenCV DNN; for a ``.torchscript`` file: TorchScript on the CPU and on CUDA. One that cannot run
here (not installed, no GPU, a build without the provider, operators it does not implement:
:class:`edgedet.runtime.backends.BackendUnavailable`) is reported as skipped with its reason; any
other error while opening the graph, and any disagreement, fails.

Tolerances: the defaults of the graph's precision (fp32, fp16, int8), with ``atol`` / ``rtol``
overrides applied here, on top of those defaults, so an int8 graph checked with ``--atol 0.1``
keeps int8's detection limits.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from edgedet.errors import MissingDependencyError
from edgedet.parity.compare import CompareResult, NMSRule, compare_outputs
from edgedet.parity.inputs import ParityInput, parity_inputs
from edgedet.parity.options import ParityOptions
from edgedet.parity.reference import load_reference_model, reference_module
from edgedet.runtime.backends import BackendUnavailable
from edgedet.runtime.metadata import GraphMetadata, graph_format, read_metadata

__all__ = ["ParityOptions", "BackendReport", "FileReport", "BACKENDS", "run_parity", "format_report"]

# (label, runtime backend, providers) per graph format, in the order they are tried.
BACKENDS = {
    "onnx": [("onnxruntime-cpu", "onnxruntime", ["cpu"]), ("onnxruntime-cuda", "onnxruntime", ["cuda"]),
             ("onnxruntime-tensorrt", "onnxruntime", ["tensorrt"]), ("openvino-cpu", "openvino", ["cpu"]),
             ("openvino-cpu-bf16", "openvino-bf16", ["cpu"]), ("opencv", "opencv", ["cpu"])],
    "torchscript": [("torchscript-cpu", "torchscript", ["cpu"]), ("torchscript-cuda", "torchscript", ["cuda"])],
}

# Backends that compute in less than the graph's precision, and the precision they compute in:
# they are judged with that precision's tolerance when it is the looser one.
_COMPUTES_IN = {"openvino-bf16": "bf16"}
_LOOSENESS = ("fp32", "fp16", "bf16", "int8")


def _judged_as(graph_precision: str, backend: str) -> str:
    """The precision whose tolerance judges ``backend`` running a graph of ``graph_precision``."""
    computes = _COMPUTES_IN.get(backend, graph_precision)
    rank = {p: i for i, p in enumerate(_LOOSENESS)}
    return max(graph_precision, computes, key=lambda p: rank.get(p, 0))


_ORT_PROVIDER = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
                 "tensorrt": "TensorrtExecutionProvider"}


@dataclass
class InputReport:
    input: str
    batch: int
    passed: bool
    results: list[CompareResult] = field(default_factory=list)
    error: str = ""


@dataclass
class BackendReport:
    backend: str
    status: str  # "pass", "fail" or "skipped"
    providers: list[str] = field(default_factory=list)
    reason: str = ""
    inputs: list[InputReport] = field(default_factory=list)
    reference_device: str = "cpu"  # where the eager reference ran for this backend
    tolerance: str = ""  # set when judged with a looser precision's tolerance than the graph's (bf16)


@dataclass
class FileReport:
    file: str
    model: str
    precision: str
    reference: str
    tolerance: dict[str, Any]
    backends: list[BackendReport] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        ran = [b for b in self.backends if b.status != "skipped"]
        return bool(ran) and all(b.status == "pass" for b in ran)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["passed"] = self.passed
        return d


def _as_graph_input(images: np.ndarray, meta: GraphMetadata) -> np.ndarray:
    if meta.input.dtype == "uint8":
        return images
    # --input float graphs take float32 [B, 3, H, W] RGB 0..1.
    return np.ascontiguousarray(images[..., ::-1].transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255)


def _reference_outputs(module: torch.nn.Module, x: np.ndarray, device: str = "cpu") -> list[np.ndarray]:
    with torch.no_grad():
        out = module.to(device)(torch.from_numpy(x).to(device))
    return [t.float().cpu().numpy() if t.is_floating_point() else t.cpu().numpy() for t in out]


def _reference_device(providers: list[str]) -> str:
    """Where the reference runs for a backend: on the GPU for a GPU backend when torch sees one.

    The check is of the export, not of the device's arithmetic: a half-precision graph on a GPU
    is compared with the eager model in half precision on that GPU, so that the many small
    rounding differences between CPU and GPU kernels, compounded over a deep network, are not
    mistaken for a broken graph. Without CUDA in torch the reference stays on the CPU.
    """
    if providers[0] in ("cuda", "tensorrt") and torch.cuda.is_available():
        return "cuda"
    return "cpu"


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _open(path: Path, backend: str, providers: list[str], meta: GraphMetadata, max_batch: int):
    from edgedet.runtime.backends import create_backend

    return create_backend(path, backend=backend, providers=providers, max_batch=max_batch, metadata=meta)


def check_file(path: str | Path, options: ParityOptions = ParityOptions(),
               say: Callable[[str], None] = lambda m: None) -> FileReport:
    """Compare one exported graph with its PyTorch reference on every available backend."""
    path = Path(path)
    fmt = graph_format(path)
    meta = read_metadata(path)
    model, how = load_reference_model(meta, options.weights, path)
    reference = reference_module(model, meta)
    precision = meta.precision
    tol = options.tolerance_for(precision)
    rule = NMSRule.from_metadata(meta.nms) if "num_dets" in meta.outputs else None
    names = meta.outputs
    cases: list[ParityInput] = parity_inputs(meta, samples=options.samples, batch=options.batch)
    say(f"parity {path} ({meta.model}, {precision}): reference {how}; "
        f"{len(cases)} inputs")
    refs_on: dict[str, list[list[np.ndarray]]] = {}  # reference outputs per device, made on first use
    report = FileReport(str(path), meta.model, precision, how, asdict(tol))
    wanted = {p.lower() for p in options.providers} if options.providers else None
    for label, backend, providers in BACKENDS[fmt]:
        if backend in _COMPUTES_IN and not options.bf16:
            continue  # reduced precision only when asked for (--bf16)
        if wanted is not None and backend == "onnxruntime" and providers[0] not in wanted:
            report.backends.append(BackendReport(label, "skipped", reason="not in --providers"))
            continue
        try:
            runner = _open(path, backend, providers, meta, max(len(c.images) for c in cases))
        except (BackendUnavailable, MissingDependencyError) as e:  # cannot run here: not a verdict
            reason = _first_line(e)
            report.backends.append(BackendReport(label, "skipped", reason=reason[:300]))
            say(f"  {label}: skipped")  # the reason is printed once, in the report's table
            continue
        except Exception as e:  # the backend is here but cannot open this graph: the graph fails
            reason = _first_line(e)
            report.backends.append(BackendReport(label, "fail", reason=f"cannot open the graph: {reason[:300]}"))
            say(f"  {label}: FAIL (cannot open the graph: {reason[:160]})")
            continue
        assigned = list(getattr(runner, "providers", []))
        expected = _ORT_PROVIDER.get(providers[0]) if backend == "onnxruntime" else None
        if expected and (not assigned or assigned[0] != expected):
            # ONNX Runtime falls back to the CPU when a listed provider cannot start.
            reason = f"{expected} is not usable here (the session runs on {', '.join(assigned) or 'nothing'})"
            report.backends.append(BackendReport(label, "skipped", providers=assigned, reason=reason))
            say(f"  {label}: skipped")  # the reason is printed once, in the report's table
            continue
        device = _reference_device(providers)
        if device not in refs_on:
            refs_on[device] = [_reference_outputs(reference, _as_graph_input(c.images, meta), device) for c in cases]
        refs = refs_on[device]
        judged_as = _judged_as(precision, backend)
        backend_tol = tol if judged_as == precision else options.tolerance_for(judged_as)
        entry = BackendReport(label, "pass", providers=assigned, reference_device=device,
                              tolerance=judged_as if judged_as != precision else "")
        start = time.perf_counter()
        for case, ref in zip(cases, refs):
            try:
                out = runner.run(case.images)  # the backend applies the graph's input contract
            except Exception as e:
                first = _first_line(e)
                entry.inputs.append(InputReport(case.name, len(case.images), False, error=first[:300]))
                continue
            results = compare_outputs(names, ref, out, backend_tol, rule, options.atol_out)
            entry.inputs.append(InputReport(case.name, len(case.images), all(r.passed for r in results), results))
        entry.status = "pass" if all(i.passed for i in entry.inputs) else "fail"
        say(f"  {label}: {entry.status.upper()} ({len(entry.inputs)} inputs, {time.perf_counter() - start:.1f} s)")
        report.backends.append(entry)
    return report


def run_parity(files: Sequence[str | Path], options: ParityOptions = ParityOptions(),
               say: Callable[[str], None] = lambda m: None) -> list[FileReport]:
    """:func:`check_file` for every file."""
    return [check_file(f, options, say) for f in files]


def format_report(report: FileReport, verbose: bool = False) -> str:
    """The on-screen table: a line per backend and input, a Polygraphy-style line per output."""
    lines = [f"{report.file}: {report.model} {report.precision}, reference {report.reference}"]
    for b in report.backends:
        if b.status == "skipped":
            lines.append(f"  {b.backend:<22} SKIPPED  {b.reason}")
            continue
        if b.reason:  # failed before any input ran
            lines.append(f"  {b.backend:<22} {b.status.upper():<8} {b.reason}")
            continue
        lines.append(f"  {b.backend:<22} {b.status.upper():<8} providers {', '.join(b.providers) or '-'}"
                     f"; reference on {b.reference_device}"
                     + (f"; judged with {b.tolerance} tolerances" if b.tolerance else ""))
        for i in b.inputs:
            verdict = "PASS" if i.passed else "FAIL"
            lines.append(f"    {i.input:<24} batch {i.batch:<3} {verdict}" + (f"  error: {i.error}" if i.error else ""))
            for r in i.results:
                if verbose or not r.passed or r.tolerated:
                    lines.append(f"      {r.line()}")
                for p in r.problems[:5]:
                    lines.append(f"        ! {p}")
                for t in r.tolerated[:5] if verbose or not r.passed else r.tolerated[:3]:
                    lines.append(f"        ~ {t}")
    lines.append(f"  verdict: {'PASS' if report.passed else 'FAIL'}")
    return "\n".join(lines)
