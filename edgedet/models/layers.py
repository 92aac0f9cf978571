"""Building blocks shared by the model families."""

from __future__ import annotations

from torch import nn

__all__ = ["ConvBNAct", "conv_stages", "class_names_of", "check_common_config"]


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> LeakyReLU, 'same' padding for odd kernels.

    The seeds' networks and darknet both use this block; ``leaky`` is the negative slope.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 leaky: float = 0.1, bn_eps: float = 1e-5) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels, eps=bn_eps),
            nn.LeakyReLU(leaky, inplace=True),
        )


def conv_stages(in_channels: int, widths: tuple[int, ...], leaky: float) -> nn.Sequential:
    """The seeds' backbone: per width two 3x3 ``ConvBNAct`` and a 2x2 max-pool (stride 2 each)."""
    layers: list[nn.Module] = []
    for width in widths:
        layers += [ConvBNAct(in_channels, width, 3, leaky=leaky), ConvBNAct(width, width, 3, leaky=leaky),
                   nn.MaxPool2d(2)]
        in_channels = width
    return nn.Sequential(*layers)


def class_names_of(cfg) -> tuple[str, ...]:
    """The config's class names, or the class ids as strings when it gives none."""
    return tuple(cfg.class_names) or tuple(str(i) for i in range(cfg.num_classes))


def check_common_config(cfg, error: type[Exception]) -> None:
    """Checks every family config shares: positive sizes and class names matching the count."""
    if cfg.in_channels < 1:
        raise error(f"in_channels must be >= 1, got {cfg.in_channels}")
    if cfg.num_classes < 1:
        raise error(f"num_classes must be >= 1, got {cfg.num_classes}")
    if len(cfg.input_size) != 2 or min(cfg.input_size) < 1:
        raise error(f"input_size must be (height, width) > 0, got {cfg.input_size}")
    if cfg.class_names and len(cfg.class_names) != cfg.num_classes:
        raise error(f"{len(cfg.class_names)} class names given for {cfg.num_classes} classes")
