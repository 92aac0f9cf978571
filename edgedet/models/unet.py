"""U-Net semantic segmenter (the course seed's SemanticSegmentor).

Encoder stages of two conv-BN-LeakyReLU blocks and a 2x2 max-pool, a bottleneck, and decoder
stages that upsample with a stride-2 transposed convolution, concatenate the matching encoder
features (skip connection) and apply two more blocks. Class 0 is background (see edgedet.data).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from edgedet.errors import EdgedetError, ModelError
from edgedet.models.layers import ConvBNAct, check_common_config
from edgedet.models.registry import register_model
from edgedet.models.spec import FamilySpec

__all__ = ["UNetConfig", "UNet", "SegmentationDecoder", "UNetSpec", "semantic_targets"]


@dataclass(frozen=True)
class UNetConfig:
    in_channels: int = 3
    num_classes: int = 11  # background + digits 0-9
    input_size: tuple[int, int] = (128, 128)
    base_width: int = 16  # channels of the first stage, doubled at every stage
    depth: int = 3  # number of down/up-sampling stages
    leaky: float = 0.1
    class_names: tuple[str, ...] = ("background",) + tuple(str(i) for i in range(10))

    def validate(self) -> None:
        check_common_config(self, ModelError)
        if self.num_classes < 2:
            raise ModelError("unet needs num_classes >= 2 (background + at least one class)")
        if self.base_width < 1 or self.depth < 1:
            raise ModelError(f"base_width and depth must be >= 1, got {self.base_width}, {self.depth}")
        stride = 2 ** self.depth
        if self.input_size[0] % stride or self.input_size[1] % stride:
            raise ModelError(f"input_size {self.input_size} must be a multiple of 2**depth = {stride}")


def _double_conv(cin: int, cout: int, leaky: float) -> nn.Sequential:
    return nn.Sequential(ConvBNAct(cin, cout, 3, leaky=leaky), ConvBNAct(cout, cout, 3, leaky=leaky))


class UNet(nn.Module):
    """``forward(x[B, C, H, W]) -> Tensor[B, num_classes, H, W]`` per-pixel class logits.

    H and W must be multiples of ``2 ** depth``.
    """

    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        widths = [cfg.base_width * 2 ** i for i in range(cfg.depth + 1)]
        self.down = nn.ModuleList()
        ch = cfg.in_channels
        for width in widths[:-1]:
            self.down.append(_double_conv(ch, width, cfg.leaky))
            ch = width
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = _double_conv(ch, widths[-1], cfg.leaky)
        self.upsample = nn.ModuleList()
        self.up = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.upsample.append(nn.ConvTranspose2d(width * 2, width, 2, stride=2))
            self.up.append(_double_conv(width * 2, width, cfg.leaky))
        self.classifier = nn.Conv2d(widths[0], cfg.num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)  # (B, w_i, H / 2**i, W / 2**i)
            x = self.pool(x)
        x = self.bottleneck(x)  # (B, w_depth, H / 2**depth, W / 2**depth)
        for upsample, block, skip in zip(self.upsample, self.up, reversed(skips)):
            x = block(torch.cat((upsample(x), skip), dim=1))
        return self.classifier(x)  # (B, num_classes, H, W)


class SegmentationDecoder(nn.Module):
    """Logits -> ``(mask[B, H, W] int64 class ids, probs[B, C, H, W] softmax)``."""

    def __init__(self, model: UNet) -> None:
        super().__init__()

    def forward(self, logits: Tensor) -> tuple[Tensor, Tensor]:
        probs = torch.softmax(logits, dim=1)
        return logits.argmax(dim=1), probs


def semantic_targets(samples: Sequence) -> Tensor:
    """Training targets ``Tensor[B, H, W]`` int64 class ids (0 background, k + 1 class k, 255 ignore)."""
    if any(s.semantic is None for s in samples):
        raise ValueError("segmentation targets need semantic masks")
    return torch.stack([torch.from_numpy(s.semantic).long() for s in samples])


class UNetSpec(FamilySpec):
    """Semantic segmentation on ``clutter``; checkpoints ranked by mean IoU."""

    family = "unet"
    task = "segmentation"
    dataset = "clutter"
    summary = "U-Net semantic segmentation on MNIST clutter"
    quickstart_images = 100
    lr = 3e-3

    def decoder(self, model: nn.Module) -> nn.Module:
        return SegmentationDecoder(model)

    def size_multiple(self, cfg: UNetConfig) -> int:
        return 2 ** cfg.depth

    def target_encoder(self, cfg: UNetConfig):
        return semantic_targets

    def loss(self, model: nn.Module, *, class_weights: Sequence[float] | None = None, **_) -> nn.Module:
        from edgedet.train.losses import SegmentationLoss

        if class_weights is not None and len(class_weights) != model.cfg.num_classes:
            raise EdgedetError(f"{len(class_weights)} class weights given for {model.cfg.num_classes} classes "
                               f"(background first)")
        return SegmentationLoss(class_weights)

    def evaluator(self, model: nn.Module):
        from edgedet.train.evaluators import SegmentationEvaluator

        return SegmentationEvaluator(model)

    def fitness(self, metrics: dict[str, float]) -> float:
        return metrics["mean_iou"]


@register_model("unet", spec=UNetSpec(), config=UNetConfig())
def unet(cfg: UNetConfig) -> UNet:
    return UNet(cfg)
