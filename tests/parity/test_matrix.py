"""The parity matrix: every registered model x {onnx, torchscript} x {nms, raw} x batch {1, 4}
through :func:`edgedet.parity.runner.check_file`, the code ``edgedet parity`` runs; and the checker
catching a deliberately perturbed graph, so these tests cannot pass vacuously."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from edgedet.export.api import ExportOptions, export_model
from edgedet.export.deploy import NMSSettings
from edgedet.models import get_entry, list_models
from edgedet.parity.runner import ParityOptions, check_file, format_report
from edgedet.train.checkpoint import save_checkpoint
from tests.conftest import SMALL_INPUT
from tests.conftest import lively_model

PARITY_NMS = NMSSettings(conf=0.3, iou=0.45, max_det=20)


def exported(tmp_path_factory, name: str, fmt: str, nms: bool, half: bool = False):
    """Export a small lively model once per (name, format, nms); returns the graph path."""
    root = tmp_path_factory.mktemp(f"{name}-{fmt}-{nms}-{half}")
    ckpt = save_checkpoint(root / "ref.pt", lively_model(name))
    options = ExportOptions(formats=(fmt,), imgsz=SMALL_INPUT.get(name), nms=PARITY_NMS if nms else None,
                            half=half, check=False, dynamic=get_entry(name).family in ("yolov3", "unet"))
    files = export_model(name, root, options, weights=str(ckpt), say=lambda m: None)
    return files[0].path


def variants():
    for name in list_models():
        for fmt in ("onnx", "torchscript"):
            for nms in ((True, False) if get_entry(name).task == "detection" else (True,)):
                yield pytest.param(name, fmt, nms, id=f"{name}-{fmt}-{'nms' if nms else 'raw'}")


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    cache = {}

    def get(name, fmt, nms, half=False):
        key = (name, fmt, nms, half)
        if key not in cache:
            cache[key] = exported(tmp_path_factory, name, fmt, nms, half)
        return cache[key]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("name, fmt, nms", list(variants()))
def test_parity_matrix_cpu(graphs, name, fmt, nms, batch):
    path = graphs(name, fmt, nms)
    report = check_file(path, ParityOptions(samples=batch, batch=batch))
    ran = [b for b in report.backends if b.status != "skipped"]
    assert ran and ran[0].backend == ("onnxruntime-cpu" if fmt == "onnx" else "torchscript-cpu")
    assert report.passed, format_report(report)
    inputs = {i.input for i in ran[0].inputs}
    assert {"empty scene", "all 0", "all 255"} <= inputs
    if get_entry(name).task == "detection":
        assert {"crowded mosaic", "mixed batch"} <= inputs
    if get_entry(name).family in ("yolov3", "unet"):
        assert any(i.startswith("second size") for i in inputs)


def _ort_gpu_providers() -> list[str]:
    import onnxruntime as ort

    return [p for p in ort.get_available_providers() if p in ("CUDAExecutionProvider", "TensorrtExecutionProvider")]


@pytest.mark.slow
@pytest.mark.gpu
@pytest.mark.parametrize("name, fmt, nms", list(variants()))
def test_parity_matrix_fp16_gpu(graphs, name, fmt, nms):
    if fmt == "onnx" and not _ort_gpu_providers():
        pytest.skip("onnxruntime has no CUDA or TensorRT provider here")
    path = graphs(name, fmt, nms, half=True)
    report = check_file(path, ParityOptions(samples=4, batch=4))
    gpu = [b for b in report.backends if b.backend.endswith(("cuda", "tensorrt")) and b.status != "skipped"]
    assert gpu, format_report(report)
    assert all(b.status == "pass" for b in gpu), format_report(report)


def _perturb_onnx(path, out, tensor_filter, delta=1e-2):
    model = onnx.load(str(path))
    for init in model.graph.initializer:
        if tensor_filter(init):
            values = onnx.numpy_helper.to_array(init).copy()
            values.flat[0] += delta
            init.CopyFrom(onnx.numpy_helper.from_array(values, init.name))
            break
    else:
        raise AssertionError("no initializer matched")
    onnx.save(model, str(out))
    return out


@pytest.mark.slow
def test_checker_fails_a_graph_with_one_weight_changed_by_1e_2(graphs, tmp_path):
    path = graphs("yolov3-tiny", "onnx", True)
    assert check_file(path, ParityOptions(samples=2, batch=2)).passed
    # The first 3x3 conv kernel: every output downstream moves a little.
    first_conv = lambda t: len(t.dims) == 4 and t.dims[1] == 3 and t.dims[2] == 3  # noqa: E731
    bad = _perturb_onnx(path, tmp_path / "perturbed.onnx", first_conv)
    report = check_file(bad, ParityOptions(samples=2, batch=2))
    assert not report.passed, format_report(report)
    failing = [r for b in report.backends for i in b.inputs for r in i.results if not r.passed]
    assert failing and any("has no match" in p for r in failing for p in r.problems)


def test_checker_fails_a_raw_graph_with_one_weight_changed_by_1e_2(graphs, tmp_path):
    path = graphs("unet", "onnx", True)
    bad = _perturb_onnx(path, tmp_path / "perturbed.onnx", lambda t: len(t.dims) == 4 and t.dims[0] == 16)
    assert not check_file(bad, ParityOptions(samples=1, batch=1)).passed


def test_reference_from_a_different_checkpoint_fails(graphs, tmp_path):
    path = graphs("localizer", "torchscript", True)
    torch.manual_seed(123)
    model = lively_model("localizer")
    with torch.no_grad():
        model.head[-1].bias[0] += 1e-2  # p_c logit
    other = save_checkpoint(tmp_path / "other.pt", model)
    report = check_file(path, ParityOptions(weights=str(other), samples=2, batch=2))
    assert not report.passed
    score = [r for b in report.backends for i in b.inputs for r in i.results if r.name == "score"]
    assert score and not all(r.passed for r in score)
    assert np.isfinite([r.max_abs for r in score]).all()
