"""Export options: what ``edgedet export`` takes, checked in one place; no torch needed to read them.

The CLI takes its defaults from these dataclasses, so a default lives here and nowhere else.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from edgedet.errors import EdgedetError

__all__ = ["ExportError", "NMSSettings", "ExportOptions", "FORMATS", "INPUT_FORMATS", "MAX_IMGSZ", "imgsz_problem",
           "TRITON_BACKENDS", "check_fully_conv_size", "fully_conv_geometry"]

# The largest input side export (bench's graphs included) and training accept: 8192 px (64 Mpx square) is far past
# any detector input in use, and a frame of it still fits in memory; bigger sizes only end in an
# allocation failure halfway through the work.
MAX_IMGSZ = 8192


def imgsz_problem(imgsz: tuple[int, int] | None) -> str | None:
    """Why ``imgsz`` (``(H, W)``) cannot be used, or ``None`` when it can (or is not given)."""
    if imgsz is None:
        return None
    if len(imgsz) != 2 or min(imgsz) < 1:
        return f"--imgsz {imgsz}: give positive sizes N or H,W"
    if max(imgsz) > MAX_IMGSZ:
        return f"--imgsz {imgsz[0]},{imgsz[1]} is too large: each side must be at most {MAX_IMGSZ}"
    return None


class ExportError(EdgedetError):
    """Contradictory or impossible export options."""


@dataclass(frozen=True)
class NMSSettings:
    """Post-processing of detectors.

    Attributes:
        conf: keep (box, class) pairs whose score (objectness x class probability) is above this.
        iou: suppress a box whose IoU with a better box of the same class is above this.
        max_det: K, detections per image in the output.
        max_candidates: per image, only the best this many boxes (by best class score) enter
            NMS, which bounds its cost on crowded or untrained outputs.
        agnostic: one NMS over all classes (each box keeps its best class).
    """

    conf: float = 0.25
    iou: float = 0.45
    max_det: int = 100
    max_candidates: int = 3000
    agnostic: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


FORMATS = ("onnx", "torchscript")
INPUT_FORMATS = ("uint8", "float")
# Triton backends a repository can be written for (edgedet.export.triton): ONNX Runtime's, or the
# Python backend running model.py (what the tritonserver inside nvidia-pytriton has).
TRITON_BACKENDS = ("onnxruntime", "python")


@dataclass(frozen=True)
class ExportOptions:
    """What ``edgedet export`` takes; the CLI's defaults are these fields' defaults.

    Attributes:
        formats: files to write, from :data:`FORMATS`.
        imgsz: input ``(H, W)``; None: the model's.
        dynamic: free height and width as well (batch is always dynamic).
        half: fp16 weights and activations (decoding and NMS stay fp32).
        nms: NMS settings baked into detector graphs; None: raw ``predictions``.
        input_format: ``uint8`` (NHWC BGR frames) or ``float`` (NCHW RGB 0..1).
        opset: ONNX opset; None: :data:`edgedet.export.onnx.DEFAULT_OPSET`.
        probs: segmenters also output class probabilities.
        simplify: simplify the ONNX graph with onnxslim (kept only when it passes the check).
        check: run every written file and compare it with PyTorch.
        name: file stem; None: the model name.
        triton: directory of a Triton model repository to write.
        triton_backend: the Triton backend that repository is for, from :data:`TRITON_BACKENDS`.
        int8: also write ``<name>.int8.onnx``, statically quantised.
        calib_data: dataset spec of the calibration frames; None: the family's dataset.
        calib_samples: calibration frames.
        fully_conv: turn a classifier-style head into convolutions (the family's
            :meth:`~edgedet.models.spec.FamilySpec.fully_convolutional`) and export a detector over
            frames of any size of at least the model's input (always dynamic H, W; ``imgsz`` is then
            the frame size the runtime letterboxes to, default the family's scene size).
    """

    formats: tuple[str, ...] = FORMATS
    imgsz: tuple[int, int] | None = None
    dynamic: bool = False
    half: bool = False
    nms: NMSSettings | None = NMSSettings()
    input_format: str = "uint8"
    opset: int | None = None
    probs: bool = False
    simplify: bool = True
    check: bool = True
    name: str | None = None
    triton: str | None = None
    triton_backend: str = "onnxruntime"
    int8: bool = False
    calib_data: str | None = None
    calib_samples: int = 64
    fully_conv: bool = False

    def validate(self, model: str) -> None:
        """Every check of these options for ``model``: :class:`ExportError` (or the registry's
        :class:`ModelError` for an unknown model) before anything is loaded or written."""
        from edgedet.export.onnx import MIN_OPSET
        from edgedet.models.registry import get_entry

        spec = get_entry(model).spec
        problem = imgsz_problem(self.imgsz)
        if problem:
            raise ExportError(problem)
        bad = [f for f in self.formats if f not in FORMATS]
        if bad or not self.formats:
            raise ExportError(f"unknown format {', '.join(bad) or '(none)'}; choose from {', '.join(FORMATS)}")
        if self.probs and spec.task != "segmentation":
            raise ExportError("--probs applies to segmentation models only")
        if self.fully_conv:
            _check_fully_conv(model, spec, self.imgsz)
        if self.nms is None and spec.task != "detection" and not self.fully_conv:
            raise ExportError("--no-nms applies to detectors only")
        if self.opset is not None and self.opset < MIN_OPSET:
            raise ExportError(f"--opset {self.opset} is too old; the graph needs opset >= {MIN_OPSET}")
        if self.int8 and "onnx" not in self.formats:
            raise ExportError("--int8 quantises the ONNX graph: include onnx in --format")
        if self.int8 and self.half:
            raise ExportError("--int8 and --half contradict each other; give one")
        if self.calib_data and not self.int8:
            raise ExportError("--calib-data applies to --int8")
        if self.calib_data:
            from edgedet.data import parse_spec

            parse_spec(self.calib_data)  # a bad spec fails before anything is written
        if self.triton and "onnx" not in self.formats:
            raise ExportError("--triton serves the ONNX graph: include onnx in --format")
        if self.triton_backend not in TRITON_BACKENDS:
            raise ExportError(f"--triton-backend {self.triton_backend}: choose from {', '.join(TRITON_BACKENDS)}")
        if self.triton_backend != ExportOptions.triton_backend and not self.triton:
            raise ExportError(f"--triton-backend {self.triton_backend} applies to a Triton repository: "
                              f"give --triton DIR")
        if self.name is not None:  # a name, not a path: files stay inside --out
            from edgedet.runtime.files import check_name

            check_name(self.name, "--name")
        if self.triton:
            from edgedet.export.triton import check_triton_name

            check_triton_name(self.name or model)
        if self.input_format not in INPUT_FORMATS:
            raise ExportError(f"--input must be uint8 or float, got {self.input_format}")
        if self.dynamic and spec.fixed_input and not self.fully_conv:
            raise ExportError(f"--dynamic: {model} has a fixed input size (its head depends on it)")


def _check_fully_conv(model: str, spec, imgsz: tuple[int, int] | None) -> None:
    """``--fully-conv`` needs a family that converts, and frames at least one window large."""
    from edgedet.models.registry import get_entry, list_models

    if not spec.fully_conv:
        able = [m for m in list_models() if get_entry(m).spec.fully_conv]
        raise ExportError(f"--fully-conv: {model} ({spec.family} family) cannot be made fully convolutional (no "
                          f"fully connected head over conv features); it applies to {', '.join(able) or 'no model'}")
    if imgsz is not None:
        check_fully_conv_size(imgsz, *fully_conv_geometry(model), model)


def fully_conv_geometry(model: str) -> tuple[tuple[int, int], int]:
    """``(window, stride)`` of ``model``'s default configuration made fully convolutional (cheap for
    the families that convert: their heads are small)."""
    from edgedet.models.registry import create_model, get_entry

    conversion = get_entry(model).spec.fully_convolutional(create_model(model))
    return tuple(conversion.window), conversion.stride


def check_fully_conv_size(imgsz: tuple[int, int], window: tuple[int, int], stride: int, model: str) -> None:
    """Frames of a fully convolutional graph hold at least one window and are multiples of the stride."""
    h, w = imgsz
    if h < window[0] or w < window[1]:
        raise ExportError(f"--fully-conv --imgsz {h},{w} is smaller than one {window[0]}x{window[1]} window of {model}")
    if h % stride or w % stride:
        raise ExportError(f"--fully-conv --imgsz {h},{w}: height and width must be multiples of the stride {stride}")
