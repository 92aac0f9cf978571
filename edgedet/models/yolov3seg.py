"""YOLOv3-tiny with a YOLACT mask branch: ``yolov3-tiny-seg``, an instance segmenter.

The detector is :class:`edgedet.models.yolov3.YOLOv3Tiny` unchanged (same layer names, so a
``yolov3-tiny`` checkpoint of the same width initialises it through ``--weights``). Two things are
added, following YOLACT (Bolya et al., "YOLACT: Real-time Instance Segmentation", 2019,
arXiv:1904.02689) and the prototype/coefficient design the Ultralytics segmentation models share:

- per anchor, P mask coefficients: a linear 1x1 conv beside each prediction conv, on the same
  3x3 head feature (so the box/class channels keep yolov3-tiny's layout);
- a prototype network giving P prototype masks per image at ``proto_stride`` (2 by default): a
  small top-down path from the stride-16 head input through the backbone's stride-8 and stride-4
  features (nearest x2 upsampling, concatenation, 3x3 conv-BN-leaky), then a linear 1x1 conv.

Decisions where the papers leave a choice:

- Prototypes at stride 2 (YOLACT and Ultralytics use stride 4). Digits at 128 px are strokes one or
  two pixels wide; stride 4 could not draw them. The backbone's stride-8 and stride-4 features are
  concatenated on the way up (U-Net style skips) for sharp edges; they cost little at this size.
- Coefficients are linear (no tanh, as Ultralytics): the mask loss bounds them through the sigmoid.
- The task stays ``detection`` (``FamilySpec.instance_masks`` marks the mask branch): every detector
  path (NMS settings, parity inputs, benchmarks, the runtime's boxes) applies unchanged, and the
  graph adds one output, ``masks`` (see :class:`edgedet.export.deploy.DeployInstanceSegmenter`).
- Only the tiny architecture; darknet ``.weights`` have no mask branch, so the variant does not
  read them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from edgedet.errors import ModelError
from edgedet.models.registry import register_model
from edgedet.models.yolov3 import (
    YOLOV3_TINY_ANCHORS,
    YoloConfig,
    YoloSpec,
    YOLOv3Tiny,
    _conv,
    yolo_targets,
)
from edgedet.ops.masks import coefficient_table, downsample_masks
from edgedet.ops.yolo import decode_yolo

__all__ = ["YoloSegConfig", "YOLOv3TinySeg", "InstanceSegDecoder", "YoloSegSpec", "InstanceTargets",
           "MASK_THRESHOLD"]

# Probability above which a pixel belongs to an instance (logit > 0), in the graph and metadata.
MASK_THRESHOLD = 0.5
PROTO_STRIDES = (2, 4)
# The default classes are clutter's digits (the data the family is built for; training on other
# data replaces them, as for every family).
DIGIT_NAMES = tuple(str(d) for d in range(10))


@dataclass(frozen=True)
class YoloSegConfig(YoloConfig):
    """A YOLOv3-tiny-seg variant: :class:`YoloConfig` plus the mask branch.

    Attributes:
        num_protos: P, prototype masks per image (= coefficients per anchor).
        proto_stride: input pixels per prototype pixel, 2 or 4.
        proto_channels: nominal width of the prototype network (scaled by ``width``). 64: at 128
            the stride-2 branch cost three times the detector (0.16 against 0.041 GFLOPs for a
            128x128 image at width 0.25); 64 halves the whole model's cost (0.076), which bought
            the CPU sample twice the training steps.
    """

    arch: str = "tiny"
    num_classes: int = 10
    class_names: tuple[str, ...] = DIGIT_NAMES
    anchors: tuple[tuple[float, float], ...] = YOLOV3_TINY_ANCHORS
    masks: tuple[tuple[int, ...], ...] = ((3, 4, 5), (0, 1, 2))
    num_protos: int = 16
    proto_stride: int = 2
    proto_channels: int = 64

    def validate(self) -> None:
        super().validate()
        if self.arch != "tiny":
            raise ModelError(f"yolov3-tiny-seg has the tiny architecture only, got arch={self.arch!r}")
        if self.num_protos < 1 or self.proto_channels < 1:
            raise ModelError(f"num_protos and proto_channels must be >= 1, got {self.num_protos}, "
                             f"{self.proto_channels}")
        if self.proto_stride not in PROTO_STRIDES:
            raise ModelError(f"proto_stride must be one of {PROTO_STRIDES}, got {self.proto_stride}")


class ProtoNet(nn.Module):
    """``(f16, x8, x4) -> protos[B, P, H / proto_stride, W / proto_stride]`` (see the module)."""

    def __init__(self, cfg: YoloSegConfig, c16: int, c8: int, c4: int) -> None:
        super().__init__()
        m = cfg.channels(cfg.proto_channels)
        self.reduce16 = _conv(cfg, c16, m, 1)
        self.fuse8 = _conv(cfg, m + c8, m, 3)
        self.fuse4 = _conv(cfg, m + c4, m, 3)
        self.refine = _conv(cfg, m, m, 3) if cfg.proto_stride == 2 else nn.Identity()
        self.upsample2 = nn.Upsample(scale_factor=2, mode="nearest") if cfg.proto_stride == 2 else nn.Identity()
        self.out = nn.Conv2d(m, cfg.num_protos, 1)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, f16: Tensor, x8: Tensor, x4: Tensor) -> Tensor:
        p = self.reduce16(f16)  # (B, m, H/16, W/16)
        p = self.fuse8(torch.cat((self.upsample(p), x8), 1))  # (B, m, H/8, W/8)
        p = self.fuse4(torch.cat((self.upsample(p), x4), 1))  # (B, m, H/4, W/4)
        p = self.refine(self.upsample2(p))  # (B, m, H/s, W/s)
        return self.out(p)  # (B, P, H/s, W/s)


class YOLOv3TinySeg(YOLOv3Tiny):
    """``forward(x[B, C, H, W]) -> [p32, p16, k32, k16, protos]``, all raw.

    ``p_s: [B, A * (5 + C), H/s, W/s]`` are yolov3-tiny's heads, ``k_s: [B, A * P, H/s, W/s]`` the
    mask coefficients of the same anchors, ``protos: [B, P, H/ps, W/ps]`` the prototypes at
    ``proto_stride`` ps. H and W must be multiples of 32.
    """

    def __init__(self, cfg: YoloSegConfig) -> None:
        super().__init__(cfg)
        ch = cfg.channels
        a = len(cfg.masks[0])
        self.coef32 = nn.Conv2d(ch(512), a * cfg.num_protos, 1)  # beside head32's prediction conv
        self.coef16 = nn.Conv2d(ch(256), a * cfg.num_protos, 1)
        self.proto = ProtoNet(cfg, ch(128) + ch(256), ch(128), ch(64))

    def forward(self, x: Tensor) -> list[Tensor]:
        skips = []
        for i, layer in enumerate(self.features16):
            x = layer(x)
            if i in (4, 6):  # the stride-4 and stride-8 conv outputs
                skips.append(x)
        x4, x8 = skips  # (B, 64, H/4, W/4), (B, 128, H/8, W/8)
        c4 = x  # (B, 256, H/16, W/16)
        f32 = self.reduce(self.features32(c4))  # (B, 256, H/32, W/32)
        f16 = torch.cat((self.upsample(self.lateral32(f32)), c4), 1)  # (B, 384, H/16, W/16)
        h32, h16 = self.head32[0](f32), self.head16[0](f16)  # 3x3 head features
        protos = self.proto(f16, x8, x4)
        return [self.head32[1](h32), self.head16[1](h16), self.coef32(h32), self.coef16(h16), protos]


class InstanceSegDecoder(nn.Module):
    """Raw heads -> ``(predictions[B, N, 5 + C], coefficients[B, N, P], protos[B, P, h, w])``.

    ``predictions`` is :func:`edgedet.ops.yolo.decode_yolo` of the detection heads; row n of
    ``coefficients`` belongs to row n of ``predictions``.
    """

    def __init__(self, model: YOLOv3TinySeg) -> None:
        super().__init__()
        self.register_buffer("anchors", model.anchors.detach().clone())  # (S, A, 2) pixels
        self.strides: tuple[int, ...] = tuple(model.strides)
        self.proto_stride = int(model.cfg.proto_stride)

    def forward(self, outputs: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        s = len(self.strides)
        pred = decode_yolo(outputs[:s], self.anchors, self.strides)
        coefficients = coefficient_table(outputs[s:2 * s], self.anchors.shape[1])
        return pred, coefficients, outputs[2 * s]


class InstanceTargets:
    """Target encoder: ``Tensor[M, 6 + h * w]``, YOLO's ``(image, label, x1, y1, x2, y2)`` rows
    (:func:`edgedet.models.yolov3.yolo_targets`) followed by each object's mask on the prototype
    grid, flattened: the fraction of each ``proto_stride`` x ``proto_stride`` cell it covers.

    One tensor keeps the loop's ``targets.to(device)`` working; the masks travel at prototype
    resolution, where the loss compares them.
    """

    def __init__(self, proto_stride: int) -> None:
        self.proto_stride = proto_stride

    def __call__(self, samples: Sequence) -> Tensor:
        boxes = yolo_targets(samples)  # (M, 6)
        masks = []
        for s in samples:
            if s.masks is None:
                raise ValueError("yolov3-tiny-seg trains on instance masks; the samples carry none")
            masks.append(downsample_masks(torch.from_numpy(s.masks), self.proto_stride).flatten(1))
        h, w = samples[0].image.shape[:2] if samples else (0, 0)
        cells = (h // self.proto_stride) * (w // self.proto_stride)
        masks_t = torch.cat(masks) if masks else torch.zeros(0, cells)
        return torch.cat((boxes, masks_t.reshape(len(boxes), cells)), dim=1)


class YoloSegSpec(YoloSpec):
    """YOLOv3-tiny-seg on ``clutter`` instance masks. Ranked mostly by mask mAP:
    ``0.9 (0.1 mask mAP@0.5 + 0.9 mask mAP@0.5:0.95) + 0.1 (0.1 mAP@0.5 + 0.9 mAP@0.5:0.95)``
    (box mAP second: a mask is only as good as the detection it belongs to)."""

    family = "yolov3-seg"
    task = "detection"
    darknet = False
    instance_masks = True
    summary = "YOLOv3-tiny instance segmenter (YOLACT prototype masks) on MNIST clutter"
    quickstart_images = 100

    def decoder(self, model: nn.Module) -> nn.Module:
        return InstanceSegDecoder(model)

    def target_encoder(self, cfg: YoloSegConfig):
        return InstanceTargets(cfg.proto_stride)

    def loss(self, model: nn.Module, *, box_loss: str = "xywh", **_) -> nn.Module:
        from edgedet.train.losses import InstanceSegLoss

        return InstanceSegLoss(model.anchors, model.strides, model.cfg.num_classes, model.cfg.proto_stride,
                               box_loss=box_loss)

    def evaluator(self, model: nn.Module):
        from edgedet.train.evaluators import InstanceSegmentationEvaluator

        return InstanceSegmentationEvaluator(model)

    def fitness(self, metrics: dict[str, float]) -> float:
        mask = 0.1 * metrics["mask_map50"] + 0.9 * metrics["mask_map50_95"]
        return 0.9 * mask + 0.1 * super().fitness(metrics)

    def metadata(self, model: nn.Module) -> dict[str, Any]:
        return {**super().metadata(model), "masks": mask_contract(model.cfg)}


def mask_contract(cfg: YoloSegConfig) -> dict[str, Any]:
    """The ``masks`` entry of the exported metadata: how the graph's ``masks`` output was made."""
    return {
        "output": "masks",
        "dtype": "uint8",
        "shape": "[B, K, H, W]",
        "resolution": "input",
        "values": "0/1, row k belongs to detection k (padding rows all 0)",
        "prototypes": int(cfg.num_protos),
        "proto_stride": int(cfg.proto_stride),
        "upsample": f"bilinear x{int(cfg.proto_stride)} of the prototype-grid logits, half-pixel centres "
                    f"(align_corners=False), before the threshold",
        "crop": "pixels whose centre (x + 0.5, y + 0.5) lies inside the detection's box",
        "threshold": MASK_THRESHOLD,
    }


def build_yolo_seg(cfg: YoloSegConfig) -> YOLOv3TinySeg:
    """The network for ``cfg``."""
    return YOLOv3TinySeg(cfg)


register_model("yolov3-tiny-seg", spec=YoloSegSpec(), config=YoloSegConfig())(build_yolo_seg)
