"""ONNX Runtime: a session on the best usable execution providers, and what its log says about them.

``auto`` tries TensorRT (fp16, engine cache under the user cache directory), then CUDA, then the
CPU, and falls back with a warning when one cannot load; a provider named explicitly must load.
``providers`` reports what the session really got. ONNX Runtime reports why a provider failed,
and which nodes it placed on the CPU, only in its native log: that log is captured while the
session is created and read here.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from edgedet.runtime.backends.base import Backend, BackendError, BackendUnavailable, require
from edgedet.runtime.backends.providers import GPU_PROVIDERS, resolve_providers, short_name
from edgedet.runtime.cpu import physical_cores
from edgedet.runtime.metadata import GraphMetadata

__all__ = ["OrtBackend", "trt_cache_dir"]


def trt_cache_dir() -> Path:
    """Where TensorRT engines are cached: ``$EDGEDET_CACHE`` or ``~/.cache/edgedet``, then ``trt``."""
    root = os.environ.get("EDGEDET_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "edgedet")
    return Path(root) / "trt"


def _nvidia_driver_present() -> bool:
    """Whether an NVIDIA driver is loaded; without one, GPU providers are skipped silently."""
    if sys.platform.startswith("linux"):
        return Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidia0").exists()
    return True  # elsewhere, let ONNX Runtime find out


def _names(providers: Sequence[str]) -> str:
    return ", ".join(short_name(p) for p in providers)


# ---------------------------------------------------------------------------------------------
# ONNX Runtime's native log


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


# ---------------------------------------------------------------------------------------------


# What ONNX Runtime's idle intra-op threads do. "on" (ONNX Runtime's default): they spin, waiting
# for the next operator, also after a run returns; "off": they sleep, and every operator pays a
# wake-up; "in-run": they spin while a run is in progress and stop as soon as it returns
# (session.force_spinning_stop), so a pipeline's other threads get the cores between runs.
SPIN_MODES = ("off", "in-run", "on")
# The runtime's choice: measured best for `edgedet run` with outputs (benchmarks/pipeline_fps.py).
DEFAULT_SPINNING = "off"


class OrtBackend(Backend):
    """An ONNX Runtime session on the best usable execution providers."""

    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike, metadata: GraphMetadata, providers: str | Sequence[str] = "auto",
                 threads: int | None = None, max_batch: int = 1,
                 spinning: str = DEFAULT_SPINNING) -> None:
        super().__init__(path, metadata)
        if spinning not in SPIN_MODES:
            raise BackendError(f"unknown spinning mode {spinning!r}; choose from {', '.join(SPIN_MODES)}")
        self.spinning = spinning
        self._ort = ort = require("onnxruntime", "the onnxruntime backend needs ONNX Runtime: "
                                                 "pip install onnxruntime-gpu (or onnxruntime)")
        wanted, auto = resolve_providers(providers)
        installed = ort.get_available_providers()
        if auto:
            wanted = [p for p in wanted if p in installed]
            if not _nvidia_driver_present():
                wanted = [p for p in wanted if p not in GPU_PROVIDERS]
        else:
            missing = [p for p in wanted if p not in installed]
            if missing:
                raise BackendUnavailable(f"execution provider {_names(missing)} is not available in this onnxruntime "
                                   f"build (available: {_names(installed)})")
            gpu = [p for p in wanted if p in GPU_PROVIDERS]
            if gpu and not _nvidia_driver_present():  # ORT would blame a CUDA library instead
                raise BackendUnavailable(f"execution provider {_names(gpu)} was requested but cannot run here "
                                         f"(no CUDA device or driver on this machine)")
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
        # Idle intra-op threads: see SPIN_MODES (benchmarks/results/pipeline_fps.md has the numbers).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0" if self.spinning == "off" else "1")
        if self.spinning == "in-run":
            options.add_session_config_entry("session.force_spinning_stop", "1")
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
        spec = self.metadata.input
        if not spec.dynamic_size and not self.float_input:
            # One optimisation profile covering every batch the pipeline sends, so a short last
            # batch does not rebuild the engine.
            options.update(trt_profile_min_shapes=f"{spec.name}:1x{h}x{w}x3",
                           trt_profile_opt_shapes=f"{spec.name}:{self.max_batch}x{h}x{w}x3",
                           trt_profile_max_shapes=f"{spec.name}:{self.max_batch}x{h}x{w}x3")
        return options

    def _try(self, providers: list[str]):
        """(session or None, ONNX Runtime's log, error message)."""
        ort = self._ort
        gpu = any(p in GPU_PROVIDERS for p in providers)
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
                raise BackendUnavailable(f"execution provider {short_name(first)} was requested but cannot run "
                                   f"here ({reason})")
            if first == "CPUExecutionProvider" or len(remaining) == 1:
                # A GPU provider that cannot start is this machine's limit; the CPU provider
                # refusing the graph is the graph's.
                error_type = BackendUnavailable if first in GPU_PROVIDERS else BackendError
                raise error_type(f"{self.path}: ONNX Runtime cannot run it on {_names(remaining)}: {reason}")
            self._note(f"{short_name(first)} execution provider cannot run here ({reason}); "
                       f"falling back to {_names(remaining[1:])}")
            remaining = remaining[1:]
        assigned = session.get_providers()
        lost = [p for p in remaining if p not in assigned]
        if lost:
            reason = _load_failure(log)
            names = _names(lost)
            if not auto:
                raise BackendUnavailable(f"execution provider {names} was requested but cannot run here"
                                   f"{f' ({reason})' if reason else ''}")
            self._note(f"{names} execution provider{'s' if len(lost) > 1 else ''} cannot run here"
                       f"{f' ({reason})' if reason else ''}; using {_names(assigned)}")
        if any(p in GPU_PROVIDERS for p in assigned):
            count, ops = _cpu_placements(log)
            if count:
                self._note(f"{count} node{'s' if count > 1 else ''} of the graph run on the CPU provider "
                           f"({', '.join(ops[:8])}{', ...' if len(ops) > 8 else ''})")
        return session

    def _run(self, x: np.ndarray) -> list[np.ndarray]:
        return self.session.run(list(self.output_names), {self._input_name: x})

    def close(self) -> None:
        self.session = None
