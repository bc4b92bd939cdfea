"""Architecture registry: ``build_model(arch, num_classes)`` and one-line registration of new ones."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

from torch import nn


class ModelFactory(Protocol):
    def __call__(self, num_classes: int, *, head_conv: int) -> nn.Module: ...


@dataclass(frozen=True)
class ModelSpec:
    """A registered architecture: its factory and its official default ``head_conv``."""

    name: str
    factory: ModelFactory
    default_head_conv: int


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(name: str, *, head_conv: int) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator registering ``factory(num_classes, *, head_conv) -> nn.Module`` under ``name``."""

    def decorate(factory: ModelFactory) -> ModelFactory:
        if name in _REGISTRY:
            raise ValueError(f"architecture {name!r} is already registered")
        _REGISTRY[name] = ModelSpec(name, factory, head_conv)
        return factory

    return decorate


def available_architectures() -> list[str]:
    """Names accepted by :func:`build_model`, sorted."""
    _import_builtin_architectures()
    return sorted(_REGISTRY)


def get_spec(arch: str) -> ModelSpec:
    """The registered spec of ``arch``; ``ValueError`` listing the valid names if unknown."""
    _import_builtin_architectures()
    try:
        return _REGISTRY[arch]
    except KeyError:
        raise ValueError(
            f"unknown arch {arch!r}; valid architectures: {', '.join(sorted(_REGISTRY))}"
        ) from None


def _import_builtin_architectures() -> None:
    # Importing the modules runs their @register_model decorators (done lazily, not at import).
    from centernet.models import architectures  # noqa: F401
