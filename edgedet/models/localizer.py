"""Single-object classification + localization network.

Follows the course seed's localizer: a small conv-BN-LeakyReLU stack over a 48x60 grey image, then
fully connected layers predicting whether a digit is present (p_c), its box and its class. The
input size is part of the config because the head is fully connected.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from edgedet.errors import ModelError
from edgedet.models.layers import check_common_config, conv_stages
from edgedet.models.registry import register_model
from edgedet.models.spec import FamilySpec
from edgedet.ops.localizer import decode_localizer

__all__ = ["LocalizerConfig", "Localizer", "LocalizerDecoder", "LocalizerSpec", "localizer_targets"]

DIGITS = tuple(str(i) for i in range(10))


@dataclass(frozen=True)
class LocalizerConfig:
    in_channels: int = 1
    num_classes: int = 10
    input_size: tuple[int, int] = (48, 60)
    widths: tuple[int, ...] = (16, 32, 64)  # one conv pair + 2x2 max-pool per stage
    hidden: int = 128
    dropout: float = 0.1
    leaky: float = 0.1
    class_names: tuple[str, ...] = DIGITS

    def validate(self) -> None:
        check_common_config(self, ModelError)
        if not self.widths:
            raise ModelError("localizer needs at least one stage in widths")
        stride = 2 ** len(self.widths)
        if min(self.input_size) < stride:
            raise ModelError(f"input_size {self.input_size} is smaller than the localizer's stride {stride}")


class Localizer(nn.Module):
    """``forward(x[B, C, H, W]) -> Tensor[B, 5 + num_classes]``: p_c logit, box logits, class logits."""

    def __init__(self, cfg: LocalizerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.features = conv_stages(cfg.in_channels, cfg.widths, cfg.leaky)
        ch = cfg.widths[-1]
        fh, fw = cfg.input_size
        for _ in cfg.widths:
            fh, fw = fh // 2, fw // 2
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(ch * fh * fw, cfg.hidden),
            nn.LeakyReLU(cfg.leaky, inplace=True),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden, 5 + cfg.num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))  # (B, 5 + C)


class LocalizerDecoder(nn.Module):
    """Raw localizer output -> ``(score[B], box[B, 4] xyxy pixels, label[B], class_scores[B, C])``."""

    def __init__(self, model: Localizer) -> None:
        super().__init__()
        self.input_size = tuple(model.cfg.input_size)

    def forward(self, head: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return decode_localizer(head, self.input_size)


def localizer_targets(samples: Sequence, input_size: tuple[int, int]) -> Tensor:
    """Training targets ``Tensor[B, 6]`` ``(present, cx, cy, w, h, label)``: the box as fractions
    of the input width/height, ``label`` -1 when no object is present. One object per image: the
    largest if a sample has more."""
    h, w = input_size
    target = torch.zeros(len(samples), 6)
    target[:, 5] = -1
    for i, s in enumerate(samples):
        if len(s.boxes) == 0:
            continue
        areas = (s.boxes[:, 2] - s.boxes[:, 0]) * (s.boxes[:, 3] - s.boxes[:, 1])
        k = int(np.argmax(areas))
        x1, y1, x2, y2 = s.boxes[k].tolist()
        target[i] = torch.tensor([1.0, (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h,
                                  float(s.labels[k])])
    return target


class LocalizerSpec(FamilySpec):
    """Single-object localization on ``digits-loc``; checkpoints ranked by ``(accuracy + mean_iou) / 2``."""

    family = "localizer"
    task = "localization"
    dataset = "digits-loc"
    lr = 2e-3
    fixed_input = True  # the fully connected head is sized for one input

    def decoder(self, model: nn.Module) -> nn.Module:
        return LocalizerDecoder(model)

    def target_encoder(self, cfg: LocalizerConfig):
        return partial(localizer_targets, input_size=tuple(cfg.input_size))

    def loss(self, model: nn.Module, **_) -> nn.Module:
        from edgedet.train.losses import LocalizerLoss

        return LocalizerLoss()

    def evaluator(self, model: nn.Module):
        from edgedet.train.evaluators import LocalizationEvaluator

        return LocalizationEvaluator(model)

    def fitness(self, metrics: dict[str, float]) -> float:
        return 0.5 * (metrics["accuracy"] + metrics["mean_iou"])


@register_model("localizer", spec=LocalizerSpec(), config=LocalizerConfig())
def localizer(cfg: LocalizerConfig) -> Localizer:
    return Localizer(cfg)
