"""The model registry: one entry per named variant, ``create_model`` and ``list_models``.

Each family module registers thin builders with :func:`register_model`. A variant is a default
config (a frozen dataclass), the family's builder and the family's spec
(:class:`edgedet.models.spec.FamilySpec`: decoder, targets, loss, evaluator, defaults, metadata);
``create_model(name, **overrides)`` overlays keyword overrides on that config with
:func:`dataclasses.replace`. Tests parametrize over ``list_models()`` so a model is covered the day
it is registered.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from edgedet.errors import ModelError
from edgedet.models.spec import TASKS, FamilySpec

__all__ = ["ModelEntry", "register_model", "unregister_model", "create_model", "create_decoder", "list_models",
           "get_entry", "spec_of"]


@dataclass(frozen=True)
class ModelEntry:
    """A registered variant.

    Attributes:
        name: registry name (``yolov3-tiny``).
        config: the variant's default config, a frozen dataclass.
        build: ``build(config) -> nn.Module`` returning raw head tensors from ``forward``.
        spec: the family's spec; what generic code asks about the model.
    """

    name: str
    config: Any
    build: Callable[[Any], nn.Module]
    spec: FamilySpec

    @property
    def family(self) -> str:
        return self.spec.family

    @property
    def task(self) -> str:
        return self.spec.task


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, *, spec: FamilySpec, config: Any) -> Callable:
    """Decorator registering ``build(config) -> nn.Module`` under ``name`` with a default config
    and its family's spec."""
    if not isinstance(spec, FamilySpec):
        raise TypeError("spec must be a FamilySpec instance")
    if spec.task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {spec.task!r}")
    if not dataclasses.is_dataclass(config):
        raise TypeError("config must be a dataclass instance")

    def wrap(build: Callable[[Any], nn.Module]) -> Callable[[Any], nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = ModelEntry(name, config, build, spec)
        return build

    return wrap


def unregister_model(name: str) -> None:
    """Remove ``name`` from the registry (for families registered by tests or plugins)."""
    _REGISTRY.pop(name, None)


def _load_families() -> None:
    # Importing the family modules runs their @register_model decorators; this order is the
    # order of list_models(): simplest family first.
    import edgedet.models.localizer  # noqa: F401
    import edgedet.models.grid  # noqa: F401
    import edgedet.models.yolov3  # noqa: F401
    import edgedet.models.unet  # noqa: F401


def list_models() -> list[str]:
    """Names of every registered model, in registration order."""
    _load_families()
    return list(_REGISTRY)


def get_entry(name: str) -> ModelEntry:
    """The registry entry for ``name``; :class:`ModelError` naming the known models otherwise."""
    _load_families()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; known models: {', '.join(_REGISTRY)}") from None


def resolve_config(name: str, **overrides: Any) -> Any:
    """The variant's default config with ``overrides`` applied (tuples for sequence fields)."""
    entry = get_entry(name)
    fields = {f.name for f in dataclasses.fields(entry.config)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ModelError(f"model {name!r} has no option {', '.join(unknown)}; "
                         f"options: {', '.join(sorted(fields))}")
    clean = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    if "num_classes" in clean and "class_names" not in clean:
        # The variant's names belong to its default class count; new counts get id names.
        clean["class_names"] = ()
    cfg = dataclasses.replace(entry.config, **clean)
    validate = getattr(cfg, "validate", None)
    if validate is not None:
        validate()
    return cfg


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build the registered model ``name`` with config fields overridden by ``overrides``.

    The returned module carries ``model.cfg`` (its frozen config) and ``model.model_name``.
    ``forward`` returns raw head tensors, the same in train and eval mode.
    """
    entry = get_entry(name)
    cfg = resolve_config(name, **overrides)
    model = entry.build(cfg)
    model.model_name = name
    return model


def spec_of(model: nn.Module) -> FamilySpec:
    """The family spec of a model made by :func:`create_model`."""
    return get_entry(model.model_name).spec


def create_decoder(model: nn.Module) -> nn.Module:
    """The decoder module for a model made by :func:`create_model`."""
    return spec_of(model).decoder(model)
