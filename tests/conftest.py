"""Shared fixtures. Real MNIST comes from $NNEXP_DATA_DIR, which CI (.ci/run) always sets."""

from __future__ import annotations

import functools
import os

import numpy as np
import pytest

from nnexp import config
from nnexp.data import mnist

REAL_MNIST = os.environ.get("NNEXP_DATA_DIR")
needs_mnist = pytest.mark.skipif(not REAL_MNIST, reason="set NNEXP_DATA_DIR to the MNIST files")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Nothing a test builds (expanded sets, downloads) lands in the user's real cache."""
    if "NNEXP_CACHE_DIR" not in os.environ:
        monkeypatch.setenv("NNEXP_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


@functools.cache
def _load(name, data_dir, train_size, expanded_seed):
    from nnexp.data import load_dataset

    return load_dataset(name, data_dir=data_dir, train_size=train_size, expanded_seed=expanded_seed)


@pytest.fixture
def cached_data(monkeypatch):
    """Load each (dataset, train_size) once per session: the loop never mutates the arrays."""
    import nnexp.training

    def load(name, *, data_dir=None, train_size=None, expanded_seed=0):
        return _load(name, str(data_dir) if data_dir else None, train_size, expanded_seed)

    monkeypatch.setattr(nnexp.training, "load_dataset", load)


def make_config(layers=None, **sections) -> dict:
    """A resolved config: a small dense net unless `layers` is given; `sections` are merged
    into the top level (``training={"epochs": 2}`` updates only that key)."""
    raw = {"name": "test", "model": {"layers": layers or [
        {"type": "dense", "units": 30, "activation": "sigmoid"},
        {"type": "softmax", "units": 10}]}}
    for key, value in sections.items():
        if isinstance(value, dict):
            raw.setdefault(key, {}).update(value)
        else:
            raw[key] = value
    return config.resolve(raw)


def write_fake_mnist(directory, n_train=60, n_test=12, *, gz=True, seed=0):
    """Valid MNIST-format IDX files of random (hence all distinct) images; returns the arrays."""
    rng = np.random.default_rng(seed)
    arrays = (
        rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, size=n_train, dtype=np.uint8),
        rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, size=n_test, dtype=np.uint8),
    )
    mnist.write_mnist_files(directory, *arrays, gz=gz)
    return arrays
