"""Shared fixtures. Real MNIST comes from $NNEXP_DATA_DIR, which CI (.ci/run) always sets."""

from __future__ import annotations

import functools
import json
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


def make_config(layers: list[dict] | None = None, *, sets: dict | None = None, **sections) -> dict:
    """A resolved config named "test", of a small dense net unless `layers` is given; the
    config's defaults (seed 0, 60 epochs, ...) for everything else.

    `sections` are merged into the top level: a dict updates only its own keys
    (``training={"epochs": 2}``), anything else is set (``name="shallow"``, ``seed=2``).
    `sets` are then applied as `--set` overrides would be (``{"training.eta": 0.5}``).
    The one config helper of the tests: `runfactory.make_run` builds its runs' with it too.
    """
    raw = {"name": "test", "model": {"layers": layers or [
        {"type": "dense", "units": 30, "activation": "sigmoid"},
        {"type": "softmax", "units": 10}]}}
    for key, value in sections.items():
        if isinstance(value, dict):
            raw.setdefault(key, {}).update(value)
        else:
            raw[key] = value
    overrides = [f"{key}={json.dumps(value)}" for key, value in (sets or {}).items()]
    return config.resolve(config.apply_overrides(raw, overrides))


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
