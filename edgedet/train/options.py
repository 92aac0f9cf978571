"""What ``edgedet train`` takes and what it returns: :class:`TrainOptions`, :class:`TrainResult`.

No torch here: the CLI takes its defaults from :class:`TrainOptions`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgedet.errors import EdgedetError

__all__ = ["TrainingError", "TrainOptions", "TrainResult", "BOX_LOSSES"]

# YOLOv3's box losses (see :class:`edgedet.train.losses.YoloLoss`).
BOX_LOSSES = ("xywh", "giou")


class TrainingError(EdgedetError):
    """Training cannot go on: diverged loss, an unusable run directory, options that contradict."""


@dataclass(frozen=True)
class TrainOptions:
    """What ``edgedet train`` takes; every field is plain data (it is stored in checkpoints).

    Attributes:
        model: registered model name.
        data: dataset spec (see :mod:`edgedet.data.spec`).
        epochs: epochs to train.
        batch: images per optimizer step, summed over all processes.
        imgsz: network input ``(H, W)``; None: the dataset's image size (rounded up to what the
            model accepts), else the model's default.
        lr: peak AdamW learning rate; None: the family spec's ``lr``.
        weight_decay: AdamW weight decay of convolution and linear weights.
        warmup_epochs: linear warmup from 1 % of ``lr``, then a cosine decay to 1 % at the end.
        device: ``cpu``, ``cuda``, ``cuda:N``; None: CUDA when available.
        workers: DataLoader worker processes; None: 0 when training samples are cached (collating
            cached samples is cheaper than starting workers), else up to 8 (one fewer than cores).
        out: run directory.
        weights: initial weights: an edgedet checkpoint or darknet weights (yolov3 family); tensors
            whose shape fits are copied (so a head with another class count starts fresh).
        patience: stop after this many epochs without a better validation fitness (0: never).
        amp: mixed precision; None: on for CUDA. CPU always trains in float32.
        seed: seeds weights, batch order and augmentation.
        box_loss: YOLOv3's box loss, ``xywh`` or ``giou``.
        class_weights: per-class cross-entropy weights for segmenters (background first).
        cache: keep decoded samples in memory; None: for the synthetic sets (their training
            samples only when not ``fresh``).
        fresh: draw new training samples every epoch (synthetic sets generate any number:
            epoch e reads samples ``e * n .. (e + 1) * n - 1`` of their deterministic stream, so a
            resumed run sees the same ones); None: on for synthetic sets. Validation stays fixed.
        model_config: config overrides (``{"width": 0.25}``) applied after the dataset's.
        grad_clip: gradient norm clip (0: off).
        val_images: validate on the first this many validation images only (None: all); for
            short runs, e.g. a GPU recipe whose synthetic validation split would otherwise take as
            long as an epoch.
    """

    model: str
    data: str
    epochs: int = 30
    batch: int = 64
    imgsz: tuple[int, int] | None = None
    lr: float | None = None
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    device: str | None = None
    workers: int | None = None
    out: str = "runs/train"
    weights: str | None = None
    patience: int = 10
    amp: bool | None = None
    seed: int = 0
    box_loss: str = "xywh"
    class_weights: tuple[float, ...] | None = None
    cache: bool | None = None
    fresh: bool | None = None
    model_config: dict[str, Any] = field(default_factory=dict)
    grad_clip: float = 10.0
    val_images: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainOptions":
        names = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in names}
        for key in ("imgsz", "class_weights"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d)

    def check(self) -> None:
        from edgedet.export.options import imgsz_problem  # the one --imgsz limit, shared with export

        problem = imgsz_problem(self.imgsz)
        if problem:
            raise TrainingError(problem)
        if self.epochs < 1:
            raise TrainingError(f"--epochs must be >= 1, got {self.epochs}")
        if self.batch < 1:
            raise TrainingError(f"--batch must be >= 1, got {self.batch}")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise TrainingError(f"--lr must be a positive number, got {self.lr}")
        if self.box_loss not in BOX_LOSSES:
            raise TrainingError(f"box loss must be one of {', '.join(BOX_LOSSES)}, got {self.box_loss!r}")
        if self.val_images is not None and self.val_images < 1:
            raise TrainingError(f"--val-images must be >= 1, got {self.val_images}")
        if self.patience < 0 or (self.workers or 0) < 0:
            raise TrainingError("--patience and --workers must be >= 0")
        if self.weights and not self.weights.startswith("darknet:") and Path(self.weights).is_dir():
            raise TrainingError(f"--weights {self.weights} is a directory, not a checkpoint")
        if self.weights and not self.weights.startswith("darknet:") and not Path(self.weights).is_file():
            raise TrainingError(f"--weights {self.weights} does not exist")
        if self.model and self.model_config:
            from edgedet.models.registry import config_value_problem

            problem = config_value_problem(self.model, self.model_config)
            if problem:
                raise TrainingError(f"--cfg {problem}")


@dataclass
class TrainResult:
    """Where a run ended: its directory, best epoch and metrics, and why it stopped."""

    out: Path
    epochs_run: int
    best_epoch: int | None
    best_metrics: dict[str, float]
    last_metrics: dict[str, float]
    stopped: str  # "finished", "early-stop", "interrupted"
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    rank: int = 0  # the process's rank under torchrun; only rank 0 writes files

    @property
    def best(self) -> Path:
        return self.out / "best.pt"

    @property
    def last(self) -> Path:
        return self.out / "last.pt"
