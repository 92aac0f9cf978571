"""Exported graphs on CUDA (marked ``gpu``: skipped where torch sees no CUDA device).

A TorchScript file exported on a CPU machine must run on a GPU (``map_location``) and compute what
the eager model computes there, in fp32 and fp16; ONNX graphs run in ONNX Runtime's CUDA provider
where that provider is installed and usable.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgedet.export.deploy import build_deploy_module
from edgedet.export.onnx import OnnxNMS, export_onnx
from edgedet.export.torchscript import export_torchscript
from edgedet.models import get_entry, list_models
from edgedet.parity.compare import Tolerance, compare_outputs
from tests.conftest import lively_model, noise_frames
from tests.export.test_graphs import TEST_NMS

pytestmark = pytest.mark.gpu


def outputs(result):
    return [t.float().cpu().numpy() if t.is_floating_point() else t.cpu().numpy()
            for t in (result if isinstance(result, (list, tuple)) else [result])]


@pytest.mark.parametrize("half", [False, True], ids=["fp32", "fp16"])
@pytest.mark.parametrize("name", list_models())
def test_torchscript_exported_on_cpu_runs_on_cuda(tmp_path, name, half):
    model = lively_model(name)
    nms = TEST_NMS if get_entry(name).task == "detection" else None
    x = noise_frames(model, 3, seed=7)
    path = tmp_path / f"{name}.torchscript"
    cpu_module, names = build_deploy_module(model, nms=nms, half=half)  # exported (traced) on the CPU
    export_torchscript(cpu_module, torch.from_numpy(x[:2]), path, {"model": name, "task": "t"})
    gpu_model = lively_model(name).cuda()
    reference, _ = build_deploy_module(gpu_model, nms=nms, half=half)
    loaded = torch.jit.load(str(path), map_location="cuda")
    xg = torch.from_numpy(x).cuda()
    with torch.no_grad():
        ref = outputs(reference(xg))
        out = outputs(loaded(xg))
    tol = Tolerance.fp16() if half else Tolerance()
    for result in compare_outputs(names, ref, out, tol):
        assert result.passed, (result.line(), result.problems[:3])


def _ort_cuda_available() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


@pytest.mark.skipif(not _ort_cuda_available(), reason="onnxruntime has no CUDA provider here")
@pytest.mark.parametrize("name", list_models())
def test_onnx_on_cuda_provider_matches_cpu_provider(tmp_path, name):
    import onnxruntime as ort

    model = lively_model(name)
    nms = TEST_NMS if get_entry(name).task == "detection" else None
    x = noise_frames(model, 3, seed=8)
    module, names = build_deploy_module(model, nms=nms, nms_module=OnnxNMS(nms) if nms else None)
    path = export_onnx(module, torch.from_numpy(x[:2]), tmp_path / f"{name}.onnx", names,
                       {"model": name, "task": "t"}, dynamic_hw=False)
    cpu = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(list(names), {"images": x})
    session = ort.InferenceSession(str(path), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert session.get_providers()[0] == "CUDAExecutionProvider"
    gpu = session.run(list(names), {"images": x})
    for result in compare_outputs(names, cpu, gpu, Tolerance(rtol=1e-3, atol=1e-4)):
        assert result.passed, result.line()
    assert isinstance(gpu[0], np.ndarray)
