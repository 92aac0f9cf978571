"""Non-maximum suppression: the one NMS used by export, parity and training metrics.

Two pieces, both plain torch operators (TorchScript-able, no torchvision):

- :func:`nms_indices` has exactly the semantics of ONNX ``NonMaxSuppression`` (batched, per class,
  ``score > score_threshold``, suppress ``IoU > iou_threshold``, ties broken by lower box index),
  so the exported ONNX graph can swap it for that operator and compute the same thing.
- :func:`gather_detections` turns selected ``(image, class, box)`` triples into fixed-size, padded
  per-image outputs sorted by score, without a loop over the batch (:func:`detection_rows` says
  which selection fills each output row, so other per-box data can be gathered the same way).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from edgedet.ops.boxes import box_iou

__all__ = ["nms", "nms_indices", "selection_order", "detection_rows", "gather_rows", "gather_detections",
           "limit_candidates"]


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS over one set of boxes.

    Args:
        boxes (Tensor[N, 4]): ``(x1, y1, x2, y2)`` boxes.
        scores (Tensor[N]): their scores.
        iou_threshold: a box is dropped when its IoU with a kept, higher-scoring box is greater.

    Returns:
        Tensor[K] int64: indices of kept boxes, highest score first; equal scores keep the lower
        index first.
    """
    order = torch.sort(scores, descending=True, stable=True)[1]
    boxes = boxes[order]
    # The greedy pass reads one row per box: done on the CPU, so that on a GPU it costs one copy
    # of the overlap matrix instead of a device synchronisation per candidate.
    overlaps = (box_iou(boxes, boxes) > iou_threshold).cpu()
    n = boxes.shape[0]
    suppressed = torch.zeros(n, dtype=torch.bool)
    keep = torch.zeros(n, dtype=torch.bool)
    for i in range(n):
        if not bool(suppressed[i]):
            keep[i] = True
            suppressed = suppressed | overlaps[i]
    return order[keep.to(order.device)]


def nms_indices(boxes: Tensor, scores: Tensor, max_per_class: int, iou_threshold: float,
                score_threshold: float) -> Tensor:
    """Batched, class-wise NMS with ONNX ``NonMaxSuppression`` semantics.

    Args:
        boxes (Tensor[B, N, 4]): ``(x1, y1, x2, y2)`` boxes.
        scores (Tensor[B, C, N]): per-class scores.
        max_per_class: at most this many boxes per image and class.
        iou_threshold: suppress when IoU is greater than this.
        score_threshold: only boxes with a score greater than this take part.

    Returns:
        Tensor[S, 3] int64: ``(image, class, box)`` triples, grouped by image then class, each
        group in descending score order (the operator's output order).
    """
    out: list[Tensor] = []
    b_size, c_size = scores.shape[0], scores.shape[1]
    for b in range(b_size):
        for c in range(c_size):
            s = scores[b, c]
            candidates = torch.nonzero(s > score_threshold).flatten()
            if candidates.numel() == 0:
                continue
            kept = candidates[nms(boxes[b, candidates], s[candidates], iou_threshold)][:max_per_class]
            triple = torch.stack((torch.full_like(kept, b), torch.full_like(kept, c), kept), dim=1)
            out.append(triple)
    if len(out) == 0:
        return torch.zeros(0, 3, dtype=torch.int64, device=boxes.device)
    return torch.cat(out, dim=0)


def limit_candidates(scores: Tensor, max_candidates: int) -> Tensor:
    """Zero the scores of every box outside an image's ``max_candidates`` best, so NMS sees a
    bounded set however crowded (or untrained) the output is.

    Boxes are ranked by their best class score: a max over classes and a top-k over boxes, much
    cheaper than a top-k over every (box, class) pair.

    Args:
        scores (Tensor[B, C, N]): per-class scores.
        max_candidates: how many boxes per image may enter NMS.

    Returns:
        Tensor[B, C, N]: ``scores`` with the other boxes' scores set to 0. Boxes tied with the
        k-th best survive too.
    """
    n = scores.shape[2]
    if max_candidates >= n:
        return scores
    best = scores.max(dim=1)[0]  # (B, N)
    kth = torch.topk(best, max_candidates, dim=1)[0][:, max_candidates - 1 : max_candidates]  # (B, 1)
    keep = (best >= kth).unsqueeze(1)  # (B, 1, N)
    return torch.where(keep, scores, torch.zeros_like(scores))


def selection_order(selected: Tensor, scores: Tensor, stable: bool = True) -> Tensor:
    """The permutation ordering NMS output by image, then descending score.

    Args:
        selected (Tensor[S, 3] int64): ``(image, class, box)`` triples in NMS output order.
        scores (Tensor[B, C, N]): the scores NMS saw.
        stable: keep NMS order among equal scores. ONNX export passes False: ``argsort`` then
            exports as ``TopK``, whose specification breaks ties by the lower index, which is
            the same stable order (torch's exporter has no stable sort).

    Returns:
        Tensor[S] int64 indices into ``selected``.
    """
    img = selected[:, 0]
    # One sort for both keys: images' keys lie in disjoint ranges (2 * image - score with score
    # in [0, 1]); float64 holds every float32 score exactly.
    key = img.to(torch.float64) * 2.0 - scores[img, selected[:, 1], selected[:, 2]].to(torch.float64)
    if stable:
        return torch.sort(key, stable=True)[1]
    return torch.argsort(key)


def detection_rows(selected: Tensor, batch: int, max_det: int) -> Tuple[Tensor, Tensor, Tensor]:
    """Which NMS selection fills each of the K output rows of each image.

    Args:
        selected (Tensor[S, 3] int64): ``(image, class, box)`` triples from NMS, ordered by
            image, then descending score (see :func:`selection_order`).
        batch: B, the number of images.
        max_det: K, detections kept per image.

    Returns:
        rows (Tensor[B, K, 3] int64): the ``(image, class, box)`` triple of each output row, all
        zero on padding rows; valid (Tensor[B, K] bool): the row holds a detection; num_dets
        (Tensor[B] int64).

    Everything is gathered, never index-assigned: traced on an example with exactly one detection,
    the ONNX exporter turns an index_put's value into a broadcast scalar and the graph fails on any
    frame with more. Padding rows point one past the end of ``selected`` (index -1 of it with a
    zero row appended), so no shape of ``selected`` is baked into the graph.
    """
    img = selected[:, 0]
    device = selected.device
    images = torch.arange(batch, device=device)
    # Detections per image by comparison and sum (no scatter-add: every backend has these ops).
    counts = (img.unsqueeze(1) == images.unsqueeze(0)).to(torch.int64).sum(0)  # (B,)
    starts = torch.cumsum(counts, 0) - counts
    order = torch.arange(img.shape[0], device=device)
    rank = order - starts[img]
    rank = torch.where(rank < max_det, rank, torch.full_like(rank, max_det))  # overflow column, cut below
    flat = torch.full((batch * (max_det + 1),), -1, dtype=torch.int64, device=device)
    slots = flat.scatter(0, img * (max_det + 1) + rank, order).view(batch, max_det + 1)[:, :max_det]
    padded = torch.cat((selected, torch.zeros(1, 3, dtype=selected.dtype, device=device)), 0)
    num = torch.clamp(counts, max=max_det)
    valid = torch.arange(max_det, device=device).unsqueeze(0) < num.unsqueeze(1)  # (B, K)
    return padded[slots], valid, num


def gather_rows(rows: Tensor, valid: Tensor, boxes: Tensor, scores: Tensor,
                box_labels: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
    """Boxes, scores and labels of the rows :func:`detection_rows` chose: ``(boxes[B, K, 4],
    scores[B, K], labels[B, K])``, zero with label -1 on padding rows."""
    img, cls, idx = rows[..., 0], rows[..., 1], rows[..., 2]
    # One plain Gather over the flattened boxes keeps the trailing 4 static in exported graphs
    # (advanced indexing ``boxes[img, idx]`` leaves ONNX shape inference a free last dim).
    out_boxes = boxes.reshape(-1, 4)[img * boxes.shape[1] + idx] * valid.unsqueeze(2).to(boxes.dtype)
    out_scores = scores[img, cls, idx] * valid.to(scores.dtype)
    labels = cls if box_labels is None else box_labels[img, idx]
    return out_boxes, out_scores, torch.where(valid, labels, torch.full_like(labels, -1))


def gather_detections(selected: Tensor, boxes: Tensor, scores: Tensor, max_det: int,
                      box_labels: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Padded per-image detections from NMS output.

    Args:
        selected (Tensor[S, 3] int64): ``(image, class, box)`` triples from NMS, ordered by
            image, then descending score (see :func:`selection_order`).
        boxes (Tensor[B, N, 4]): the boxes NMS saw.
        scores (Tensor[B, C, N]): the scores NMS saw.
        max_det: K, detections kept per image.
        box_labels (Tensor[B, N] int64, optional): a label per box, used instead of the class
            index of ``selected`` (class-agnostic NMS runs with a single class).

    Returns:
        num_dets (Tensor[B] int64), boxes (Tensor[B, K, 4]), scores (Tensor[B, K]),
        labels (Tensor[B, K] int64): per image the K best detections by descending score;
        padding rows are zero with label -1.
    """
    rows, valid, num = detection_rows(selected, boxes.shape[0], max_det)
    out_boxes, out_scores, out_labels = gather_rows(rows, valid, boxes, scores, box_labels)
    return num, out_boxes, out_scores, out_labels
