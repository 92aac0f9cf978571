"""``edgedet export``: pick weights, build the deploy wrapper, write ONNX / TorchScript, check them.

Weights come from the one resolver (:func:`edgedet.models.weights.resolve_weights`): ``--weights``
(an edgedet checkpoint, a darknet ``.weights`` file or ``darknet:NAME``), ``--random-init`` (also
written as ``DIR/<name>.pt`` so parity checks find the reference), or nothing (official darknet
weights where the variant has them, else the checkpoint shipped with edgedet). Every option is
checked in one place, :meth:`ExportOptions.validate`, before anything is loaded or written.
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
from edgedet.export.options import FORMATS, ExportError, ExportOptions
from edgedet.models.registry import get_entry
from edgedet.models.weights import RANDOM_INIT_SEED, build_model, resolve_weights
from edgedet.runtime.files import file_digest
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


def check_sample(model: nn.Module, imgsz: tuple[int, int]) -> np.ndarray:
    """Two BGR frames for the export check: a real sample of the family's dataset (letterboxed)
    and an empty scene (uniform grey), as a uint8 batch ``[2, H, W, 3]``."""
    from edgedet.data import build_dataset
    from edgedet.runtime.letterbox import letterbox

    image = build_dataset(get_entry(model.model_name).spec.dataset, split="val")[1]["image"]
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
                 names: tuple[str, ...], frames: np.ndarray) -> ExportedFile:
    from edgedet.export.quantize import calibration_frames, quantize_int8
    from edgedet.runtime.backends import create_backend

    start = time.perf_counter()
    spec = options.calib_data or get_entry(model.model_name).spec.dataset
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


def export_model(name: str, out_dir: str | os.PathLike, options: ExportOptions = ExportOptions(),
                 weights: str | None = None, random_init: bool = False,
                 say: Callable[[str], None] = print) -> list[ExportedFile]:
    """Export ``name`` to every format in ``options`` under ``out_dir``; returns what was written."""
    from edgedet.export.onnx import DEFAULT_OPSET, OnnxNMS, export_onnx
    from edgedet.export.torchscript import export_torchscript

    options.validate(name)
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".edgedet-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ExportError(f"cannot write to {out_dir}: {e.strerror or e}") from None
    out_name = options.name or name
    model, source = load_export_model(name, weights, random_init, options.imgsz, out_dir, out_name, say)
    imgsz = tuple(model.cfg.input_size)
    if options.half and not torch.cuda.is_available():
        say("note: --half on a machine without CUDA: exporting fp16 on the CPU (slow, checks may not run)")
    frames = check_sample(model, imgsz)
    example = torch.from_numpy(frames)
    if options.input_format == "float":
        example = example.flip(-1).permute(0, 3, 1, 2).float() / 255
    reference, names = build_deploy_module(model, input_format=options.input_format, half=options.half,
                                           nms=options.nms, probs=options.probs)
    export_args = {k: v for k, v in asdict(options).items() if k != "nms"}
    export_args.update(model=name, weights=weights, random_init=random_init)
    files: list[ExportedFile] = []
    for fmt in options.formats:
        start = time.perf_counter()
        path = out_dir / f"{out_name}{SUFFIX[fmt]}"
        metadata = build_metadata(model, imgsz=imgsz, input_format=options.input_format,
                                  dynamic=options.dynamic, half=options.half, nms=options.nms,
                                  output_names=names, source=source, export_args=export_args,
                                  graph_format=fmt)
        if fmt == "onnx":
            opset = options.opset or DEFAULT_OPSET
            metadata["opset"] = opset
            onnx_nms = OnnxNMS(options.nms) if options.nms is not None else None
            module, _ = build_deploy_module(model, input_format=options.input_format, half=options.half,
                                            nms=options.nms, nms_module=onnx_nms, probs=options.probs)
            export_onnx(module, example, path, names, metadata, options.dynamic, opset, simplify=options.simplify)
        else:
            export_torchscript(reference, example, path, metadata)
        record = ExportedFile(fmt, path, time.perf_counter() - start)
        if options.check:
            record.check_passed, record.check = _check_file(fmt, path, reference, names, frames, example, options.half)
            if fmt == "onnx" and options.simplify and record.check_passed is False:
                # onnxslim broke parity: keep the plain export instead.
                export_onnx(module, example, path, names, metadata, options.dynamic, opset, simplify=False)
                record.notes.append("simplified graph failed the check; wrote the unsimplified graph")
                record.check_passed, record.check = _check_file(fmt, path, reference, names, frames, example, options.half)
        files.append(record)
        if fmt == "onnx" and options.int8:
            files.append(_export_int8(path, out_dir / f"{out_name}.int8.onnx", model, imgsz, options, names, frames))
        if fmt == "onnx" and options.triton:
            from edgedet.export.triton import write_triton_repository

            model_dir = write_triton_repository(path, options.triton, out_name)
            record.notes.append(f"wrote Triton model repository {model_dir}")
    return files
