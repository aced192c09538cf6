"""nnexp: YAML experiments for the classic networks of Nielsen's and Saitoh's books."""

__version__ = "0.1.0"


def train(config, **kwargs):
    """Train a config from Python: see `nnexp.api.train` (the CLI's code path)."""
    from nnexp.api import train as _train  # lazily: `import nnexp` stays light (no NumPy, no data code)

    return _train(config, **kwargs)
