"""The comparison rules themselves, on hand-made outputs with known answers."""

import numpy as np
import pytest

from edgedet.parity.compare import (NMSRule, Tolerance, compare_dense, compare_detections, compare_masks,
                                    compare_outputs)

RULE = NMSRule(conf=0.25, iou=0.45, max_det=5)
TOL = Tolerance()


def dets(rows, k=5):
    """(num_dets, boxes, scores, labels) for one image from (x1, y1, x2, y2, score, label) rows."""
    boxes = np.zeros((1, k, 4), np.float32)
    scores = np.zeros((1, k), np.float32)
    labels = np.full((1, k), -1, np.int64)
    for i, (*box, score, label) in enumerate(rows):
        boxes[0, i], scores[0, i], labels[0, i] = box, score, label
    return np.array([len(rows)]), boxes, scores, labels


A = (0, 0, 10, 10, 0.9, 1)
B = (50, 50, 60, 60, 0.8, 2)


def test_identical_and_within_tolerance_pass():
    assert compare_detections(dets([A, B]), dets([A, B]), TOL, rule=RULE).passed
    nudged = (0, 0, 10.001, 10, 0.90005, 1)
    result = compare_detections(dets([A, B]), dets([nudged, B]), TOL, rule=RULE)
    assert result.passed and "2/2" in result.detail


@pytest.mark.parametrize("other", [
    (0, 0, 10.2, 10, 0.9, 1),  # IoU 0.98 < 0.999
    (0, 0, 10, 10, 0.9002, 1),  # |Δscore| 2e-4 > 1e-4
    (0, 0, 10, 10, 0.9, 3),  # another label
])
def test_real_differences_fail(other):
    result = compare_detections(dets([A, B]), dets([other, B]), TOL, rule=RULE)
    assert not result.passed and "has no match" in result.problems[0]


def test_missing_or_extra_detection_fails_unless_ambiguous():
    assert not compare_detections(dets([A, B]), dets([A]), TOL, rule=RULE).passed
    assert not compare_detections(dets([A]), dets([A, B]), TOL, rule=RULE).passed


def test_score_at_the_confidence_threshold_is_tolerated_with_its_reason():
    edge = (50, 50, 60, 60, 0.25004, 2)
    result = compare_detections(dets([A]), dets([A, edge]), TOL, rule=RULE)
    assert result.passed, result.problems
    assert "confidence threshold" in result.tolerated[0] and "exported detection 1" in result.tolerated[0]


def test_pair_at_the_nms_threshold_is_tolerated():
    # C overlaps A with IoU 0.4502 (just above 0.45): the reference kept both, the export dropped C.
    # boxes [0,10]x[0,10] and [x,10+x]x[0,10]: IoU = (10-x)/(10+x) = 0.4502 -> x = 10*(1-0.4502)/1.4502
    x = 10 * (1 - 0.4502) / 1.4502
    C = (x, 0, 10 + x, 10, 0.7, 1)
    result = compare_detections(dets([A, C]), dets([A]), TOL, rule=RULE)
    assert result.passed, result.problems
    assert "NMS threshold" in result.tolerated[0]
    # Far from the threshold (IoU 0.6) the same difference is a failure.
    y = 10 * (1 - 0.6) / 1.6
    far = (y, 0, 10 + y, 10, 0.7, 1)
    assert not compare_detections(dets([A, far]), dets([A]), TOL, rule=RULE).passed
    # Without the graph's NMS rule nothing can be tolerated.
    assert not compare_detections(dets([A, C]), dets([A]), TOL).passed


def test_tie_at_the_max_det_cut_is_tolerated():
    full = [(i * 20, 0, i * 20 + 10, 10, 0.9 - 0.1 * i, 1) for i in range(4)]
    tie_a = (100, 0, 110, 10, 0.4, 1)
    tie_b = (200, 0, 210, 10, 0.4, 1)
    result = compare_detections(dets(full + [tie_a]), dets(full + [tie_b]), TOL, rule=RULE)
    assert result.passed, result.problems
    assert len(result.tolerated) == 2 and all("ties the last" in t for t in result.tolerated)


def test_dense_statistics_and_needed_tolerance():
    ref = np.array([1.0, 2.0, 100.0], np.float32)
    out = ref + np.array([1e-6, 0.0, 0.05], np.float32)
    result = compare_dense("predictions", ref, out, TOL)
    assert result.max_abs == pytest.approx(0.05, rel=1e-3)
    assert result.max_rel == pytest.approx(5e-4, rel=1e-2)
    # |Δ| <= atol + rtol * |ref|: 0.05 <= atol + 0.1 passes at any atol.
    assert result.passed and result.needed_atol == 0.0
    bad = compare_dense("predictions", ref, ref + np.float32(1e-2), TOL)
    # The worst element is 1.0: 1e-2 - 1e-3 * 1.0 = 9e-3 is the smallest atol that would pass.
    assert not bad.passed and bad.needed_atol == pytest.approx(9e-3, rel=1e-3)
    assert "FAIL" in bad.line() and "passes at atol >=" in bad.line()
    assert not compare_dense("x", ref, ref[:2], TOL).passed


def test_masks_and_per_output_atol():
    ref = np.zeros((1, 100, 100), np.int64)
    out = ref.copy()
    out[0, 0, 0] = 1
    assert compare_masks(ref, out, TOL).passed  # 9999 of 10000 pixels: 99.99 %
    out[0, 0, 1] = 1
    result = compare_masks(ref, out, TOL)
    assert not result.passed and "(2 differ)" in result.detail
    probs = np.ones((1, 2, 2, 2), np.float32)
    names = ("mask", "probs")
    loose = compare_outputs(names, [ref, probs], [ref, probs + 5e-3], TOL, atol_out={"probs": 1e-2})
    assert [r.passed for r in loose] == [True, True]
    strict = compare_outputs(names, [ref, probs], [ref, probs + 5e-3], TOL)
    assert [r.passed for r in strict] == [True, False]
