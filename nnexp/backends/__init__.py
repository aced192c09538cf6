"""The backend registry: `register`, `get`, `names`.

A backend registers a zero-argument factory under its name. Factories are called lazily, so
listing or choosing the NumPy backend never imports torch.
"""

from __future__ import annotations

from collections.abc import Callable

from nnexp.backends.base import Backend, Model, Objective, Optimizer
from nnexp.errors import BackendError

__all__ = ["Backend", "Model", "Objective", "Optimizer", "register", "get", "names"]

_FACTORIES: dict[str, Callable[[], Backend]] = {}
_INSTANCES: dict[str, Backend] = {}


def register(name: str):
    """Decorator: register a factory (or Backend subclass) returning the backend `name`."""

    def decorate(factory: Callable[[], Backend]):
        if name in _FACTORIES:
            raise ValueError(f"backend {name!r} is registered twice")
        _FACTORIES[name] = factory
        return factory

    return decorate


def names() -> list[str]:
    return list(_FACTORIES)


def get(name: str, *, require_available: bool = True) -> Backend:
    """The backend called `name`; unknown or (by default) unusable backends are BackendErrors."""
    if name not in _FACTORIES:
        raise BackendError(f"unknown backend {name!r}; valid: {', '.join(_FACTORIES)}")
    if name not in _INSTANCES:
        _INSTANCES[name] = _FACTORIES[name]()
    backend = _INSTANCES[name]
    if require_available:
        ok, why = backend.available()
        if not ok:
            usable = [n for n in _FACTORIES if n == name or get(n, require_available=False).available()[0]]
            raise BackendError(f"backend {name!r} is not available here: {why}; "
                               f"available: {', '.join(n for n in usable if n != name)}")
    return backend


@register("numpy")
def _numpy() -> Backend:
    # a backend's module is imported when it is first asked for: torch's takes seconds
    from nnexp.backends.numpy import NumpyBackend

    return NumpyBackend()


@register("torch")
def _torch() -> Backend:
    from nnexp.backends.torch import TorchBackend  # lazily: torch takes seconds to import

    return TorchBackend()
