"""Validation: run a model over a dataset through its deploy wrapper and score it.

Validation feeds uint8 BGR frames to :func:`edgedet.export.deploy.build_deploy_module`, the very
module that export traces, so a score measures what an exported graph ships: the same
preprocessing, decoding and NMS (at ``conf=0.001``, ``max_det=100``, as COCO scoring expects).

Metrics per family (keys of :attr:`ValResult.metrics`):

- localizer: ``accuracy``, ``mean_iou`` (see :class:`edgedet.train.metrics.PresenceMeter`), ``map50``,
  ``map50_95`` (one detection per image);
- grid: the same, accuracy and IoU per grid cell, mAP over the detections after NMS;
- yolov3: ``map50``, ``map50_95``, ``map75``;
- unet: ``mean_iou``, ``pixel_accuracy``, ``mean_accuracy``, ``mean_recall``, ``mean_precision``,
  ``mean_f1`` and their ``weighted_`` forms.

``fitness`` ranks checkpoints: ``(accuracy + mean_iou) / 2`` for localizer and grid,
``0.1 map50 + 0.9 map50_95`` for yolov3, ``mean_iou`` for unet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from edgedet.data.sample import segmentation_class_names
from edgedet.data.spec import build_dataset
from edgedet.data.transforms import TrainingSet, collate
from edgedet.errors import DataError, EdgedetError
from edgedet.export.deploy import NMSSettings, build_deploy_module
from edgedet.models.layers import class_names_of
from edgedet.models.registry import get_entry
from edgedet.ops.boxes import cxcywh_to_xyxy
from edgedet.ops.nms import selection_order
from edgedet.train.metrics import ConfusionMeter, DetectionMeter, PresenceMeter

__all__ = ["ValResult", "evaluate", "val_loader", "EVAL_NMS", "fitness_of", "check_data_fits", "class_names_for",
           "validate_checkpoint"]

EVAL_NMS = NMSSettings(conf=0.001, iou=0.45, max_det=100)


class BatchedNMS(nn.Module):
    """What :class:`edgedet.export.deploy.TorchNMS` computes, with torchvision's ``batched_nms``
    kernel, for validation only.

    The exported graphs keep the plain-operator NMS (no torchvision on the edge); its greedy loop
    synchronises with the device once per candidate, which made validating an untrained YOLOv3
    on a GPU (thousands of candidates per image and class at ``conf=0.001``) take minutes per
    epoch. Same selection: per image and class, scores above ``conf``, suppression at IoU above
    ``iou``, descending score. Unlike ONNX's operator there is no per-class cap; the per-image
    ``max_det`` cut that follows makes that cap a no-op.
    """

    def __init__(self, settings: NMSSettings) -> None:
        super().__init__()
        self.iou, self.conf = settings.iou, settings.conf

    def forward(self, boxes: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        from torchvision.ops import batched_nms

        img, cls, idx = torch.nonzero(scores > self.conf, as_tuple=True)
        kept = batched_nms(boxes[img, idx].float(), scores[img, cls, idx].float(), img * scores.shape[1] + cls,
                           self.iou)
        selected = torch.stack((img[kept], cls[kept], idx[kept]), dim=1)
        return selected[selection_order(selected, scores)]


@dataclass
class ValResult:
    """Scores of one validation pass.

    Attributes:
        metrics: flat ``name -> float`` (what the CSV log and ``val --json`` lead with).
        details: JSON-ready extras: per-class AP or the segmentation table.
        report: a printable summary.
    """

    metrics: dict[str, float]
    details: dict[str, Any] = field(default_factory=dict)
    report: str = ""

    @property
    def fitness(self) -> float:
        return self.metrics["fitness"]


def fitness_of(family: str, metrics: dict[str, float]) -> float:
    """The one number that ranks checkpoints of ``family`` (higher is better)."""
    if family in ("localizer", "grid"):
        return 0.5 * (metrics["accuracy"] + metrics["mean_iou"])
    if family == "yolov3":
        return 0.1 * metrics["map50"] + 0.9 * metrics["map50_95"]
    return metrics["mean_iou"]


def check_data_fits(model_name: str, dataset) -> None:
    """:class:`DataError` when a dataset cannot train or score ``model_name`` (by task)."""
    entry = get_entry(model_name)
    if entry.task == "segmentation" and not dataset.has_masks:
        raise DataError(f"{model_name} is a segmenter but dataset {dataset.name!r} has no masks "
                        f"(use clutter, pennfudan:PATH or coco:FILE.json,masks=true)")
    if entry.task == "localization" and dataset.task != "localization":
        raise DataError(f"{model_name} finds one object per image but dataset {dataset.name!r} is a "
                        f"{dataset.task} set with several per image; train it on digits-loc, or a detector "
                        f"on this set")


def class_names_for(model_name: str, dataset) -> tuple[str, ...]:
    """The class names a model trained on ``dataset`` has: the dataset's, with ``background``
    first for segmenters."""
    names = tuple(dataset.class_names)
    return segmentation_class_names(names) if get_entry(model_name).task == "segmentation" else names


def val_loader(val_set: TrainingSet, family: str, model: nn.Module, batch: int, workers: int = 0):
    """A DataLoader of uint8 frames and targets over ``val_set`` in order."""
    grid = tuple(model.cfg.grid) if family == "grid" else None
    return torch.utils.data.DataLoader(
        val_set, batch_size=batch, shuffle=False, num_workers=workers,
        collate_fn=_Collate(family, tuple(model.cfg.input_size), grid))


class _Collate:
    # A picklable collate function for DataLoader workers.
    def __init__(self, family: str, input_size: tuple[int, int], grid: tuple[int, int] | None) -> None:
        self.family, self.input_size, self.grid = family, input_size, grid

    def __call__(self, samples):
        return collate(samples, self.family, self.input_size, self.grid, frames=True)


def _grid_truth(targets: torch.Tensor, input_size: tuple[int, int]):
    # encode_grid targets [B, gh, gw, 6] -> flat per-cell presence, xyxy pixel boxes, labels.
    b, gh, gw, _ = targets.shape
    h, w = input_size
    ys = torch.arange(gh, dtype=torch.float32).view(1, gh, 1)
    xs = torch.arange(gw, dtype=torch.float32).view(1, 1, gw)
    cx = (xs + targets[..., 1]) * (w / gw)
    cy = (ys + targets[..., 2]) * (h / gh)
    boxes = cxcywh_to_xyxy(torch.stack((cx, cy, targets[..., 3] * w, targets[..., 4] * h), dim=-1))
    return targets[..., 0].reshape(-1) > 0.5, boxes.reshape(-1, 4), targets[..., 5].reshape(-1).long()


@torch.no_grad()
def evaluate(model: nn.Module, val_set: TrainingSet, *, batch: int = 64, device: str | torch.device = "cpu",
             workers: int = 0, progress: bool = False, desc: str = "val") -> ValResult:
    """Score ``model`` on ``val_set`` (a :class:`TrainingSet` without flips) through its deploy
    wrapper. Leaves the model in eval mode on ``device``."""
    from tqdm import tqdm

    family = get_entry(model.model_name).family
    names = class_names_of(model.cfg)
    model = model.to(device)
    module, _ = build_deploy_module(model, nms=EVAL_NMS, nms_module=BatchedNMS(EVAL_NMS))
    module = module.to(device)
    size = tuple(model.cfg.input_size)
    presence = PresenceMeter()
    detections = DetectionMeter(model.cfg.num_classes, names)
    confusion = ConfusionMeter(model.cfg.num_classes, names)
    loader = val_loader(val_set, family, model, batch, workers)
    for b in tqdm(loader, desc=desc, leave=False, disable=None if progress else True, dynamic_ncols=True):
        frames = b["images"].to(device)
        if family == "localizer":
            score, box, label, class_scores = (t.cpu() for t in module(frames))
            t = b["targets"]
            true_box = cxcywh_to_xyxy(t[:, 1:5] * torch.tensor([size[1], size[0]] * 2, dtype=torch.float32))
            presence.update(score, box, label, t[:, 0] > 0.5, true_box, t[:, 5].long())
            det_score = score * class_scores.gather(1, label[:, None])[:, 0]
            detections.update(box[:, None], det_score[:, None], label[:, None], None, b["boxes"], b["labels"])
        elif family in ("grid", "yolov3"):
            dense = module.dense(frames)  # (B, N, 5 + C)
            if family == "grid":
                pred = dense.cpu()
                present, true_box, true_label = _grid_truth(b["targets"], size)
                presence.update(pred[..., 4].reshape(-1), cxcywh_to_xyxy(pred[..., :4]).reshape(-1, 4),
                                pred[..., 5:].argmax(-1).reshape(-1), present, true_box, true_label)
            num, boxes, scores, labels = (t.cpu() for t in module.post(dense, frames))
            detections.update(boxes, scores, labels, num, b["boxes"], b["labels"])
        else:
            (mask,) = module(frames)
            confusion.update(mask.cpu(), b["targets"])

    if family == "unet":
        table = confusion.table()
        metrics = {"mean_iou": table.mean["iou"], "pixel_accuracy": table.pixel_accuracy}
        for m in ("accuracy", "recall", "precision", "f1"):
            metrics[f"mean_{m}"] = table.mean[m]
        for m in ("accuracy", "recall", "precision", "f1", "iou"):
            metrics[f"weighted_{m}"] = table.weighted[m]
        metrics = {k: (0.0 if math.isnan(v) else v) for k, v in metrics.items()}
        details = {"segmentation": table.to_dict(), "confusion": confusion.matrix.tolist()}
        report = table.format()
    else:
        coco = detections.compute()
        metrics = {"map50": coco["map50"], "map50_95": coco["map50_95"], "map75": coco["map75"]}
        if family in ("localizer", "grid"):
            p = presence.compute()
            metrics = {"accuracy": p["accuracy"], "mean_iou": p["mean_iou"], **metrics}
        details = {"per_class": coco["per_class"], "num_objects": coco["num_objects"],
                   "num_detections": coco["num_detections"]}
        report = _detection_report(metrics, coco)
    metrics["fitness"] = fitness_of(family, metrics)
    details["num_images"] = len(val_set)
    return ValResult(metrics, details, report)


def _detection_report(metrics: dict[str, float], coco: dict) -> str:
    lines = ["  ".join(f"{k} {v:.4f}" for k, v in metrics.items())]
    width = max([5] + [len(n) for n in coco["per_class"]])
    lines.append(f"{'class':<{width}}  {'objects':>7}  {'AP50':>6}  {'AP50:95':>7}")
    for name, row in coco["per_class"].items():
        ap50 = "-" if row["ap50"] is None else f"{row['ap50']:.4f}"
        ap = "-" if row["ap50_95"] is None else f"{row['ap50_95']:.4f}"
        lines.append(f"{name:<{width}}  {row['objects']:>7}  {ap50:>6}  {ap:>7}")
    return "\n".join(lines)


def validate_checkpoint(weights: str, data: str | None = None, *, split: str = "val", batch: int = 64,
                        device: str | None = None, workers: int = 0,
                        progress: bool = True) -> tuple[ValResult, dict[str, Any]]:
    """Score a checkpoint on ``data`` (default: the spec it was trained on).

    Returns:
        The result and a JSON-ready document: model, weights, data, split, task, the metrics at the
        top level (``accuracy``/``mean_iou`` for localizer and grid, ``map50``/``map50_95`` for
        detectors, ``mean_iou`` for segmenters, and more), then the details.
    """
    from edgedet.train.checkpoint import load_checkpoint, model_from_checkpoint
    from edgedet.train.trainer import resolve_device

    ckpt = load_checkpoint(weights)
    spec = data or ckpt.get("train", {}).get("data")
    if not spec:
        raise EdgedetError(f"{weights} does not record the data it was trained on; pass --data SPEC")
    model = model_from_checkpoint(ckpt)
    dataset = build_dataset(spec, split)
    check_data_fits(model.model_name, dataset)
    have, want = class_names_of(model.cfg), class_names_for(model.model_name, dataset)
    if len(have) != len(want):
        raise DataError(f"{weights} predicts {len(have)} classes ({', '.join(have[:6])}"
                        f"{', ...' if len(have) > 6 else ''}) but {spec} has {len(want)}")
    if len(dataset) == 0:
        raise DataError(f"dataset {spec!r} ({split}) holds no images")
    val_set = TrainingSet(dataset, tuple(model.cfg.input_size), model.cfg.in_channels,
                          with_semantic=get_entry(model.model_name).task == "segmentation")
    result = evaluate(model, val_set, batch=batch, device=resolve_device(device), workers=workers,
                      progress=progress)
    doc = {"model": model.model_name, "weights": str(weights), "data": spec, "split": split,
           "task": get_entry(model.model_name).task, "images": len(dataset), **result.metrics, **result.details}
    return result, doc
