"""nnexp: YAML experiments for the classic networks of Nielsen's and Saitoh's books.

From Python (`nnexp.api`): `nnexp.train`, `nnexp.runs`, `nnexp.compare`, `nnexp.sweep`.
"""

import sys
from types import ModuleType

__version__ = "0.1.0"

_API = ("train", "runs", "compare", "sweep", "TrainedRun", "RunList", "Table")
# `nnexp.runs`, `nnexp.compare` and `nnexp.sweep` are also modules of the package, and importing
# a module sets the package's attribute to it. Those three modules are made callable (they call
# the api function of their name), so `nnexp.compare(...)` works whichever one the attribute holds
# and `from nnexp import compare` still gives the module the package's own code imports.
_CALLABLE = ("runs", "compare", "sweep")


def __getattr__(name):
    """The Python API, imported on first use: `import nnexp` stays light (no NumPy, no data code)."""
    if name in _API:
        from nnexp import api

        return getattr(api, name)
    raise AttributeError(f"module 'nnexp' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_API])


class _ApiModule(ModuleType):
    """A module of the package that is also the api function of its name."""

    def __call__(self, *args, **kwargs):
        return self.__wrapped__(*args, **kwargs)

    @property
    def __wrapped__(self):  # inspect.signature(nnexp.compare) follows it to the function's signature
        from nnexp import api

        return getattr(api, self.__name__.rpartition(".")[2])


class _Package(ModuleType):
    def __getattribute__(self, name):
        value = super().__getattribute__(name)
        if name in _CALLABLE and type(value) is ModuleType:
            value.__class__ = _ApiModule
        return value


sys.modules[__name__].__class__ = _Package
