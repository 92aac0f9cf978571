"""Single-object classification + localization network.

Follows the course seed's localizer: a small conv-BN-LeakyReLU stack over a 48x60 grey image, then
fully connected layers predicting whether a digit is present (p_c), its box and its class. The
input size is part of the config because the head is fully connected.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from edgedet.errors import ModelError
from edgedet.models.layers import check_common_config, conv_stages
from edgedet.models.registry import register_model
from edgedet.ops.localizer import decode_localizer

__all__ = ["LocalizerConfig", "Localizer", "LocalizerDecoder"]

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


@register_model("localizer", family="localizer", task="localization", config=LocalizerConfig(),
                decoder=LocalizerDecoder)
def localizer(cfg: LocalizerConfig) -> Localizer:
    return Localizer(cfg)
