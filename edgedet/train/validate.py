"""Validation: run a model over a dataset through its deploy wrapper and score it.

Validation feeds uint8 BGR frames to :func:`edgedet.export.deploy.build_deploy_module`, the very
module that export traces, so a score measures what an exported graph ships: the same
preprocessing, decoding and NMS (at ``conf=0.001``, ``max_det=100``, as COCO scoring expects).

The family's spec chooses the evaluator and the metrics (see :mod:`edgedet.train.evaluators`):
localizer and grid ``accuracy``, ``mean_iou``, ``map50``, ``map50_95``; detectors ``map50``,
``map50_95``, ``map75``; segmenters ``mean_iou``, ``pixel_accuracy`` and more. ``fitness``, the
number that ranks checkpoints, is the spec's too: ``(accuracy + mean_iou) / 2`` for localizer and
grid, ``0.1 map50 + 0.9 map50_95`` for YOLOv3, ``mean_iou`` for U-Net.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from edgedet.data.sample import segmentation_class_names
from edgedet.data.spec import build_dataset
from edgedet.data.transforms import Collate, TrainingSet
from edgedet.errors import DataError, EdgedetError
from edgedet.export.deploy import NMSSettings, build_deploy_module
from edgedet.models.layers import class_names_of
from edgedet.models.registry import get_entry, spec_of
from edgedet.ops.nms import selection_order

__all__ = ["ValResult", "evaluate", "val_loader", "EVAL_NMS", "check_data_fits", "class_names_for",
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


def check_data_fits(model_name: str, dataset) -> None:
    """:class:`DataError` when a dataset cannot train or score ``model_name`` (by task)."""
    entry = get_entry(model_name)
    if entry.task == "segmentation" and not dataset.has_masks:
        raise DataError(f"{model_name} is a segmenter but dataset {dataset.name!r} has no masks "
                        f"(use clutter, pennfudan:PATH or coco:FILE.json,masks=true)")
    if entry.spec.instance_masks and not dataset.has_masks:
        raise DataError(f"{model_name} segments instances but dataset {dataset.name!r} has no instance masks "
                        f"(use clutter or coco:FILE.json,masks=true)")
    if entry.task == "localization" and dataset.task != "localization":
        raise DataError(f"{model_name} finds one object per image but dataset {dataset.name!r} is a "
                        f"{dataset.task} set with several per image; train it on digits-loc, or a detector "
                        f"on this set")


def class_names_for(model_name: str, dataset) -> tuple[str, ...]:
    """The class names a model trained on ``dataset`` has: the dataset's, with ``background``
    first for segmenters."""
    names = tuple(dataset.class_names)
    return segmentation_class_names(names) if get_entry(model_name).task == "segmentation" else names


def val_loader(val_set: TrainingSet, model: nn.Module, batch: int, workers: int = 0):
    """A DataLoader of uint8 frames and targets over ``val_set`` in order."""
    return torch.utils.data.DataLoader(
        val_set, batch_size=batch, shuffle=False, num_workers=workers,
        collate_fn=Collate(spec_of(model).target_encoder(model.cfg), frames=True))


@torch.no_grad()
def evaluate(model: nn.Module, val_set: TrainingSet, *, batch: int = 64, device: str | torch.device = "cpu",
             workers: int = 0, progress: bool = False, desc: str = "val") -> ValResult:
    """Score ``model`` on ``val_set`` (a :class:`TrainingSet` without flips) through its deploy
    wrapper. Leaves the model in eval mode on ``device``."""
    from tqdm import tqdm

    spec = spec_of(model)
    model = model.to(device)
    module, _ = build_deploy_module(model, nms=EVAL_NMS, nms_module=BatchedNMS(EVAL_NMS))
    module = module.to(device)
    evaluator = spec.evaluator(model)
    loader = val_loader(val_set, model, batch, workers)
    for b in tqdm(loader, desc=desc, leave=False, disable=None if progress else True, dynamic_ncols=True):
        b["images"] = b["images"].to(device)
        evaluator.update(module, b)
    metrics, details, report = evaluator.compute()
    metrics["fitness"] = spec.fitness(metrics)
    details["num_images"] = len(val_set)
    return ValResult(metrics, details, report)


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
                          with_semantic=get_entry(model.model_name).task == "segmentation",
                          with_masks=get_entry(model.model_name).spec.instance_masks)
    result = evaluate(model, val_set, batch=batch, device=resolve_device(device), workers=workers,
                      progress=progress)
    doc = {"model": model.model_name, "weights": str(weights), "data": spec, "split": split,
           "task": get_entry(model.model_name).task, "images": len(dataset), **result.metrics, **result.details}
    return result, doc
