"""Losses: where each term applies (the seeds' mistakes stay fixed), and a few steps learn."""

import pytest
import torch

from edgedet.data import build_dataset
from edgedet.data.transforms import TrainingSet, collate
from edgedet.models import create_model, get_entry
from edgedet.ops.boxes import generalized_box_iou_pairs
from edgedet.train.losses import GridLoss, LocalizerLoss, SegmentationLoss, YoloLoss


def test_localizer_box_and_class_terms_only_where_an_object_is():
    head = torch.randn(3, 15, requires_grad=True)
    targets = torch.tensor([[1.0, 0.5, 0.5, 0.2, 0.3, 7], [0, 0, 0, 0, 0, -1], [1.0, 0.2, 0.3, 0.1, 0.1, 2]])
    loss, parts = LocalizerLoss()(head, targets)
    loss.backward()
    assert set(parts) == {"obj", "box", "cls"}
    assert head.grad[1, 1:].abs().sum() == 0  # the empty image trains p_c only
    assert head.grad[1, 0] != 0 and head.grad[0, 1:].abs().sum() > 0


def test_localizer_all_empty_batch():
    loss, parts = LocalizerLoss()(torch.zeros(2, 15), torch.tensor([[0.0, 0, 0, 0, 0, -1]] * 2))
    assert torch.isfinite(loss) and parts["box"] == 0 and parts["cls"] == 0


def test_grid_box_and_class_terms_only_in_occupied_cells():
    head = torch.randn(2, 7, 2, 3, requires_grad=True)
    targets = torch.zeros(2, 2, 3, 6)
    targets[..., 5] = -1
    targets[0, 1, 2] = torch.tensor([1.0, 0.5, 0.4, 0.2, 0.3, 1])
    loss, _ = GridLoss()(head, targets)
    loss.backward()
    grad = head.grad.permute(0, 2, 3, 1)  # (B, rows, cols, 7)
    occupied = targets[..., 0] > 0
    assert grad[~occupied][:, 1:].abs().sum() == 0  # empty cells: only p_c learns
    assert (grad[~occupied][:, 0] != 0).all()
    assert grad[occupied][:, 1:].abs().sum() > 0


def test_giou_pairs():
    a = torch.tensor([[0.0, 0, 2, 2], [0, 0, 1, 1]])
    b = torch.tensor([[0.0, 0, 2, 2], [2, 0, 3, 1]])
    torch.testing.assert_close(generalized_box_iou_pairs(a, b), torch.tensor([1.0, -1 / 3]), atol=1e-6, rtol=0)


def _tiny_yolo():
    torch.manual_seed(0)
    return create_model("yolov3-tiny", num_classes=3, width=0.25, input_size=(64, 64),
                        anchors=((6, 6), (12, 12), (20, 20), (30, 30), (40, 40), (60, 60)))


def test_yolo_assigns_each_object_to_its_best_anchor_over_all_scales():
    model = _tiny_yolo()
    loss = YoloLoss(model.anchors, model.strides, 3)
    # anchors by scale: stride 32 holds (30,30),(40,40),(60,60); stride 16 holds the small ones.
    targets = torch.tensor([[0, 1, 10, 10, 21, 21], [0, 2, 0, 0, 58, 62], [1, 0, 30, 30, 36, 36]])
    scale, anchor = loss.assign(targets)
    assert scale.tolist() == [1, 0, 1] and anchor.tolist() == [1, 2, 0]


def test_yolo_ignore_region_and_perfect_prediction():
    model = _tiny_yolo()
    loss = YoloLoss(model.anchors, model.strides, 3)
    heads = [h.detach().clone() for h in model(torch.zeros(1, 3, 64, 64))]
    for h in heads:
        h.zero_()
        h.view(1, 3, 8, *h.shape[2:])[:, :, 4] = -12.0  # everything confidently background
    target = torch.tensor([[0, 1, 18, 18, 30, 30]])  # 12x12 at centre (24, 24): stride 16, cell (1, 1), anchor 1
    p16 = heads[1].view(1, 3, 8, 4, 4)
    p16[0, 1, 0:2, 1, 1] = 0.0  # sigmoid 0.5 -> centre 24; exp(0) * 12 -> size 12
    p16[0, 1, 4, 1, 1] = 12.0
    p16[0, 1, 5:, 1, 1] = torch.tensor([-12.0, 12.0, -12.0])
    # A non-assigned anchor of the same cell predicting nearly the same box: ignored.
    p16[0, 2, 2:4, 1, 1] = torch.log(torch.tensor(13 / 20))
    total, parts = YoloLoss(model.anchors, model.strides, 3, box_loss="giou")(heads, target)
    assert parts["box"] < 1e-5 and parts["cls"] < 1e-3 and parts["obj"] < 1e-3
    heads = [h.requires_grad_() for h in heads]
    total, parts = loss(heads, target)
    total.backward()
    g = heads[1].grad.view(1, 3, 8, 4, 4)
    assert g[0, 2, 4, 1, 1] == 0  # the ignore region: no objectness gradient
    assert g[0, 0, 4, 1, 1] != 0  # a poorly overlapping anchor is still pushed to background
    assert torch.isfinite(total)


def test_yolo_loss_golden_value():
    # A seeded case: catches silent changes to assignment, scaling or the ignore rule.
    model = _tiny_yolo()
    torch.manual_seed(1)
    heads = [torch.randn(2, 24, 2, 2), torch.randn(2, 24, 4, 4)]
    targets = torch.tensor([[0, 1, 10, 10, 21, 21], [0, 2, 0, 0, 58, 62], [1, 0, 30, 30, 36, 36]])
    total, parts = YoloLoss(model.anchors, model.strides, 3)(heads, targets)
    values = torch.stack([total, parts["box"], parts["obj"], parts["cls"]])
    torch.testing.assert_close(values, GOLDEN_YOLO, atol=1e-4, rtol=1e-5)


# total, box, obj, cls; also matched by a plain-Python loop over every anchor when written.
GOLDEN_YOLO = torch.tensor([61.761719, 6.350881, 51.473473, 3.937366])


def test_segmentation_ignores_255_and_weighs_classes():
    logits = torch.randn(1, 2, 4, 4, requires_grad=True)
    target = torch.ones(1, 4, 4, dtype=torch.long)
    target[0, 0] = 255
    loss, _ = SegmentationLoss()(logits, target)
    loss.backward()
    assert logits.grad[0, :, 0].abs().sum() == 0 and logits.grad[0, :, 1:].abs().sum() > 0
    target[0, 1] = 0
    plain = SegmentationLoss()(logits, target)[0]
    weighted = SegmentationLoss([1.0, 2.0])(logits, target)[0]
    assert not torch.isclose(plain, weighted)
    all_ignored = torch.full((1, 4, 4), 255)
    assert SegmentationLoss()(logits, all_ignored)[0] == 0


FAMILY_CASES = {
    "localizer": ("localizer", "digits-loc:n=16,glyphs=builtin", {}),
    "grid": ("grid", "digits-grid:n=16,glyphs=builtin", {}),
    "yolov3": ("yolov3-tiny", "clutter:n=8,glyphs=builtin,size=64", {"width": 0.25}),
    "unet": ("unet", "clutter:n=8,glyphs=builtin,size=64", {"base_width": 4, "depth": 2}),
}


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILY_CASES))
def test_a_few_steps_lower_the_loss(family):
    from edgedet.train.trainer import model_overrides_for

    name, spec, extra = FAMILY_CASES[family]
    data = build_dataset(spec)
    overrides = model_overrides_for(name, data, model_config=extra)
    torch.manual_seed(0)
    model = create_model(name, **overrides)
    spec = get_entry(name).spec
    assert spec.family == family
    size = tuple(model.cfg.input_size)
    items = TrainingSet(data, size, model.cfg.in_channels, with_semantic=spec.task == "segmentation")
    batch = collate([items[i] for i in range(len(items))], spec.target_encoder(model.cfg))
    loss_fn = spec.loss(model)
    opt = torch.optim.AdamW(model.parameters(), lr={"localizer": 1e-3, "unet": 1e-2}.get(family, 3e-3))
    model.train()
    losses = []
    for _ in range(10):
        loss, _ = loss_fn(model(batch["images"]), batch["targets"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.9 * losses[0], losses
