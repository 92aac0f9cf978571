"""The instance segmenter's graph: the ``masks`` output, its metadata contract, dynamic batch."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from edgedet.export.api import ExportOptions, export_model
from edgedet.export.deploy import NMSSettings, build_deploy_module
from edgedet.ops.boxes import box_iou
from edgedet.parity.compare import Tolerance, compare_outputs
from edgedet.runtime.metadata import GraphFileError, read_metadata
from edgedet.train.checkpoint import save_checkpoint
from tests.conftest import assert_user_error, lively_model, noise_frames, run_cli

NAME = "yolov3-tiny-seg"
NMS = NMSSettings(conf=0.3, iou=0.45, max_det=20)
OUTPUTS = ("num_dets", "boxes", "scores", "labels", "masks")


@pytest.fixture(scope="module")
def model():
    return lively_model(NAME)


@pytest.fixture(scope="module")
def graphs(model, tmp_path_factory):
    root = tmp_path_factory.mktemp("seg")
    ckpt = save_checkpoint(root / "ref.pt", model)
    files = export_model(NAME, root, ExportOptions(formats=("onnx", "torchscript"), imgsz=(64, 96), nms=NMS,
                                                   check=False), weights=str(ckpt), say=lambda m: None)
    return {f.path.suffix[1:]: f.path for f in files}


def run(fmt, path, frames: np.ndarray):
    if fmt == "onnx":
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(list(OUTPUTS), {"images": frames})
    with torch.no_grad():
        return [t.numpy() for t in torch.jit.load(str(path))(torch.from_numpy(frames))]


def test_eager_graph_outputs(model):
    module, names = build_deploy_module(model, nms=NMS)
    assert names == OUTPUTS
    frames = torch.from_numpy(noise_frames(model, 3, seed=1))
    with torch.no_grad():
        num, boxes, _, _, masks = module(frames)
    assert masks.dtype == torch.uint8 and masks.shape == (3, 20, 64, 96)
    assert set(masks.unique().tolist()) <= {0, 1}
    assert int(num.min()) > 0, "the lively model should detect something in noise"
    for i in range(3):
        n = int(num[i])
        assert masks[i, n:].sum() == 0  # padding rows stay empty
        for k in range(n):
            ys, xs = torch.nonzero(masks[i, k], as_tuple=True)
            if len(xs):  # every set pixel's centre lies inside the detection's box
                x1, y1, x2, y2 = boxes[i, k].tolist()
                assert (xs + 0.5 > x1).all() and (xs + 0.5 < x2).all()
                assert (ys + 0.5 > y1).all() and (ys + 0.5 < y2).all()
    assert masks[:, :int(num.max())].sum() > 0


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_graph_matches_eager_and_batch_is_dynamic(model, graphs, fmt):
    module, _ = build_deploy_module(model, nms=NMS)
    frames = noise_frames(model, 3, seed=2)
    with torch.no_grad():
        ref = [t.numpy() for t in module(torch.from_numpy(frames))]
    out = run(fmt, graphs[fmt], frames)
    assert [o.dtype for o in out] == [np.int64, np.float32, np.float32, np.int64, np.uint8]
    assert out[4].shape == (3, 20, 64, 96)
    np.testing.assert_array_equal(out[0], ref[0])
    for i in range(3):
        n = int(ref[0][i])
        iou = box_iou(torch.from_numpy(ref[1][i, :n]), torch.from_numpy(out[1][i, :n])).diagonal()
        assert float(iou.min()) > 0.999
        for k in range(n):  # per-instance mask IoU, rows in the same order
            a, b = ref[4][i, k] != 0, out[4][i, k] != 0
            union = (a | b).sum()
            assert union == 0 or (a & b).sum() / union >= 0.99
    # Each image alone gives what it gives in the batch: the same detections and masks (box
    # coordinates to float rounding: CPU kernels pick their algorithm by batch size).
    for i in range(3):
        alone = run(fmt, graphs[fmt], frames[i:i + 1])
        np.testing.assert_array_equal(alone[0][0], out[0][i])
        np.testing.assert_array_equal(alone[3][0], out[3][i])
        np.testing.assert_allclose(alone[1][0], out[1][i], rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(alone[2][0], out[2][i], rtol=1e-5, atol=1e-5)
        for result in compare_outputs(OUTPUTS, alone, [o[i:i + 1] for o in out], Tolerance()):
            assert result.passed, (i, result.line(), result.problems[:5])
        assert int(np.abs(alone[4][0].astype(int) - out[4][i]).sum()) <= 2  # at most a pixel or two


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_empty_scene_gives_no_detections_and_no_masks(tmp_path, fmt):
    quiet = lively_model(NAME)
    with torch.no_grad():
        for head in (quiet.head32[1], quiet.head16[1]):
            head.bias.view(3, -1)[:, 4] = -30.0  # objectness ~ 0 everywhere: nothing to detect
    ckpt = save_checkpoint(tmp_path / "quiet.pt", quiet)
    files = export_model(NAME, tmp_path, ExportOptions(formats=(fmt,), imgsz=(64, 96), nms=NMS, check=False),
                         weights=str(ckpt), say=lambda m: None)
    frames = np.full((2, 64, 96, 3), 114, np.uint8)
    num, boxes, _, labels, masks = run(fmt, files[0].path, frames)
    assert num.tolist() == [0, 0] and (labels == -1).all() and not boxes.any()
    assert masks.shape == (2, 20, 64, 96) and int(masks.sum()) == 0


def test_metadata_carries_the_mask_contract(graphs):
    for path in graphs.values():
        meta = read_metadata(path)
        assert meta.task == "detection" and meta.outputs == OUTPUTS
        assert meta.masks is not None and meta.masks.at_input and meta.masks.output == "masks"
        assert meta.masks.threshold == 0.5 and meta.masks.proto_stride == 2 and meta.masks.prototypes == 16
        assert "bilinear" in meta.masks.upsample


def test_detectors_have_no_mask_contract(tmp_path):
    ckpt = save_checkpoint(tmp_path / "ref.pt", lively_model("yolov3-tiny"))
    files = export_model("yolov3-tiny", tmp_path, ExportOptions(formats=("torchscript",), imgsz=(64, 96), check=False),
                         weights=str(ckpt), say=lambda m: None)
    assert read_metadata(files[0].path).masks is None


def test_bad_mask_contract_is_a_graph_file_error(graphs, tmp_path):
    import zipfile

    src = graphs["torchscript"]
    with zipfile.ZipFile(src) as z:
        name = next(n for n in z.namelist() if n.endswith("extra/edgedet.json"))
        doc = json.loads(z.read(name))
    doc["masks"]["resolution"] = [64]
    bad = tmp_path / "bad.torchscript"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(bad, "w") as zout:
        for item in zin.infolist():
            data = json.dumps(doc).encode() if item.filename == name else zin.read(item.filename)
            zout.writestr(item, data)
    with pytest.raises(GraphFileError, match="masks.resolution"):
        read_metadata(bad)


def test_raw_graph_gives_the_table_coefficients_and_prototypes(model):
    module, names = build_deploy_module(model, nms=None)
    assert names == ("predictions", "coefficients", "prototypes")
    with torch.no_grad():
        pred, coef, protos = module(torch.from_numpy(noise_frames(model, 2, seed=3)))
    n = 3 * (2 * 3 + 4 * 6)
    assert pred.shape == (2, n, 15) and coef.shape == (2, n, 16) and protos.shape == (2, 16, 32, 48)


def test_training_on_data_without_instance_masks_is_a_user_error(tmp_path):
    result = run_cli("train", "--model", NAME, "--data", "digits-grid:glyphs=builtin,n=4", "--epochs", "1",
                     "--device", "cpu", "--out", str(tmp_path / "run"))
    assert_user_error(result, "has no instance masks")
    assert not (tmp_path / "run" / "last.pt").exists()


def test_raw_export_has_no_mask_contract(model, tmp_path):
    ckpt = save_checkpoint(tmp_path / "ref.pt", model)
    files = export_model(NAME, tmp_path, ExportOptions(formats=("torchscript",), imgsz=(64, 96), nms=None, check=False),
                         weights=str(ckpt), say=lambda m: None)
    meta = read_metadata(files[0].path)
    assert meta.outputs == ("predictions", "coefficients", "prototypes") and meta.masks is None
    assert meta.config["proto_stride"] == 2  # what a consumer needs to assemble masks itself
