"""yolov3-tiny-seg: the model's raw outputs, its decoder, and the mask ops it is built on."""

from __future__ import annotations

import pytest
import torch

from edgedet.errors import ModelError
from edgedet.models import create_decoder, create_model, get_entry, list_models
from edgedet.ops.masks import (
    assemble_mask_logits,
    box_interior,
    coefficient_table,
    crop_to_boxes,
    downsample_masks,
    masks_from_logits,
)
from edgedet.ops.yolo import decode_yolo


def small(**kw):
    torch.manual_seed(0)
    return create_model("yolov3-tiny-seg", width=0.25, input_size=(64, 96), **kw).eval()


def test_registered_as_a_detector_with_masks():
    assert "yolov3-tiny-seg" in list_models()
    spec = get_entry("yolov3-tiny-seg").spec
    assert spec.task == "detection" and spec.instance_masks and spec.summary
    assert not get_entry("yolov3-tiny").spec.instance_masks


@pytest.mark.parametrize("proto_stride", [2, 4])
def test_raw_output_shapes(proto_stride):
    model = small(num_protos=8, proto_stride=proto_stride)
    outs = model(torch.zeros(2, 3, 64, 96))
    a, c = 3, model.cfg.num_classes
    assert [tuple(o.shape) for o in outs] == [
        (2, a * (5 + c), 2, 3), (2, a * (5 + c), 4, 6), (2, a * 8, 2, 3), (2, a * 8, 4, 6),
        (2, 8, 64 // proto_stride, 96 // proto_stride)]


def test_detection_heads_keep_yolov3_tiny_names_and_shapes():
    seg = small().state_dict()
    torch.manual_seed(0)
    tiny = create_model("yolov3-tiny", width=0.25, num_classes=10, input_size=(64, 96)).state_dict()
    shared = [k for k in tiny if k in seg]
    assert len(shared) == len(tiny)  # every yolov3-tiny tensor has its place (``--weights`` init)
    assert all(seg[k].shape == tiny[k].shape for k in shared)


def test_decoder_rows_align_with_the_detection_table():
    model = small(num_protos=4)
    with torch.no_grad():
        outs = model(torch.rand(2, 3, 64, 96))
        pred, coef, protos = create_decoder(model)(outs)
    n = 3 * (2 * 3 + 4 * 6)
    assert pred.shape == (2, n, 15) and coef.shape == (2, n, 4) and protos.shape == (2, 4, 32, 48)
    torch.testing.assert_close(pred, decode_yolo(outs[:2], model.anchors, model.strides))
    # Row of scale 16, anchor 1, cell (y=2, x=5): after the 3 * 2 * 3 stride-32 rows.
    row = 18 + 1 * 24 + 2 * 6 + 5
    torch.testing.assert_close(coef[1, row], outs[3][1].view(3, 4, 4, 6)[1, :, 2, 5])


def test_config_errors():
    with pytest.raises(ModelError, match="proto_stride"):
        create_model("yolov3-tiny-seg", proto_stride=8)
    with pytest.raises(ModelError, match="tiny"):
        create_model("yolov3-tiny-seg", arch="darknet53", masks=((6, 7, 8), (3, 4, 5), (0, 1, 2)),
                     anchors=((10, 13),) * 9)
    with pytest.raises(ModelError, match="num_protos"):
        create_model("yolov3-tiny-seg", num_protos=0)


def test_assemble_matches_a_hand_computation():
    coef = torch.tensor([[[1.0, -2.0], [0.5, 0.0]]])  # (1, K=2, P=2)
    protos = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 1.0], [1.0, 0.0]]]])  # (1, 2, 2, 2)
    logits = assemble_mask_logits(coef, protos)
    expected = torch.tensor([[[[1.0, 0.0], [1.0, 4.0]], [[0.5, 1.0], [1.5, 2.0]]]])
    torch.testing.assert_close(logits, expected)


def test_box_interior_uses_pixel_centres_end_exclusive():
    inside = box_interior(torch.tensor([[1.0, 0.0, 3.0, 2.0]]), 3, 4)[0]
    expected = torch.tensor([[0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]], dtype=torch.bool)
    assert torch.equal(inside, expected)
    # A box ending mid-pixel leaves out the pixel whose centre it does not reach.
    assert box_interior(torch.tensor([0.0, 0.0, 1.4, 1.0]), 1, 3).tolist() == [[True, False, False]]


def test_crop_and_threshold():
    logits = torch.full((1, 2, 4, 4), 3.0)
    logits[0, 0, 0, 0] = -1.0
    boxes = torch.tensor([[[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 0.0, 0.0]]])  # second: a padding row
    masks = masks_from_logits(logits, boxes)
    assert masks.dtype == torch.uint8
    assert masks[0, 0].tolist() == [[0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert masks[0, 1].sum() == 0
    cropped = crop_to_boxes(torch.ones(1, 4, 4), torch.tensor([[1.0, 1.0, 3.0, 4.0]]))
    assert cropped[0].sum() == 6 and cropped[0, 0].sum() == 0


def test_upsampling_before_threshold_is_bilinear_half_pixel():
    logits = torch.tensor([[[[-1.0, 3.0]]]])  # (1, 1, 1, 2) -> x2 -> (2, 4)
    masks = masks_from_logits(logits, torch.tensor([[[0.0, 0.0, 4.0, 2.0]]]), scale=2)
    # half-pixel bilinear: columns sample at -0.25, 0.25, 0.75, 1.25 -> -1, 0, 2, 3 (clamped ends)
    assert masks[0, 0].tolist() == [[0, 0, 1, 1], [0, 0, 1, 1]]


def test_coefficient_table_and_downsample():
    maps = [torch.arange(2 * 3 * 1 * 2, dtype=torch.float32).view(1, 6, 1, 2)]  # A=2, P=3
    table = coefficient_table(maps, 2)
    assert table.shape == (1, 4, 3)
    assert table[0, 2].tolist() == [6.0, 8.0, 10.0]  # anchor 1, x = 0: channels 3..5 at x = 0
    masks = torch.zeros(1, 4, 4, dtype=torch.uint8)
    masks[0, :2, :2] = 1
    masks[0, 2, 2] = 1
    assert downsample_masks(masks, 2)[0].tolist() == [[1.0, 0.0], [0.0, 0.25]]
    assert downsample_masks(torch.zeros(0, 4, 4, dtype=torch.uint8), 2).shape == (0, 2, 2)
