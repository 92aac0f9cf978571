"""Evaluators: score a deploy wrapper batch by batch, one kind per task.

A family's spec picks its evaluator (:meth:`edgedet.models.spec.FamilySpec.evaluator`); validation
feeds it batches of uint8 frames (already on the module's device) and targets and asks for the metrics at the end. Each evaluator's
``update(module, batch)`` takes the deploy module built by
:func:`edgedet.export.deploy.build_deploy_module` (what export traces) and a batch from
:func:`edgedet.data.transforms.collate` with ``frames=True``; ``compute()`` returns the metrics,
JSON-ready details and a printable report.

- :class:`LocalizationEvaluator`: ``accuracy``, ``mean_iou`` (:class:`PresenceMeter`), ``map50``,
  ``map50_95``, ``map75`` with one detection per image.
- :class:`DetectionEvaluator`: ``map50``, ``map50_95``, ``map75`` over the detections after NMS;
  with a ``slots`` function (grid detectors: one object per cell), ``accuracy`` and ``mean_iou``
  per slot first.
- :class:`InstanceSegmentationEvaluator`: box ``map50``, ``map50_95``, ``map75`` and mask
  ``mask_map50``, ``mask_map50_95``, ``mask_map75`` (COCO ``segm`` IoU) over the graph's
  detections and ``masks``, against the batch's instance masks.
- :class:`SegmentationEvaluator`: ``mean_iou``, ``pixel_accuracy``, ``mean_accuracy``,
  ``mean_recall``, ``mean_precision``, ``mean_f1`` and their ``weighted_`` forms.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Protocol

import torch
from torch import Tensor, nn

from edgedet.models.layers import class_names_of
from edgedet.ops.boxes import cxcywh_to_xyxy
from edgedet.train.metrics import ConfusionMeter, DetectionMeter, MaskMeter, PresenceMeter

__all__ = ["Evaluator", "LocalizationEvaluator", "DetectionEvaluator", "InstanceSegmentationEvaluator",
           "SegmentationEvaluator", "SlotTruth"]

# ``slots(targets) -> (present[S], boxes[S, 4] xyxy pixels, labels[S])`` over every slot of a batch.
SlotTruth = Callable[[Tensor], tuple[Tensor, Tensor, Tensor]]


class Evaluator(Protocol):
    def update(self, module: nn.Module, batch: dict[str, Any]) -> None: ...

    def compute(self) -> tuple[dict[str, float], dict[str, Any], str]: ...


class _DetectionScores:
    """COCO mAP over the detections, shared by the localization and detection evaluators."""

    def __init__(self, model: nn.Module) -> None:
        names = class_names_of(model.cfg)
        self.detections = DetectionMeter(model.cfg.num_classes, names)
        self.presence = PresenceMeter()

    def compute(self, with_presence: bool) -> tuple[dict[str, float], dict[str, Any], str]:
        coco = self.detections.compute()
        metrics = {"map50": coco["map50"], "map50_95": coco["map50_95"], "map75": coco["map75"]}
        if with_presence:
            p = self.presence.compute()
            metrics = {"accuracy": p["accuracy"], "mean_iou": p["mean_iou"], **metrics}
        details = {"per_class": coco["per_class"], "num_objects": coco["num_objects"],
                   "num_detections": coco["num_detections"]}
        return metrics, details, _detection_report(metrics, coco)


class LocalizationEvaluator(_DetectionScores):
    """One object (or none) per image: presence, class and box, plus mAP of that one detection.

    Targets are the localizer layout ``Tensor[B, 6]`` ``(present, cx, cy, w, h, label)`` with the
    box as fractions of the input.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.size = tuple(model.cfg.input_size)

    def update(self, module: nn.Module, batch: dict[str, Any]) -> None:
        score, box, label, class_scores = (t.cpu() for t in module(batch["images"]))
        t = batch["targets"]
        h, w = self.size
        true_box = cxcywh_to_xyxy(t[:, 1:5] * torch.tensor([w, h] * 2, dtype=torch.float32))
        self.presence.update(score, box, label, t[:, 0] > 0.5, true_box, t[:, 5].long())
        det_score = score * class_scores.gather(1, label[:, None])[:, 0]
        self.detections.update(box[:, None], det_score[:, None], label[:, None], None, batch["boxes"],
                               batch["labels"])

    def compute(self) -> tuple[dict[str, float], dict[str, Any], str]:
        return super().compute(with_presence=True)


class DetectionEvaluator(_DetectionScores):
    """Detections after NMS against the batch's boxes; with ``slots``, also presence per slot.

    Args:
        slots: for detectors with one prediction slot per object position (the grid detector's
            cells): the truth of every slot from the batch's targets. The slot predictions are the
            rows of the dense ``predictions`` table, in the same order.
    """

    def __init__(self, model: nn.Module, slots: SlotTruth | None = None) -> None:
        super().__init__(model)
        self.slots = slots

    def update(self, module: nn.Module, batch: dict[str, Any]) -> None:
        frames = batch["images"]
        dense = module.dense(frames)  # (B, N, 5 + C)
        if self.slots is not None:
            pred = dense.cpu()
            present, true_box, true_label = self.slots(batch["targets"])
            self.presence.update(pred[..., 4].reshape(-1), cxcywh_to_xyxy(pred[..., :4]).reshape(-1, 4),
                                 pred[..., 5:].argmax(-1).reshape(-1), present, true_box, true_label)
        num, boxes, scores, labels = (t.cpu() for t in module.post(dense, frames))
        self.detections.update(boxes, scores, labels, num, batch["boxes"], batch["labels"])

    def compute(self) -> tuple[dict[str, float], dict[str, Any], str]:
        return super().compute(with_presence=self.slots is not None)


class InstanceSegmentationEvaluator(_DetectionScores):
    """The instance segmenter's graph ``(num_dets, boxes, scores, labels, masks)`` against the
    batch's boxes and instance masks (``batch["masks"]``, kept by ``TrainingSet(with_masks=True)``):
    COCO box mAP and COCO mask mAP (``iouType="segm"``), both at the network input's size."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.masks = MaskMeter(model.cfg.num_classes, class_names_of(model.cfg))

    def update(self, module: nn.Module, batch: dict[str, Any]) -> None:
        if "masks" not in batch:
            raise ValueError("instance segmentation needs the batch's instance masks (TrainingSet(with_masks=True))")
        num, boxes, scores, labels, masks = (t.cpu() for t in module(batch["images"]))
        self.detections.update(boxes, scores, labels, num, batch["boxes"], batch["labels"])
        self.masks.update(boxes, scores, labels, masks, num, batch["boxes"], batch["labels"], batch["masks"])

    def compute(self) -> tuple[dict[str, float], dict[str, Any], str]:
        metrics, details, box_report = super().compute(with_presence=False)
        coco = self.masks.compute()
        mask = {"mask_map50": coco["map50"], "mask_map50_95": coco["map50_95"], "mask_map75": coco["map75"]}
        metrics.update(mask)
        details["mask_per_class"] = coco["per_class"]
        head = "  ".join(f"{k} {v:.4f}" for k, v in mask.items())
        return metrics, details, box_report + "\n" + head + "\n" + _mask_report(coco)


def _mask_report(coco: dict) -> str:
    width = max([5] + [len(n) for n in coco["per_class"]])
    lines = [f"{'mask':<{width}}  {'objects':>7}  {'AP50':>6}  {'AP50:95':>7}"]
    for name, row in coco["per_class"].items():
        ap50 = "-" if row["ap50"] is None else f"{row['ap50']:.4f}"
        ap = "-" if row["ap50_95"] is None else f"{row['ap50_95']:.4f}"
        lines.append(f"{name:<{width}}  {row['objects']:>7}  {ap50:>6}  {ap:>7}")
    return "\n".join(lines)


class SegmentationEvaluator:
    """Pixel confusion of the predicted mask against ``Tensor[B, H, W]`` class ids (255 ignored)."""

    def __init__(self, model: nn.Module) -> None:
        self.confusion = ConfusionMeter(model.cfg.num_classes, class_names_of(model.cfg))

    def update(self, module: nn.Module, batch: dict[str, Any]) -> None:
        (mask,) = module(batch["images"])
        self.confusion.update(mask.cpu(), batch["targets"])

    def compute(self) -> tuple[dict[str, float], dict[str, Any], str]:
        table = self.confusion.table()
        metrics = {"mean_iou": table.mean["iou"], "pixel_accuracy": table.pixel_accuracy}
        for m in ("accuracy", "recall", "precision", "f1"):
            metrics[f"mean_{m}"] = table.mean[m]
        for m in ("accuracy", "recall", "precision", "f1", "iou"):
            metrics[f"weighted_{m}"] = table.weighted[m]
        metrics = {k: (0.0 if math.isnan(v) else v) for k, v in metrics.items()}
        details = {"segmentation": table.to_dict(), "confusion": self.confusion.matrix.tolist()}
        return metrics, details, table.format()


def _detection_report(metrics: dict[str, float], coco: dict) -> str:
    lines = ["  ".join(f"{k} {v:.4f}" for k, v in metrics.items())]
    width = max([5] + [len(n) for n in coco["per_class"]])
    lines.append(f"{'class':<{width}}  {'objects':>7}  {'AP50':>6}  {'AP50:95':>7}")
    for name, row in coco["per_class"].items():
        ap50 = "-" if row["ap50"] is None else f"{row['ap50']:.4f}"
        ap = "-" if row["ap50_95"] is None else f"{row['ap50_95']:.4f}"
        lines.append(f"{name:<{width}}  {row['objects']:>7}  {ap50:>6}  {ap:>7}")
    return "\n".join(lines)
