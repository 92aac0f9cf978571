"""Grid detector: one detection slot per cell (the course seed's 2x3 grid over 48x60 images).

A conv-BN-LeakyReLU backbone down to stride ``2 ** len(widths)``, then a convolution whose kernel
and stride equal one cell, so each output position sees exactly its cell's features and the head
is ``[B, 5 + C, rows, cols]`` for any grid whose cells divide evenly by the backbone stride.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from edgedet.errors import ModelError
from edgedet.models.layers import check_common_config, conv_stages
from edgedet.models.registry import register_model
from edgedet.models.spec import FamilySpec
from edgedet.ops.boxes import cxcywh_to_xyxy
from edgedet.ops.grid import decode_grid, encode_grid

__all__ = ["GridConfig", "GridDetector", "GridDecoder", "GridSpec", "grid_targets", "grid_slot_truth"]


@dataclass(frozen=True)
class GridConfig:
    in_channels: int = 1
    num_classes: int = 2
    input_size: tuple[int, int] = (48, 60)
    grid: tuple[int, int] = (2, 3)  # rows, cols
    widths: tuple[int, ...] = (16, 32)  # one conv pair + 2x2 max-pool per stage
    cell_channels: int = 128
    leaky: float = 0.1
    class_names: tuple[str, ...] = ("0", "1")

    def validate(self) -> None:
        check_common_config(self, ModelError)
        if len(self.grid) != 2 or min(self.grid) < 1:
            raise ModelError(f"grid must be (rows, cols) >= 1, got {self.grid}")
        stride = 2 ** len(self.widths)
        for size, cells, axis in zip(self.input_size, self.grid, ("height", "width")):
            if size % cells or (size // cells) % stride:
                raise ModelError(f"input {axis} {size} must split into {cells} cells whose size is a "
                                 f"multiple of the backbone stride {stride}")

    @property
    def cell_size(self) -> tuple[int, int]:
        return self.input_size[0] // self.grid[0], self.input_size[1] // self.grid[1]


class GridDetector(nn.Module):
    """``forward(x[B, C, H, W]) -> Tensor[B, 5 + num_classes, rows, cols]`` raw per-cell logits."""

    def __init__(self, cfg: GridConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.features = conv_stages(cfg.in_channels, cfg.widths, cfg.leaky)
        ch = cfg.widths[-1]
        stride = 2 ** len(cfg.widths)
        cell = (cfg.cell_size[0] // stride, cfg.cell_size[1] // stride)
        self.cell = nn.Sequential(
            nn.Conv2d(ch, cfg.cell_channels, cell, cell, bias=False),  # one output per grid cell
            nn.BatchNorm2d(cfg.cell_channels),
            nn.LeakyReLU(cfg.leaky, inplace=True),
        )
        self.head = nn.Conv2d(cfg.cell_channels, 5 + cfg.num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.cell(self.features(x)))  # (B, 5 + C, rows, cols)


class GridDecoder(nn.Module):
    """Raw grid head -> ``Tensor[B, rows * cols, 5 + C]`` (see :func:`edgedet.ops.grid.decode_grid`)."""

    def __init__(self, model: GridDetector) -> None:
        super().__init__()
        self.input_size = tuple(model.cfg.input_size)

    def forward(self, head: Tensor) -> Tensor:
        return decode_grid(head, self.input_size)


def grid_targets(samples: Sequence, grid: tuple[int, int], input_size: tuple[int, int]) -> Tensor:
    """Training targets ``Tensor[B, rows, cols, 6]`` (see :func:`edgedet.ops.grid.encode_grid`)."""
    return torch.stack([encode_grid(torch.from_numpy(s.boxes), torch.from_numpy(s.labels), grid, input_size)
                        for s in samples])


def grid_slot_truth(targets: Tensor, input_size: tuple[int, int]) -> tuple[Tensor, Tensor, Tensor]:
    """Grid targets ``[B, rows, cols, 6]`` -> per-cell presence ``[B * rows * cols]``, xyxy pixel boxes
    and labels, in the row order of the decoded predictions."""
    b, gh, gw, _ = targets.shape
    h, w = input_size
    ys = torch.arange(gh, dtype=torch.float32).view(1, gh, 1)
    xs = torch.arange(gw, dtype=torch.float32).view(1, 1, gw)
    cx = (xs + targets[..., 1]) * (w / gw)
    cy = (ys + targets[..., 2]) * (h / gh)
    boxes = cxcywh_to_xyxy(torch.stack((cx, cy, targets[..., 3] * w, targets[..., 4] * h), dim=-1))
    return targets[..., 0].reshape(-1) > 0.5, boxes.reshape(-1, 4), targets[..., 5].reshape(-1).long()


class GridSpec(FamilySpec):
    """One detection slot per cell on ``digits-grid``; ranked by ``(accuracy + mean_iou) / 2`` per cell."""

    family = "grid"
    task = "detection"
    dataset = "digits-grid"
    summary = "2x3 grid detector"
    quickstart_images = 300
    lr = 2e-3
    fixed_input = True  # cells are fixed fractions of one input size

    def decoder(self, model: nn.Module) -> nn.Module:
        return GridDecoder(model)

    def target_encoder(self, cfg: GridConfig):
        return partial(grid_targets, grid=tuple(cfg.grid), input_size=tuple(cfg.input_size))

    def loss(self, model: nn.Module, **_) -> nn.Module:
        from edgedet.train.losses import GridLoss

        return GridLoss()

    def evaluator(self, model: nn.Module):
        from edgedet.train.evaluators import DetectionEvaluator

        return DetectionEvaluator(model, slots=partial(grid_slot_truth, input_size=tuple(model.cfg.input_size)))

    def fitness(self, metrics: dict[str, float]) -> float:
        return 0.5 * (metrics["accuracy"] + metrics["mean_iou"])

    def metadata(self, model: nn.Module) -> dict[str, Any]:
        return {"grid": list(model.cfg.grid)}


@register_model("grid", spec=GridSpec(), config=GridConfig())
def grid(cfg: GridConfig) -> GridDetector:
    return GridDetector(cfg)
