"""`pool_ties: all`: Theano's max-pool gradient, which network3 trained with: every input that
ties for its window's maximum gets the whole gradient (torch's and the default rule: the first)."""

from __future__ import annotations

import numpy as np
import pytest

from nnexp import backends, config
from nnexp.backends import Objective
from nnexp.network import build_spec, init_params

pytest.importorskip("torch")


def layers(ties: str, separate_pool: bool = False) -> list[dict]:
    conv = {"type": "conv", "filters": 3, "size": 5, "pool": 1 if separate_pool else 2,
            "activation": "sigmoid", "pool_ties": ties}
    pool = [{"type": "pool", "size": 2, "pool_ties": ties}] if separate_pool else []
    return [conv, *pool, {"type": "dense", "units": 10, "activation": "sigmoid"}, {"type": "softmax", "units": 10}]


def grads(backend: str, ties: str, x, y, separate_pool=False):
    spec = build_spec(config.resolve({"model": {"layers": layers(ties, separate_pool)}})["model"]["layers"])
    params = init_params(spec, "xavier", np.random.default_rng(0))  # non-zero softmax: gradients reach conv
    model = backends.get(backend).build(spec, params, Objective("log-likelihood"), dtype="float64", device="cpu")
    return model.loss_and_grads(x, y)


@pytest.mark.parametrize("separate_pool", [False, True])
def test_on_blank_images_every_window_ties_and_all_takes_p_squared_times_the_bias_gradient(separate_pool):
    x, y = np.zeros((4, 1, 28, 28)), np.arange(4)  # conv output = bias everywhere: 4-way ties
    loss_first, first = grads("numpy", "first", x, y, separate_pool)
    loss_all, every = grads("numpy", "all", x, y, separate_pool)
    assert loss_first == loss_all  # the forward pass does not change
    np.testing.assert_allclose(every["0.b"], 4 * first["0.b"], rtol=1e-12)
    assert np.abs(first["0.b"]).max() > 0


@pytest.mark.parametrize("ties", ["first", "all"])
def test_torch_follows_the_numpy_rule_on_images_with_ties(ties):
    rng = np.random.default_rng(1)
    x = np.zeros((6, 1, 28, 28))
    x[:, :, 8:20, 8:20] = rng.random((6, 1, 12, 12))  # blank borders tie, the digit does not
    y = rng.integers(0, 10, size=6)
    loss_np, g_np = grads("numpy", ties, x, y)
    loss_t, g_t = grads("torch", ties, x, y)
    assert loss_np == pytest.approx(loss_t, rel=1e-12)
    for name in g_np:
        np.testing.assert_allclose(g_t[name], g_np[name], rtol=1e-9, atol=1e-12, err_msg=name)


def test_pool_ties_is_validated():
    with pytest.raises(config.ConfigError, match="model.layers.0.pool_ties: unknown value 'some'"):
        config.resolve({"model": {"layers": layers("some")}})
