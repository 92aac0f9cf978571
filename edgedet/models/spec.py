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

from typing import TYPE_CHECKING, Any, Callable, Sequence

from torch import Tensor, nn

from edgedet.data.sample import TASKS

if TYPE_CHECKING:  # pragma: no cover
    from edgedet.data.transforms import FitSample, TrainingSet
    from edgedet.train.evaluators import Evaluator

__all__ = ["FamilySpec", "TargetEncoder", "TASKS"]

# ``encode(samples) -> targets``: a picklable callable (DataLoader workers receive it).
TargetEncoder = Callable[[Sequence["FitSample"]], Tensor]


class FamilySpec:
    """The base of every family's spec. Subclasses set the attributes and override the methods.

    Attributes:
        family: the family's name (recorded in metadata; never branched on).
        task: ``localization``, ``detection`` or ``segmentation`` (the exported-graph contract).
        dataset: the dataset spec the family is built for (``digits-loc``, ``clutter``, ...).
        lr: AdamW learning rate that trains the family well from scratch at batch 64.
        fixed_input: the head depends on the input size, so graphs cannot take other sizes.
        darknet: variants read and write darknet ``.weights`` files.
    """

    family: str = ""
    task: str = ""
    dataset: str = ""
    lr: float = 2e-3
    fixed_input: bool = False
    darknet: bool = False

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
