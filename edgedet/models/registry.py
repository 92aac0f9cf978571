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
import typing
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
    import edgedet.models.yolov3seg  # noqa: F401
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


def _fits(value: Any, hint: Any) -> bool:
    """Whether ``value`` (from JSON or a checkpoint: lists stand for tuples) fits the type ``hint``."""
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (tuple, list)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(v, args[0]) for v in value)
        return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args))
    return True  # a type this check does not know: the config's own validate() decides


def _describe(hint: Any, plural: bool = False) -> str:
    """``tuple[int, ...]`` -> "a tuple of ints", for messages."""
    names = {bool: "true or false", int: "int", float: "number", str: "string"}
    if hint in names:
        if hint is bool:
            return names[hint]
        return names[hint] + "s" if plural else ("an " if hint is int else "a ") + names[hint]
    args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple and len(args) == 2 and args[1] is Ellipsis:
        return f"{'tuples' if plural else 'a tuple'} of {_describe(args[0], plural=True)}"
    if typing.get_origin(hint) is tuple and args and all(a == args[0] for a in args):
        return f"{'tuples' if plural else 'a tuple'} of {len(args)} {_describe(args[0], plural=True)}"
    return str(hint)


def config_value_problem(name: str, overrides: dict[str, Any]) -> str | None:
    """The first override of a known field whose value does not fit the field's type, as
    ``"widths: expected a tuple of ints, got 'banana'"``; None when all fit."""
    hints = typing.get_type_hints(type(get_entry(name).config))
    for key, value in overrides.items():
        if key in hints and not _fits(value, hints[key]):
            return f"{key}: expected {_describe(hints[key])}, got {value!r}"
    return None


def resolve_config(name: str, **overrides: Any) -> Any:
    """The variant's default config with ``overrides`` applied (tuples for sequence fields)."""
    entry = get_entry(name)
    fields = {f.name for f in dataclasses.fields(entry.config)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ModelError(f"model {name!r} has no option {', '.join(unknown)}; "
                         f"options: {', '.join(sorted(fields))}")
    problem = config_value_problem(name, overrides)
    clean = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    if "num_classes" in clean and "class_names" not in clean:
        # The variant's names belong to its default class count; new counts get id names.
        clean["class_names"] = ()
    try:
        cfg = dataclasses.replace(entry.config, **clean)
        validate = getattr(cfg, "validate", None)
        if validate is not None:
            validate()
    except ModelError:
        raise  # the family's own check words it best (the CLI checks --cfg types before this)
    except Exception:
        if problem:
            raise ModelError(f"model {name!r} option {problem}") from None
        raise
    if problem:
        raise ModelError(f"model {name!r} option {problem}")
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
