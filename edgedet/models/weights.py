"""One weights resolver for training, export and parity: which weights a model gets, and loading them.

:func:`resolve_weights` decides, in order of what the user gave:

1. ``random_init``: seeded random weights (:data:`RANDOM_INIT_SEED`);
2. ``weights="darknet:NAME"`` (an official darknet COCO file: cache, else a checked download) or
   ``FILE.weights`` (a darknet file on disk) for families that read darknet files;
3. ``weights=CKPT``: an edgedet checkpoint (read with ``weights_only=True``);
4. nothing: the official darknet weights of the variant when there are any, else the checkpoint
   shipped with edgedet (:mod:`edgedet.samples`), else an error naming ``--weights`` and
   ``--random-init``.

The result, a :class:`WeightsSource`, loads into a full model (:func:`build_model`, export and
parity) or into a model being trained (:func:`init_from`: every tensor whose shape fits, so a
head with another class count starts fresh). Its :meth:`WeightsSource.record` is what exported
graphs store as their ``source``, so parity finds the same weights again.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from edgedet.errors import CheckpointError, WeightsError
from edgedet.models.registry import create_model, get_entry, list_models

__all__ = ["RANDOM_INIT_SEED", "WeightsSource", "resolve_weights", "build_model", "init_from",
           "shipped_checkpoint"]

RANDOM_INIT_SEED = 0


@dataclass(frozen=True)
class WeightsSource:
    """Resolved weights: ``kind`` is ``random-init``, ``darknet`` or ``checkpoint``; ``path`` the file."""

    kind: str
    path: Path | None = None

    def record(self) -> dict[str, Any]:
        """The ``source`` document of an exported graph (random-init: none; the caller saves one)."""
        from edgedet.runtime.files import file_digest

        key = "weights" if self.kind == "darknet" else "checkpoint"
        return {"kind": self.kind, key: str(self.path.resolve()), "sha256": file_digest(self.path)}


def shipped_checkpoint(name: str) -> Path | None:
    """The small checkpoint shipped with edgedet for ``name``, if there is one."""
    from edgedet.samples import checkpoint

    return checkpoint(name)


def _darknet_models() -> str:
    return " and ".join(n for n in list_models() if get_entry(n).spec.darknet)


def resolve_weights(name: str, weights: str | None = None, *, random_init: bool = False,
                    say: Callable[[str], None] = print) -> WeightsSource:
    """Which weights model ``name`` gets (see the module docstring for the order).

    Raises:
        ModelError: unknown model. WeightsError: contradictory options, darknet weights for a
            family without a darknet layout, a missing darknet file, or no weights at all.
    """
    from edgedet.models.darknet import DARKNET_RELEASES, resolve_darknet_weights

    spec = get_entry(name).spec
    if weights and random_init:
        raise WeightsError("--weights and --random-init contradict each other; give one")
    if random_init:
        return WeightsSource("random-init")
    if weights is None:
        if spec.darknet and name in DARKNET_RELEASES:
            try:
                return resolve_weights(name, f"darknet:{name}", say=say)
            except WeightsError as e:
                say(f"note: official {name} weights unavailable ({e})")
        shipped = shipped_checkpoint(name)
        if shipped is not None:
            say(f"note: no --weights given; using the checkpoint shipped with edgedet: {shipped}")
            return WeightsSource("checkpoint", shipped)
        raise WeightsError(f"no weights for {name}: pass --weights CKPT (or a darknet .weights file) "
                           f"or --random-init")
    if weights.startswith("darknet:") or weights.endswith(".weights"):
        if not spec.darknet:
            raise WeightsError(f"darknet weights fit {_darknet_models()}, not {name}")
        path = resolve_darknet_weights(weights) if weights.startswith("darknet:") else Path(weights)
        if not path.is_file():
            raise WeightsError(f"darknet weights {path} do not exist")
        return WeightsSource("darknet", path)
    return WeightsSource("checkpoint", Path(weights))


def _checkpoint(source: WeightsSource, name: str) -> dict[str, Any]:
    from edgedet.train.checkpoint import load_checkpoint

    ckpt = load_checkpoint(source.path)
    if ckpt["model"] != name:
        raise WeightsError(f"{source.path} holds a {ckpt['model']} checkpoint, not {name}")
    return ckpt


def build_model(name: str, source: WeightsSource, input_size: tuple[int, int] | None = None,
                config: dict[str, Any] | None = None) -> nn.Module:
    """Model ``name`` with ``source``'s weights, in eval mode.

    Args:
        input_size: another input size than the weights were made for (checkpoints keep their
            config otherwise).
        config: the whole config for random-init and darknet models (the variant's default when
            None); checkpoints carry their own.
    """
    overrides = dict(config or {})
    if input_size is not None:
        overrides["input_size"] = tuple(input_size)
    if source.kind == "random-init":
        torch.manual_seed(RANDOM_INIT_SEED)
        return create_model(name, **overrides).eval()
    if source.kind == "darknet":
        from edgedet.models.darknet import load_darknet_weights

        model = create_model(name, **overrides)
        load_darknet_weights(model, source.path)
        return model.eval()
    from edgedet.train.checkpoint import model_from_checkpoint

    ckpt = _checkpoint(source, name)
    if input_size is not None:
        ckpt = dict(ckpt, config=dict(ckpt["config"], input_size=list(input_size)))
    try:
        return model_from_checkpoint(ckpt)
    except CheckpointError as e:
        raise CheckpointError(f"{source.path}: {e}".replace("checkpoint: ", "")) from None


def init_from(model: nn.Module, source: WeightsSource) -> int:
    """Copy every tensor of ``source`` whose name and shape fit ``model``; returns how many.

    Darknet files are read into the variant with its 80 COCO classes first, so the backbone fits
    a model with any class count.
    """
    name = model.model_name
    if source.kind == "darknet":
        cfg = dataclasses.asdict(model.cfg)
        cfg.update(num_classes=80, class_names=())
        state = build_model(name, source, config=cfg).state_dict()
    elif source.kind == "checkpoint":
        from edgedet.train.checkpoint import load_checkpoint

        state = load_checkpoint(source.path)["state_dict"]
    else:
        raise WeightsError(f"{source.kind} is not a source of weights to initialise from")
    own = model.state_dict()
    fit = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not fit:
        raise WeightsError(f"no tensor of {source.path} fits {name}; is it a checkpoint of this model?")
    model.load_state_dict(fit, strict=False)
    return len(fit)
