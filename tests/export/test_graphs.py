"""Exported graphs against eager PyTorch, for every registered model.

Every model x {onnx, torchscript} x {nms, raw} x batch {1, 3}; each image in a batch must give
exactly what it gives alone (the batch is truly dynamic); dynamic graphs run at a second size.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from edgedet.export.deploy import NMSSettings, build_deploy_module
from edgedet.export.onnx import OnnxNMS, export_onnx
from edgedet.export.torchscript import export_torchscript
from edgedet.models import create_model, get_entry, list_models
from edgedet.parity.compare import Tolerance, compare_outputs
from tests.conftest import SMALL_INPUT, SMALL_OVERRIDES, lively_model, noise_frames

# Low threshold and small K: untrained detectors then have more candidates than max_det.
TEST_NMS = NMSSettings(conf=0.05, iou=0.45, max_det=20)



def variants():
    for name in list_models():
        nms_options = (True, False) if get_entry(name).task == "detection" else (True,)
        for fmt in ("onnx", "torchscript"):
            for nms in nms_options:
                yield pytest.param(name, fmt, nms, id=f"{name}-{fmt}-{'nms' if nms else 'raw'}")


def run_exported(fmt, path, names, x: np.ndarray):
    if fmt == "onnx":
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(list(names), {"images": x})
    loaded = torch.jit.load(str(path))
    with torch.no_grad():
        out = loaded(torch.from_numpy(x))
    return [t.numpy() for t in (out if isinstance(out, (list, tuple)) else [out])]


def export(tmp_path, model, fmt, nms: bool, dynamic: bool = False):
    settings = TEST_NMS if nms else None
    reference, names = build_deploy_module(model, nms=settings)
    example = torch.from_numpy(noise_frames(model, 2, seed=0))
    path = tmp_path / f"{model.model_name}.{fmt}"
    meta = {"model": model.model_name, "task": get_entry(model.model_name).task}
    if fmt == "onnx":
        module, _ = build_deploy_module(model, nms=settings, nms_module=OnnxNMS(settings) if nms else None)
        export_onnx(module, example, path, names, meta, dynamic_hw=dynamic)
    else:
        export_torchscript(reference, example, path, meta)
    return reference, names, path


def reference_outputs(reference, x: np.ndarray):
    with torch.no_grad():
        return [t.numpy() for t in reference(torch.from_numpy(x))]


@pytest.mark.slow
@pytest.mark.parametrize("name, fmt, nms", list(variants()))
def test_exported_graph_matches_pytorch_at_batch_1_and_3(tmp_path, name, fmt, nms):
    model = lively_model(name)
    reference, names, path = export(tmp_path, model, fmt, nms)
    for batch, seed in ((1, 1), (3, 2)):
        x = noise_frames(model, batch, seed)
        ref = reference_outputs(reference, x)
        out = run_exported(fmt, path, names, x)
        assert [o.shape for o in out] == [r.shape for r in ref]
        for result in compare_outputs(names, ref, out, Tolerance()):
            assert result.passed, (batch, result.line(), result.problems[:5])
        # Each image of the batch gives what it gives alone (same detections; dense values to
        # float rounding, since CPU kernels pick their algorithm by batch size).
        for i in range(batch):
            alone = run_exported(fmt, path, names, x[i:i + 1])
            in_batch = [o[i:i + 1] for o in out]
            for result in compare_outputs(names, alone, in_batch, Tolerance()):
                assert result.passed, (i, result.line(), result.problems[:5])


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_empty_scene_gives_no_detections_and_padding(tmp_path, fmt):
    torch.manual_seed(0)
    model = create_model("yolov3-tiny", **SMALL_OVERRIDES["yolov3-tiny"]).eval()  # training init: quiet
    reference, names, path = export(tmp_path, model, fmt, nms=True)
    x = np.full((2, 64, 96, 3), 114, dtype=np.uint8)
    out = dict(zip(names, run_exported(fmt, path, names, x)))
    ref = dict(zip(names, reference_outputs(reference, x)))
    assert out["num_dets"].tolist() == ref["num_dets"].tolist() == [0, 0]
    assert (out["labels"] == -1).all() and (out["scores"] == 0).all() and (out["boxes"] == 0).all()


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_untrained_detector_has_more_candidates_than_max_det(tmp_path, fmt):
    model = lively_model("yolov3-tiny")
    reference, names, path = export(tmp_path, model, fmt, nms=True)
    x = noise_frames(model, 3, seed=5)
    out = dict(zip(names, run_exported(fmt, path, names, x)))
    assert (out["num_dets"] == TEST_NMS.max_det).any(), out["num_dets"]
    raw = build_deploy_module(model, nms=None)[0]
    with torch.no_grad():
        pred = raw(torch.from_numpy(x))[0]
    candidates = (pred[..., 4:5] * pred[..., 5:] > TEST_NMS.conf).sum(dim=(1, 2))
    assert (candidates > TEST_NMS.max_det).any()
    for i, n in enumerate(out["num_dets"]):
        assert (out["labels"][i, n:] == -1).all() and (out["labels"][i, :n] >= 0).all()
        assert (np.diff(out["scores"][i, :n]) <= 0).all()  # descending


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in list_models() if get_entry(n).family in ("yolov3", "unet")])
def test_dynamic_graph_runs_at_a_second_size(tmp_path, name):
    model = lively_model(name)
    reference, names, path = export(tmp_path, model, "onnx", nms=True, dynamic=True)
    h, w = SMALL_INPUT[name]
    x = noise_frames(model, 2, seed=3, size=(h + 32, w + 64))
    ref = reference_outputs(reference, x)
    out = run_exported("onnx", path, names, x)
    for result in compare_outputs(names, ref, out, Tolerance()):
        assert result.passed, result.line()
    static_reference, _, static_path = export(tmp_path / "static", model, "onnx", nms=True, dynamic=False)
    with pytest.raises(Exception):
        run_exported("onnx", static_path, names, x)  # a static graph refuses another size


def test_torchscript_loads_and_runs_without_torchvision(tmp_path):
    import subprocess
    import sys

    from tests.conftest import REPO

    model = lively_model("yolov3-tiny")
    _, names, path = export(tmp_path, model, "torchscript", nms=True)
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'torchvision':
            raise ImportError('no torchvision on this device')
sys.meta_path.insert(0, Block())
import torch
m = torch.jit.load({str(path)!r})
out = m(torch.full((2, 64, 96, 3), 114, dtype=torch.uint8))
assert 'torchvision' not in sys.modules
print([tuple(o.shape) for o in out])
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "(2, 20, 4)" in proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("name, fmt, nms", [v for v in variants() if v.values[1] == "torchscript"])
def test_torchscript_has_no_tracing_device_baked_in(tmp_path, name, fmt, nms):
    """A file exported on a CPU must run on a GPU: no device constant may be left in its code (the
    tracer records the device of ``torch.arange`` or ``new_tensor``, and did so before the decoders
    avoided them)."""
    import re

    _, _, path = export(tmp_path, lively_model(name), fmt, nms=nms)
    graph = str(torch.jit.load(str(path)).inlined_graph)
    assert re.findall(r'Device = prim::Constant\[value="(\w+)"\]', graph) == []


def test_half_precision_graph_loads_and_runs(tmp_path):
    model = lively_model("yolov3-tiny")
    reference, names = build_deploy_module(model, half=True, nms=TEST_NMS)
    module, _ = build_deploy_module(model, half=True, nms=TEST_NMS, nms_module=OnnxNMS(TEST_NMS))
    x = noise_frames(model, 2, seed=4)
    path = export_onnx(module, torch.from_numpy(x), tmp_path / "half.onnx", names, {"model": "m", "task": "t"},
                       dynamic_hw=False)
    out = run_exported("onnx", path, names, x)
    # Same contract dtypes as fp32, half inside.
    assert [o.dtype for o in out] == [np.int64, np.float32, np.float32, np.int64]
    import onnx

    graph = onnx.load(str(path))
    conv_weights = {n.input[1] for n in graph.graph.node if n.op_type == "Conv"}
    dtypes = {i.data_type for i in graph.graph.initializer if i.name in conv_weights}
    assert dtypes == {onnx.TensorProto.FLOAT16}
    ref = reference_outputs(reference, x)
    assert compare_outputs(names, ref, out, Tolerance.fp16())[0].passed


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_batch_whose_images_have_different_detection_counts(tmp_path, fmt):
    model = lively_model("yolov3")
    settings = NMSSettings(conf=0.7, iou=0.45, max_det=20)
    reference, names = build_deploy_module(model, nms=settings)
    x = noise_frames(model, 3, seed=2)
    x[1] //= 2
    x[2] //= 4
    path = tmp_path / f"yolov3.{fmt}"
    if fmt == "onnx":
        module, _ = build_deploy_module(model, nms=settings, nms_module=OnnxNMS(settings))
        export_onnx(module, torch.from_numpy(x[:2]), path, names, {"model": "yolov3", "task": "detection"},
                    dynamic_hw=False)
    else:
        export_torchscript(reference, torch.from_numpy(x[:2]), path, {"model": "yolov3", "task": "detection"})
    ref = reference_outputs(reference, x)
    counts = ref[0].tolist()
    assert len(set(counts)) > 1 and max(counts) < settings.max_det, counts
    out = run_exported(fmt, path, names, x)
    assert out[0].tolist() == counts
    for result in compare_outputs(names, ref, out, Tolerance()):
        assert result.passed, result.line()
    for i in range(3):
        alone = run_exported(fmt, path, names, x[i:i + 1])
        assert alone[0].tolist() == [counts[i]]
        assert compare_outputs(names, alone, [o[i:i + 1] for o in out], Tolerance())[0].passed


@pytest.mark.parametrize("name", ["yolov3-tiny", "yolov3-tiny-seg"])
def test_graph_traced_on_a_single_detection_runs_frames_with_many(name, tmp_path):
    """Regression: index assignment traced with one detection became a broadcast scalar in ONNX, so
    a detector whose export example had exactly one detection failed on frames with more."""
    model = lively_model(name)

    frames = noise_frames(model, 8, seed=6)
    module, _ = build_deploy_module(model, nms=NMSSettings(conf=0.05, iou=0.45, max_det=20))
    with torch.no_grad():
        scores = module(torch.from_numpy(frames))[2]  # (8, K) descending
    # The example: the frame with the lowest threshold between its two best scores (clearly apart)
    # leaves it one detection, while frames with higher scores keep several.
    mid = (scores[:, 0] + scores[:, 1]) / 2
    mid[(scores[:, 0] - scores[:, 1]) < 1e-3] = 2.0
    i = int(torch.argmin(mid))
    example = frames[i:i + 1]
    frames = np.delete(frames, i, axis=0)
    conf = float(scores[i, 0] + scores[i, 1]) / 2
    settings = NMSSettings(conf=conf, iou=0.45, max_det=20)
    eager, names = build_deploy_module(model, nms=settings)
    with torch.no_grad():
        assert eager(torch.from_numpy(example))[0].tolist() == [1]
    onnx_module, _ = build_deploy_module(model, nms=settings, nms_module=OnnxNMS(settings))
    path = tmp_path / "one.onnx"
    export_onnx(onnx_module, torch.from_numpy(example), path, names, {"model": name}, dynamic_hw=False)
    with torch.no_grad():
        ref = [t.numpy() for t in eager(torch.from_numpy(frames))]
    assert int(ref[0].max()) >= 2, "the test needs a frame with several detections"
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(list(names), {"images": frames})
    for result in compare_outputs(names, ref, out, Tolerance()):
        assert result.passed, (result.line(), result.problems[:3])
