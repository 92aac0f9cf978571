"""Anchor shapes for YOLOv3 fitted to a dataset's boxes.

Darknet's anchors were clustered on COCO at 416x416; a model trained from scratch on other data
or at another input size (e.g. 128x128 MNIST Clutter) gets anchors clustered on its own training
boxes instead, with darknet's distance ``1 - IoU`` of box shapes (Redmon & Farhadi, YOLO9000).
"""

from __future__ import annotations

import numpy as np

from edgedet.runtime.boxes import shape_iou

__all__ = ["kmeans_anchors"]


def kmeans_anchors(wh: np.ndarray, k: int, seed: int = 0, iterations: int = 100) -> np.ndarray:
    """Cluster box shapes into ``k`` anchors with the ``1 - IoU`` distance.

    Args:
        wh: float [N, 2] box widths and heights in input pixels (N >= 1).
        k: number of anchors.
        seed: seeds the k-means++ start, so the same boxes give the same anchors.

    Returns:
        float64 [k, 2] anchors sorted by area, ascending (darknet's order: the first scale's mask
        takes the largest). With fewer distinct shapes than k, shapes repeat.
    """
    wh = np.asarray(wh, np.float64).reshape(-1, 2)
    wh = wh[(wh > 0).all(axis=1)]
    if len(wh) == 0:
        raise ValueError("no boxes to fit anchors to")
    rng = np.random.default_rng(seed)
    centres = [wh[rng.integers(len(wh))]]
    for _ in range(1, k):  # k-means++ start: far (in 1 - IoU) shapes are likelier picks
        d = 1.0 - shape_iou(wh, np.array(centres)).max(axis=1)
        p = d / d.sum() if d.sum() > 0 else None
        centres.append(wh[rng.choice(len(wh), p=p)])
    centres = np.array(centres)
    for _ in range(iterations):
        assign = shape_iou(wh, centres).argmax(axis=1)
        updated = np.array([wh[assign == j].mean(axis=0) if (assign == j).any() else centres[j] for j in range(k)])
        if np.allclose(updated, centres):
            break
        centres = updated
    return centres[np.argsort(centres.prod(axis=1), kind="stable")]
