"""``edgedet export --fully-conv``: the localizer as a detector graph over frames of any size."""

import json

import numpy as np
import pytest
import torch

from edgedet import samples
from edgedet.data import build_dataset
from edgedet.export.api import ExportOptions, export_model
from edgedet.export.deploy import NMSSettings, build_deploy_module
from edgedet.models.weights import build_model, resolve_weights
from edgedet.ops.boxes import box_iou
from edgedet.parity.compare import Tolerance, compare_outputs
from edgedet.parity.options import ParityOptions
from edgedet.parity.runner import check_file
from edgedet.runtime.backends import create_backend
from edgedet.runtime.metadata import read_metadata
from tests.conftest import assert_user_error, cli_in_process, run_cli

CKPT = str(samples.checkpoint("localizer"))
SIZES = [(240, 320), (96, 136)]  # the default frame, and a smaller one of other aspect


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("fc")
    files = export_model("localizer", out, ExportOptions(fully_conv=True), weights=CKPT, say=lambda m: None)
    return out, {f.format: f for f in files}


@pytest.fixture(scope="module")
def shipped():
    return build_model("localizer", resolve_weights("localizer", CKPT))


def _scenes(size, count=2, offset=0):
    h, w = size
    dataset = build_dataset(f"digits-scene:glyphs=builtin,size={h}x{w}", split="val")
    return np.stack([np.repeat(dataset[offset + i]["image"], 3, axis=2) for i in range(count)])


def test_export_writes_checked_detector_graphs(exported):
    out, files = exported
    assert sorted(files) == ["onnx", "torchscript"]
    for f in files.values():
        assert f.check_passed is True, f.check
        meta = read_metadata(f.path)
        assert meta.task == "detection" and meta.model == "localizer"
        assert meta.outputs == ("num_dets", "boxes", "scores", "labels")
        assert meta.input.size == (240, 320) and meta.input.dynamic_size and meta.input.size_multiple == 8
        assert meta.doc["fully_conv"] == {"window": [48, 60], "stride": 8, "dataset": "digits-scene"}
        assert meta.doc["export_args"]["fully_conv"] is True
        assert meta.config["input_size"] == [48, 60]  # the model's window, not the frame
        assert meta.nms is not None


@pytest.mark.parametrize("size", SIZES)
def test_onnx_equals_torch_at_two_sizes(exported, shipped, size):
    out, files = exported
    frames = _scenes(size)
    reference, names = build_deploy_module(shipped, fully_conv=True)
    with torch.no_grad():
        ref = [t.numpy() for t in reference(torch.from_numpy(frames))]
    got = create_backend(files["onnx"].path, "onnxruntime", providers=["cpu"]).run(frames)
    results = compare_outputs(names, ref, got, Tolerance())
    assert all(r.passed for r in results), [r.line() for r in results]
    assert int(got[0].min()) > 0  # scenes of digits: something is detected in each


def test_raw_dense_predictions_follow_the_frame_size(tmp_path, shipped):
    """--no-nms exposes the per-window predictions: one row per window, at any size."""
    [f] = export_model("localizer", tmp_path, ExportOptions(formats=("onnx",), fully_conv=True, nms=None),
                       weights=CKPT, say=lambda m: None)
    assert f.check_passed is True, f.check
    backend = create_backend(f.path, "onnxruntime", providers=["cpu"])
    reference, _ = build_deploy_module(shipped, fully_conv=True, nms=None)
    for h, w in SIZES:
        frames = _scenes((h, w), count=1)
        [pred] = backend.run(frames)
        assert pred.shape == (1, (h // 8 - 5) * (w // 8 - 6), 15)
        with torch.no_grad():
            [ref] = reference(torch.from_numpy(frames))
        np.testing.assert_allclose(pred, ref.numpy(), atol=1e-4, rtol=1e-4)


def test_parity_passes(exported):
    out, files = exported
    for fmt, label in (("onnx", "onnxruntime-cpu"), ("torchscript", "torchscript-cpu")):
        report = check_file(files[fmt].path, ParityOptions(providers=["cpu"]))
        [entry] = [b for b in report.backends if b.backend == label]
        assert entry.status == "pass", (entry.reason, [(i.input, i.passed) for i in entry.inputs])
        assert any("second size" in i.input for i in entry.inputs)


def test_runtime_runs_on_a_scene(exported, tmp_path):
    import cv2

    out, files = exported
    dataset = build_dataset("digits-scene:glyphs=builtin", split="val")
    sample = dataset[3]
    cv2.imwrite(str(tmp_path / "scene.png"), sample["image"])
    result = run_cli("run", "--model", str(files["onnx"].path), "--source", str(tmp_path / "scene.png"),
                     "--save", str(tmp_path / "out.png"), "--save-json", str(tmp_path / "out.jsonl"))
    assert result.returncode == 0, result.stderr
    assert cv2.imread(str(tmp_path / "out.png")).shape == (240, 320, 3)
    [record] = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    dets = record["detections"]
    assert (record["width"], record["height"]) == (320, 240) and dets
    # Every true digit is found: a detection of its class overlaps it by IoU > 0.5.
    boxes = torch.tensor([d["box"] for d in dets])
    labels = [d["label"] for d in dets]
    ious = box_iou(torch.from_numpy(sample["boxes"]), boxes)
    for k, label in enumerate(sample["labels"].tolist()):
        assert any(ious[k, j] > 0.5 and labels[j] == label for j in range(len(dets))), (k, label)


def test_frame_smaller_than_a_window_is_letterboxed_up(exported, tmp_path):
    """The runtime letterboxes every frame to the exported 240x320, so a 30x40 frame runs; its
    detections are mapped back inside it."""
    import cv2

    out, files = exported
    tiny = cv2.resize(_scenes((240, 320), 1)[0], (40, 30), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(tmp_path / "tiny.png"), tiny)
    result = run_cli("run", "--model", str(files["onnx"].path), "--source", str(tmp_path / "tiny.png"),
                     "--save-json", str(tmp_path / "tiny.jsonl"))
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "tiny.jsonl").read_text())
    assert (record["width"], record["height"]) == (40, 30)
    for d in record["detections"]:
        x1, y1, x2, y2 = d["box"]
        assert 0 <= x1 <= x2 <= 40 and 0 <= y1 <= y2 <= 30


def test_graph_rejects_frames_off_the_stride(exported):
    out, files = exported
    backend = create_backend(files["onnx"].path, "onnxruntime", providers=["cpu"])
    with pytest.raises(ValueError, match="multiples of 8"):
        backend.run(np.zeros((1, 100, 130, 3), np.uint8))


@pytest.mark.parametrize("args, fragments", [
    (["--model", "grid"], ["--fully-conv", "grid", "cannot be made fully convolutional", "localizer"]),
    (["--model", "unet"], ["--fully-conv", "unet", "cannot be made fully convolutional"]),
    (["--model", "localizer", "--imgsz", "40,56"], ["smaller than one 48x60 window"]),
    (["--model", "localizer", "--imgsz", "244,320"], ["multiples of the stride 8"]),
])
def test_bad_fully_conv_exports(capsys, tmp_path, args, fragments):
    out = tmp_path / "out"
    result = cli_in_process(capsys, "export", *args, "--fully-conv", "--random-init", "--out", str(out))
    assert_user_error(result, *fragments)
    assert not out.exists() or not any(out.iterdir())


def test_info_reads_a_fully_conv_graph(exported, capsys):
    _, files = exported
    result = cli_in_process(capsys, "info", str(files["onnx"].path))
    assert result.returncode == 0
    assert "localizer (detection)" in result.stdout and "dynamic size, multiple of 8" in result.stdout


def test_nms_settings_and_frame_size_reach_the_graph(tmp_path):
    options = ExportOptions(formats=("onnx",), fully_conv=True, check=False, imgsz=(120, 160),
                            nms=NMSSettings(conf=0.5, iou=0.3, max_det=7, agnostic=True))
    [f] = export_model("localizer", tmp_path, options, weights=CKPT, say=lambda m: None)
    meta = read_metadata(f.path)
    assert meta.input.size == (120, 160) and meta.config["input_size"] == [48, 60]
    assert (meta.nms.conf, meta.nms.iou, meta.nms.max_det, meta.nms.agnostic) == (0.5, 0.3, 7, True)
    num, boxes, scores, labels = create_backend(f.path, "onnxruntime", providers=["cpu"]).run(_scenes((240, 320)))
    assert boxes.shape == (2, 7, 4) and (num <= 7).all()
    assert (scores[labels >= 0] > 0.5).all()


def _matched(reference, other, min_score=0.5, min_iou=0.5):
    """Share of ``reference``'s detections above ``min_score`` that ``other`` has too: same label,
    IoU above ``min_iou`` (both ``(num_dets, boxes, scores, labels)`` of one image)."""
    n, m = int(reference[0][0]), int(other[0][0])
    keep = [k for k in range(n) if reference[2][0, k] > min_score]
    if not keep:
        return 1.0
    ious = box_iou(torch.from_numpy(reference[1][0, keep]), torch.from_numpy(other[1][0, :m]))
    hit = [any(ious[i, j] > min_iou and other[3][0, j] == reference[3][0, k] for j in range(m))
           for i, k in enumerate(keep)]
    return sum(hit) / len(hit)


# Share of fp32's confident detections each precision must find again. fp16 finds all; int8 loses
# some (on 150 validation scenes the shipped localizer's mAP@0.5 goes 0.833 -> 0.814 in int8,
# 0.833 in fp16), so its bar is lower.
FOUND_AGAIN = {"int8": 0.6, "half": 0.95}


@pytest.mark.parametrize("precision", ["int8", "half"])
def test_fully_conv_graphs_in_int8_and_fp16_find_what_fp32_finds(exported, tmp_path, precision):
    """``--fully-conv`` with ``--int8`` (calibrated on scenes) or ``--half``: still a detector with
    dynamic H, W, whose confident detections are the fp32 graph's."""
    out, files = exported
    options = ExportOptions(formats=("onnx",), fully_conv=True, int8=precision == "int8", half=precision == "half",
                            calib_samples=16, check=False)
    written = {f.format: f for f in export_model("localizer", tmp_path, options, weights=CKPT, say=lambda m: None)}
    graph = written["onnx-int8" if precision == "int8" else "onnx"].path
    meta = read_metadata(graph)
    assert meta.task == "detection" and meta.input.dynamic_size and meta.doc["fully_conv"]["stride"] == 8
    if precision == "int8":
        assert meta.doc["quantization"]["format"] == "QDQ" and meta.doc["quantization"]["calibration_frames"] == 16
    fp32 = create_backend(files["onnx"].path, "onnxruntime", providers=["cpu"])
    reduced = create_backend(graph, "onnxruntime", providers=["cpu"])
    shares = []
    for size in SIZES:
        for frame in _scenes(size, 2, offset=5):
            ref, got = fp32.run(frame[None]), reduced.run(frame[None])
            assert int(ref[0][0]) > 0
            shares.append(_matched(ref, got))
    assert min(shares) >= FOUND_AGAIN[precision], shares
