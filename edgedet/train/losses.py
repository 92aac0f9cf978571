"""Training losses, one per family, following the course seeds with their mistakes fixed.

Every loss is an ``nn.Module`` called as ``loss(head, targets) -> (total, parts)``: ``total`` a
scalar to back-propagate, ``parts`` a dict of detached scalar components for logging. Targets are
the layouts of each family's target encoder (:meth:`edgedet.models.spec.FamilySpec.target_encoder`);
a family's spec chooses its loss.

- :class:`LocalizerLoss`: BCE on p_c for every image; box regression and class cross-entropy only
  for images holding an object (the seed's class target had a stray dimension).
- :class:`GridLoss`: per-cell BCE on p_c; box and class losses only in cells holding an object
  (the seed's second loss also applied them to empty cells, pulling their boxes towards zero).
- :class:`YoloLoss`: YOLOv3's loss: each object is assigned to the anchor, across all scales,
  whose shape fits it best; box loss there (darknet's ``xy + log wh`` with the ``2 - w h``
  small-box factor, or GIoU), class BCE there, objectness BCE everywhere except predictions
  that already overlap an object well without being assigned to it (the ignore region).
- :class:`InstanceSegLoss`: :class:`YoloLoss` plus YOLACT's mask loss for the prototype/coefficient
  instance segmenters.
- :class:`SegmentationLoss`: pixel cross-entropy, 255 ignored (letterbox padding), optional
  class weights (the seed weighs pedestrians 2:1 against background).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgedet.data.sample import IGNORE
from edgedet.ops.boxes import box_iou, cxcywh_to_xyxy, generalized_box_iou_pairs, shape_iou
from edgedet.ops.masks import box_interior
from edgedet.ops.yolo import YoloBoxCoder

from edgedet.train.options import BOX_LOSSES

__all__ = ["LocalizerLoss", "GridLoss", "YoloLoss", "InstanceSegLoss", "SegmentationLoss", "BOX_LOSSES"]


class _SlotLoss(nn.Module):
    """Weights shared by the one-object-per-slot losses (localizer images, grid cells)."""

    def __init__(self, l1_weight: float = 5.0, giou_weight: float = 2.0, cls_weight: float = 1.0) -> None:
        super().__init__()
        self.l1_weight = l1_weight
        self.giou_weight = giou_weight
        self.cls_weight = cls_weight


class LocalizerLoss(_SlotLoss):
    """``(head[B, 5 + C], targets[B, 6]) -> loss``: p_c BCE + box + class CE where present.

    The box term is the L1 error of the sigmoid box ``(cx, cy, w, h)`` (fractions of the input)
    plus ``1 - GIoU``. The seed's squared error is tiny for a few pixels' misplacement, so its
    boxes stayed loose (mean IoU 0.73); L1 and GIoU keep pulling until the edges fit.
    """

    def forward(self, head: Tensor, targets: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        head = head.float()
        present = targets[:, 0] > 0.5
        obj = F.binary_cross_entropy_with_logits(head[:, 0], targets[:, 0])
        box = head.new_zeros(())
        cls = head.new_zeros(())
        if present.any():
            pred = torch.sigmoid(head[present, 1:5])  # (P, 4) cx, cy, w, h fractions
            true = targets[present, 1:5]
            box = _box_terms(pred, true, cxcywh_to_xyxy(pred), cxcywh_to_xyxy(true), self.l1_weight, self.giou_weight)
            # class ids [P] (the seed passed a [P, 1] target)
            cls = F.cross_entropy(head[present, 5:], targets[present, 5].long()) * self.cls_weight
        total = obj + box + cls
        return total, {"obj": obj.detach(), "box": box.detach(), "cls": cls.detach()}


def _box_terms(pred: Tensor, true: Tensor, pred_xyxy: Tensor, true_xyxy: Tensor, l1_weight: float,
               giou_weight: float) -> Tensor:
    """Mean over boxes of ``l1_weight * |pred - true|_1 + giou_weight * (1 - GIoU)``."""
    l1 = (pred - true).abs().sum(1).mean()
    giou = generalized_box_iou_pairs(pred_xyxy, true_xyxy)
    return l1 * l1_weight + (1.0 - giou).mean() * giou_weight


class GridLoss(_SlotLoss):
    """``(head[B, 5 + C, rows, cols], targets[B, rows, cols, 6]) -> loss``.

    Per-cell BCE on p_c; L1 of the sigmoid ``(tx, ty, tw, th)`` plus ``1 - GIoU`` of the decoded
    box, and class cross-entropy, only in occupied cells (the seed's second loss applied them
    to empty cells as well).
    """

    def forward(self, head: Tensor, targets: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        p = head.float().permute(0, 2, 3, 1)  # (B, rows, cols, 5 + C)
        rows, cols = p.shape[1:3]
        occupied = targets[..., 0] > 0.5  # (B, rows, cols)
        obj = F.binary_cross_entropy_with_logits(p[..., 0], targets[..., 0])
        box = p.new_zeros(())
        cls = p.new_zeros(())
        if occupied.any():
            pred = torch.sigmoid(p[occupied][:, 1:5])  # (P, 4) tx, ty, tw, th
            true = targets[occupied][:, 1:5]
            # Boxes in units of the image for GIoU: centre = (cell + t) / cells, size as a fraction.
            gy, gx = torch.nonzero(occupied, as_tuple=True)[1:]
            cell = torch.stack((gx, gy), dim=1).to(p.dtype)
            grid = p.new_tensor([cols, rows])

            def to_xyxy(t: Tensor) -> Tensor:
                return cxcywh_to_xyxy(torch.cat(((cell + t[:, :2]) / grid, t[:, 2:]), dim=1))

            box = _box_terms(pred, true, to_xyxy(pred), to_xyxy(true), self.l1_weight, self.giou_weight)
            cls = F.cross_entropy(p[occupied][:, 5:], targets[occupied][:, 5].long()) * self.cls_weight
        total = obj + box + cls
        return total, {"obj": obj.detach(), "box": box.detach(), "cls": cls.detach()}


class YoloLoss(nn.Module):
    """YOLOv3's loss over the raw heads, darknet's head layout and decoding conventions.

    Call as ``loss(heads, targets)`` with ``heads`` the model's list of ``[B, A * (5 + C), H, W]``
    maps (stride 32 first) and ``targets`` ``Tensor[M, 6]`` ``(image, label, x1, y1, x2, y2)`` in
    input pixels.

    Args:
        anchors (Tensor[S, A, 2]): the model's anchors in input pixels, per scale.
        strides: the model's strides, same order.
        num_classes: C.
        box_loss: ``"xywh"`` (darknet's: BCE of the sigmoid centre offset and squared error of
            ``log(w / anchor_w)``, both scaled by ``2 - w h`` with w, h fractions of the input, so
            small boxes count more) or ``"giou"`` (``1 - GIoU`` of the decoded box).
        ignore_iou: a prediction that is not assigned to an object but whose decoded box has an
            IoU above this with one of its image's objects gets no objectness loss.
        box_weight, obj_weight, cls_weight: weights of the three terms.

    Every term is summed over anchors (objectness), or assigned anchors (box, class), and divided
    by the batch size, as darknet sums per image.
    """

    def __init__(self, anchors: Tensor, strides: Sequence[int], num_classes: int, box_loss: str = "xywh",
                 ignore_iou: float = 0.5, box_weight: float = 1.0, obj_weight: float = 1.0,
                 cls_weight: float = 1.0) -> None:
        super().__init__()
        if box_loss not in BOX_LOSSES:
            raise ValueError(f"box_loss must be one of {BOX_LOSSES}, got {box_loss!r}")
        self.register_buffer("anchors", anchors.detach().clone().float(), persistent=False)  # (S, A, 2)
        self.strides = tuple(int(s) for s in strides)
        self.num_classes = num_classes
        self.box_loss = box_loss
        self.ignore_iou = ignore_iou
        self.box_weight, self.obj_weight, self.cls_weight = box_weight, obj_weight, cls_weight
        self.coder = YoloBoxCoder(max_log_wh=8.0)  # the decoder's formulas; exp bounded while training

    def assign(self, targets: Tensor) -> tuple[Tensor, Tensor]:
        """Best anchor over all scales for every object, by IoU of shapes (boxes centred together).

        Returns:
            scale (Tensor[M] int64), anchor (Tensor[M] int64) indices into ``anchors``.
        """
        s, a = self.anchors.shape[:2]
        wh = (targets[:, 4:6] - targets[:, 2:4]).clamp(min=1e-6)  # (M, 2)
        best = shape_iou(wh, self.anchors.view(-1, 2)).argmax(dim=1)  # over S * A anchors
        return best // a, best % a

    def forward(self, heads: Sequence[Tensor], targets: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        batch = heads[0].shape[0]
        device = heads[0].device
        targets = targets.to(device).float()
        num_anchors = self.anchors.shape[1]
        scale_of, anchor_of = self.assign(targets) if len(targets) else (targets.new_zeros(0).long(),) * 2
        gt_img = targets[:, 0].long()
        gt_boxes = targets[:, 2:6]
        gt_cxcy = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2
        gt_wh = (gt_boxes[:, 2:] - gt_boxes[:, :2]).clamp(min=1e-6)
        zero = heads[0].new_zeros((), dtype=torch.float32)
        padded_gt = _pad_boxes_per_image(gt_boxes, gt_img, batch)  # (B, G, 4)
        box_sum, obj_sum, cls_sum = zero, zero, zero

        for s, (head, stride) in enumerate(zip(heads, self.strides)):
            b, _, h, w = head.shape
            p = head.float().reshape(b, num_anchors, 5 + self.num_classes, h, w).permute(0, 1, 3, 4, 2)  # (B, A, H, W, 5 + C)
            anchors = self.anchors[s]  # (A, 2)
            input_h, input_w = h * stride, w * stride

            # Decoded boxes of every prediction, for the ignore region (no gradient).
            with torch.no_grad():
                ys = torch.arange(h, device=device, dtype=p.dtype).view(1, 1, h, 1)
                xs = torch.arange(w, device=device, dtype=p.dtype).view(1, 1, 1, w)
                decoded = self.coder.decode(p[..., :4], xs, ys, anchors.view(1, num_anchors, 1, 1, 2), stride)
                pred_boxes = cxcywh_to_xyxy(decoded)  # (B, A, H, W, 4)
                ignore = torch.zeros(b, num_anchors, h, w, dtype=torch.bool, device=device)
                if len(targets):
                    iou = box_iou(pred_boxes.reshape(b, -1, 4), padded_gt)  # (B, A * H * W, G)
                    ignore = (iou.max(dim=2)[0] > self.ignore_iou).view(b, num_anchors, h, w)

            obj_target = torch.zeros(b, num_anchors, h, w, device=device)
            mine = scale_of == s
            if mine.any():
                img, a = gt_img[mine], anchor_of[mine]
                cxcy, wh = gt_cxcy[mine], gt_wh[mine]
                gx = (cxcy[:, 0] / stride).long().clamp(0, w - 1)
                gy = (cxcy[:, 1] / stride).long().clamp(0, h - 1)
                pos = p[img, a, gy, gx]  # (P, 5 + C)
                obj_target[img, a, gy, gx] = 1.0
                ignore[img, a, gy, gx] = False
                cell = torch.stack((gx, gy), dim=1).to(p.dtype)  # (P, 2)
                if self.box_loss == "xywh":
                    target = self.coder.encode(torch.cat((cxcy, wh), dim=1), cell, anchors[a], stride)
                    txy, twh = target[:, :2].clamp(1e-4, 1 - 1e-4), target[:, 2:]
                    small = 2.0 - (wh[:, 0] / input_w) * (wh[:, 1] / input_h)  # (P,)
                    xy = F.binary_cross_entropy_with_logits(pos[:, :2], txy, reduction="none").sum(1)
                    whl = (pos[:, 2:4] - twh).pow(2).sum(1)
                    box_sum = box_sum + ((xy + whl) * small).sum()
                else:
                    pbox = cxcywh_to_xyxy(self.coder.decode(pos[:, :4], cell[:, 0], cell[:, 1], anchors[a], stride))
                    box_sum = box_sum + (1.0 - generalized_box_iou_pairs(pbox, gt_boxes[mine])).sum()
                cls_target = F.one_hot(targets[mine, 1].long(), self.num_classes).to(p.dtype)
                cls_sum = cls_sum + F.binary_cross_entropy_with_logits(pos[:, 5:], cls_target, reduction="sum")
            obj = F.binary_cross_entropy_with_logits(p[..., 4], obj_target, reduction="none")
            obj_sum = obj_sum + obj[~ignore].sum()

        box = box_sum / batch * self.box_weight
        obj = obj_sum / batch * self.obj_weight
        cls = cls_sum / batch * self.cls_weight
        return box + obj + cls, {"box": box.detach(), "obj": obj.detach(), "cls": cls.detach()}


def _pad_boxes_per_image(boxes: Tensor, image: Tensor, batch: int) -> Tensor:
    """``boxes[M, 4]`` of images ``image[M]`` -> ``Tensor[batch, G, 4]``, padded with empty boxes."""
    counts = torch.bincount(image, minlength=batch) if len(image) else image.new_zeros(batch)
    g = int(counts.max()) if len(image) else 0
    out = boxes.new_zeros(batch, max(g, 1), 4)
    if len(image):
        order = torch.argsort(image, stable=True)
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(len(image), device=boxes.device) - starts[image[order]]
        out[image[order], slot] = boxes[order]
    return out


class InstanceSegLoss(nn.Module):
    """YOLOv3's loss for boxes, objectness and classes, plus YOLACT's mask loss.

    Call as ``loss(heads, targets)`` with ``heads`` the instance segmenter's
    ``[p_s..., k_s..., protos]`` (detection heads, coefficient maps, prototypes ``[B, P, h, w]``;
    see :class:`edgedet.models.yolov3seg.YOLOv3TinySeg`) and ``targets`` ``Tensor[M, 6 + h * w]``:
    :class:`YoloLoss`'s rows followed by each object's mask on the prototype grid (fractions 0..1).

    The mask term, per object: its coefficients are read at the anchor :meth:`YoloLoss.assign`
    gives it (the one its box and class are trained at), its mask is
    ``coefficients @ prototypes`` of its image, and the loss is the BCE against the true mask over
    the prototype pixels inside the true box, divided by their count (YOLACT normalises by box
    area so small objects count as much as large ones). Summed over objects, divided by the
    batch size like the other terms, times ``mask_weight`` (2 by default: the masks are what the
    model is ranked on, and a per-object mean BCE is small beside YOLO's summed terms; Ultralytics
    weighs its mask loss like its box loss for the same reason).
    """

    def __init__(self, anchors: Tensor, strides: Sequence[int], num_classes: int, proto_stride: int,
                 box_loss: str = "xywh", mask_weight: float = 2.0) -> None:
        super().__init__()
        self.detection = YoloLoss(anchors, strides, num_classes, box_loss=box_loss)
        self.proto_stride = int(proto_stride)
        self.mask_weight = mask_weight

    def forward(self, heads: Sequence[Tensor], targets: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        s = len(self.detection.strides)
        det_heads, coef_maps, protos = list(heads[:s]), list(heads[s:2 * s]), heads[2 * s]
        targets = targets.to(protos.device).float()
        total, parts = self.detection(det_heads, targets[:, :6])
        mask = self.mask_loss(coef_maps, protos.float(), targets) * self.mask_weight
        return total + mask, {**parts, "mask": mask.detach()}

    def mask_loss(self, coef_maps: Sequence[Tensor], protos: Tensor, targets: Tensor) -> Tensor:
        """The summed per-object mask BCE over the batch size (see the class)."""
        b, p, h, w = protos.shape
        if len(targets) == 0:  # nothing to learn; keep the graph connected for DDP
            return protos.sum() * 0.0 + sum(c.sum() for c in coef_maps) * 0.0
        scale_of, anchor_of = self.detection.assign(targets[:, :6])
        num_anchors = self.detection.anchors.shape[1]
        img = targets[:, 0].long()
        cxcy = (targets[:, 2:4] + targets[:, 4:6]) / 2
        coefficients = protos.new_zeros(len(targets), p)
        for si, (cmap, stride) in enumerate(zip(coef_maps, self.detection.strides)):
            mine = scale_of == si
            if not mine.any():
                continue
            hs, ws = cmap.shape[2:]
            c = cmap.float().reshape(b, num_anchors, p, hs, ws)
            gx = (cxcy[mine, 0] / stride).long().clamp(0, ws - 1)  # the cell YoloLoss trains
            gy = (cxcy[mine, 1] / stride).long().clamp(0, hs - 1)
            coefficients[mine] = c[img[mine], anchor_of[mine], :, gy, gx]
        logits = torch.einsum("mp,mphw->mhw", coefficients, protos[img])  # (M, h, w)
        true = targets[:, 6:].reshape(-1, h, w)
        inside = box_interior(targets[:, 2:6] / self.proto_stride, h, w).float()  # (M, h, w)
        bce = F.binary_cross_entropy_with_logits(logits, true, reduction="none")
        per_object = (bce * inside).sum((1, 2)) / inside.sum((1, 2)).clamp(min=1.0)
        return per_object.sum() / b


class SegmentationLoss(nn.Module):
    """``(logits[B, K, H, W], mask[B, H, W]) -> loss``: pixel cross-entropy, 255 ignored.

    Args:
        class_weights: optional weight per class (background first), e.g. ``(1, 2)``.
    """

    def __init__(self, class_weights: Sequence[float] | None = None) -> None:
        super().__init__()
        weight = None if class_weights is None else torch.tensor(list(class_weights), dtype=torch.float32)
        self.register_buffer("weight", weight, persistent=False)

    def forward(self, logits: Tensor, targets: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        if not (targets != IGNORE).any():
            ce = logits.float().sum() * 0.0  # nothing to learn from; keep the graph connected
        else:
            ce = F.cross_entropy(logits.float(), targets, weight=self.weight, ignore_index=IGNORE)
        return ce, {"ce": ce.detach()}
