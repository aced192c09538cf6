"""nnexp: YAML experiments for the classic networks of Nielsen's and Saitoh's books.

From Python (`nnexp.api`): `nnexp.train`, `nnexp.runs`, `nnexp.compare`, `nnexp.sweep`.
"""

__version__ = "0.1.0"

_API = ("train", "runs", "compare", "sweep", "TrainedRun", "RunList", "Table")


def __getattr__(name):
    """The Python API, imported on first use: `import nnexp` stays light (no NumPy, no data code).
    No module of the package has an API function's name, so importing one never hides it."""
    if name in _API:
        from nnexp import api

        return getattr(api, name)
    raise AttributeError(f"module 'nnexp' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_API])
