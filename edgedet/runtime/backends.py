"""Running an exported graph: ONNX Runtime, TorchScript or OpenCV DNN behind one interface.

Every backend takes a batch of letterboxed uint8 BGR frames ``[B, H, W, 3]`` (the graph's input
contract) and returns the graph's outputs as numpy arrays in the order of ``metadata["outputs"]``.
Graphs exported with ``--input float`` are fed ``[B, 3, H, W]`` RGB in 0..1, converted here, so
callers never need to know.

ONNX Runtime picks its execution providers from what is installed *and* usable: ``auto`` tries
TensorRT (fp16, engine cache under the user cache directory), then CUDA, then the CPU, and falls
back with a warning when one cannot load. ``providers`` reports what the session really got.
TorchScript imports torch only when chosen, so the ONNX path never needs it.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import re
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from edgedet.errors import EdgedetError, MissingDependencyError
from edgedet.runtime.metadata import graph_format, read_metadata

__all__ = ["Backend", "BackendError", "ProviderWarning", "OrtBackend", "TorchScriptBackend", "OpenCVBackend",
           "create_backend", "resolve_providers", "physical_cores", "trt_cache_dir", "BACKENDS",
           "PROVIDER_ALIASES"]

BACKENDS = ("onnxruntime", "torchscript", "opencv")


def _require(module: str, message: str) -> Any:
    """Import ``module`` (lazily: the runtime must load without torch), or say what to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(message) from None


# Short names a user types -> ONNX Runtime provider names.
PROVIDER_ALIASES = {
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "migraphx": "MIGraphXExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "dml": "DmlExecutionProvider",
    "directml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
}
AUTO_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
_GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
_SHORT = {v: k for k, v in reversed(list(PROVIDER_ALIASES.items()))}


class BackendError(EdgedetError):
    """A backend or execution provider that cannot run the graph here."""


class ProviderWarning(UserWarning):
    """An execution provider was skipped, or part of the graph runs on a slower one."""


class Backend:
    """One loaded graph. Subclasses set the attributes and implement :meth:`_run`.

    Attributes:
        name: ``onnxruntime``, ``torchscript`` or ``opencv``.
        providers: what actually runs the graph, e.g. ``["CUDAExecutionProvider",
            "CPUExecutionProvider"]`` or ``["cpu"]``.
        output_names: the graph's outputs, in ``metadata["outputs"]`` order.
        metadata: the graph's edgedet metadata document.
        notes: what happened while loading (providers skipped, nodes on the CPU), one line each;
            each was also issued as a :class:`ProviderWarning`.
    """

    name: str = ""
    providers: list[str]
    output_names: tuple[str, ...]

    def __init__(self, path: str | os.PathLike, metadata: dict[str, Any]) -> None:
        self.path = Path(path)
        self.metadata = metadata
        self.output_names = tuple(metadata.get("outputs") or ())
        if not self.output_names:
            raise BackendError(f"{self.path}: metadata lists no outputs")
        spec = metadata.get("input", {})
        self.float_input = spec.get("dtype", "uint8") != "uint8"
        self.notes: list[str] = []

    @property
    def input_size(self) -> tuple[int, int]:
        """The network input ``(height, width)`` the graph was exported at."""
        spec = self.metadata["input"]
        return int(spec["height"]), int(spec["width"])

    def run(self, images: np.ndarray) -> list[np.ndarray]:
        """Letterboxed uint8 BGR frames ``[B, H, W, 3]`` -> the graph's outputs as numpy arrays."""
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
            raise ValueError(f"expected uint8 [B, H, W, 3] frames, got {images.dtype} {list(images.shape)}")
        if self.float_input:
            # The graph's float contract: RGB, channels first, 0..1.
            x = np.ascontiguousarray(images[..., ::-1].transpose(0, 3, 1, 2), dtype=np.float32)
            x *= 1.0 / 255.0
        else:
            x = np.ascontiguousarray(images)
        return self._run(x)

    def _run(self, x: np.ndarray) -> list[np.ndarray]:
        raise NotImplementedError

    def _note(self, message: str) -> None:
        self.notes.append(message)
        warnings.warn(message, ProviderWarning, stacklevel=3)

    def close(self) -> None:
        """Release the session; the backend cannot run afterwards."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, providers={self.providers})"


# ---------------------------------------------------------------------------------------------
# ONNX Runtime


def physical_cores() -> int:
    """Physical CPU cores this process may use (affinity, cgroup quota and SMT siblings counted)."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    cores: set[tuple[str, str]] = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topology / "physical_package_id").read_text().strip(),
                       (topology / "core_id").read_text().strip()))
        except OSError:
            cores = set()
            break
    count = len(cores) or len(cpus)
    try:  # a container's CPU quota (cgroup v2): "max 100000" or "200000 100000"
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            count = min(count, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, count)


def trt_cache_dir() -> Path:
    """Where TensorRT engines are cached: ``$EDGEDET_CACHE`` or ``~/.cache/edgedet``, then ``trt``."""
    root = os.environ.get("EDGEDET_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "edgedet")
    return Path(root) / "trt"


def resolve_providers(providers: str | Sequence[str]) -> tuple[list[str], bool]:
    """``"auto"``, ``"cuda,cpu"`` or a list -> (ONNX Runtime provider names, whether it was auto)."""
    if isinstance(providers, str):
        items = [p.strip() for p in providers.split(",") if p.strip()]
    else:
        items = [str(p).strip() for p in providers]
    if not items or items == ["auto"]:
        return list(AUTO_PROVIDERS), True
    names = []
    for item in items:
        name = PROVIDER_ALIASES.get(item.lower(), item)
        if not name.endswith("ExecutionProvider"):
            known = ", ".join(["auto", *dict.fromkeys(PROVIDER_ALIASES)])
            raise BackendError(f"unknown execution provider {item!r}; choose from {known}")
        if name not in names:
            names.append(name)
    return names, False


def _nvidia_driver_present() -> bool:
    """Whether an NVIDIA driver is loaded; without one, GPU providers are skipped silently."""
    if sys.platform.startswith("linux"):
        return Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidia0").exists()
    return True  # elsewhere, let ONNX Runtime find out


@contextlib.contextmanager
def _captured_stderr() -> Iterator[io.StringIO]:
    """Capture what native code writes to file descriptor 2 (ONNX Runtime's log) into a buffer."""
    buffer = io.StringIO()
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield buffer
        return
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield buffer
        finally:
            try:
                sys.stderr.flush()
            except ValueError:
                pass
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            buffer.write(tmp.read().decode("utf-8", "replace"))


def _load_failure(log: str) -> str:
    """The most useful line of ONNX Runtime's log about a provider that did not load."""
    for pattern in (r"with error: ([^\n]+)", r"(Failed to create \w+ExecutionProvider[^\n.]*)",
                    r"(Please install[^\n.]*)"):
        match = re.search(pattern, log)
        if match:
            return re.sub(r"\x1b\[[0-9;]*m", "", match.group(1)).strip()
    return ""


_LOG_PREFIX = re.compile(r"^\S+ \S+ \[[VIWEF]:[^\]]*\] ?")


def _cpu_placements(log: str) -> tuple[int, list[str]]:
    """Nodes that ONNX Runtime's verbose log places on the CPU provider: (count, op types).

    The log reads `` Node(s) placed on [CPUExecutionProvider]. Number of nodes: N`` followed by
    one ``  OpType (node name)`` line per node, each line behind a timestamp prefix.
    """
    lines = [_LOG_PREFIX.sub("", line) for line in log.splitlines()]
    for i, line in enumerate(lines):
        match = re.search(r"Node\(s\) placed on \[CPUExecutionProvider\]\. Number of nodes: (\d+)", line)
        if match:
            ops = []
            for node in lines[i + 1:]:
                if not node.startswith("  ") or "placed on [" in node:
                    break
                ops.append(node.split()[0])
            return int(match.group(1)), list(dict.fromkeys(ops))
    return 0, []


class OrtBackend(Backend):
    """An ONNX Runtime session on the best usable execution providers."""

    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike, metadata: dict[str, Any], providers: str | Sequence[str] = "auto",
                 threads: int | None = None, max_batch: int = 1, spinning: bool = False) -> None:
        super().__init__(path, metadata)
        self.spinning = spinning
        self._ort = ort = _require("onnxruntime", "the onnxruntime backend needs ONNX Runtime: "
                                                  "pip install onnxruntime-gpu (or onnxruntime)")
        wanted, auto = resolve_providers(providers)
        installed = ort.get_available_providers()
        if auto:
            wanted = [p for p in wanted if p in installed]
            if not _nvidia_driver_present():
                wanted = [p for p in wanted if p not in _GPU_PROVIDERS]
        else:
            missing = [p for p in wanted if p not in installed]
            if missing:
                raise BackendError(
                    f"execution provider {', '.join(_SHORT.get(p, p) for p in missing)} is not available in this "
                    f"onnxruntime build (available: {', '.join(_SHORT.get(p, p) for p in installed)})")
        if "CPUExecutionProvider" not in wanted and auto:
            wanted.append("CPUExecutionProvider")
        self.threads = threads or physical_cores()
        self.max_batch = max(1, int(max_batch))
        self.session = self._create_session(wanted, auto)
        self.providers = list(self.session.get_providers())
        self._input_name = self.session.get_inputs()[0].name
        graph_outputs = [o.name for o in self.session.get_outputs()]
        unknown = [n for n in self.output_names if n not in graph_outputs]
        if unknown:
            raise BackendError(f"{self.path}: metadata names outputs {unknown} the graph does not have "
                               f"(graph outputs: {graph_outputs})")

    def _options(self, verbose: bool):
        ort = self._ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # By default idle intra-op threads sleep instead of spinning: the capture and writer
        # threads of a pipeline need those cycles, and on a busy CPU spinning slows inference
        # itself down (benchmarks/results/pipeline_fps.md).
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.spinning else "0")
        # Verbose only while creating a GPU session, to read where nodes were placed.
        options.log_severity_level = 0 if verbose else 3
        return options

    def _provider_options(self, name: str) -> dict[str, Any]:
        if name != "TensorrtExecutionProvider":
            return {}
        cache = trt_cache_dir()
        try:
            cache.mkdir(parents=True, exist_ok=True)
        except OSError:
            pass
        h, w = self.input_size
        options: dict[str, Any] = {
            "trt_fp16_enable": True,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(cache),
        }
        if not self.metadata.get("input", {}).get("dynamic_size") and not self.float_input:
            # One optimisation profile covering every batch the pipeline sends, so a short last
            # batch does not rebuild the engine.
            name = self.metadata.get("input", {}).get("name", "images")
            options.update(trt_profile_min_shapes=f"{name}:1x{h}x{w}x3",
                           trt_profile_opt_shapes=f"{name}:{self.max_batch}x{h}x{w}x3",
                           trt_profile_max_shapes=f"{name}:{self.max_batch}x{h}x{w}x3")
        return options

    def _try(self, providers: list[str]):
        """(session or None, ONNX Runtime's log, error message)."""
        ort = self._ort
        gpu = any(p in _GPU_PROVIDERS for p in providers)
        spec = [(p, self._provider_options(p)) for p in providers]
        out = io.StringIO()
        with _captured_stderr() as log, contextlib.redirect_stdout(out):
            if gpu:
                ort.set_default_logger_severity(0)
            try:
                session = ort.InferenceSession(str(self.path), sess_options=self._options(gpu), providers=spec,
                                               enable_fallback=0)
                error = ""
            except Exception as e:  # ORT raises RuntimeError/Fail/InvalidGraph subclasses
                session, error = None, str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            finally:
                if gpu:
                    ort.set_default_logger_severity(2)  # ONNX Runtime's default: warnings
        return session, log.getvalue(), error

    def _create_session(self, wanted: list[str], auto: bool):
        remaining = list(wanted)
        while True:
            session, log, error = self._try(remaining)
            if session is not None:
                break
            first = remaining[0]
            reason = _load_failure(log) or _load_failure(error) or error
            if "Protobuf parsing failed" in error or "INVALID_PROTOBUF" in error:
                raise BackendError(f"{self.path}: not a readable ONNX file")
            if first != "CPUExecutionProvider" and not auto:
                raise BackendError(f"execution provider {_SHORT.get(first, first)} was requested but cannot run "
                                   f"here ({reason})")
            if first == "CPUExecutionProvider" or len(remaining) == 1:
                raise BackendError(f"{self.path}: ONNX Runtime cannot run it on "
                                   f"{', '.join(_SHORT.get(p, p) for p in remaining)}: {reason}")
            self._note(f"{_SHORT.get(first, first)} execution provider cannot run here ({reason}); "
                       f"falling back to {', '.join(_SHORT.get(p, p) for p in remaining[1:])}")
            remaining = remaining[1:]
        assigned = session.get_providers()
        lost = [p for p in remaining if p not in assigned]
        if lost:
            reason = _load_failure(log)
            names = ", ".join(_SHORT.get(p, p) for p in lost)
            if not auto:
                raise BackendError(f"execution provider {names} was requested but cannot run here"
                                   f"{f' ({reason})' if reason else ''}")
            self._note(f"{names} execution provider{'s' if len(lost) > 1 else ''} cannot run here"
                       f"{f' ({reason})' if reason else ''}; using {', '.join(_SHORT.get(p, p) for p in assigned)}")
        if any(p in _GPU_PROVIDERS for p in assigned):
            count, ops = _cpu_placements(log)
            if count:
                self._note(f"{count} node{'s' if count > 1 else ''} of the graph run on the CPU provider "
                           f"({', '.join(ops[:8])}{', ...' if len(ops) > 8 else ''})")
        return session

    def _run(self, x: np.ndarray) -> list[np.ndarray]:
        return self.session.run(list(self.output_names), {self._input_name: x})

    def close(self) -> None:
        self.session = None


# ---------------------------------------------------------------------------------------------
# TorchScript


class TorchScriptBackend(Backend):
    """A TorchScript file under ``torch.jit.load``, on CUDA when available (torch imported here only)."""

    name = "torchscript"

    def __init__(self, path: str | os.PathLike, metadata: dict[str, Any], providers: str | Sequence[str] = "auto",
                 threads: int | None = None) -> None:
        super().__init__(path, metadata)
        self._torch = torch = _require("torch", "the torchscript backend needs PyTorch, which the runtime-only "
                                                "install leaves out: pip install 'edgedet[full]', or run the .onnx file")
        wanted, auto = resolve_providers(providers)
        if auto:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        else:
            short = [_SHORT.get(p, p) for p in wanted]
            device = next((d for d in short if d in ("cuda", "cpu")), None)
            if device is None:
                raise BackendError(f"the torchscript backend runs on cuda or cpu, not {', '.join(short)}")
            if device == "cuda" and not torch.cuda.is_available():
                if "cpu" not in short:
                    raise BackendError("cuda was requested but torch.cuda.is_available() is false here")
                device = "cpu"
        if threads:
            torch.set_num_threads(threads)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit's deprecation notice
            try:
                self.module = torch.jit.load(str(self.path), map_location=device).eval()
            except Exception as e:
                raise BackendError(f"{self.path}: torch.jit.load cannot read it ({str(e).splitlines()[0][:200]})") \
                    from None
        self.device = torch.device(device)
        self.providers = [device]

    def _run(self, x: np.ndarray) -> list[np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            out = self.module(torch.from_numpy(x).to(self.device))
        out = out if isinstance(out, (list, tuple)) else [out]
        return [t.detach().cpu().numpy() for t in out]

    def close(self) -> None:
        self.module = None


# ---------------------------------------------------------------------------------------------
# OpenCV DNN


class OpenCVBackend(Backend):
    """OpenCV's DNN module reading the ONNX file (CUDA target when OpenCV was built with it).

    OpenCV implements a subset of ONNX: the graph is run once on a blank frame when loading, so a
    graph it cannot run fails here with a clear error rather than on the first real frame.
    """

    name = "opencv"

    def __init__(self, path: str | os.PathLike, metadata: dict[str, Any], providers: str | Sequence[str] = "auto",
                 threads: int | None = None) -> None:
        super().__init__(path, metadata)
        import cv2

        self._cv2 = cv2
        if graph_format(path) != "onnx":
            raise BackendError(f"the opencv backend reads .onnx files, not {self.path.name}")
        wanted, auto = resolve_providers(providers)
        short = [_SHORT.get(p, p) for p in wanted]
        cuda_built = hasattr(cv2, "cuda") and cv2.cuda.getCudaEnabledDeviceCount() > 0
        use_cuda = cuda_built and (auto or "cuda" in short)
        if not auto and "cuda" in short and not cuda_built and "cpu" not in short:
            raise BackendError("cuda was requested but this OpenCV build has no CUDA support")
        if not auto and not set(short) & {"cuda", "cpu"}:
            raise BackendError(f"the opencv backend runs on cuda or cpu, not {', '.join(short)}")
        if threads:
            cv2.setNumThreads(threads)
        try:
            self.net = cv2.dnn.readNetFromONNX(str(self.path))
        except cv2.error as e:
            raise BackendError(f"OpenCV DNN cannot read {self.path.name}: {_cv_reason(e)}; "
                               f"use --backend onnxruntime") from None
        if use_cuda:
            self.net.setPreferableBackend(cv2.dnn.DNN_BACKEND_CUDA)
            self.net.setPreferableTarget(cv2.dnn.DNN_TARGET_CUDA)
        self.providers = ["cuda" if use_cuda else "cpu"]
        h, w = self.input_size
        blank = np.full((1, h, w, 3), int(metadata.get("letterbox", {}).get("pad_value", [114])[0]), np.uint8)
        try:
            self.run(blank)
        except cv2.error as e:
            raise BackendError(f"OpenCV DNN reads {self.path.name} but cannot run it: {_cv_reason(e)}; "
                               f"use --backend onnxruntime") from None

    def _run(self, x: np.ndarray) -> list[np.ndarray]:
        self.net.setInput(x, self._input_name())
        out = self.net.forward(list(self.output_names))
        return [np.asarray(o) for o in out]

    def _input_name(self) -> str:
        return self.metadata.get("input", {}).get("name", "images")

    def close(self) -> None:
        self.net = None


def _cv_reason(error: Exception) -> str:
    """The informative part of an OpenCV error (its message starts with the C++ location)."""
    text = str(error)
    detail = [line.lstrip("> ").strip() for line in text.splitlines() if line.lstrip().startswith(">")]
    if detail:
        return re.sub(r",\s*where$", "", detail[0])[:300]
    match = re.search(r"error: \(-?\d+:[^)]*\) (.*?)(?: in function '.*|$)", text)
    if match and match.group(1).strip():
        return match.group(1).strip()[:300]
    return (text.strip().splitlines() or ["unknown error"])[0][:300]


# ---------------------------------------------------------------------------------------------


def create_backend(path: str | os.PathLike, backend: str = "auto", providers: str | Sequence[str] = "auto",
                   threads: int | None = None, *, max_batch: int = 1, metadata: dict[str, Any] | None = None,
                   spinning: bool = False) -> Backend:
    """Load an exported ``.onnx`` or ``.torchscript`` graph on a backend.

    Args:
        path: the exported graph (it must carry edgedet metadata).
        backend: ``auto`` (ONNX Runtime for ``.onnx``, TorchScript for ``.torchscript``),
            ``onnxruntime``, ``torchscript`` or ``opencv``.
        providers: ``auto`` or a comma-separated list / sequence (``tensorrt,cuda,cpu``); for
            TorchScript and OpenCV, ``cuda`` or ``cpu``. An explicitly named provider that is not
            installed or cannot load is an error; ``auto`` falls back with a warning.
        threads: CPU threads (default: the physical cores this process may use).
        max_batch: the largest batch that will be run (sizes TensorRT's optimisation profile).
        metadata: the graph's metadata when already read.
        spinning: ONNX Runtime: let idle intra-op threads spin (lower latency on an otherwise idle
            CPU; steals cycles from other threads). Off by default.
    """
    path = Path(path)
    fmt = graph_format(path)
    metadata = metadata if metadata is not None else read_metadata(path)
    if backend == "auto":
        backend = "onnxruntime" if fmt == "onnx" else "torchscript"
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose from auto, {', '.join(BACKENDS)}")
    if backend in ("onnxruntime", "opencv") and fmt != "onnx":
        raise BackendError(f"the {backend} backend runs .onnx files; {path.name} is TorchScript "
                           f"(use --backend torchscript)")
    if backend == "torchscript" and fmt != "torchscript":
        raise BackendError(f"the torchscript backend runs .torchscript files; {path.name} is ONNX")
    if backend == "onnxruntime":
        return OrtBackend(path, metadata, providers, threads, max_batch=max_batch, spinning=spinning)
    if backend == "torchscript":
        return TorchScriptBackend(path, metadata, providers, threads)
    return OpenCVBackend(path, metadata, providers, threads)
