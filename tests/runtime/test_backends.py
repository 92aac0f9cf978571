"""Backends: ONNX Runtime providers, TorchScript and OpenCV DNN behind one interface."""

from __future__ import annotations

import warnings

import numpy as np
import onnxruntime as ort
import pytest

from edgedet.runtime import backends
from edgedet.runtime.backends import (Backend, BackendError, ProviderWarning, create_backend, physical_cores,
                                      resolve_providers)
from edgedet.runtime.backends import ort as ort_backend
from edgedet.runtime.backends.ort import _cpu_placements, _load_failure
from edgedet.runtime.letterbox import letterbox
from edgedet.runtime.metadata import GraphFileError, read_metadata
from tests.runtime.conftest import scene


def frames(backend: Backend, n: int, seed: int = 0) -> np.ndarray:
    h, w = backend.input_size
    return np.stack([letterbox(scene(180, 260, seed + i), (h, w))[0] for i in range(n)])


def test_onnxruntime_backend_on_the_cpu(graphs):
    path = graphs("yolov3-tiny")
    backend = create_backend(path, providers="cpu")
    assert isinstance(backend, Backend) and backend.name == "onnxruntime"
    assert backend.providers == ["CPUExecutionProvider"]
    assert backend.output_names == read_metadata(path).outputs == ("num_dets", "boxes", "scores", "labels")
    x = frames(backend, 3)
    out = backend.run(x)
    assert [o.dtype for o in out] == [np.int64, np.float32, np.float32, np.int64]
    assert out[1].shape == (3, 30, 4) and out[0].max() > 0
    # Any batch: each frame alone gives what it gives in the batch.
    alone = backend.run(x[1:2])
    np.testing.assert_array_equal(alone[0], out[0][1:2])
    np.testing.assert_allclose(alone[1], out[1][1:2], atol=1e-3)
    with pytest.raises(ValueError, match="uint8"):
        backend.run(x.astype(np.float32))


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_every_backend_checks_frames_against_the_graphs_input(graphs, fmt):
    backend = create_backend(graphs("yolov3-tiny", fmt))
    h, w = backend.input_size
    with pytest.raises(ValueError, match=f"expected {h}x{w} frames"):
        backend.run(np.zeros((1, h + 32, w, 3), np.uint8))
    with pytest.raises(ValueError, match="at least one frame"):
        backend.run(np.zeros((0, h, w, 3), np.uint8))
    with pytest.raises(ValueError, match=r"uint8 \[B, H, W, 3\]"):
        backend.run(np.zeros((1, 3, h, w), np.uint8))


def test_intra_op_threads_are_the_physical_cores(graphs):
    backend = create_backend(graphs("grid"))
    assert backend.threads == physical_cores() >= 1
    assert create_backend(graphs("grid"), threads=1).threads == 1


@pytest.mark.parametrize("mode, allow, stop", [("off", "0", None), ("in-run", "1", "1"), ("on", "1", None)])
def test_spinning_modes_set_onnxruntimes_thread_options(graphs, mode, allow, stop):
    backend = create_backend(graphs("grid"), spinning=mode)
    assert backend.spinning == mode
    options = backend._options(verbose=False)
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == allow
    if stop is None:
        with pytest.raises(Exception):  # not set at all: ONNX Runtime's default (no stop between runs)
            options.get_session_config_entry("session.force_spinning_stop")
    else:
        assert options.get_session_config_entry("session.force_spinning_stop") == stop
    frame = np.full((1, *backend.input_size, 3), 114, np.uint8)
    np.testing.assert_array_equal(backend.run(frame)[0], create_backend(graphs("grid")).run(frame)[0])


def test_unknown_spinning_mode_is_an_error(graphs):
    with pytest.raises(BackendError, match="unknown spinning mode 'fast'; choose from off, in-run, on"):
        create_backend(graphs("grid"), spinning="fast")


def test_provider_names():
    assert resolve_providers("auto") == (["TensorrtExecutionProvider", "CUDAExecutionProvider",
                                           "CPUExecutionProvider"], True)
    assert resolve_providers("cuda, cpu") == (["CUDAExecutionProvider", "CPUExecutionProvider"], False)
    assert resolve_providers(["TensorRT", "CPUExecutionProvider"]) == (
        ["TensorrtExecutionProvider", "CPUExecutionProvider"], False)
    with pytest.raises(BackendError, match="unknown execution provider 'gpu'"):
        resolve_providers("gpu")


def test_requested_provider_that_is_not_installed_is_an_error(graphs):
    missing = next(p for p in ("coreml", "dml", "openvino", "rocm")
                   if backends.PROVIDER_ALIASES[p] not in ort.get_available_providers())
    with pytest.raises(BackendError, match=f"{missing} is not available in this onnxruntime build"):
        create_backend(graphs("grid"), providers=f"{missing},cpu")


def _cuda_usable() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except ImportError:
        return False


@pytest.mark.skipif(_cuda_usable(), reason="CUDA works here")
def test_requested_gpu_provider_that_cannot_load_is_an_error(graphs):
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime build has no CUDA provider")
    with pytest.raises(BackendError, match="cuda was requested but cannot run here"):
        create_backend(graphs("grid"), providers="cuda")


@pytest.mark.skipif(_cuda_usable(), reason="CUDA works here")
def test_auto_falls_back_to_the_cpu_with_a_warning(graphs, monkeypatch):
    gpu = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in ort.get_available_providers()]
    if not gpu:
        pytest.skip("this onnxruntime build has no GPU provider")
    # As on a machine with an NVIDIA driver whose CUDA libraries do not load.
    monkeypatch.setattr(ort_backend, "_nvidia_driver_present", lambda: True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        backend = create_backend(graphs("grid"))
    assert backend.providers == ["CPUExecutionProvider"]
    messages = [str(w.message) for w in caught if issubclass(w.category, ProviderWarning)]
    assert messages and messages == backend.notes and "cannot run here" in messages[-1]
    assert backend.run(frames(backend, 1))[0].shape == (1,)


def test_auto_without_a_gpu_driver_is_quiet(graphs, monkeypatch):
    monkeypatch.setattr(ort_backend, "_nvidia_driver_present", lambda: False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        backend = create_backend(graphs("grid"))
    assert backend.providers == ["CPUExecutionProvider"] and backend.notes == []


def test_torchscript_backend_matches_onnxruntime(graphs):
    onnx, ts = create_backend(graphs("yolov3-tiny")), create_backend(graphs("yolov3-tiny", "torchscript"))
    assert ts.name == "torchscript" and ts.providers in (["cpu"], ["cuda"])
    assert ts.output_names == onnx.output_names
    x = frames(onnx, 2, seed=4)
    a, b = onnx.run(x), ts.run(x)
    assert [o.shape for o in a] == [o.shape for o in b]
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_allclose(a[1], b[1], atol=1e-2)
    np.testing.assert_allclose(a[2], b[2], atol=1e-4)


@pytest.mark.parametrize("name", ["localizer", "unet"])
def test_opencv_backend_runs_graphs_it_supports(graphs, name):
    cv, reference = create_backend(graphs(name), backend="opencv"), create_backend(graphs(name))
    assert cv.name == "opencv" and cv.providers in (["cpu"], ["cuda"])
    x = frames(cv, 2)
    for got, want in zip(cv.run(x), reference.run(x)):
        assert got.shape == want.shape
        if want.dtype == np.int64:
            assert (got == want).mean() > 0.99
        else:
            np.testing.assert_allclose(got, want, atol=1e-4)


def test_opencv_backend_refuses_what_it_cannot_run_with_a_clear_error(graphs):
    # OpenCV's ONNX importer reads the NMS graph, but fails running it (TopK with K = 0 on a
    # frame without detections, in OpenCV 5.0); the backend finds out when loading.
    try:
        backend = create_backend(graphs("grid"), backend="opencv")
    except BackendError as e:
        assert "OpenCV DNN" in str(e) and "--backend onnxruntime" in str(e)
    else:  # a future OpenCV that runs it must then agree with ONNX Runtime
        x = frames(backend, 1)
        np.testing.assert_array_equal(backend.run(x)[0], create_backend(graphs("grid")).run(x)[0])


def test_float_input_graphs_take_the_same_frames(tmp_path):
    from edgedet.export.api import ExportOptions, export_model

    options = dict(formats=("onnx",), check=False, simplify=False)
    export_model("localizer", tmp_path / "u8", ExportOptions(**options), random_init=True, say=lambda m: None)
    export_model("localizer", tmp_path / "f32", ExportOptions(input_format="float", **options), random_init=True,
                 say=lambda m: None)
    u8, f32 = create_backend(tmp_path / "u8/localizer.onnx"), create_backend(tmp_path / "f32/localizer.onnx")
    assert f32.float_input and not u8.float_input
    x = frames(u8, 2)
    for a, b in zip(u8.run(x), f32.run(x)):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_backend_choice_must_fit_the_file(graphs):
    with pytest.raises(BackendError, match="torchscript backend runs .torchscript"):
        create_backend(graphs("grid"), backend="torchscript")
    with pytest.raises(BackendError, match="unknown backend"):
        create_backend(graphs("grid"), backend="tensorflow")


def test_files_that_are_not_exported_graphs(tmp_path):
    junk = tmp_path / "model.onnx"
    junk.write_bytes(b"\x00not a protobuf at all" * 50)
    with pytest.raises(GraphFileError):
        create_backend(junk)
    with pytest.raises(GraphFileError, match="expected .onnx or .torchscript"):
        create_backend(tmp_path / "weights.h5")


def test_reading_onnxruntime_logs():
    # What ONNX Runtime 1.x writes when a provider's libraries are missing, and its verbose
    # node-placement report (one line per node under each provider).
    failed = ("2026-11-24 02:13:25.69 [E:onnxruntime:Default, provider_bridge_ort.cc:2430 operator()] "
              "/src/provider_bridge_ort.cc:2043 onnxruntime::Provider& onnxruntime::ProviderLibrary::Get() "
              "[ONNXRuntimeError] : 1 : FAIL : Failed to load library libonnxruntime_providers_cuda.so with "
              "error: libcublasLt.so.13: cannot open shared object file: No such file or directory\n")
    assert _load_failure(failed) == "libcublasLt.so.13: cannot open shared object file: No such file or directory"
    prefix = "2026-11-24 03:05:57.26 [V:onnxruntime:, session_state.cc:1581 VerifyEachNodeIsAssignedToAnEp] "
    log = "".join(prefix + line + "\n" for line in [
        "Node placements", " Node(s) placed on [CUDAExecutionProvider]. Number of nodes: 40", "  Conv (/m/conv1)",
        " Node(s) placed on [CPUExecutionProvider]. Number of nodes: 3", "  NonMaxSuppression (/post/nms)",
        "  Shape (/Shape_1)", "  Shape (/Shape_2)"]) + "2026-11-24 [V:onnxruntime:, x.cc:1 F] Done\n"
    assert _cpu_placements(log) == (3, ["NonMaxSuppression", "Shape"])
    assert _cpu_placements(prefix + " All nodes placed on [CUDAExecutionProvider]. Number of nodes: 9\n") == (0, [])
