"""NMS: agrees with torchvision, ONNX NonMaxSuppression semantics, padded gathering."""

import pytest
import torch
import torchvision

from edgedet.ops.nms import gather_detections, limit_candidates, nms, nms_indices, selection_order


def random_boxes(n, seed, size=100.0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * size
    wh = torch.rand(n, 2, generator=g) * size / 3 + 1
    return torch.cat((xy, xy + wh), 1), torch.rand(n, generator=g)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("iou", [0.3, 0.45, 0.7])
def test_nms_matches_torchvision(seed, iou):
    boxes, scores = random_boxes(200, seed)
    assert nms(boxes, scores, iou).tolist() == torchvision.ops.nms(boxes, scores, iou).tolist()


def test_nms_ties_keep_lower_index_first():
    boxes = torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 60], [0, 0, 10, 10]])
    scores = torch.tensor([0.5, 0.5, 0.5])
    assert nms(boxes, scores, 0.5).tolist() == [0, 1]


def test_nms_indices_is_per_image_and_class():
    boxes = torch.tensor([[[0.0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]]]).repeat(2, 1, 1)
    scores = torch.tensor([[[0.9, 0.8, 0.1], [0.0, 0.7, 0.6]],
                           [[0.0, 0.0, 0.0], [0.3, 0.2, 0.0]]])
    sel = nms_indices(boxes, scores, max_per_class=10, iou_threshold=0.5, score_threshold=0.15)
    # image 0 class 0: box 0 suppresses box 1, box 2 below threshold; class 1: boxes 1 and 2.
    # image 1 class 1: box 0 suppresses box 1.
    assert sel.tolist() == [[0, 0, 0], [0, 1, 1], [0, 1, 2], [1, 1, 0]]
    assert nms_indices(boxes, scores, 1, 0.5, 0.15).tolist() == [[0, 0, 0], [0, 1, 1], [1, 1, 0]]
    assert nms_indices(boxes, scores * 0, 10, 0.5, 0.15).shape == (0, 3)


def test_gather_sorts_pads_and_caps():
    boxes = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(2, 4, 4)
    scores = torch.zeros(2, 2, 4)
    scores[0, 0, 0], scores[0, 1, 3], scores[0, 0, 2] = 0.3, 0.9, 0.6
    scores[1, 1, 1] = 0.5
    selected = torch.tensor([[0, 0, 0], [0, 0, 2], [0, 1, 3], [1, 1, 1]])
    order = selection_order(selected, scores)
    assert order.tolist() == [2, 1, 0, 3]
    selected = selected[order]
    num, out_boxes, out_scores, labels = gather_detections(selected, boxes, scores, max_det=2)
    assert num.tolist() == [2, 1]
    torch.testing.assert_close(out_scores, torch.tensor([[0.9, 0.6], [0.5, 0.0]]))
    assert labels.tolist() == [[1, 0], [1, -1]]
    torch.testing.assert_close(out_boxes[0], boxes[0, [3, 2]])
    torch.testing.assert_close(out_boxes[1, 0], boxes[1, 1])
    assert (out_boxes[1, 1] == 0).all()
    none = gather_detections(torch.zeros(0, 3, dtype=torch.long), boxes, scores, max_det=3)
    assert none[0].tolist() == [0, 0] and (none[3] == -1).all()


def test_limit_candidates_keeps_the_k_best_boxes_per_image():
    # (B=2, C=2, N=3); boxes ranked by their best class score.
    scores = torch.tensor([[[0.1, 0.5, 0.2], [0.9, 0.3, 0.1]], [[0.2, 0.2, 0.1], [0.2, 0.1, 0.0]]])
    out = limit_candidates(scores, 2)
    torch.testing.assert_close(out[0], torch.tensor([[0.1, 0.5, 0.0], [0.9, 0.3, 0.0]]))
    torch.testing.assert_close(out[1], torch.tensor([[0.2, 0.2, 0.0], [0.2, 0.1, 0.0]]))
    assert limit_candidates(scores, 3) is scores
