"""Box conversion and IoU."""

import torch

from edgedet.ops.boxes import box_area, box_iou, cxcywh_to_xyxy, xyxy_to_cxcywh


def test_conversion_round_trip_and_known_values():
    xyxy = torch.tensor([[10.0, 20.0, 30.0, 60.0], [0.0, 0.0, 1.0, 1.0]])
    cxcywh = xyxy_to_cxcywh(xyxy)
    torch.testing.assert_close(cxcywh, torch.tensor([[20.0, 40.0, 20.0, 40.0], [0.5, 0.5, 1.0, 1.0]]))
    torch.testing.assert_close(cxcywh_to_xyxy(cxcywh), xyxy)
    batched = torch.rand(2, 3, 5, 4)
    torch.testing.assert_close(xyxy_to_cxcywh(cxcywh_to_xyxy(batched)), batched, rtol=1e-5, atol=1e-6)


def test_iou_known_cases():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [5.0, 5.0, 6.0, 6.0], [0.0, 0.0, 2.0, 1.0]])
    # No "+1 pixel" convention: overlap 1x1 of areas 4 and 4 -> 1 / 7.
    torch.testing.assert_close(box_iou(a, b), torch.tensor([[1 / 7, 1.0, 0.0, 0.5]]))
    assert box_area(torch.tensor([[3.0, 3.0, 1.0, 1.0]])).item() == 0
    empty = torch.zeros(0, 4)
    assert box_iou(empty, b).shape == (0, 4)
    assert torch.isfinite(box_iou(torch.zeros(1, 4), torch.zeros(1, 4))).all()
