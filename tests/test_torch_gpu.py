"""The CUDA path: the graph-captured training step against eager torch, and a tiny run on a GPU.

Skipped where torch sees no CUDA device. Eager CUDA training is what a model falls back to
when capture fails (`graph_error` set); the tests set it to get an eager reference.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from nnexp import backends, config  # noqa: E402
from nnexp.backends import Objective, Optimizer  # noqa: E402
from nnexp.network import build_spec, init_params  # noqa: E402

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]

LAYERS = [  # conv2_relu in miniature
    {"type": "conv", "filters": 4, "size": 5, "pool": 2, "activation": "relu"},
    {"type": "conv", "filters": 8, "size": 5, "pool": 2, "activation": "relu"},
    {"type": "dense", "units": 32, "activation": "relu", "dropout": 0.0},
    {"type": "softmax", "units": 10, "dropout": 0.0},
]


BEYOND = [  # beyond_bn in miniature: conv batch norm, a strided conv, dense batch norm
    {"type": "conv", "filters": 4, "size": 5, "pool": 2, "activation": "relu", "batch_norm": True},
    {"type": "conv", "filters": 8, "size": 3, "stride": 2, "activation": "relu", "batch_norm": True},
    {"type": "dense", "units": 32, "activation": "relu", "dropout": 0.0, "batch_norm": True},
    {"type": "softmax", "units": 10, "dropout": 0.0},
]


def build(device: str, dtype: str = "float64", dropout: float = 0.0, eager: bool = False, layers=LAYERS):
    layers = [dict(layer) for layer in config._check_layers(layers)]
    layers[2]["dropout"] = layers[3]["dropout"] = dropout
    spec = build_spec(layers)
    params = init_params(spec, "network3", np.random.default_rng(0))
    model = backends.get("torch").build(spec, params, Objective("log-likelihood", l2_coef=0.01),
                                        Optimizer("momentum", 0.9), dtype=dtype, device=device, seed=4)
    if eager:
        model.graph_error = "eager reference (set by the test)"
    return model


def data(n=200):
    rng = np.random.default_rng(1)
    return rng.random((n, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, size=n)


def batches(n=200, m=10, seed=2):
    return np.random.default_rng(seed).permutation(n).reshape(-1, m)


@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-9), ("float32", 1e-4)])
def test_graphed_steps_match_eager(dtype, rtol):
    x, y = data()
    graphed, eager = build("cuda", dtype), build("cuda", dtype, eager=True)
    for epoch, eta in enumerate((0.1, 0.05)):  # eta changes between epochs: the graph's buffer
        graphed.train_epoch(x, y, batches(seed=epoch), eta)
        eager.train_epoch(x, y, batches(seed=epoch), eta)
    assert graphed.graph is not None and graphed.graph_error is None
    assert eager.graph is None
    expected = eager.get_params()
    for name, value in graphed.get_params().items():
        np.testing.assert_allclose(value, expected[name], rtol=rtol, atol=rtol * 1e-2)


def test_graphed_batch_norm_and_stride_match_eager_and_the_cpu():
    """The running statistics are updated in place inside the graph: they must move as eagerly."""
    x, y = data()
    graphed, eager, cpu = (build("cuda", layers=BEYOND), build("cuda", eager=True, layers=BEYOND),
                           build("cpu", layers=BEYOND))
    for model in (graphed, eager, cpu):
        model.train_epoch(x, y, batches(), 0.1)
    assert graphed.graph is not None and graphed.graph_error is None
    expected = cpu.get_params()
    for model in (graphed, eager):
        for name, value in model.get_params().items():
            np.testing.assert_allclose(value, expected[name], rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(graphed.predict(x), cpu.predict(x), rtol=1e-8, atol=1e-12)


def test_cuda_matches_cpu_in_float64():
    x, y = data()
    gpu, cpu = build("cuda"), build("cpu")
    gpu.train_epoch(x, y, batches(), 0.1)
    cpu.train_epoch(x, y, batches(), 0.1)
    np.testing.assert_allclose(gpu.predict(x), cpu.predict(x), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(gpu.evaluate(x, y), cpu.evaluate(x, y), rtol=1e-8)


def test_an_epoch_never_waits_for_the_gpu():
    x, y = data()
    model = build("cuda", "float32", dropout=0.5)
    model.train_epoch(x, y, batches(), 0.1)  # uploads the data and captures: those may wait
    torch.cuda.set_sync_debug_mode("error")
    try:
        model.train_epoch(x, y, batches(seed=3), 0.05)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert model.graph is not None


def test_dropout_state_resumes_on_the_graph():
    """The dropout generator is registered with the graph: restoring its state into a fresh
    model replays the same masks (up to the float noise of cuDNN's algorithms)."""
    x, y = data()
    first = build("cuda", dropout=0.5)
    first.train_epoch(x, y, batches(), 0.1)
    params, state = first.get_params(), first.get_state()
    assert state["rng_device"] == "cuda"
    first.train_epoch(x, y, batches(seed=3), 0.1)

    second = build("cuda", dropout=0.5)
    second.set_params(params)
    second.set_state(state)
    second.train_epoch(x, y, batches(seed=3), 0.1)
    expected = first.get_params()
    for name, value in second.get_params().items():
        np.testing.assert_allclose(value, expected[name], rtol=1e-9, atol=1e-12)
    third = build("cuda", dropout=0.5)  # a different mask stream gives different weights
    third.set_params(params)
    third.train_epoch(x, y, batches(seed=3), 0.1)
    assert not np.allclose(third.get_params()["2.w"], expected["2.w"])


@pytest.mark.skipif(not os.environ.get("NNEXP_DATA_DIR"), reason="NNEXP_DATA_DIR is not set")
def test_tiny_training_run_on_cuda(tmp_path):
    from nnexp import training as train
    from nnexp import lifecycle
    from nnexp.rundir import Run

    curves = {}
    for device in ("cuda", "cpu"):
        cfg = config.resolve({"name": f"gpu-{device}", "seed": 1, "backend": "torch", "device": device,
                              "dtype": "float64", "data": {"train_size": 1000},
                              "model": {"layers": LAYERS}, "training": {"epochs": 2, "eta": 0.1}})
        exp = train.prepare(cfg)
        run = Run.create(tmp_path, cfg["name"])
        summary = lifecycle.start(exp, run)
        assert summary["device"] == device and summary["status"] == "completed"
        curves[device] = run.read_metrics()
    for gpu, cpu in zip(curves["cuda"], curves["cpu"]):
        assert gpu["validation_accuracy"] == cpu["validation_accuracy"]
        np.testing.assert_allclose(gpu["validation_cost"], cpu["validation_cost"], rtol=1e-8)
