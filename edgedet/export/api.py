"""``edgedet export``: pick weights, build the deploy wrapper, write ONNX / TorchScript, check them.

Weights come from the one resolver (:func:`edgedet.models.weights.resolve_weights`): ``--weights``
(an edgedet checkpoint, a darknet ``.weights`` file or ``darknet:NAME``), ``--random-init`` (also
written as ``DIR/<name>.pt`` so parity checks find the reference), or nothing (official darknet
weights where the variant has them, else the checkpoint shipped with edgedet). Every option is
checked in one place, :meth:`ExportOptions.validate`, before anything is loaded or written.

Each graph is written and checked under a hidden temporary name beside its final one and renamed
into place only after its check has run: an export interrupted (Ctrl-C, SIGTERM) or failing between
writing a graph and checking it leaves no graph behind, so a graph under its final name has always
been checked (unless ``--no-check`` said not to).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from edgedet.export.deploy import build_deploy_module
from edgedet.export.metadata import build_metadata
from edgedet.export.options import FORMATS, ExportError, ExportOptions, check_fully_conv_size
from edgedet.models.registry import get_entry
from edgedet.models.weights import RANDOM_INIT_SEED, build_model, resolve_weights
from edgedet.runtime.files import atomic_path, check_writable_dir, file_digest
from edgedet.train.checkpoint import save_checkpoint

__all__ = ["ExportError", "ExportOptions", "ExportedFile", "export_model", "load_export_model", "check_sample",
           "FORMATS"]

SUFFIX = {"onnx": ".onnx", "torchscript": ".torchscript"}


@dataclass
class ExportedFile:
    format: str
    path: Path
    seconds: float
    check: str = ""
    check_passed: bool | None = None
    notes: list[str] = field(default_factory=list)


def load_export_model(name: str, weights: str | None, random_init: bool, imgsz: tuple[int, int] | None,
                      out_dir: Path, out_name: str, say: Callable[[str], None]) -> tuple[nn.Module, dict[str, Any]]:
    """The model to export and a description of where its weights came from (the graph's ``source``)."""
    source = resolve_weights(name, weights, random_init=random_init, say=say)
    model = build_model(name, source, input_size=imgsz)
    if source.kind != "random-init":
        return model, source.record()
    ckpt = save_checkpoint(out_dir / f"{out_name}.pt", model, train={"random_init_seed": RANDOM_INIT_SEED})
    return model, {"kind": "random-init", "checkpoint": str(ckpt.resolve()), "sha256": file_digest(ckpt)}


def check_sample(model: nn.Module, imgsz: tuple[int, int], dataset: str | None = None) -> np.ndarray:
    """Two BGR frames for the export check: a real sample of ``dataset`` (default: the family's;
    letterboxed) and an empty scene (uniform grey), as a uint8 batch ``[2, H, W, 3]``."""
    from edgedet.data import build_dataset
    from edgedet.runtime.letterbox import letterbox

    image = build_dataset(dataset or get_entry(model.model_name).spec.dataset, split="val")[1]["image"]
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    framed, _ = letterbox(image, imgsz)
    empty = np.full_like(framed, 114)
    return np.stack([framed, empty])


def _check_file(fmt: str, path: Path, reference: nn.Module, names: tuple[str, ...], frames: np.ndarray,
                example: torch.Tensor, half: bool) -> tuple[bool | None, str]:
    """Run the written file on the CPU (the runtime's backend) and compare it with PyTorch."""
    from edgedet.parity.compare import Tolerance, compare_outputs
    from edgedet.runtime.backends import create_backend

    tol = Tolerance.fp16() if half else Tolerance()
    with torch.no_grad():
        ref = [t.numpy() for t in reference(example)]  # the frames in the graph's input format
    try:
        backend = create_backend(path, "onnxruntime" if fmt == "onnx" else "torchscript", providers=["cpu"],
                                 max_batch=len(frames))
        out = backend.run(frames)
    except Exception as e:  # ORT's CPU provider lacks some fp16 kernels
        if half:
            return None, f"not run on the CPU ({str(e).splitlines()[0][:120]})"
        raise
    results = compare_outputs(names, ref, out, tol)
    return all(r.passed for r in results), "; ".join(r.line() for r in results)


def _export_int8(fp32: Path, path: Path, model: nn.Module, imgsz: tuple[int, int], options: ExportOptions,
                 names: tuple[str, ...], frames: np.ndarray, dataset: str | None = None) -> ExportedFile:
    from edgedet.export.quantize import calibration_frames, quantize_int8
    from edgedet.runtime.backends import create_backend

    start = time.perf_counter()
    spec = options.calib_data or dataset or get_entry(model.model_name).spec.dataset
    quantize_int8(fp32, path, calibration_frames(spec, options.calib_samples, imgsz))
    record = ExportedFile("onnx-int8", path, time.perf_counter() - start)
    record.notes.append(f"int8: calibrated on {options.calib_samples} frames of {spec}; "
                        f"{fp32.stat().st_size / 1e6:.1f} MB -> {path.stat().st_size / 1e6:.1f} MB")
    if options.check:
        out = create_backend(path, "onnxruntime", providers=["cpu"], max_batch=len(frames)).run(frames)
        shapes = ", ".join(f"{n} {list(o.shape)}" for n, o in zip(names, out))
        record.notes.append(f"int8 graph runs on the CPU provider ({shapes}); measure its accuracy "
                            f"with benchmarks/int8_accuracy.py, not a bit-level check")
    return record


@dataclass
class _Job:
    """One export: the model, its check frames and PyTorch reference, shared by every format."""

    name: str
    out_dir: Path
    out_name: str
    options: ExportOptions
    model: nn.Module
    source: dict[str, Any]
    frames: np.ndarray  # uint8 [2, H, W, 3]: a real sample and an empty scene
    example: torch.Tensor  # the frames in the graph's input format
    reference: nn.Module  # eager deploy wrapper (also what TorchScript traces)
    names: tuple[str, ...]  # output names
    frame_size: tuple[int, int] | None = None  # the graph's input size; None: the model's
    fully_conv: dict[str, Any] | None = None  # --fully-conv geometry for the metadata

    def path(self, fmt: str) -> Path:
        return self.out_dir / f"{self.out_name}{SUFFIX[fmt]}"

    def metadata(self, fmt: str, weights: str | None, random_init: bool) -> dict[str, Any]:
        o = self.options
        export_args = {k: v for k, v in asdict(o).items() if k != "nms"}
        export_args.update(model=self.name, weights=weights, random_init=random_init)
        return build_metadata(self.model, imgsz=self.frame_size or tuple(self.model.cfg.input_size),
                              input_format=o.input_format, dynamic=o.dynamic or o.fully_conv, half=o.half, nms=o.nms,
                              output_names=self.names, source=self.source, export_args=export_args,
                              graph_format=fmt, fully_conv=self.fully_conv)

    def check(self, record: "ExportedFile") -> None:
        record.check_passed, record.check = _check_file(record.format, record.path, self.reference, self.names,
                                                        self.frames, self.example, self.options.half)


def _write_onnx(job: _Job, metadata: dict[str, Any]) -> ExportedFile:
    """The ONNX graph (NMS as ``NonMaxSuppression``); an onnxslim result is kept only if it checks."""
    from edgedet.export.onnx import DEFAULT_OPSET, OnnxNMS, export_onnx

    o = job.options
    start = time.perf_counter()
    opset = o.opset or DEFAULT_OPSET
    metadata["opset"] = opset
    module, _ = build_deploy_module(job.model, input_format=o.input_format, half=o.half, nms=o.nms,
                                    nms_module=OnnxNMS(o.nms) if o.nms is not None else None, probs=o.probs,
                                    fully_conv=o.fully_conv)
    path = job.path("onnx")
    with atomic_path(path) as staged:  # renamed to ``path`` once checked (module docstring)
        export_onnx(module, job.example, staged, job.names, metadata, o.dynamic or o.fully_conv, opset,
                    simplify=o.simplify)
        record = ExportedFile("onnx", staged, time.perf_counter() - start)
        if o.check:
            job.check(record)
            if o.simplify and record.check_passed is False:  # onnxslim broke parity: keep the plain export
                export_onnx(module, job.example, staged, job.names, metadata, o.dynamic or o.fully_conv, opset,
                            simplify=False)
                record.notes.append("simplified graph failed the check; wrote the unsimplified graph")
                job.check(record)
    record.path = path
    return record


def _write_torchscript(job: _Job, metadata: dict[str, Any]) -> ExportedFile:
    """The TorchScript file: the traced dense part with the scripted plain-torch NMS."""
    from edgedet.export.torchscript import export_torchscript

    start = time.perf_counter()
    path = job.path("torchscript")
    with atomic_path(path) as staged:  # renamed to ``path`` once checked (module docstring)
        export_torchscript(job.reference, job.example, staged, metadata)
        record = ExportedFile("torchscript", staged, time.perf_counter() - start)
        if job.options.check:
            job.check(record)
    record.path = path
    return record


def export_model(name: str, out_dir: str | os.PathLike, options: ExportOptions = ExportOptions(),
                 weights: str | None = None, random_init: bool = False,
                 say: Callable[[str], None] = print) -> list[ExportedFile]:
    """Export ``name`` to every format in ``options`` under ``out_dir``; returns what was written."""
    options.validate(name)
    out_dir = check_writable_dir(out_dir)
    if options.triton:
        check_writable_dir(options.triton)
    out_name = options.name or name
    # --fully-conv: --imgsz is the frame size, not the model's input size (its head is sized for it).
    model, source = load_export_model(name, weights, random_init, None if options.fully_conv else options.imgsz,
                                      out_dir, out_name, say)
    if options.half and not torch.cuda.is_available():
        say("note: --half on a machine without CUDA: exporting fp16 on the CPU (slow, checks may not run)")
    frame_size, fully_conv, check_data = tuple(model.cfg.input_size), None, None
    if options.fully_conv:
        conversion = get_entry(name).spec.fully_convolutional(model)
        frame_size = tuple(options.imgsz or conversion.frame_size)
        check_fully_conv_size(frame_size, conversion.window, conversion.stride, name)  # the loaded weights' window
        fully_conv = {"window": list(conversion.window), "stride": conversion.stride, "dataset": conversion.dataset}
        check_data = conversion.dataset
    frames = check_sample(model, frame_size, check_data)
    example = torch.from_numpy(frames)
    if options.input_format == "float":
        example = example.flip(-1).permute(0, 3, 1, 2).float() / 255
    reference, names = build_deploy_module(model, input_format=options.input_format, half=options.half,
                                           nms=options.nms, probs=options.probs, fully_conv=options.fully_conv)
    job = _Job(name, out_dir, out_name, options, model, source, frames, example, reference, names, frame_size,
               fully_conv)
    files: list[ExportedFile] = []
    for fmt in options.formats:
        metadata = job.metadata(fmt, weights, random_init)
        if fmt == "torchscript":
            files.append(_write_torchscript(job, metadata))
            continue
        record = _write_onnx(job, metadata)
        files.append(record)
        if options.int8:
            files.append(_export_int8(record.path, out_dir / f"{out_name}.int8.onnx", model,
                                      frame_size, options, names, frames, check_data))
        if options.triton:
            from edgedet.export.triton import write_triton_repository

            record.notes.append(write_triton_repository(record.path, options.triton, out_name,
                                                        backend=options.triton_backend).note)
    return files
