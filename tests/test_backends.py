"""The backend registry, and the Model contract every registered backend must keep.

Parametrized over `backends.names()`, so a newly registered backend is held to the contract
without a line added here.
"""

from __future__ import annotations

import numpy as np
import pytest

from nnexp import backends
from nnexp.backends import Objective, Optimizer
from nnexp.backends.base import PROGRESS_EVERY
from nnexp.config import _check_layers
from nnexp.errors import BackendError
from nnexp.network import build_spec, init_params

LAYERS = _check_layers([
    {"type": "conv", "filters": 3, "size": 3, "pool": 2, "activation": "relu"},
    {"type": "dense", "units": 8, "activation": "tanh", "dropout": 0.25},
    {"type": "softmax", "units": 4},
])
SHAPE = (1, 10, 10)


def test_unknown_backend_lists_the_valid_ones():
    with pytest.raises(BackendError, match="unknown backend 'tpu'; valid: numpy, torch"):
        backends.get("tpu")


def test_a_name_cannot_be_registered_twice():
    with pytest.raises(ValueError, match="registered twice"):
        backends.register("numpy")(lambda: None)


@pytest.fixture(params=backends.names())
def model(request):
    spec = build_spec(LAYERS, SHAPE)
    params = init_params(spec, "network3", np.random.default_rng(0))
    backend = backends.get(request.param)
    return backend.build(spec, params, Objective("log-likelihood", l2_coef=0.01), Optimizer("momentum", 0.9),
                         device="cpu", seed=3), params


def test_params_round_trip_in_the_portable_layout(model):
    model, params = model
    assert {k: v.shape for k, v in model.get_params().items()} == {k: v.shape for k, v in params.items()}
    assert all(np.allclose(model.get_params()[k], params[k]) for k in params)


def test_train_epoch_learns_reports_progress_and_keeps_state(model):
    model, params = model
    rng = np.random.default_rng(1)
    x = rng.random((2 * PROGRESS_EVERY + 30, *SHAPE), dtype=np.float32)
    y = (x.reshape(len(x), -1).mean(axis=1) > 0.5).astype(np.int64) * 3  # learnable: bright -> 3
    batches = rng.permutation(len(y)).reshape(-1, 2)  # 115 batches of 2
    seen: list[int] = []
    cost_before, _ = model.evaluate(x, y)
    for _ in range(5):
        model.train_epoch(x, y, batches, 0.05, seen.append)
    cost_after, _ = model.evaluate(x, y)
    assert seen[:2] == [PROGRESS_EVERY, len(batches)], "every PROGRESS_EVERY batches, then the end"
    assert cost_after < cost_before
    assert model.predict(x[:7]).shape == (7, 4)
    np.testing.assert_allclose(model.predict(x[:7]).sum(axis=1), 1.0, rtol=1e-5)
    state = model.get_state()
    assert any(k.startswith("velocity.") and np.any(v != 0) for k, v in state.items()
               if isinstance(v, np.ndarray)), "momentum buffers are part of the state"


def test_torch_backend_fixes_the_cublas_workspace_before_any_cuda_work(monkeypatch):
    """cuBLAS reads CUBLAS_WORKSPACE_CONFIG once, at the process's first matrix multiply, so
    the torch backend sets it on import; a deterministic CUDA build with a value cuBLAS cannot
    make reproducible is refused before any CUDA work, not deep inside training."""
    pytest.importorskip("torch")
    import os

    from nnexp.backends import torch as torch_backend

    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] in torch_backend.DETERMINISTIC_CUBLAS
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":0:0")
    backend = backends.get("torch")
    monkeypatch.setattr(type(backend), "resolve_device", lambda self, device: "cuda")
    spec = build_spec(LAYERS, SHAPE)
    params = init_params(spec, "network3", np.random.default_rng(0))
    with pytest.raises(BackendError, match="CUBLAS_WORKSPACE_CONFIG set to :4096:8 or :16:8, not ':0:0'"):
        backend.build(spec, params, Objective("log-likelihood"), device="cuda", deterministic=True)
