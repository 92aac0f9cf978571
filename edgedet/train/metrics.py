"""Validation metrics: segmentation confusion tables, COCO mAP, localizer and grid accuracy.

- Segmentation (the seed's table): a confusion matrix over labelled pixels, rows the true class
  and columns the predicted one. Per class, one-vs-rest counts give accuracy
  ``(TP + TN) / total``, recall ``TP / (TP + FN)``, precision ``TP / (TP + FP)``, F1 and IoU
  ``TP / (TP + FP + FN)``; the *mean* row averages classes equally, the *weighted* row by each
  class's share of true pixels. (The seed's Cat/Dog/Horse example, confusion
  ``[[42, 8, 0], [6, 30, 4], [1, 2, 17]]``, gives mean accuracy 87.27 %, recall 81.33 %,
  precision 80.56 % and weighted 86.03 %, 80.91 %, 80.95 %; a test holds these.)
- Detection: COCO mAP@0.5 and mAP@0.5:0.95 with per-class AP, computed by faster-coco-eval
  (a maintained, C++-backed port of the COCO evaluator), never by hand.
- Localizer and grid (the seed's accuracy and IoU, the IoU fixed): an image (or grid cell) is
  correct when the presence decision ``p_c > 0.5`` is right and, where an object is present and
  predicted, its class is right; mean IoU averages :func:`edgedet.ops.boxes.box_iou` of the
  predicted and true box over images (cells) holding an object. The seed added one pixel to
  coordinates that were fractions of the image, which inflated small boxes' overlap.
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from edgedet.data.sample import IGNORE
from edgedet.ops.boxes import box_iou

__all__ = ["confusion_matrix", "SegmentationTable", "segmentation_table", "ConfusionMeter",
           "coco_map", "mask_rles", "DetectionMeter", "MaskMeter", "PresenceMeter"]


def confusion_matrix(pred: Tensor | np.ndarray, target: Tensor | np.ndarray, num_classes: int,
                     ignore_index: int = IGNORE) -> np.ndarray:
    """Pixel (or sample) confusion matrix.

    Args:
        pred: predicted class ids, any shape.
        target: true class ids, same shape; ``ignore_index`` entries are left out.
        num_classes: K.

    Returns:
        int64 [K, K]: ``m[t, p]`` counts entries of true class t predicted as p.
    """
    pred = torch.as_tensor(pred).reshape(-1).long()
    target = torch.as_tensor(target).reshape(-1).long()
    keep = target != ignore_index
    pred, target = pred[keep], target[keep]
    if len(target) and (int(target.max()) >= num_classes or int(target.min()) < 0):
        raise ValueError(f"true class ids must lie in 0..{num_classes - 1} (or be {ignore_index})")
    counts = torch.bincount(target * num_classes + pred.clamp(0, num_classes - 1), minlength=num_classes ** 2)
    return counts.reshape(num_classes, num_classes).cpu().numpy().astype(np.int64)


@dataclass(frozen=True)
class SegmentationTable:
    """Per-class and summary rows of a confusion matrix (all values fractions, NaN where undefined).

    Attributes:
        class_names: K names.
        support: true entries per class.
        accuracy, recall, precision, f1, iou: float64 [K] each.
        mean, weighted: dicts of the same five measures averaged over classes equally, and
            weighted by ``support``. Classes absent from both truth and prediction are left out
            of the mean (their measures are undefined), as are undefined values of present ones.
        pixel_accuracy: trace over total.
    """

    class_names: tuple[str, ...]
    support: np.ndarray
    accuracy: np.ndarray
    recall: np.ndarray
    precision: np.ndarray
    f1: np.ndarray
    iou: np.ndarray
    mean: dict[str, float] = field(default_factory=dict)
    weighted: dict[str, float] = field(default_factory=dict)
    pixel_accuracy: float = float("nan")

    MEASURES = ("accuracy", "recall", "precision", "f1", "iou")

    def format(self, percent: bool = True) -> str:
        """A plain-text table: one row per class, then ``mean`` and ``weighted``."""
        scale = 100.0 if percent else 1.0
        width = max([len("weighted")] + [len(n) for n in self.class_names])
        head = f"{'class':<{width}}  {'pixels':>9}" + "".join(f"  {m:>9}" for m in self.MEASURES)
        lines = [head]

        def cell(v: float) -> str:
            return f"  {'-':>9}" if math.isnan(v) else f"  {v * scale:>9.2f}"

        for k, name in enumerate(self.class_names):
            lines.append(f"{name:<{width}}  {int(self.support[k]):>9}"
                         + "".join(cell(float(getattr(self, m)[k])) for m in self.MEASURES))
        total = int(self.support.sum())
        for label, row in (("mean", self.mean), ("weighted", self.weighted)):
            lines.append(f"{label:<{width}}  {total:>9}" + "".join(cell(row[m]) for m in self.MEASURES))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """JSON-ready: per-class lists (None where undefined) and the summary rows."""
        def clean(v):
            return None if isinstance(v, float) and math.isnan(v) else v

        return {
            "class_names": list(self.class_names),
            "support": [int(s) for s in self.support],
            **{m: [clean(float(v)) for v in getattr(self, m)] for m in self.MEASURES},
            "mean": {k: clean(v) for k, v in self.mean.items()},
            "weighted": {k: clean(v) for k, v in self.weighted.items()},
            "pixel_accuracy": clean(self.pixel_accuracy),
        }


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def segmentation_table(confusion: np.ndarray, class_names: Sequence[str] | None = None) -> SegmentationTable:
    """Accuracy, recall, precision, F1 and IoU per class and averaged, from a confusion matrix
    (rows true, columns predicted; see the module docstring for the definitions)."""
    m = np.asarray(confusion, dtype=np.float64)
    k = m.shape[0]
    names = tuple(class_names) if class_names is not None else tuple(str(i) for i in range(k))
    total = m.sum()
    tp = np.diag(m)
    fn = m.sum(axis=1) - tp
    fp = m.sum(axis=0) - tp
    tn = total - tp - fn - fp
    support = m.sum(axis=1)
    rows = {
        "accuracy": _ratio(tp + tn, np.full(k, total)),
        "recall": _ratio(tp, tp + fn),
        "precision": _ratio(tp, tp + fp),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "iou": _ratio(tp, tp + fp + fn),
    }
    seen = (support + m.sum(axis=0)) > 0
    mean, weighted = {}, {}
    for name, values in rows.items():
        ok = seen & ~np.isnan(values)
        mean[name] = float(values[ok].mean()) if ok.any() else float("nan")
        w = support * ok
        weighted[name] = float((values[ok] * w[ok]).sum() / w.sum()) if w.sum() > 0 else float("nan")
    return SegmentationTable(names, support.astype(np.int64), rows["accuracy"], rows["recall"], rows["precision"],
                             rows["f1"], rows["iou"], mean, weighted,
                             float(tp.sum() / total) if total > 0 else float("nan"))


class ConfusionMeter:
    """Accumulates a confusion matrix over batches of predicted and true class maps."""

    def __init__(self, num_classes: int, class_names: Sequence[str] | None = None) -> None:
        self.num_classes = num_classes
        self.class_names = class_names
        self.matrix = np.zeros((num_classes, num_classes), np.int64)

    def update(self, pred: Tensor, target: Tensor) -> None:
        self.matrix += confusion_matrix(pred, target, self.num_classes)

    def table(self) -> SegmentationTable:
        return segmentation_table(self.matrix, self.class_names)


def coco_map(detections: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
             ground_truth: Sequence[tuple[np.ndarray, np.ndarray]], num_classes: int,
             class_names: Sequence[str] | None = None, iou_type: str = "bbox") -> dict:
    """COCO box (or mask) mAP of detections against ground truth, by faster-coco-eval.

    Args:
        detections: per image ``(boxes [K, 4] xyxy, scores [K], labels [K])``; for
            ``iou_type="segm"`` a fourth item, the K masks as COCO RLEs (:func:`mask_rles`).
        ground_truth: per image ``(boxes [N, 4] xyxy, labels [N])``, same order; for ``"segm"`` a
            third item, the N true masks as RLEs.
        num_classes: C; class ids are 0..C-1.
        class_names: names for the per-class table.
        iou_type: ``"bbox"`` or ``"segm"`` (COCO's mask IoU; the image size is the RLEs').

    Returns:
        dict with ``map50``, ``map50_95``, ``map75``, ``num_images``, ``num_objects``,
        ``num_detections`` and ``per_class``: ``{name: {"ap50", "ap50_95", "objects"}}``. A class
        with no true object has AP None and is left out of the means; with no true object at all
        both means are 0.
    """
    from faster_coco_eval import COCO, COCOeval_faster

    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    images, gt_anns, dt_anns = [], [], []
    objects = np.zeros(num_classes, np.int64)
    segm = iou_type == "segm"
    for i, (truth, found) in enumerate(zip(ground_truth, detections), start=1):
        (gb, gl), (db, ds, dl) = truth[:2], found[:3]
        g_rles, d_rles = (truth[2], found[3]) if segm else ([None] * len(gl), [None] * len(dl))
        size = _image_size(list(g_rles) + list(d_rles)) if segm else (1, 1)
        images.append({"id": i, "width": size[1], "height": size[0]})
        for box, label, rle in zip(np.asarray(gb, np.float64).reshape(-1, 4), np.asarray(gl).reshape(-1), g_rles):
            w, h = box[2] - box[0], box[3] - box[1]
            objects[int(label)] += 1
            ann = {"id": len(gt_anns) + 1, "image_id": i, "category_id": int(label) + 1,
                   "bbox": [float(box[0]), float(box[1]), float(w), float(h)], "area": float(w * h), "iscrowd": 0}
            if segm:
                ann.update(segmentation=rle, area=float(_rle_area(rle)))
            gt_anns.append(ann)
        for box, score, label, rle in zip(np.asarray(db, np.float64).reshape(-1, 4), np.asarray(ds).reshape(-1),
                                          np.asarray(dl).reshape(-1), d_rles):
            if label < 0:
                continue
            ann = {"image_id": i, "category_id": int(label) + 1, "score": float(score),
                   "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])]}
            if segm:
                ann["segmentation"] = rle
            dt_anns.append(ann)
    result = {"map50": 0.0, "map50_95": 0.0, "map75": 0.0, "num_images": len(images),
              "num_objects": int(objects.sum()), "num_detections": len(dt_anns),
              "per_class": {n: {"ap50": None, "ap50_95": None, "objects": int(objects[c])} for c, n in enumerate(names)}}
    if not gt_anns:
        return result
    categories = [{"id": c + 1, "name": names[c]} for c in range(num_classes)]
    gt = COCO({"images": images, "annotations": gt_anns, "categories": categories})
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(dt_anns) if dt_anns else COCO({"images": images, "annotations": [], "categories": categories})
        evaluator = COCOeval_faster(gt, dt, iouType=iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    # precision: [T iou thresholds, R recall points, K classes, A areas, M max-dets]; -1 = undefined
    precision = np.asarray(evaluator.eval["precision"])[:, :, :, 0, -1]
    iou_thrs = np.asarray(evaluator.params.iouThrs)
    t50 = int(np.argmin(np.abs(iou_thrs - 0.5)))
    t75 = int(np.argmin(np.abs(iou_thrs - 0.75)))

    def ap(p: np.ndarray) -> float | None:
        valid = p[p > -1]
        return float(valid.mean()) if valid.size else None

    ap50 = [ap(precision[t50, :, c]) for c in range(num_classes)]
    ap50_95 = [ap(precision[:, :, c]) for c in range(num_classes)]
    ap75 = [ap(precision[t75, :, c]) for c in range(num_classes)]
    for c, n in enumerate(names):
        result["per_class"][n].update(ap50=ap50[c], ap50_95=ap50_95[c])
    for key, values in (("map50", ap50), ("map50_95", ap50_95), ("map75", ap75)):
        defined = [v for v in values if v is not None]
        result[key] = float(np.mean(defined)) if defined else 0.0
    return result


def mask_rles(masks: np.ndarray) -> list[dict]:
    """COCO run-length encodings of binary masks ``[N, H, W]`` (faster-coco-eval's encoder)."""
    from faster_coco_eval.core import mask as mask_utils

    masks = np.asarray(masks)
    if masks.shape[0] == 0:
        return []
    return mask_utils.encode(np.asfortranarray((masks != 0).transpose(1, 2, 0).astype(np.uint8)))


def _rle_area(rle: dict) -> float:
    from faster_coco_eval.core import mask as mask_utils

    return float(mask_utils.area(rle))


def _image_size(rles: Sequence[dict]) -> tuple[int, int]:
    return tuple(int(v) for v in rles[0]["size"]) if rles else (1, 1)


class DetectionMeter:
    """Collects per-image detections and ground truth, then :func:`coco_map` over them all."""

    def __init__(self, num_classes: int, class_names: Sequence[str] | None = None) -> None:
        self.num_classes = num_classes
        self.class_names = class_names
        self.detections: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.ground_truth: list[tuple[np.ndarray, np.ndarray]] = []

    def update(self, boxes: Tensor, scores: Tensor, labels: Tensor, num_dets: Tensor | None,
               true_boxes: Sequence[Tensor], true_labels: Sequence[Tensor]) -> None:
        """Add a batch: padded ``boxes[B, K, 4]``, ``scores[B, K]``, ``labels[B, K]`` with
        ``num_dets[B]`` valid rows (all rows when None), and per-image truth."""
        for i in range(boxes.shape[0]):
            n = boxes.shape[1] if num_dets is None else int(num_dets[i])
            self.detections.append((boxes[i, :n].detach().cpu().numpy(), scores[i, :n].detach().cpu().numpy(),
                                    labels[i, :n].detach().cpu().numpy()))
            self.ground_truth.append((true_boxes[i].cpu().numpy(), true_labels[i].cpu().numpy()))

    def compute(self) -> dict:
        return coco_map(self.detections, self.ground_truth, self.num_classes, self.class_names)


class MaskMeter:
    """Collects per-image detections with masks and true masks (as RLEs, so memory stays small),
    then :func:`coco_map` with ``iou_type="segm"``."""

    def __init__(self, num_classes: int, class_names: Sequence[str] | None = None) -> None:
        self.num_classes = num_classes
        self.class_names = class_names
        self.detections: list[tuple] = []
        self.ground_truth: list[tuple] = []

    def update(self, boxes: Tensor, scores: Tensor, labels: Tensor, masks: Tensor, num_dets: Tensor,
               true_boxes: Sequence[Tensor], true_labels: Sequence[Tensor], true_masks: Sequence[Tensor]) -> None:
        """Add a batch: padded ``boxes[B, K, 4]``, ``scores[B, K]``, ``labels[B, K]``,
        ``masks[B, K, H, W]`` with ``num_dets[B]`` valid rows, and per-image truth with masks
        ``[N, H, W]``."""
        for i in range(boxes.shape[0]):
            n = int(num_dets[i])
            self.detections.append((boxes[i, :n].detach().cpu().numpy(), scores[i, :n].detach().cpu().numpy(),
                                    labels[i, :n].cpu().numpy(), mask_rles(masks[i, :n].cpu().numpy())))
            self.ground_truth.append((true_boxes[i].cpu().numpy(), true_labels[i].cpu().numpy(),
                                      mask_rles(true_masks[i].cpu().numpy())))

    def compute(self) -> dict:
        return coco_map(self.detections, self.ground_truth, self.num_classes, self.class_names, iou_type="segm")


class PresenceMeter:
    """The seed's accuracy and mean IoU for single-slot predictions (localizer images, grid cells).

    Each slot has a true presence, label and box, and a predicted score, label and box.
    """

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = threshold
        self.slots = 0
        self.correct = 0
        self.objects = 0
        self.iou_sum = 0.0

    def update(self, score: Tensor, box: Tensor, label: Tensor, true_present: Tensor, true_box: Tensor,
               true_label: Tensor) -> None:
        """All arguments flat over slots: ``score[N]``, ``box[N, 4]`` xyxy, ``label[N]``,
        ``true_present[N]`` bool, ``true_box[N, 4]``, ``true_label[N]``."""
        predicted = score > self.threshold
        right = (predicted == true_present) & (~true_present | (label == true_label))
        self.slots += int(score.numel())
        self.correct += int(right.sum())
        if true_present.any():
            b, t = box[true_present].double(), true_box[true_present].double()
            iou = box_iou(b, t).diagonal()
            self.objects += int(true_present.sum())
            self.iou_sum += float(iou.sum())

    def compute(self) -> dict:
        return {"accuracy": self.correct / self.slots if self.slots else 0.0,
                "mean_iou": self.iou_sum / self.objects if self.objects else 0.0,
                "slots": self.slots, "objects": self.objects}
