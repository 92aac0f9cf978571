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
from edgedet.ops.nms import gather_detections, limit_candidates, nms_indices, selection_order

__all__ = ["NMSSettings", "Preprocess", "TorchNMS", "DensePredictor", "DetectionPostprocess", "DeployDetector", "DeployRawDetector", "DeployLocalizer", "DeploySegmenter",
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

    def __init__(self, model: nn.Module, preprocess: Preprocess) -> None:
        super().__init__()
        self.preprocess = preprocess
        self.model = model
        self.decoder = create_decoder(model)

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
        selected = self.nms(boxes, scores)
        return gather_detections(selected, boxes, scores, self.max_det, box_labels)


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
}


def build_deploy_module(model: nn.Module, *, input_format: str = "uint8", half: bool = False,
                        nms: NMSSettings | None = NMSSettings(), nms_module: nn.Module | None = None,
                        probs: bool = False) -> tuple[nn.Module, tuple[str, ...]]:
    """The deploy wrapper for ``model`` and the names of its outputs, in order."""
    task = get_entry(model.model_name).task
    dtype = torch.float16 if half else torch.float32
    model = model.to(dtype).eval()
    preprocess = Preprocess(model.cfg.in_channels, input_format, dtype)
    if task == "detection" and nms is None:
        module, names = DeployRawDetector(DensePredictor(model, preprocess)), OUTPUT_NAMES["detection-raw"]
    elif task == "detection":
        post = DetectionPostprocess(nms, preprocess.uint8, nms_module)
        module, names = DeployDetector(DensePredictor(model, preprocess), post), OUTPUT_NAMES["detection"]
    elif task == "localization":
        module, names = DeployLocalizer(model, preprocess), OUTPUT_NAMES["localization"]
    else:
        module = DeploySegmenter(model, preprocess, probs)
        names = OUTPUT_NAMES["segmentation-probs" if probs else "segmentation"]
    device = next(model.parameters()).device  # the wrapper's own buffers join the model's device
    return module.to(device).eval(), names
