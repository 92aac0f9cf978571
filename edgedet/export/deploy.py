"""Deploy wrappers: preprocessing + model + decoding (+ NMS) as one module with flat outputs.

The wrappers are what gets exported. Models stay free of export branches: a wrapper composes the
raw model with its family decoder, and the NMS implementation is a submodule chosen when the
wrapper is built (:class:`TorchNMS` for eager and TorchScript, the ONNX operator for ONNX).

Input contract (``input_format="uint8"``): ``images`` uint8 ``[B, H, W, 3]`` BGR, as OpenCV delivers
frames. Inside: cast, ``/ 255``, BGR -> RGB (or -> grey with OpenCV's weights for 1-channel
models), NHWC -> NCHW. ``input_format="float"`` takes float32 ``[B, 3, H, W]`` RGB in 0..1.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from edgedet.export.compat import shape_as_tensor
from edgedet.export.options import NMSSettings
from edgedet.models.registry import create_decoder, get_entry
from edgedet.ops.boxes import cxcywh_to_xyxy
from edgedet.ops.masks import assemble_mask_logits, masks_from_logits
from edgedet.ops.nms import (detection_rows, gather_detections, gather_rows, limit_candidates, nms_indices,
                             selection_order)

__all__ = ["NMSSettings", "Preprocess", "TorchNMS", "DensePredictor", "DetectionPostprocess", "DeployDetector", "DeployRawDetector", "DeployLocalizer", "DeploySegmenter",
           "InstanceMaskPostprocess", "DeployInstanceSegmenter", "DeployRawInstanceSegmenter",
           "build_deploy_module", "OUTPUT_NAMES"]

# OpenCV's BGR -> grey weights (cv2.cvtColor COLOR_BGR2GRAY), in B, G, R order.
GREY_WEIGHTS_BGR = (0.114, 0.587, 0.299)


class Preprocess(nn.Module):
    """Frames as the runtime delivers them -> the float NCHW tensor the model was trained on."""

    def __init__(self, in_channels: int, input_format: str = "uint8", dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if input_format not in ("uint8", "float"):
            raise ValueError(f"input_format must be uint8 or float, got {input_format!r}")
        self.uint8 = input_format == "uint8"
        self.grey = in_channels == 1
        self.dtype = dtype
        # Channel order of the network input, as indices into the delivered channels.
        self.register_buffer("to_rgb", torch.tensor([2, 1, 0]), persistent=False)
        grey = GREY_WEIGHTS_BGR if self.uint8 else GREY_WEIGHTS_BGR[::-1]
        self.register_buffer("grey_weights", torch.tensor(grey).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        if self.uint8:
            x = images.permute(0, 3, 1, 2).to(torch.float32) / 255.0  # (B, 3, H, W) BGR
        else:
            x = images.to(torch.float32)  # (B, 3, H, W) RGB
        if self.grey:
            x = (x * self.grey_weights).sum(dim=1, keepdim=True)  # (B, 1, H, W)
        elif self.uint8:
            x = x.index_select(1, self.to_rgb)  # BGR -> RGB
        return x.to(self.dtype)


class TorchNMS(nn.Module):
    """``(boxes[B, N, 4], scores[B, C, N]) -> selected[S, 3]`` with plain torch operators,
    ordered by image then descending score."""

    def __init__(self, settings: NMSSettings) -> None:
        super().__init__()
        self.max_det = settings.max_det
        self.iou = settings.iou
        self.conf = settings.conf

    def forward(self, boxes: Tensor, scores: Tensor) -> Tensor:
        selected = nms_indices(boxes, scores, self.max_det, self.iou, self.conf)
        return selected[selection_order(selected, scores)]


class DensePredictor(nn.Module):
    """``images -> predictions[B, N, 5 + C]``: preprocessing, the model and its decoder.

    Decoding runs in float32 even for a half-precision model. Nothing here depends on values, so
    it can be traced; the data-dependent NMS lives in :class:`DetectionPostprocess`.
    """

    def __init__(self, model: nn.Module, preprocess: Preprocess, decoder: nn.Module | None = None) -> None:
        super().__init__()
        self.preprocess = preprocess
        self.model = model
        self.decoder = create_decoder(model) if decoder is None else decoder  # given: a fully-conv model's

    def forward(self, images: Tensor) -> Tensor:
        heads = self.model(self.preprocess(images))
        if isinstance(heads, Tensor):
            return self.decoder(heads.float())
        return self.decoder([h.float() for h in heads])  # (B, N, 5 + C)


class DetectionPostprocess(nn.Module):
    """``(predictions[B, N, 5 + C], images) -> (num_dets[B], boxes[B, K, 4], scores[B, K],
    labels[B, K])``: xyxy boxes clipped to the input, score = objectness x class probability,
    class-aware (or agnostic) NMS, the K best per image."""

    def __init__(self, settings: NMSSettings, uint8_input: bool, nms: nn.Module | None = None) -> None:
        super().__init__()
        self.nms = nms if nms is not None else TorchNMS(settings)
        self.max_det = settings.max_det
        self.max_candidates = settings.max_candidates
        self.agnostic = settings.agnostic
        # Where W and H sit in the input's shape: (B, H, W, 3) uint8 or (B, 3, H, W) float.
        self.w_dim, self.h_dim = (2, 1) if uint8_input else (3, 2)

    def forward(self, pred: Tensor, images: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        selected, boxes, scores, box_labels = self.select(pred, images)
        return gather_detections(selected, boxes, scores, self.max_det, box_labels)

    def select(self, pred: Tensor, images: Tensor) -> Tuple[Tensor, Tensor, Tensor, Optional[Tensor]]:
        """NMS's ``selected[S, 3]`` with the clipped ``boxes[B, N, 4]``, ``scores[B, C, N]`` and
        agnostic ``box_labels`` it ran on (what :func:`gather_detections` takes)."""
        boxes = cxcywh_to_xyxy(pred[..., :4])  # (B, N, 4)
        # Clip to the input; the size comes from the runtime shape so dynamic H/W export works.
        # The shape tensor lives on the CPU whatever the device; the limits follow the boxes.
        shape = shape_as_tensor(images)
        w, h = shape[self.w_dim], shape[self.h_dim]
        limits = torch.stack((w, h, w, h)).to(boxes.dtype).to(boxes.device)
        boxes = torch.minimum(boxes.clamp(min=0.0), limits)
        scores = (pred[..., 4:5] * pred[..., 5:]).transpose(1, 2)  # (B, C, N)
        box_labels: Optional[Tensor] = None
        if self.agnostic:
            scores, best = scores.max(dim=1, keepdim=True)  # (B, 1, N)
            box_labels = best.squeeze(1)  # (B, N)
        scores = limit_candidates(scores, self.max_candidates)
        return self.nms(boxes, scores), boxes, scores, box_labels


class DeployDetector(nn.Module):
    """``images -> (num_dets, boxes, scores, labels)`` (see :class:`DetectionPostprocess`)."""

    def __init__(self, dense: nn.Module, post: DetectionPostprocess) -> None:
        super().__init__()
        self.dense = dense
        self.post = post

    def forward(self, images: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        return self.post(self.dense(images), images)


class DeployRawDetector(nn.Module):
    """``images -> (predictions[B, N, 5 + C],)``: a detector without NMS (``--no-nms``)."""

    def __init__(self, dense: DensePredictor) -> None:
        super().__init__()
        self.dense = dense

    def forward(self, images: Tensor) -> Tuple[Tensor]:
        return (self.dense(images),)


class DeployLocalizer(nn.Module):
    """``images -> (score[B], box[B, 4] xyxy input pixels, label[B], class_scores[B, C])``."""

    def __init__(self, model: nn.Module, preprocess: Preprocess) -> None:
        super().__init__()
        self.preprocess = preprocess
        self.model = model
        self.decoder = create_decoder(model)

    def forward(self, images: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        return self.decoder(self.model(self.preprocess(images)).float())


class DeploySegmenter(nn.Module):
    """``images -> mask[B, H, W] int64`` (and ``probs[B, C, H, W]`` with ``probs=True``)."""

    def __init__(self, model: nn.Module, preprocess: Preprocess, probs: bool = False) -> None:
        super().__init__()
        self.preprocess = preprocess
        self.model = model
        self.decoder = create_decoder(model)
        self.with_probs = probs

    def forward(self, images: Tensor) -> Tuple[Tensor, ...]:
        mask, probs = self.decoder(self.model(self.preprocess(images)).float())
        if self.with_probs:
            return mask, probs
        return (mask,)


OUTPUT_NAMES = {
    "detection": ("num_dets", "boxes", "scores", "labels"),
    "detection-raw": ("predictions",),
    "localization": ("score", "box", "label", "class_scores"),
    "segmentation": ("mask",),
    "segmentation-probs": ("mask", "probs"),
    "instance-segmentation": ("num_dets", "boxes", "scores", "labels", "masks"),
    "instance-segmentation-raw": ("predictions", "coefficients", "prototypes"),
}


def build_deploy_module(model: nn.Module, *, input_format: str = "uint8", half: bool = False,
                        nms: NMSSettings | None = NMSSettings(), nms_module: nn.Module | None = None,
                        probs: bool = False, fully_conv: bool = False) -> tuple[nn.Module, tuple[str, ...]]:
    """The deploy wrapper for ``model`` and the names of its outputs, in order.

    With ``fully_conv`` the family's spec turns ``model`` into a dense network
    (:meth:`FamilySpec.fully_convolutional`) and the result is a detector: the dense model and its
    window decoder, then the same detector post-processing and NMS as every detector.
    """
    spec = get_entry(model.model_name).spec
    task, decoder = spec.task, None
    if fully_conv:
        conversion = spec.fully_convolutional(model)
        if conversion is None:
            raise ValueError(f"{model.model_name} cannot be made fully convolutional")
        model, decoder, task = conversion.model, conversion.decoder, "detection"
    dtype = torch.float16 if half else torch.float32
    model = model.to(dtype).eval()
    preprocess = Preprocess(model.cfg.in_channels, input_format, dtype)
    if spec.instance_masks and not fully_conv:
        return _instance_segmenter(model, preprocess, nms, nms_module)
    if task == "detection" and nms is None:
        dense = DensePredictor(model, preprocess, decoder)
        module, names = DeployRawDetector(dense), OUTPUT_NAMES["detection-raw"]
    elif task == "detection":
        post = DetectionPostprocess(nms, preprocess.uint8, nms_module)
        module, names = DeployDetector(DensePredictor(model, preprocess, decoder), post), OUTPUT_NAMES["detection"]
    elif task == "localization":
        module, names = DeployLocalizer(model, preprocess), OUTPUT_NAMES["localization"]
    else:
        module = DeploySegmenter(model, preprocess, probs)
        names = OUTPUT_NAMES["segmentation-probs" if probs else "segmentation"]
    device = next(model.parameters()).device  # the wrapper's own buffers join the model's device
    return module.to(device).eval(), names


class InstanceMaskPostprocess(nn.Module):
    """``((predictions, coefficients, protos), images) -> (num_dets, boxes, scores, labels, masks)``.

    The detector's NMS (:meth:`DetectionPostprocess.select`), the K best per image chosen and
    padded exactly as :func:`gather_detections` does (:func:`detection_rows`, :func:`gather_rows`),
    then for the kept rows: their coefficients are gathered, assembled with the image's
    prototypes, upsampled, cropped and thresholded (:func:`edgedet.ops.masks.masks_from_logits`).
    """

    def __init__(self, detect: DetectionPostprocess, proto_stride: int) -> None:
        super().__init__()
        self.detect = detect
        self.proto_stride = int(proto_stride)

    def forward(self, dense: Tuple[Tensor, Tensor, Tensor], images: Tensor
                ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        pred, coefficients, protos = dense
        selected, boxes, scores, box_labels = self.detect.select(pred, images)
        rows, valid, num = detection_rows(selected, boxes.shape[0], self.detect.max_det)
        out_boxes, out_scores, out_labels = gather_rows(rows, valid, boxes, scores, box_labels)
        coef = coefficients[rows[..., 0], rows[..., 2]]  # (B, K, P)
        logits = assemble_mask_logits(coef, protos.to(coef.dtype))  # (B, K, h, w)
        # Padding rows have all-zero boxes, so cropping leaves them empty.
        masks = masks_from_logits(logits, out_boxes, self.proto_stride)  # (B, K, H, W) uint8
        return num, out_boxes, out_scores, out_labels, masks


class DeployInstanceSegmenter(DeployDetector):
    """``images -> (num_dets[B], boxes[B, K, 4], scores[B, K], labels[B, K], masks[B, K, H, W])``.

    The detector outputs of :class:`DeployDetector` plus ``masks``: uint8 0/1 at the network
    input's resolution (H, W of ``images``), row k the mask of detection k, all 0 on padding rows.
    How they are made (the ``masks`` entry of the exported metadata, see
    :func:`edgedet.models.yolov3seg.mask_contract`): the prototype-grid logits
    ``coefficients @ prototypes`` are upsampled bilinearly by ``proto_stride`` (half-pixel centres),
    pixels whose centre lies outside the detection's box are cleared, and the rest thresholded at
    logit > 0 (probability 0.5). Full input resolution was chosen over the prototype grid because
    it is the simplest contract for consumers (no upsampling rule to reproduce) and costs
    K x H x W bytes per image (0.16 MB at K = 10, 128 x 128).

    ``dense`` gives ``(predictions, coefficients, protos)`` (traced for TorchScript), ``post`` is
    :class:`InstanceMaskPostprocess` (scripted), as for every detector.
    """

    def forward(self, images: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:  # type: ignore[override]
        return self.post(self.dense(images), images)


class DeployRawInstanceSegmenter(nn.Module):
    """``images -> (predictions[B, N, 5 + C], coefficients[B, N, P], prototypes[B, P, h, w])``:
    an instance segmenter without NMS (``--no-nms``). ``predictions`` is the detectors' raw
    table; row n of ``coefficients`` belongs to its row n; a consumer assembles a mask as
    :class:`DeployInstanceSegmenter` does (``proto_stride`` is in the metadata's ``config``; the
    graph has no ``masks`` output, so its metadata has no ``masks`` entry)."""

    def __init__(self, dense: DensePredictor) -> None:
        super().__init__()
        self.dense = dense

    def forward(self, images: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        pred, coefficients, protos = self.dense(images)
        return pred, coefficients, protos


def _instance_segmenter(model: nn.Module, preprocess: Preprocess, nms: NMSSettings | None,
                        nms_module: nn.Module | None) -> tuple[nn.Module, tuple[str, ...]]:
    dense = DensePredictor(model, preprocess)
    if nms is None:
        module, names = DeployRawInstanceSegmenter(dense), OUTPUT_NAMES["instance-segmentation-raw"]
    else:
        post = InstanceMaskPostprocess(DetectionPostprocess(nms, preprocess.uint8, nms_module), model.cfg.proto_stride)
        module, names = DeployInstanceSegmenter(dense, post), OUTPUT_NAMES["instance-segmentation"]
    device = next(model.parameters()).device
    return module.to(device).eval(), names
