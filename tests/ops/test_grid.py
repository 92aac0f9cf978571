"""Grid targets encode -> decode exactly, and decoding of the raw head."""

import torch

from edgedet.ops.grid import decode_grid, decode_grid_targets, encode_grid


def test_encode_decode_round_trip():
    boxes = torch.tensor([[2.0, 3.0, 18.0, 21.0], [25.5, 30.0, 39.0, 47.0], [41.0, 1.0, 59.0, 20.0]])
    labels = torch.tensor([1, 0, 1])
    target = encode_grid(boxes, labels, (2, 3), (48, 60))
    assert target.shape == (2, 3, 6)
    assert target[..., 0].sum() == 3
    assert (target[target[..., 0] == 0][:, 5] == -1).all()
    out_boxes, out_labels = decode_grid_targets(target, (48, 60))
    # Occupied cells come back in row-major order: (0,0), (0,2), (1,1).
    order = torch.tensor([0, 2, 1])
    torch.testing.assert_close(out_boxes, boxes[order], rtol=0, atol=1e-5)
    assert out_labels.tolist() == labels[order].tolist()


def test_centre_decides_the_cell_and_larger_box_wins():
    boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0], [0.0, 0.0, 16.0, 16.0], [19.0, 0.0, 23.0, 10.0]])
    target = encode_grid(boxes, torch.tensor([0, 1, 0]), (2, 3), (48, 60))
    assert target[0, 0, 5] == 1  # the larger box owns cell (0, 0)
    assert target[0, 1, 0] == 1  # centre x 21 lies in the second column (20..40)
    assert encode_grid(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), (2, 3), (48, 60))[..., 0].sum() == 0


def test_decode_head_places_boxes_in_their_cells():
    head = torch.zeros(1, 7, 2, 3)  # 2 classes
    head[0, 0] = 4.0  # confident everywhere
    preds = decode_grid(head, (48, 60))
    assert preds.shape == (1, 6, 7)
    # sigmoid(0) = 0.5: every box sits at its cell centre with half the image size.
    centres = torch.tensor([[10.0, 12.0], [30.0, 12.0], [50.0, 12.0], [10.0, 36.0], [30.0, 36.0], [50.0, 36.0]])
    torch.testing.assert_close(preds[0, :, :2], centres)
    torch.testing.assert_close(preds[0, :, 2:4], torch.tensor([30.0, 24.0]).expand(6, 2))
    torch.testing.assert_close(preds[0, :, 4], torch.sigmoid(torch.tensor(4.0)).expand(6))
    torch.testing.assert_close(preds[0, :, 5:].sum(-1), torch.ones(6))


def test_targets_through_the_head_parametrisation_decode_back():
    # A head whose logits are the inverse-sigmoid of encoded targets decodes to the same boxes.
    boxes = torch.tensor([[2.0, 3.0, 18.0, 21.0], [41.0, 25.0, 59.0, 47.0]])
    target = encode_grid(boxes, torch.tensor([0, 1]), (2, 3), (48, 60))
    head = torch.full((1, 7, 2, 3), -20.0)
    t = target.clamp(1e-6, 1 - 1e-6)
    head[0, 1:5] = torch.logit(t[..., 1:5].double()).float().permute(2, 0, 1)
    head[0, 0] = torch.where(target[..., 0] > 0, 20.0, -20.0)
    preds = decode_grid(head, (48, 60))[0]
    keep = preds[:, 4] > 0.5
    xyxy = torch.cat((preds[keep, :2] - preds[keep, 2:4] / 2, preds[keep, :2] + preds[keep, 2:4] / 2), 1)
    torch.testing.assert_close(xyxy, boxes, rtol=0, atol=1e-3)
