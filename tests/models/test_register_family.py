"""Registering a family is enough: a family defined in this file alone trains, validates, exports with
NMS in the graph and passes parity, with no edit anywhere else in edgedet.

The family ("toy-cells") is a deliberately small detector with its own config, network, decoder
and spec; it reuses public building blocks (grid targets and decoding, the grid loss, the detection
evaluator) the way a new family would.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import pytest
from torch import Tensor, nn

from edgedet.models.grid import grid_targets
from edgedet.models.registry import get_entry, list_models, register_model, unregister_model
from edgedet.models.spec import FamilySpec
from edgedet.ops.grid import decode_grid

NAME = "toy-cells"


@dataclass(frozen=True)
class ToyConfig:
    in_channels: int = 1
    num_classes: int = 2
    input_size: tuple[int, int] = (48, 60)
    grid: tuple[int, int] = (2, 3)
    width: int = 8
    class_names: tuple[str, ...] = ("0", "1")


class ToyDetector(nn.Module):
    """One strided conv, then a conv whose kernel covers one cell: ``[B, 5 + C, rows, cols]``."""

    def __init__(self, cfg: ToyConfig) -> None:
        super().__init__()
        self.cfg = cfg
        cell = (cfg.input_size[0] // cfg.grid[0] // 2, cfg.input_size[1] // cfg.grid[1] // 2)
        self.features = nn.Sequential(nn.Conv2d(cfg.in_channels, cfg.width, 3, 2, 1), nn.BatchNorm2d(cfg.width),
                                      nn.ReLU())
        self.head = nn.Conv2d(cfg.width, 5 + cfg.num_classes, cell, cell)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))  # (B, 5 + C, rows, cols)


class ToyDecoder(nn.Module):
    def __init__(self, model: ToyDetector) -> None:
        super().__init__()
        self.input_size = tuple(model.cfg.input_size)

    def forward(self, head: Tensor) -> Tensor:
        return decode_grid(head, self.input_size)  # (B, rows * cols, 5 + C)


class ToySpec(FamilySpec):
    family = "toy"
    task = "detection"
    dataset = "digits-grid"
    lr = 3e-3
    fixed_input = True

    def decoder(self, model):
        return ToyDecoder(model)

    def target_encoder(self, cfg):
        return partial(grid_targets, grid=tuple(cfg.grid), input_size=tuple(cfg.input_size))

    def loss(self, model, **_):
        from edgedet.train.losses import GridLoss

        return GridLoss()

    def evaluator(self, model):
        from edgedet.train.evaluators import DetectionEvaluator

        return DetectionEvaluator(model)

    def fitness(self, metrics):
        return metrics["map50"]


@pytest.fixture
def toy_family():
    register_model(NAME, spec=ToySpec(), config=ToyConfig())(ToyDetector)
    try:
        yield NAME
    finally:
        unregister_model(NAME)
    assert NAME not in list_models()


@pytest.mark.slow
def test_a_family_registered_here_trains_validates_exports_and_passes_parity(toy_family, tmp_path):
    from edgedet.export.api import ExportOptions, export_model
    from edgedet.parity.runner import ParityOptions, check_file
    from edgedet.runtime.metadata import read_metadata
    from edgedet.train.trainer import TrainOptions, train

    assert get_entry(toy_family).spec.family == "toy"
    data = "digits-grid:n=32,glyphs=builtin"
    result = train(TrainOptions(model=toy_family, data=data, epochs=1, batch=8, out=str(tmp_path / "run"),
                                workers=0), say=lambda m: None, progress=False)
    assert result.stopped == "finished" and result.best.is_file()
    assert set(result.best_metrics) >= {"map50", "map50_95", "fitness"}
    assert result.best_metrics["fitness"] == result.best_metrics["map50"]  # the spec's fitness was asked

    files = export_model(toy_family, tmp_path / "exported", ExportOptions(), weights=str(result.best),
                         say=lambda m: None)
    assert [f.format for f in files] == ["onnx", "torchscript"]
    assert all(f.check_passed for f in files), [f.check for f in files]
    meta = read_metadata(files[0].path)
    assert meta.doc["family"] == "toy" and meta.doc["outputs"] == ["num_dets", "boxes", "scores", "labels"]

    for f in files:
        report = check_file(f.path, ParityOptions(samples=2, batch=2))
        ran = [b for b in report.backends if b.status != "skipped"]
        assert ran and report.passed, [(b.backend, b.status, b.reason) for b in report.backends]
