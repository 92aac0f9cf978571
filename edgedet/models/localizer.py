"""Single-object classification + localization network.

Follows the course seed's localizer: a small conv-BN-LeakyReLU stack over a 48x60 grey image, then
fully connected layers predicting whether a digit is present (p_c), its box and its class. The
input size is part of the config because the head is fully connected. :func:`fully_convolutional`
turns that head into convolutions (the course's sliding-window trick) for ``export --fully-conv``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import partial
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from edgedet.errors import ModelError
from edgedet.models.layers import check_common_config, conv_stages
from edgedet.models.registry import register_model
from edgedet.models.spec import DenseConversion, FamilySpec
from edgedet.ops.dense import decode_dense_localizer
from edgedet.ops.localizer import decode_localizer

__all__ = ["LocalizerConfig", "Localizer", "LocalizerDecoder", "LocalizerSpec", "localizer_targets",
           "DenseLocalizer", "DenseLocalizerDecoder", "fully_convolutional"]

DIGITS = tuple(str(i) for i in range(10))
SCENE_FRAME_SIZE = (240, 320)  # the digits-scene canvas: the default frame of --fully-conv graphs


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


class DenseLocalizer(nn.Module):
    """The localizer as a fully convolutional network: ``forward(x[B, C, H, W]) -> Tensor[B, 5 + C,
    gh, gw]``, one localizer head per ``window`` of the input, windows ``stride`` pixels apart.

    ``gh = H // stride - fh + 1`` and ``gw = W // stride - fw + 1`` with ``(fh, fw)`` the feature map
    of one window (the pools floor, so a window's last ``window % stride`` pixels are never seen,
    as in the original). Built by :func:`fully_convolutional`; carries the original's ``cfg``.
    """

    def __init__(self, features: nn.Module, head: nn.Module, cfg: LocalizerConfig, stride: int) -> None:
        super().__init__()
        self.features = features
        self.head = head
        self.cfg = cfg
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))  # (B, 5 + C, gh, gw)


class DenseLocalizerDecoder(nn.Module):
    """Dense map -> detector predictions ``[B, gh * gw, 5 + C]`` (:func:`decode_dense_localizer`)."""

    def __init__(self, window: tuple[int, int], stride: int) -> None:
        super().__init__()
        self.window = tuple(window)
        self.stride = stride

    def forward(self, head: Tensor) -> Tensor:
        return decode_dense_localizer(head, self.window, self.stride)


def _total_stride(features: nn.Module) -> int:
    stride = 1
    for m in features.modules():
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d)):
            s = m.stride if isinstance(m.stride, tuple) else (m.stride, m.stride)
            if s[0] != s[1]:
                raise ModelError(f"fully convolutional conversion needs square strides, got {s}")
            stride *= s[0]
    return stride


def fully_convolutional(model: Localizer) -> DenseLocalizer:
    """Turn a localizer's fully connected head into convolutions carrying the same weights.

    The first Linear layer becomes a convolution whose kernel covers the whole feature map of one
    window (``fh x fw``, its weight the Linear weight reshaped ``[hidden, ch, fh, fw]``: Flatten
    is channel-major); the second becomes a 1x1 convolution. Dropout is left out (the identity in
    inference). On an input of exactly the window size the dense map is 1x1 and equals the
    original's output; on a larger input each position is the head applied to that window's
    features. The conv stack is shared by all windows, so a window's features equal those of the
    cropped window only where the 3x3 convolutions' zero padding does not reach: near a window's
    border the dense network sees the neighbouring pixels where the crop saw padding, and through
    six padded convolutions and three pools that reach covers most of a 6x7 window (the gap is
    measured in ``benchmarks/fully_conv.py``). The feature-map size is read by running the features once
    on a zero window, and the stride is the product of the conv and pool strides, so the
    conversion does not depend on the conv stack's padding.
    """
    features = copy.deepcopy(model.features).eval()
    with torch.no_grad():
        probe = torch.zeros(1, model.cfg.in_channels, *model.cfg.input_size,
                            dtype=next(model.parameters()).dtype, device=next(model.parameters()).device)
        _, ch, fh, fw = features(probe).shape
    linears = [m for m in model.head if isinstance(m, nn.Linear)]
    acts = [m for m in model.head if isinstance(m, nn.LeakyReLU)]
    if len(linears) != 2 or len(acts) != 1 or linears[0].in_features != ch * fh * fw:
        raise ModelError("fully convolutional conversion expects Flatten -> Linear -> LeakyReLU -> Dropout "
                         f"-> Linear over a {ch}x{fh}x{fw} feature map")
    first, second = linears
    conv1 = nn.Conv2d(ch, first.out_features, (fh, fw))
    conv2 = nn.Conv2d(second.in_features, second.out_features, 1)
    with torch.no_grad():
        conv1.weight.copy_(first.weight.reshape(first.out_features, ch, fh, fw))
        conv1.bias.copy_(first.bias)
        conv2.weight.copy_(second.weight.reshape(second.out_features, second.in_features, 1, 1))
        conv2.bias.copy_(second.bias)
    head = nn.Sequential(conv1, nn.LeakyReLU(acts[0].negative_slope), conv2)
    dense = DenseLocalizer(features, head, model.cfg, _total_stride(features))
    dense.model_name = getattr(model, "model_name", "localizer")
    return dense.to(next(model.parameters()).device).eval()


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
    summary = "single-digit localizer"
    quickstart_images = 300
    lr = 2e-3
    fixed_input = True  # the fully connected head is sized for one input
    fully_conv = True  # ... which turns into convolutions for ``export --fully-conv``

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

    def fully_convolutional(self, model: nn.Module) -> DenseConversion | None:
        """The dense localizer, its window decoder and geometry. Graphs are exported at the
        ``digits-scene`` canvas size (240x320) unless ``--imgsz`` says otherwise. ``None`` for
        specs deriving from this one that set :attr:`fully_conv` False (other networks)."""
        if not self.fully_conv:
            return None
        dense = fully_convolutional(model)
        window = tuple(model.cfg.input_size)
        return DenseConversion(model=dense, decoder=DenseLocalizerDecoder(window, dense.stride), window=window,
                               stride=dense.stride, dataset="digits-scene", frame_size=SCENE_FRAME_SIZE)


@register_model("localizer", spec=LocalizerSpec(), config=LocalizerConfig())
def localizer(cfg: LocalizerConfig) -> Localizer:
    return Localizer(cfg)
