"""YOLOv3 (Darknet-53 backbone, three-scale head) and YOLOv3-tiny, laid out as darknet's cfgs.

Redmon & Farhadi, "YOLOv3: An Incremental Improvement" (2018), arXiv:1804.02767; the layer lists
follow darknet's ``yolov3.cfg`` and ``yolov3-tiny.cfg`` exactly, so the official ``.weights`` load
one-to-one (see :mod:`edgedet.models.darknet`). ``width`` and ``depth`` multipliers give small
variants for CPUs; only ``width = depth = 1`` matches the darknet files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from edgedet.errors import ModelError
from edgedet.models.darknet import COCO_CLASSES
from edgedet.models.layers import ConvBNAct, check_common_config
from edgedet.models.registry import register_model, resolve_config
from edgedet.models.spec import FamilySpec
from edgedet.ops.yolo import decode_yolo

__all__ = ["YoloConfig", "Darknet53", "YOLOv3", "YOLOv3Tiny", "YoloDecoder", "YoloSpec", "build_yolo",
           "yolo_targets", "YOLO_VARIANTS"]

ARCHS = ("darknet53", "tiny")
_SCALES = {"darknet53": 3, "tiny": 2}
_STRIDES = {"darknet53": (32, 16, 8), "tiny": (32, 16)}

# Darknet's COCO anchors, (w, h) in pixels of a 416x416 input, from yolov3.cfg / yolov3-tiny.cfg.
YOLOV3_ANCHORS = ((10, 13), (16, 30), (33, 23), (30, 61), (62, 45), (59, 119),
                  (116, 90), (156, 198), (373, 326))
YOLOV3_TINY_ANCHORS = ((10, 14), (23, 27), (37, 58), (81, 82), (135, 169), (344, 319))

# Darknet's BatchNorm divides by sqrt(var) + 1e-6; torch divides by sqrt(var + eps). eps = 1e-6
# (also what OpenCV's darknet importer uses) differs from darknet by a relative
# 1e-6 * |1/sqrt(var) - 1/(2 var)|: below 2e-6 for var >= 0.1, 4e-5 at var = 0.01.
DARKNET_BN_EPS = 1e-6


@dataclass(frozen=True)
class YoloConfig:
    """A YOLOv3-family variant.

    Attributes:
        arch: ``darknet53`` (YOLOv3) or ``tiny`` (YOLOv3-tiny).
        anchors: ``(w, h)`` pairs in input pixels, darknet's ``anchors=`` list.
        masks: anchor indices per output scale, stride 32 first (darknet's ``mask=`` per yolo
            layer, in cfg order).
        width: channel multiplier; channels round to a multiple of 8, at least 8.
        depth: multiplier of Darknet-53's residual repeats (1, 2, 8, 8, 4), at least 1 each.
        leaky: LeakyReLU negative slope.
        bn_eps: BatchNorm epsilon (see ``DARKNET_BN_EPS``).
    """

    arch: str = "darknet53"
    in_channels: int = 3
    num_classes: int = 80
    input_size: tuple[int, int] = (416, 416)
    class_names: tuple[str, ...] = ()
    anchors: tuple[tuple[float, float], ...] = YOLOV3_ANCHORS
    masks: tuple[tuple[int, ...], ...] = ((6, 7, 8), (3, 4, 5), (0, 1, 2))
    width: float = 1.0
    depth: float = 1.0
    leaky: float = 0.1
    bn_eps: float = DARKNET_BN_EPS

    def __post_init__(self) -> None:
        # Overrides arrive as nested lists from JSON and the CLI; tuples keep configs comparable.
        try:
            anchors = tuple(tuple(float(v) for v in pair) for pair in self.anchors)
            masks = tuple(tuple(int(i) for i in mask) for mask in self.masks)
        except (TypeError, ValueError):
            raise ModelError(f"anchors must be (w, h) pairs and masks lists of anchor indices, "
                             f"got anchors={self.anchors!r}, masks={self.masks!r}") from None
        object.__setattr__(self, "anchors", anchors)
        object.__setattr__(self, "masks", masks)

    @property
    def strides(self) -> tuple[int, ...]:
        """Input pixels per cell of each output scale, in output order."""
        return _STRIDES[self.arch]

    def validate(self) -> None:
        check_common_config(self, ModelError)
        if self.arch not in ARCHS:
            raise ModelError(f"arch must be one of {', '.join(ARCHS)}, got {self.arch!r}")
        if any(size % 32 for size in self.input_size):
            raise ModelError(f"input_size {tuple(self.input_size)} must be a multiple of 32")
        if not self.anchors or any(len(a) != 2 or min(a) <= 0 for a in self.anchors):
            raise ModelError(f"anchors must be (w, h) pairs > 0, got {self.anchors}")
        scales = _SCALES[self.arch]
        if len(self.masks) != scales:
            raise ModelError(f"{self.arch} has {scales} output scales but {len(self.masks)} masks were given")
        if len({len(m) for m in self.masks}) != 1 or not self.masks[0]:
            raise ModelError(f"every mask must list the same number (>= 1) of anchors, got {self.masks}")
        used = [i for m in self.masks for i in m]
        if any(not 0 <= i < len(self.anchors) for i in used):
            raise ModelError(f"masks {self.masks} index outside the {len(self.anchors)} anchors")
        if self.width <= 0 or self.depth <= 0:
            raise ModelError(f"width and depth must be > 0, got {self.width}, {self.depth}")
        if self.leaky < 0 or self.bn_eps <= 0:
            raise ModelError(f"leaky must be >= 0 and bn_eps > 0, got {self.leaky}, {self.bn_eps}")

    def channels(self, nominal: int) -> int:
        """``nominal`` (the darknet cfg's filter count) scaled by ``width``: a multiple of 8, >= 8."""
        return max(8, int(round(nominal * self.width / 8)) * 8)

    def repeats(self, nominal: int) -> int:
        """A residual repeat count scaled by ``depth``, at least 1."""
        return max(1, int(round(nominal * self.depth)))


def _conv(cfg: YoloConfig, cin: int, cout: int, kernel: int, stride: int = 1) -> ConvBNAct:
    return ConvBNAct(cin, cout, kernel, stride, leaky=cfg.leaky, bn_eps=cfg.bn_eps)


class Residual(nn.Module):
    """Darknet-53's residual unit: 1x1 halving, 3x3 restoring, then ``[shortcut] from=-3``."""

    def __init__(self, cfg: YoloConfig, channels: int, hidden: int) -> None:
        super().__init__()
        self.conv1 = _conv(cfg, channels, hidden, 1)
        self.conv2 = _conv(cfg, hidden, channels, 3)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(self.conv1(x))  # linear shortcut, as darknet's activation=linear


class Darknet53(nn.Module):
    """``forward(x[B, C, H, W]) -> (c3, c4, c5)``: features at strides 8, 16 and 32.

    A 3x3 stem, then five stages, each a stride-2 3x3 conv followed by residual units; c3, c4 and
    c5 are the outputs of stages 3, 4 and 5 (darknet layers 36, 61 and 74).
    """

    def __init__(self, cfg: YoloConfig) -> None:
        super().__init__()
        ch = cfg.channels
        self.stem = _conv(cfg, cfg.in_channels, ch(32), 3)
        stages = []
        cin = ch(32)
        for nominal, repeats in zip((64, 128, 256, 512, 1024), (1, 2, 8, 8, 4)):
            cout = ch(nominal)
            units = [Residual(cfg, cout, ch(nominal // 2)) for _ in range(cfg.repeats(repeats))]
            stages.append(nn.Sequential(_conv(cfg, cin, cout, 3, 2), *units))
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.out_channels = (ch(256), ch(512), ch(1024))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = self.stem(x)  # (B, 32, H, W)
        x = self.stages[0](x)  # (B, 64, H/2, W/2)
        x = self.stages[1](x)  # (B, 128, H/4, W/4)
        c3 = self.stages[2](x)  # (B, 256, H/8, W/8)
        c4 = self.stages[3](c3)  # (B, 512, H/16, W/16)
        c5 = self.stages[4](c4)  # (B, 1024, H/32, W/32)
        return c3, c4, c5


def _detection_block(cfg: YoloConfig, cin: int, nominal: int) -> nn.Sequential:
    # Five convs alternating 1x1 (nominal) and 3x3 (2 * nominal), as each yolov3.cfg scale starts.
    mid, wide = cfg.channels(nominal), cfg.channels(2 * nominal)
    return nn.Sequential(_conv(cfg, cin, mid, 1), _conv(cfg, mid, wide, 3), _conv(cfg, wide, mid, 1),
                         _conv(cfg, mid, wide, 3), _conv(cfg, wide, mid, 1))


def _head(cfg: YoloConfig, cin: int, nominal: int, outputs: int) -> nn.Sequential:
    # A 3x3 conv-BN-leaky, then the linear 1x1 prediction conv with a bias (no BatchNorm).
    hidden = cfg.channels(nominal)
    pred = nn.Conv2d(hidden, outputs, 1)
    _init_prediction_bias(pred, len(cfg.masks[0]))
    return nn.Sequential(_conv(cfg, cin, hidden, 3), pred)


def _init_prediction_bias(pred: nn.Conv2d, num_anchors: int) -> None:
    # Start objectness and class probabilities near 0.01 instead of 0.5: almost every anchor is
    # background, and starting at 0.5 floods the first training steps with false-positive loss.
    with torch.no_grad():
        pred.bias.view(num_anchors, -1)[:, 4:].fill_(-4.6)


class _YoloBase(nn.Module):
    """What both variants share: config, anchors per output scale, strides, darknet conv order."""

    def __init__(self, cfg: YoloConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.strides: tuple[int, ...] = cfg.strides
        anchors = [[cfg.anchors[i] for i in mask] for mask in cfg.masks]
        self.register_buffer("anchors", torch.tensor(anchors, dtype=torch.float32))  # (S, A, 2) pixels
        self.num_outputs = len(cfg.masks[0]) * (5 + cfg.num_classes)

    def darknet_convs(self) -> list[nn.Module]:
        """Every convolution in darknet cfg order: ``ConvBNAct`` blocks and the bias-only
        prediction ``nn.Conv2d`` layers. The ``.weights`` reader and writer walk this list."""
        raise NotImplementedError


class YOLOv3(_YoloBase):
    """``forward(x[B, C, H, W]) -> [p32, p16, p8]``, ``p_s: [B, A * (5 + C), H/s, W/s]`` raw.

    H and W must be multiples of 32. Each scale runs a five-conv block, then a 3x3 conv and the
    prediction conv; the block's output also feeds the next scale through a 1x1 conv, nearest x2
    upsampling and a concatenation ``[upsampled, backbone skip]`` (darknet's ``route -1, 61``).
    """

    def __init__(self, cfg: YoloConfig) -> None:
        super().__init__(cfg)
        ch = cfg.channels
        self.backbone = Darknet53(cfg)
        c3, c4, c5 = self.backbone.out_channels
        self.block32 = _detection_block(cfg, c5, 512)
        self.head32 = _head(cfg, ch(512), 1024, self.num_outputs)
        self.lateral32 = _conv(cfg, ch(512), ch(256), 1)
        self.block16 = _detection_block(cfg, ch(256) + c4, 256)
        self.head16 = _head(cfg, ch(256), 512, self.num_outputs)
        self.lateral16 = _conv(cfg, ch(256), ch(128), 1)
        self.block8 = _detection_block(cfg, ch(128) + c3, 128)
        self.head8 = _head(cfg, ch(128), 256, self.num_outputs)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, x: Tensor) -> list[Tensor]:
        c3, c4, c5 = self.backbone(x)
        f32 = self.block32(c5)  # (B, 512, H/32, W/32)
        f16 = self.block16(torch.cat((self.upsample(self.lateral32(f32)), c4), 1))  # (B, 256, H/16, W/16)
        f8 = self.block8(torch.cat((self.upsample(self.lateral16(f16)), c3), 1))  # (B, 128, H/8, W/8)
        return [self.head32(f32), self.head16(f16), self.head8(f8)]  # (B, A * (5 + C), H/s, W/s)

    def darknet_convs(self) -> list[nn.Module]:
        convs: list[nn.Module] = [self.backbone.stem]
        for stage in self.backbone.stages:
            convs.append(stage[0])
            for unit in stage[1:]:
                convs += [unit.conv1, unit.conv2]
        for block, head, lateral in ((self.block32, self.head32, self.lateral32),
                                     (self.block16, self.head16, self.lateral16),
                                     (self.block8, self.head8, None)):
            convs += [*block, *head]
            if lateral is not None:
                convs.append(lateral)
        return convs


class YOLOv3Tiny(_YoloBase):
    """``forward(x[B, C, H, W]) -> [p32, p16]``, ``p_s: [B, A * (5 + C), H/s, W/s]`` raw.

    H and W must be multiples of 32. Seven 3x3 convs with max-pools in between (darknet layers
    0-12), a 1x1 reduction feeding the stride-32 head and, through a 1x1 conv and x2 upsampling
    concatenated with layer 8's output, the stride-16 head.
    """

    def __init__(self, cfg: YoloConfig) -> None:
        super().__init__(cfg)
        ch = cfg.channels
        layers: list[nn.Module] = []
        cin = cfg.in_channels
        for nominal in (16, 32, 64, 128):
            # ceil_mode: darknet's maxpool covers a trailing odd row/column instead of dropping it.
            layers += [_conv(cfg, cin, ch(nominal), 3), nn.MaxPool2d(2, 2, ceil_mode=True)]
            cin = ch(nominal)
        layers.append(_conv(cfg, cin, ch(256), 3))
        self.features16 = nn.Sequential(*layers)  # darknet layers 0-8
        self.features32 = nn.Sequential(  # darknet layers 9-12
            nn.MaxPool2d(2, 2, ceil_mode=True),
            _conv(cfg, ch(256), ch(512), 3),
            # darknet's size=2 stride=1 maxpool pads one row/column at the right/bottom and keeps
            # the size; repeating the edge and pooling gives the same maxima and exports cleanly.
            nn.ReplicationPad2d((0, 1, 0, 1)),
            nn.MaxPool2d(2, 1),
            _conv(cfg, ch(512), ch(1024), 3),
        )
        self.reduce = _conv(cfg, ch(1024), ch(256), 1)
        self.head32 = _head(cfg, ch(256), 512, self.num_outputs)
        self.lateral32 = _conv(cfg, ch(256), ch(128), 1)
        self.head16 = _head(cfg, ch(128) + ch(256), 256, self.num_outputs)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, x: Tensor) -> list[Tensor]:
        c4 = self.features16(x)  # (B, 256, H/16, W/16)
        f32 = self.reduce(self.features32(c4))  # (B, 256, H/32, W/32)
        f16 = torch.cat((self.upsample(self.lateral32(f32)), c4), 1)  # (B, 384, H/16, W/16)
        return [self.head32(f32), self.head16(f16)]  # (B, A * (5 + C), H/s, W/s)

    def darknet_convs(self) -> list[nn.Module]:
        convs = [m for m in (*self.features16, *self.features32) if isinstance(m, ConvBNAct)]
        return convs + [self.reduce, *self.head32, self.lateral32, *self.head16]


class YoloDecoder(nn.Module):
    """Raw YOLO heads -> ``Tensor[B, N, 5 + C]`` (see :func:`edgedet.ops.yolo.decode_yolo`)."""

    def __init__(self, model: _YoloBase) -> None:
        super().__init__()
        self.register_buffer("anchors", model.anchors.detach().clone())  # (S, A, 2) pixels
        self.strides: tuple[int, ...] = tuple(model.strides)

    def forward(self, outputs: list[Tensor]) -> Tensor:
        return decode_yolo(outputs, self.anchors, self.strides)


def build_yolo(cfg: YoloConfig) -> YOLOv3 | YOLOv3Tiny:
    """The network for ``cfg.arch``."""
    return YOLOv3(cfg) if cfg.arch == "darknet53" else YOLOv3Tiny(cfg)


YOLO_VARIANTS = {
    "yolov3": YoloConfig(arch="darknet53", class_names=COCO_CLASSES),
    "yolov3-tiny": YoloConfig(arch="tiny", class_names=COCO_CLASSES, anchors=YOLOV3_TINY_ANCHORS,
                              masks=((3, 4, 5), (0, 1, 2))),
}

def yolo_targets(samples: Sequence) -> Tensor:
    """Training targets ``Tensor[M, 6]`` ``(image index, label, x1, y1, x2, y2)`` in input pixels, one
    row per object of the batch."""
    rows = [torch.cat((torch.full((len(s.boxes), 1), float(i)), torch.from_numpy(s.labels)[:, None].float(),
                       torch.from_numpy(s.boxes)), dim=1) for i, s in enumerate(samples)]
    return torch.cat(rows) if rows else torch.zeros(0, 6)  # (M, 6)


# Boxes sampled from the training set to cluster anchors on.
ANCHOR_SAMPLES = 2000


class YoloSpec(FamilySpec):
    """YOLOv3 and YOLOv3-tiny on ``clutter`` (or COCO with darknet's weights); ranked by
    ``0.1 mAP@0.5 + 0.9 mAP@0.5:0.95``. Trained from scratch, anchors are clustered on the
    training boxes."""

    family = "yolov3"
    task = "detection"
    dataset = "clutter"
    summary = "YOLOv3 detector on MNIST clutter"
    quickstart_images = 200
    lr = 2e-3
    darknet = True

    def decoder(self, model: nn.Module) -> nn.Module:
        return YoloDecoder(model)

    def size_multiple(self, cfg: YoloConfig) -> int:
        return max(cfg.strides)

    def target_encoder(self, cfg: YoloConfig):
        return yolo_targets

    def loss(self, model: nn.Module, *, box_loss: str = "xywh", **_) -> nn.Module:
        from edgedet.train.losses import YoloLoss

        return YoloLoss(model.anchors, model.strides, model.cfg.num_classes, box_loss=box_loss)

    def evaluator(self, model: nn.Module):
        from edgedet.train.evaluators import DetectionEvaluator

        return DetectionEvaluator(model)

    def fitness(self, metrics: dict[str, float]) -> float:
        return 0.1 * metrics["map50"] + 0.9 * metrics["map50_95"]

    def metadata(self, model: nn.Module) -> dict[str, Any]:
        return {"strides": list(model.strides), "anchors": model.anchors.tolist()}

    def fit_to_data(self, name: str, overrides: dict[str, Any], train_set, *, seed: int,
                    log: Callable[[str], None]) -> dict[str, Any]:
        if "anchors" in overrides:  # given by the user
            return overrides
        from edgedet.train.anchors import kmeans_anchors

        cfg = resolve_config(name, **overrides)
        n = min(len(train_set), ANCHOR_SAMPLES)
        wh = []
        for i in np.linspace(0, len(train_set) - 1, n).astype(int):
            b = train_set.fitted(int(i)).boxes
            wh.append(b[:, 2:] - b[:, :2])
        wh = np.concatenate(wh) if wh else np.zeros((0, 2))
        if len(wh) < len(cfg.anchors):
            return overrides
        anchors = tuple((round(float(w), 1), round(float(h), 1)) for w, h in kmeans_anchors(wh, len(cfg.anchors), seed))
        log(f"anchors fitted to the training boxes: {' '.join(f'{w:g}x{h:g}' for w, h in anchors)}")
        return {**overrides, "anchors": anchors}


for _name, _cfg in YOLO_VARIANTS.items():
    register_model(_name, spec=YoloSpec(), config=_cfg)(build_yolo)
