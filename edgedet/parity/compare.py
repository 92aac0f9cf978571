"""Output comparison: dense tensors in the style of NVIDIA Polygraphy, detections by matching.

Everything here works on numpy arrays, so any backend's outputs can be compared with the PyTorch
reference the same way.

- Dense outputs: max abs error, max rel error, mean abs error, and the smallest ``atol`` that
  would pass at the given ``rtol`` (``|out - ref| <= atol + rtol * |ref|``, as ``numpy.isclose``).
- Detections, per image: the counts are equal and every reference detection is matched to an
  exported one of the same label with IoU >= ``iou`` and ``|Δscore| <= score``.
- Masks: the fraction of pixels with the same class id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

__all__ = ["Tolerance", "CompareResult", "compare_dense", "compare_detections", "compare_masks",
           "compare_exact", "compare_outputs"]


@dataclass(frozen=True)
class Tolerance:
    """Pass criteria. Defaults for fp32 follow torchvision's ONNX tests (rtol 1e-3, atol 1e-5)."""

    rtol: float = 1e-3
    atol: float = 1e-5
    iou: float = 0.999
    score: float = 1e-4
    mask_agreement: float = 0.9999

    @classmethod
    def fp16(cls) -> "Tolerance":
        """Half precision: activations carry ~3 significant digits."""
        return cls(rtol=1e-2, atol=1e-2, iou=0.98, score=1e-2, mask_agreement=0.999)


@dataclass
class CompareResult:
    """The verdict on one output (or on the detections of a batch)."""

    name: str
    passed: bool
    max_abs: float = 0.0
    max_rel: float = 0.0
    mean_abs: float = 0.0
    needed_atol: float = 0.0
    detail: str = ""
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        if self.detail:
            return f"{self.name}: {self.detail} {verdict}"
        return (f"{self.name}: max abs {self.max_abs:.3g}, max rel {self.max_rel:.3g}, mean abs "
                f"{self.mean_abs:.3g}, passes at atol >= {self.needed_atol:.3g} {verdict}")


def compare_dense(name: str, ref: np.ndarray, out: np.ndarray, tol: Tolerance) -> CompareResult:
    """Element-wise comparison of two arrays of the same shape."""
    ref = np.asarray(ref)
    out = np.asarray(out)
    if ref.shape != out.shape:
        return CompareResult(name, False, detail=f"shape {out.shape} != reference {ref.shape}")
    if ref.size == 0:
        return CompareResult(name, True, detail="empty")
    r = ref.astype(np.float64)
    o = out.astype(np.float64)
    if not (np.isfinite(o).all() or np.array_equal(np.isfinite(o), np.isfinite(r))):
        return CompareResult(name, False, detail="non-finite values where the reference has none")
    diff = np.abs(o - r)
    diff[~np.isfinite(diff)] = 0.0
    rel = diff / np.maximum(np.abs(r), np.finfo(np.float64).tiny)
    needed = float(np.max(diff - tol.rtol * np.abs(r)).clip(min=0.0))
    return CompareResult(name, bool(needed <= tol.atol), float(diff.max()), float(rel.max()),
                         float(diff.mean()), needed)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: np.clip(x[:, 2] - x[:, 0], 0, None) * np.clip(x[:, 3] - x[:, 1], 0, None)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), (np.abs(a[:, None] - b[None]).max(-1) == 0) * 1.0)


def compare_detections(ref: Sequence[np.ndarray], out: Sequence[np.ndarray], tol: Tolerance,
                       name: str = "detections") -> CompareResult:
    """Compare ``(num_dets, boxes, scores, labels)`` of a batch, image by image."""
    ref_num, ref_boxes, ref_scores, ref_labels = (np.asarray(x) for x in ref)
    num, boxes, scores, labels = (np.asarray(x) for x in out)
    problems: list[str] = []
    if ref_num.shape != num.shape:
        return CompareResult(name, False, detail=f"batch {num.shape} != reference {ref_num.shape}")
    matched = total = 0
    worst_iou, worst_score = 1.0, 0.0
    for i in range(ref_num.shape[0]):
        n_ref, n_out = int(ref_num[i]), int(num[i])
        total += n_ref
        if n_ref != n_out:
            problems.append(f"image {i}: {n_out} detections, reference {n_ref}")
        rb, rs, rl = ref_boxes[i, :n_ref], ref_scores[i, :n_ref], ref_labels[i, :n_ref]
        ob, os_, ol = boxes[i, :n_out], scores[i, :n_out], labels[i, :n_out]
        if n_ref == 0 or n_out == 0:
            continue
        iou = _iou(rb.astype(np.float64), ob.astype(np.float64))
        free = np.ones(n_out, dtype=bool)
        for j in range(n_ref):
            ok = free & (ol == rl[j]) & (iou[j] >= tol.iou) & (np.abs(os_ - rs[j]) <= tol.score)
            if ok.any():
                k = int(np.flatnonzero(ok)[np.argmax(iou[j, ok])])
                free[k] = False
                matched += 1
                worst_iou = min(worst_iou, float(iou[j, k]))
                worst_score = max(worst_score, float(abs(os_[k] - rs[j])))
            else:
                problems.append(f"image {i}: reference detection {j} (label {int(rl[j])}, score "
                                f"{float(rs[j]):.4f}) has no match")
    detail = (f"{matched}/{total} detections matched over {ref_num.shape[0]} images, min IoU "
              f"{worst_iou:.6f}, max |Δscore| {worst_score:.2g}")
    return CompareResult(name, not problems, detail=detail, problems=problems)


def compare_masks(ref: np.ndarray, out: np.ndarray, tol: Tolerance, name: str = "mask") -> CompareResult:
    """Pixel agreement of two class-id masks of the same shape."""
    ref, out = np.asarray(ref), np.asarray(out)
    if ref.shape != out.shape:
        return CompareResult(name, False, detail=f"shape {out.shape} != reference {ref.shape}")
    differ = int((ref != out).sum())
    agreement = 1.0 - differ / max(ref.size, 1)
    return CompareResult(name, agreement >= tol.mask_agreement,
                         detail=f"{agreement * 100:.4f}% pixels agree ({differ} differ)")


def compare_exact(name: str, ref: np.ndarray, out: np.ndarray) -> CompareResult:
    """Integer outputs (class ids) must agree exactly."""
    ref, out = np.asarray(ref), np.asarray(out)
    if ref.shape != out.shape:
        return CompareResult(name, False, detail=f"shape {out.shape} != reference {ref.shape}")
    equal = int((ref == out).sum())
    return CompareResult(name, equal == ref.size, detail=f"{equal}/{ref.size} equal")


def compare_outputs(names: Sequence[str], ref: Sequence[np.ndarray], out: Sequence[np.ndarray],
                    tol: Tolerance) -> list[CompareResult]:
    """Compare every output of a graph with the reference, by the graph contract's output names."""
    if len(ref) != len(out):
        return [CompareResult("outputs", False, detail=f"{len(out)} outputs, reference {len(ref)}")]
    by_name = dict(zip(names, zip(ref, out)))
    results = []
    if "num_dets" in by_name:
        keys = ("num_dets", "boxes", "scores", "labels")
        results.append(compare_detections([by_name[k][0] for k in keys], [by_name[k][1] for k in keys], tol))
    for name, (r, o) in by_name.items():
        if name in ("num_dets", "boxes", "scores", "labels"):
            continue
        if name == "mask":
            results.append(compare_masks(r, o, tol, name))
        elif np.issubdtype(np.asarray(r).dtype, np.integer):
            results.append(compare_exact(name, r, o))
        else:
            results.append(compare_dense(name, r, o, tol))
    return results
