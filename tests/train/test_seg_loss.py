"""The instance segmenter's loss, target encoder and evaluator."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from edgedet.data import build_dataset
from edgedet.data.transforms import TrainingSet, collate
from edgedet.models import create_model, get_entry
from edgedet.train.evaluators import InstanceSegmentationEvaluator
from edgedet.train.losses import InstanceSegLoss


def small_model():
    torch.manual_seed(0)
    return create_model("yolov3-tiny-seg", width=0.25, input_size=(64, 64), num_protos=4)


def batch_of(n: int = 2, frames: bool = False):
    model = small_model()
    spec = get_entry("yolov3-tiny-seg").spec
    data = TrainingSet(build_dataset("clutter:glyphs=builtin,n=8", "train"), (64, 64), 3, with_masks=True)
    return model, spec, collate([data[i] for i in range(n)], spec.target_encoder(model.cfg), frames=frames)


def test_targets_carry_each_objects_mask_at_prototype_resolution():
    _, _, batch = batch_of()
    t = batch["targets"]
    m = sum(len(b) for b in batch["boxes"])
    assert t.shape == (m, 6 + 32 * 32)
    first = batch["masks"][0].float()  # (N, 64, 64) 0/1
    expected = first.view(-1, 32, 2, 32, 2).mean((2, 4)).flatten(1)  # area fraction per 2x2 cell
    torch.testing.assert_close(t[: len(first), 6:], expected)
    assert (t[:, 6:].sum(1) > 0).all()  # every object has mask pixels


def test_mask_term_of_zero_coefficients_is_ln2_per_object():
    """Coefficients 0 give logit 0 everywhere: BCE ln 2 at every pixel, whatever the truth."""
    model, _, batch = batch_of()
    loss = InstanceSegLoss(model.anchors, model.strides, 10, proto_stride=2, mask_weight=1.0)
    with torch.no_grad():
        heads = model(batch["images"])
    heads = [*heads[:2], torch.zeros_like(heads[2]), torch.zeros_like(heads[3]), heads[4]]
    _, parts = loss(heads, batch["targets"])
    objects = batch["targets"].shape[0]
    assert float(parts["mask"]) == pytest.approx(math.log(2) * objects / 2, rel=1e-5)


def test_mask_term_ignores_pixels_outside_the_true_box():
    model, _, batch = batch_of()
    loss = InstanceSegLoss(model.anchors, model.strides, 10, proto_stride=2)
    targets = batch["targets"]
    with torch.no_grad():
        heads = list(model(batch["images"]))
    # One prototype, all ones; coefficient 1 everywhere -> logit 1 at every pixel.
    heads[2], heads[3] = torch.ones_like(heads[2]) / 4, torch.ones_like(heads[3]) / 4
    heads[4] = torch.ones_like(heads[4])
    _, base = loss(heads, targets)
    far = targets.clone()
    far[:, 6:] = far[:, 6:].view(-1, 32, 32).where(
        ~_outside(targets), torch.ones(())).flatten(1)  # change the truth only outside the boxes
    _, moved = loss(heads, far)
    assert float(moved["mask"]) == pytest.approx(float(base["mask"]), rel=1e-6)


def _outside(targets):
    from edgedet.ops.masks import box_interior

    return ~box_interior(targets[:, 2:6] / 2, 32, 32)


def test_no_objects_gives_a_finite_connected_loss():
    model, spec, batch = batch_of()
    loss = spec.loss(model)
    empty = batch["targets"][:0]
    total, parts = loss(model(batch["images"]), empty)
    assert torch.isfinite(total) and float(parts["mask"]) == 0.0
    total.backward()
    assert model.proto.out.weight.grad is not None


def test_loss_falls_when_overfitting_a_tiny_batch():
    model, spec, batch = batch_of(n=2)
    loss = spec.loss(model)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    first = None
    for _ in range(25):
        total, parts = loss(model(batch["images"]), batch["targets"])
        opt.zero_grad()
        total.backward()
        opt.step()
        first = first or {k: float(v) for k, v in parts.items()}
    assert float(parts["mask"]) < 0.6 * first["mask"]
    assert float(total.detach()) < 0.5 * sum(first.values())


class _Oracle(torch.nn.Module):
    """A stand-in deploy graph that returns given detections and masks."""

    def __init__(self, outputs):
        super().__init__()
        self.outputs = outputs

    def forward(self, images):
        return self.outputs


def _truth_as_outputs(batch, k: int = 10, shift: int = 0):
    b = len(batch["boxes"])
    h, w = batch["images"].shape[1:3]
    num = torch.tensor([len(x) for x in batch["boxes"]])
    boxes, scores = torch.zeros(b, k, 4), torch.zeros(b, k)
    labels, masks = torch.full((b, k), -1), torch.zeros(b, k, h, w, dtype=torch.uint8)
    for i in range(b):
        n = int(num[i])
        boxes[i, :n], labels[i, :n] = batch["boxes"][i], batch["labels"][i]
        scores[i, :n] = torch.linspace(0.9, 0.5, n)
        masks[i, :n] = torch.roll(batch["masks"][i], shifts=shift, dims=2)
    return num, boxes, scores, labels, masks


def test_evaluator_scores_perfect_predictions_one_and_shifted_masks_lower():
    model, _, batch = batch_of(n=4, frames=True)
    perfect = InstanceSegmentationEvaluator(model)
    perfect.update(_Oracle(_truth_as_outputs(batch)), batch)
    metrics, details, report = perfect.compute()
    assert metrics["map50"] == pytest.approx(1.0) and metrics["mask_map50"] == pytest.approx(1.0)
    assert metrics["mask_map50_95"] == pytest.approx(1.0)
    assert "mask_map50" in report and "mask_per_class" in details

    shifted = InstanceSegmentationEvaluator(model)
    shifted.update(_Oracle(_truth_as_outputs(batch, shift=3)), batch)
    worse, _, _ = shifted.compute()
    assert worse["map50"] == pytest.approx(1.0)  # same boxes
    assert worse["mask_map50_95"] < 0.8


def test_evaluator_needs_the_batch_masks():
    model, _, batch = batch_of(n=2, frames=True)
    oracle = _Oracle(_truth_as_outputs(batch))
    del batch["masks"]
    with pytest.raises(ValueError, match="instance masks"):
        InstanceSegmentationEvaluator(model).update(oracle, batch)


def test_fitness_is_mostly_mask_map():
    spec = get_entry("yolov3-tiny-seg").spec
    masks_only = spec.fitness({"map50": 0, "map50_95": 0, "mask_map50": 1, "mask_map50_95": 1})
    boxes_only = spec.fitness({"map50": 1, "map50_95": 1, "mask_map50": 0, "mask_map50_95": 0})
    assert masks_only == pytest.approx(0.9) and boxes_only == pytest.approx(0.1)


def test_training_set_letterboxes_and_flips_masks_with_the_image():
    data = build_dataset("clutter:glyphs=builtin,n=2", "train")
    fitted = TrainingSet(data, (64, 96), 3, with_masks=True).fitted(0)
    assert fitted.masks.shape == (len(fitted.boxes), 64, 96)
    # Letterboxed into a wider input: the side padding holds no mask pixels.
    assert fitted.masks[:, :, :16].sum() == 0 and fitted.masks[:, :, -16:].sum() == 0
    from edgedet.data.transforms import hflip_sample

    flipped = hflip_sample(fitted)
    assert np.array_equal(flipped.masks, fitted.masks[:, :, ::-1])
    assert TrainingSet(data, (64, 96), 3).fitted(0).masks is None
