"""Family specs: everything generic code needs to know about a model family, in one object.

Each registered variant carries its family's spec (``get_entry(name).spec``). Training, validation,
export, parity and quantisation ask the spec and never branch on a family's name, so registering a
family with a spec is enough for all of them (the way a detectron2 meta-architecture owns its
losses and inference, or torchvision's weights carry their transforms and metadata).

A spec owns:

- the decoder (raw head tensors -> the family's decoded form, composed by ``export/``);
- target encoding for training batches (:meth:`FamilySpec.target_encoder`);
- the loss (:meth:`FamilySpec.loss`), the evaluator and its fitness;
- the input-size multiple and whether the input size is fixed by the head;
- defaults: learning rate and dataset (the dataset also feeds parity inputs, the export check and
  int8 calibration);
- metadata extras written into exported graphs;
- what to fit to the training data before a model is built from scratch (YOLO's anchors).

Family modules import training code lazily inside the methods, so importing a model stays cheap
and ``edgedet.models`` never depends on ``edgedet.train`` at import time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

from torch import Tensor, nn

from edgedet.data.sample import TASKS

if TYPE_CHECKING:  # pragma: no cover
    from edgedet.data.transforms import FitSample, TrainingSet
    from edgedet.train.evaluators import Evaluator

__all__ = ["FamilySpec", "DenseConversion", "TargetEncoder", "TASKS"]

# ``encode(samples) -> targets``: a picklable callable (DataLoader workers receive it).
TargetEncoder = Callable[[Sequence["FitSample"]], Tensor]


@dataclass(frozen=True)
class DenseConversion:
    """A classifier-style model turned fully convolutional (``edgedet export --fully-conv``).

    Attributes:
        model: the dense network, ``forward(x[B, C, H, W]) -> raw map``, for any ``H, W`` at least
            ``window``; it carries ``cfg`` and ``model_name`` like a registered model.
        decoder: raw map -> detector predictions ``[B, N, 5 + C]`` (cx, cy, w, h in input pixels,
            objectness, class probabilities), the layout detector post-processing takes.
        window: ``(height, width)`` one prediction sees: the original model's input size.
        stride: input pixels between neighbouring windows.
        dataset: scene dataset the detector is meant for (export check frames, benchmarks).
        frame_size: ``(height, width)`` graphs are exported at when no size is given.
    """

    model: nn.Module
    decoder: nn.Module
    window: tuple[int, int]
    stride: int
    dataset: str
    frame_size: tuple[int, int]


class FamilySpec:
    """The base of every family's spec. Subclasses set the attributes and override the methods.

    Attributes:
        family: the family's name (recorded in metadata; never branched on).
        task: ``localization``, ``detection`` or ``segmentation`` (the exported-graph contract).
        dataset: the dataset spec the family is built for (``digits-loc``, ``clutter``, ...).
        lr: AdamW learning rate that trains the family well from scratch at batch 64.
        fixed_input: the head depends on the input size, so graphs cannot take other sizes.
        darknet: variants read and write darknet ``.weights`` files.
        fully_conv: the family's fully connected head can be turned into convolutions
            (:meth:`fully_convolutional`; ``edgedet export --fully-conv``).
        summary: one line saying what the family is, for reports (the quickstart's).
        quickstart_images: how many validation images of :attr:`parity_data` the quickstart scores
            a shipped checkpoint on (a subset, so the quickstart stays short on a CPU).
        instance_masks: the family trains on instance masks (training and validation samples
            carry them, see :class:`edgedet.data.transforms.FitSample`) and its detector graphs
            add a ``masks`` output; the task stays ``detection``, so every detector path applies.
    """

    family: str = ""
    task: str = ""
    dataset: str = ""
    lr: float = 2e-3
    fixed_input: bool = False
    darknet: bool = False
    fully_conv: bool = False
    summary: str = ""
    quickstart_images: int = 200
    instance_masks: bool = False

    def decoder(self, model: nn.Module) -> nn.Module:
        """The module turning ``model``'s raw head tensors into the family's decoded form."""
        raise NotImplementedError

    def size_multiple(self, cfg: Any) -> int:
        """What input height and width must be multiples of (the network's total stride)."""
        return 1

    def target_encoder(self, cfg: Any) -> TargetEncoder:
        """``encode(fitted samples) -> targets``, the layout :meth:`loss` takes."""
        raise NotImplementedError

    def loss(self, model: nn.Module, *, box_loss: str = "xywh",
             class_weights: Sequence[float] | None = None) -> nn.Module:
        """The training loss, ``loss(head, targets) -> (total, parts)``."""
        raise NotImplementedError

    def evaluator(self, model: nn.Module) -> "Evaluator":
        """A fresh evaluator scoring ``model``'s deploy wrapper batch by batch."""
        raise NotImplementedError

    def fitness(self, metrics: dict[str, float]) -> float:
        """The one number that ranks checkpoints (higher is better)."""
        raise NotImplementedError

    def metadata(self, model: nn.Module) -> dict[str, Any]:
        """Family extras for an exported graph's metadata document."""
        return {}

    def fully_convolutional(self, model: nn.Module) -> DenseConversion | None:
        """``model`` with its fully connected layers turned into convolutions carrying the same
        weights, and the window geometry; ``None`` for families that cannot be converted (the
        default; such families set :attr:`fully_conv` False)."""
        return None

    def fit_to_data(self, name: str, overrides: dict[str, Any], train_set: "TrainingSet", *, seed: int,
                    log: Callable[[str], None]) -> dict[str, Any]:
        """Config overrides fitted to the training data before a model is built from scratch."""
        return overrides

    @property
    def parity_data(self) -> str:
        """The dataset whose validation images parity checks feed (the same pictures everywhere)."""
        return f"{self.dataset}:glyphs=builtin"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(family={self.family!r}, task={self.task!r})"
