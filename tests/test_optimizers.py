"""The update rules (`Optimizer.update`) against PyTorch's own optimisers, and the NumPy model's
use of them (step counting, L2, buffers in checkpoints).

The parity tests compare the two backends, which share `Optimizer.update`; these pin the
shared arithmetic itself to an independent implementation. Saitoh's rules put eps in other
places than PyTorch's, so the comparisons use eps = 0 (gradients here are never zero).
"""

from __future__ import annotations

import numpy as np
import pytest

from nnexp import backends
from nnexp.backends import Objective, Optimizer
from nnexp.backends.base import OPTIMIZER_BUFFERS
from nnexp.network import build_spec, init_params

torch = pytest.importorskip("torch")

SHAPE = (5, 3)
STEPS = 6


def torch_optimizer(name: str, param, eta: float):
    """PyTorch's version of each rule, configured to be the same rule."""
    if name == "sgd":
        return torch.optim.SGD([param], lr=eta)
    if name in ("momentum", "nesterov"):
        return torch.optim.SGD([param], lr=eta, momentum=0.9, nesterov=name == "nesterov")
    if name == "adagrad":
        return torch.optim.Adagrad([param], lr=eta, eps=0.0)
    if name == "rmsprop":
        return torch.optim.RMSprop([param], lr=eta, alpha=0.99, eps=0.0)
    if name == "adam":
        return torch.optim.Adam([param], lr=eta, betas=(0.9, 0.999), eps=0.0)
    raise AssertionError(name)


def test_every_configurable_optimizer_has_buffers_declared():
    from nnexp.config import OPTIMIZERS

    assert set(OPTIMIZERS) == set(OPTIMIZER_BUFFERS)


@pytest.mark.parametrize("name", OPTIMIZER_BUFFERS)
def test_update_matches_torch_optim(name):
    rng = np.random.default_rng(3)
    eta = 0.1
    w = rng.normal(size=SHAPE)
    grads = [rng.normal(size=SHAPE) for _ in range(STEPS)]
    optimizer = Optimizer(name, eps=0.0)
    buffers = {b: np.zeros(SHAPE) for b in optimizer.buffers}
    param = torch.tensor(w.copy(), requires_grad=True)
    reference = torch_optimizer(name, param, eta)
    for t, g in enumerate(grads, start=1):
        optimizer.update(w, g.copy(), buffers, optimizer.step_size(eta, t))
        param.grad = torch.tensor(g)
        reference.step()
        np.testing.assert_allclose(w, param.detach().numpy(), rtol=1e-12, atol=1e-14)
    assert not np.allclose(w, param.detach().numpy() + 1e-3)  # the comparison can fail


def test_eps_only_guards_zero_gradients():
    """A parameter whose gradient has always been zero stays put instead of becoming NaN."""
    for name in ("adagrad", "rmsprop", "adam"):
        optimizer = Optimizer(name)
        w, buffers = np.ones(3), {b: np.zeros(3) for b in optimizer.buffers}
        optimizer.update(w, np.zeros(3), buffers, optimizer.step_size(0.1, 1))
        np.testing.assert_array_equal(w, np.ones(3))


def test_adam_first_step_moves_each_weight_by_about_eta():
    """Bias correction: Adam's first step is eta * sign(g), whatever the gradient's scale."""
    optimizer = Optimizer("adam")
    w, buffers = np.zeros(4), {b: np.zeros(4) for b in optimizer.buffers}
    optimizer.update(w, np.array([0.05, -2.0, 50.0, -0.1]), buffers, optimizer.step_size(0.01, 1))
    np.testing.assert_allclose(w, [-0.01, 0.01, -0.01, 0.01], rtol=1e-3)


# --- the NumPy model: one step per mini-batch, counted, checkpointed ---------------------------

LAYERS = [{"type": "dense", "units": 6, "activation": "tanh", "dropout": 0.0},
          {"type": "softmax", "units": 3, "dropout": 0.0}]


def numpy_model(name: str, l2: float = 0.0):
    spec = build_spec(LAYERS, (1, 2, 2))
    params = init_params(spec, "network2", np.random.default_rng(0))
    return backends.get("numpy").build(spec, params, Objective("log-likelihood", l2_coef=l2),
                                       Optimizer(name, eps=0.0), dtype="float64")


@pytest.mark.parametrize("name", ["nesterov", "rmsprop", "adam"])
def test_numpy_model_steps_like_torch_optim(name):
    """Each mini-batch is one step of the rule on the batch gradient (L2 included), and Adam's
    step count starts at 1 and carries across epochs."""
    l2, eta = 0.05, 0.02
    model = numpy_model(name, l2)
    rng = np.random.default_rng(1)
    x, y = rng.random((8, 1, 2, 2)), rng.integers(0, 3, size=8)
    params = {k: torch.tensor(v, requires_grad=True) for k, v in model.get_params().items()}
    reference = {k: torch_optimizer(name, p, eta) for k, p in params.items()}
    batches = np.arange(8).reshape(2, 4)
    for _ in range(3):  # epochs
        for rows in batches:
            _, grads = model.loss_and_grads(x[rows], y[rows])  # gradient at the current weights
            for k, p in params.items():
                p.grad = torch.tensor(grads[k])
                reference[k].step()
            model.train_epoch(x, y, rows[None, :], eta)
    for k, value in model.get_params().items():
        np.testing.assert_allclose(value, params[k].detach().numpy(), rtol=1e-9, atol=1e-12)
    assert int(model.get_state()["optimizer.step"]) == 6


@pytest.mark.parametrize("name", ["momentum", "adagrad", "adam"])
def test_state_round_trip_continues_identically(name):
    rng = np.random.default_rng(2)
    x, y = rng.random((8, 1, 2, 2)), rng.integers(0, 3, size=8)
    batches = np.arange(8).reshape(2, 4)
    straight, paused = numpy_model(name), numpy_model(name)
    for model in (straight, paused):
        model.train_epoch(x, y, batches, 0.01)
    resumed = numpy_model(name)
    resumed.set_params(paused.get_params())
    resumed.set_state(paused.get_state())
    straight.train_epoch(x, y, batches, 0.01)
    resumed.train_epoch(x, y, batches, 0.01)
    for k, value in straight.get_params().items():
        np.testing.assert_array_equal(resumed.get_params()[k], value)
    fresh = numpy_model(name)  # without the state the second epoch differs (the test can fail)
    fresh.set_params(paused.get_params())
    fresh.train_epoch(x, y, batches, 0.01)
    assert any(not np.array_equal(fresh.get_params()[k], v) for k, v in straight.get_params().items())
