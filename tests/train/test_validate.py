"""Validation's NMS: torchvision's kernel must select exactly what the exported graphs' NMS selects."""

from __future__ import annotations

import pytest
import torch

from edgedet.export.deploy import NMSSettings, TorchNMS, build_deploy_module
from edgedet.train.validate import EVAL_NMS, BatchedNMS
from tests.conftest import lively_model
from tests.conftest import noise_frames as frames


def test_batched_nms_hand_case():
    settings = NMSSettings(conf=0.1, iou=0.5, max_det=10)
    boxes = torch.tensor([[[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9]],
                          [[0, 0, 10, 10], [50, 50, 60, 60], [0, 0, 10, 10], [5, 0, 15, 10]]], dtype=torch.float32)
    scores = torch.tensor([[[0.9, 0.8, 0.05, 0.7], [0.2, 0.3, 0.6, 0.0]],
                           [[0.4, 0.5, 0.45, 0.35], [0.0, 0.0, 0.0, 0.95]]])
    selected = BatchedNMS(settings)(boxes, scores)
    # image 0: class 0 keeps box 0 (boxes 1 and 3 overlap it by IoU 0.68 and 0.9; box 2 is under
    # conf), class 1 keeps boxes 2 and 1 (which suppresses box 0); image 1: class 1 box 3, class 0
    # boxes 1 and 2 (box 0 is box 2's lower-scored duplicate), box 3 overlaps box 2 by IoU 1/3.
    assert selected.tolist() == [[0, 0, 0], [0, 1, 2], [0, 1, 1],
                                 [1, 1, 3], [1, 0, 1], [1, 0, 2], [1, 0, 3]]
    assert torch.equal(selected, TorchNMS(settings)(boxes, scores))


@pytest.mark.parametrize("name", ["yolov3-tiny", "grid"])
def test_batched_nms_gives_the_graph_nms_detections(name):
    model = lively_model(name)
    x = torch.from_numpy(frames(model, 4, seed=5))
    graph_module, _ = build_deploy_module(model, nms=EVAL_NMS)
    fast_module, _ = build_deploy_module(model, nms=EVAL_NMS, nms_module=BatchedNMS(EVAL_NMS))
    with torch.no_grad():
        dense = graph_module.dense(x)
        expected = graph_module.post(dense, x)
        got = fast_module.post(dense, x)
    assert int(expected[0].sum()) > 4  # real detections, not an empty comparison
    for a, b in zip(expected, got):
        assert torch.equal(a, b)
