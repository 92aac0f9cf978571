"""Metrics against hand-computed cases: the seed's confusion table, COCO AP, accuracy and IoU."""

import numpy as np
import pytest
import torch

from edgedet.train.metrics import (ConfusionMeter, DetectionMeter, PresenceMeter, coco_map, confusion_matrix,
                                   segmentation_table)

# The seed's worked example: rows are the true class, columns the predicted one.
CAT_DOG_HORSE = np.array([[42, 8, 0], [6, 30, 4], [1, 2, 17]])


def test_seed_confusion_example_reproduces_the_seed_figures():
    t = segmentation_table(CAT_DOG_HORSE, ["Cat", "Dog", "Horse"])
    # Figures the seed prints, in percent with two decimals.
    assert round(100 * t.mean["accuracy"], 2) == 87.27
    assert round(100 * t.mean["recall"], 2) == 81.33
    assert round(100 * t.mean["precision"], 2) == 80.56
    assert round(100 * t.weighted["accuracy"], 2) == 86.03
    assert round(100 * t.weighted["recall"], 2) == 80.91
    assert round(100 * t.weighted["precision"], 2) == 80.95
    # The definitions exactly: one-vs-rest counts over 110 samples.
    np.testing.assert_allclose(t.accuracy, [95 / 110, 90 / 110, 103 / 110])
    np.testing.assert_allclose(t.recall, [42 / 50, 30 / 40, 17 / 20])
    np.testing.assert_allclose(t.precision, [42 / 49, 30 / 40, 17 / 21])
    np.testing.assert_allclose(t.iou, [42 / 57, 30 / 50, 17 / 24])
    np.testing.assert_allclose(t.f1, [84 / 99, 60 / 80, 34 / 41])
    assert t.weighted["recall"] == pytest.approx(89 / 110)  # weighted recall is pixel accuracy
    assert t.pixel_accuracy == pytest.approx(89 / 110)
    text = t.format()
    assert "87.27" in text and "80.95" in text and text.splitlines()[-1].startswith("weighted")


def test_confusion_matrix_counts_and_ignores_255():
    target = torch.tensor([[0, 1, 255], [2, 2, 1]])
    pred = torch.tensor([[0, 2, 1], [2, 0, 1]])
    m = confusion_matrix(pred, target, 3)
    np.testing.assert_array_equal(m, [[1, 0, 0], [0, 1, 1], [1, 0, 1]])
    meter = ConfusionMeter(3)
    meter.update(pred, target)
    meter.update(pred, target)
    np.testing.assert_array_equal(meter.matrix, 2 * m)


def test_class_absent_from_truth_and_prediction_is_left_out_of_the_mean():
    m = np.array([[5, 1, 0], [1, 3, 0], [0, 0, 0]])
    t = segmentation_table(m)
    assert np.isnan(t.iou[2]) and np.isnan(t.recall[2])
    assert t.mean["iou"] == pytest.approx((5 / 7 + 3 / 5) / 2)
    assert t.to_dict()["iou"][2] is None


def test_coco_map_known_cases():
    gt = [(np.array([[0, 0, 10, 10], [20, 20, 40, 40]]), np.array([0, 1]))]
    # class 0 exact; class 1 has IoU 0.5: a hit at the 0.50 threshold only.
    dt = [(np.array([[0, 0, 10, 10], [20, 20, 40, 30]]), np.array([0.9, 0.8]), np.array([0, 1]))]
    r = coco_map(dt, gt, 2, ["a", "b"])
    assert r["map50"] == pytest.approx(1.0)
    assert r["per_class"]["a"]["ap50_95"] == pytest.approx(1.0)
    assert r["per_class"]["b"]["ap50_95"] == pytest.approx(0.1)
    assert r["map50_95"] == pytest.approx(0.55)


def test_coco_map_false_positive_ranked_first_halves_ap_and_absent_classes_are_skipped():
    gt = [(np.array([[0, 0, 10, 10]]), np.array([0])), (np.zeros((0, 4)), np.zeros(0))]
    dt = [(np.array([[0, 0, 10, 10]]), np.array([0.8]), np.array([0])),
          (np.array([[5, 5, 9, 9], [1, 1, 2, 2]]), np.array([0.9, 0.7]), np.array([0, 2]))]
    r = coco_map(dt, gt, 3)
    # Ranked: FP (0.9), TP (0.8): precision 0.5 at recall 1 -> AP 0.5 at every threshold.
    assert r["per_class"]["0"]["ap50"] == pytest.approx(0.5)
    assert r["map50_95"] == pytest.approx(0.5)
    assert r["per_class"]["1"]["ap50"] is None and r["per_class"]["2"]["ap50"] is None
    assert r["num_objects"] == 1 and r["num_detections"] == 3


def test_coco_map_without_objects_or_detections():
    assert coco_map([(np.zeros((0, 4)), np.zeros(0), np.zeros(0))], [(np.zeros((0, 4)), np.zeros(0))], 2)["map50"] == 0
    r = coco_map([(np.zeros((0, 4)), np.zeros(0), np.zeros(0))], [(np.array([[0, 0, 4, 4]]), np.array([1]))], 2)
    assert r["map50"] == 0 and r["per_class"]["1"]["ap50"] == 0


def test_detection_meter_takes_padded_batches():
    meter = DetectionMeter(2)
    boxes = torch.tensor([[[0.0, 0, 10, 10], [0, 0, 0, 0]]])
    meter.update(boxes, torch.tensor([[0.9, 0.0]]), torch.tensor([[1, -1]]), torch.tensor([1]),
                 [torch.tensor([[0.0, 0, 10, 10]])], [torch.tensor([1])])
    assert meter.compute()["map50_95"] == pytest.approx(1.0)


def test_presence_meter_accuracy_and_iou():
    meter = PresenceMeter()
    score = torch.tensor([0.9, 0.2, 0.8, 0.7])
    box = torch.tensor([[0.0, 0, 10, 10], [0, 0, 1, 1], [0, 0, 10, 10], [0, 0, 5, 10]])
    label = torch.tensor([3, 0, 1, 2])
    present = torch.tensor([True, False, True, False])
    true_box = torch.tensor([[0.0, 0, 10, 10], [0, 0, 0, 0], [0, 0, 10, 5], [0, 0, 0, 0]])
    true_label = torch.tensor([3, -1, 2, -1])
    meter.update(score, box, label, present, true_box, true_label)
    r = meter.compute()
    # right: slot 0 (present, class right), slot 1 (absent, predicted absent); wrong class; false alarm
    assert r["accuracy"] == pytest.approx(0.5)
    # IoU over the two true objects: 1 and 0.5, with no "+1 pixel".
    assert r["mean_iou"] == pytest.approx(0.75)
