"""Parity of instance masks: per-instance mask IoU over matched detections."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from edgedet.export.api import ExportOptions, export_model
from edgedet.export.deploy import NMSSettings
from edgedet.parity.compare import Tolerance, compare_instance_masks, compare_outputs
from edgedet.parity.runner import ParityOptions, check_file, format_report
from edgedet.train.checkpoint import save_checkpoint
from tests.conftest import lively_model

NAMES = ("num_dets", "boxes", "scores", "labels", "masks")


def outputs(masks: np.ndarray):
    """One image, two detections far apart, with the given ``masks[1, K, H, W]``."""
    boxes = np.array([[[0, 0, 10, 10], [20, 20, 30, 30]]], np.float32)
    return [np.array([2]), boxes, np.array([[0.9, 0.8]], np.float32), np.array([[1, 2]]), masks]


def square_masks() -> np.ndarray:
    m = np.zeros((1, 2, 32, 32), np.uint8)
    m[0, 0, :10, :10] = 1  # 100 pixels
    m[0, 1, 20:30, 20:30] = 1
    return m


def test_identical_masks_pass_with_iou_one():
    r = compare_instance_masks(square_masks(), square_masks(), [(0, 0, 0), (0, 1, 1)], Tolerance())
    assert r.passed and "min IoU 1.0000" in r.detail


def test_one_pixel_of_a_hundred_passes_at_fp32_and_ten_fail():
    out = square_masks()
    out[0, 0, 0, 0] = 0  # IoU 99/100
    assert compare_instance_masks(square_masks(), out, [(0, 0, 0), (0, 1, 1)], Tolerance()).passed
    out[0, 1, 20, 20:30] = 0  # IoU 90/100 on the second
    r = compare_instance_masks(square_masks(), out, [(0, 0, 0), (0, 1, 1)], Tolerance())
    assert not r.passed and len(r.problems) == 1 and "detection 1" in r.problems[0]
    assert compare_instance_masks(square_masks(), out, [(0, 0, 0), (0, 1, 1)], Tolerance.int8()).passed


def test_masks_are_paired_by_the_detection_matching():
    """The exported side lists the same detections in the other order; masks follow their boxes."""
    ref = outputs(square_masks())
    results = compare_outputs(NAMES, ref, [ref[0], ref[1][:, ::-1], np.array([[0.8, 0.9]], np.float32),
                                           ref[3][:, ::-1], ref[4][:, ::-1]], Tolerance())
    assert [r.name for r in results] == ["detections", "masks"]
    assert all(r.passed for r in results), [r.line() for r in results]
    # The same boxes with the masks not swapped along: every mask is paired with the wrong one.
    results = compare_outputs(NAMES, ref, [ref[0], ref[1][:, ::-1], np.array([[0.8, 0.9]], np.float32),
                                           ref[3][:, ::-1], ref[4]], Tolerance())
    assert results[0].passed and not results[1].passed


def test_shape_mismatch_fails():
    r = compare_instance_masks(square_masks(), square_masks()[:, :, :16], [], Tolerance())
    assert not r.passed and "shape" in r.detail


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg-parity")
    ckpt = save_checkpoint(root / "ref.pt", lively_model("yolov3-tiny-seg"))
    options = ExportOptions(formats=("onnx",), imgsz=(64, 96), nms=NMSSettings(conf=0.3, iou=0.45, max_det=20),
                            check=False)
    return export_model("yolov3-tiny-seg", root, options, weights=str(ckpt), say=lambda m: None)[0].path


@pytest.mark.slow
def test_exported_graph_passes_and_a_perturbed_mask_branch_fails(graph, tmp_path):
    report = check_file(graph, ParityOptions(samples=2, batch=2, providers=("cpu",)))
    assert report.passed, format_report(report)
    masks = [r for b in report.backends for i in b.inputs for r in i.results if r.name == "masks"]
    assert masks and any(not r.detail.startswith("0 instance") for r in masks)
    # Change the prototype conv's weights only: boxes stay put, masks move.
    model = onnx.load(str(graph))
    protos = next(t for t in model.graph.initializer if "proto.out.weight" in t.name)
    values = onnx.numpy_helper.to_array(protos).copy()
    values += np.random.default_rng(0).normal(0, 1.0, values.shape).astype(values.dtype)
    protos.CopyFrom(onnx.numpy_helper.from_array(values, protos.name))
    bad = tmp_path / "perturbed.onnx"
    onnx.save(model, str(bad))
    report = check_file(bad, ParityOptions(samples=2, batch=2, providers=("cpu",)))
    assert not report.passed
    failing = [r for b in report.backends for i in b.inputs for r in i.results if not r.passed]
    assert {r.name for r in failing} == {"masks"}, format_report(report)
