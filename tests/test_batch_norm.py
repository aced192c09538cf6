"""Batch normalisation on dense layers (Saitoh ch. 6), on every registered backend: batch
statistics in training, running averages in inference, and statistics that only training
steps move. Gradients are checked in test_gradients.py, the backends against each other in
test_torch_parity.py."""

from __future__ import annotations

import numpy as np
import pytest

from nnexp import backends
from nnexp.backends import Objective, Optimizer
from nnexp.config import _check_layers
from nnexp.network import BN_EPS, BN_MOMENTUM, build_spec, init_params

from conftest import REAL_MNIST, needs_mnist

SHAPE = (1, 3, 3)
LAYERS = _check_layers([{"type": "dense", "units": 5, "activation": "linear", "batch_norm": True},
                        {"type": "softmax", "units": 3}])


def built(backend: str, layers: list[dict], shape: tuple[int, ...], init: str):
    """(spec, params, model, x, y) on `backend`: 8 images far from mean 0, variance 1, so
    normalising shows, and their labels."""
    if not backends.get(backend).available()[0]:
        pytest.skip(f"{backend} is not available here")
    spec = build_spec(layers, shape)
    params = init_params(spec, init, np.random.default_rng(0))
    model = backends.get(backend).build(spec, params, Objective("log-likelihood"), Optimizer("sgd"),
                                        dtype="float64", device="cpu")
    rng = np.random.default_rng(1)
    return spec, params, model, rng.random((8, *shape)) * 3 + 1, rng.integers(0, 3, size=8)


@pytest.fixture(params=backends.names())
def setup(request):
    return built(request.param, LAYERS, SHAPE, "xavier")


def test_the_layer_has_no_bias_but_gamma_beta_and_untrained_statistics(setup):
    spec, params, _, _, _ = setup
    assert set(spec.param_shapes()) == {"0.w", "0.gamma", "0.beta", "0.running_mean", "0.running_var",
                                        "1.w", "1.b"}
    assert spec.trainable_names == ["0.w", "0.gamma", "0.beta", "1.w", "1.b"]
    assert spec.n_params == 9 * 5 + 5 + 5 + 5 * 3 + 3
    np.testing.assert_array_equal(params["0.gamma"], 1.0)
    np.testing.assert_array_equal(params["0.running_var"], 1.0)


def test_a_training_step_moves_the_running_statistics_by_one_tenth(setup):
    _, params, model, x, y = setup
    z = x.reshape(len(x), -1) @ params["0.w"]
    model.train_epoch(x, y, np.arange(8)[None, :], 0.0)  # eta 0: only the statistics change
    after = model.get_params()
    np.testing.assert_allclose(after["0.running_mean"], (1 - BN_MOMENTUM) * z.mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(after["0.running_var"], BN_MOMENTUM + (1 - BN_MOMENTUM) * z.var(axis=0),
                               rtol=1e-10)
    np.testing.assert_array_equal(after["0.w"], params["0.w"])


def test_taking_a_gradient_leaves_the_statistics_alone(setup):
    _, params, model, x, y = setup
    loss, grads = model.loss_and_grads(x, y)
    assert set(grads) == {"0.w", "0.gamma", "0.beta", "1.w", "1.b"}
    after = model.get_params()
    for name in ("0.running_mean", "0.running_var"):
        np.testing.assert_array_equal(after[name], params[name])


def test_inference_uses_the_running_statistics(setup):
    _, params, model, x, _ = setup
    mean, var = np.full(5, 2.0), np.full(5, 4.0)
    gamma, beta = np.linspace(0.5, 1.5, 5), np.linspace(-1, 1, 5)
    model.set_params({**params, "0.running_mean": mean, "0.running_var": var,
                      "0.gamma": gamma, "0.beta": beta})
    h = gamma * (x.reshape(len(x), -1) @ params["0.w"] - mean) / np.sqrt(var + BN_EPS) + beta
    z = h @ params["1.w"] + params["1.b"]
    expected = np.exp(z - z.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(model.predict(x), expected, rtol=1e-10)
    # per example, whatever else is in the batch (training mode would not be)
    np.testing.assert_allclose(model.predict(x[3:4]), expected[3:4], rtol=1e-10)


def test_training_mode_normalises_each_unit_over_the_batch(setup):
    """The training loss is computed from (z - batch mean) / sqrt(batch variance + eps)."""
    _, params, model, x, y = setup
    w_out, b_out = np.random.default_rng(2).normal(size=(5, 3)), np.array([0.1, -0.2, 0.3])
    model.set_params({**params, "1.w": w_out, "1.b": b_out, "0.running_mean": np.full(5, 9.0)})
    loss, grads = model.loss_and_grads(x, y)
    z = x.reshape(len(x), -1) @ params["0.w"]
    h = (z - z.mean(axis=0)) / np.sqrt(z.var(axis=0) + BN_EPS)
    out = h @ w_out + b_out
    log_p = out - out.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    assert loss == pytest.approx(-log_p[np.arange(len(y)), y].mean(), rel=1e-10)
    assert np.abs(grads["0.beta"]).max() > 1e-3  # beta is a live bias


# --- conv layers: one mean and variance per channel, over the batch and every position ---------

CONV_SHAPE = (2, 6, 6)
CONV_LAYERS = _check_layers([{"type": "conv", "filters": 3, "size": 3, "pool": 2, "activation": "linear",
                              "batch_norm": True}, {"type": "softmax", "units": 3}])


@pytest.fixture(params=backends.names())
def conv_setup(request):
    return built(request.param, CONV_LAYERS, CONV_SHAPE, "he")


def conv_z(params: dict, x: np.ndarray) -> np.ndarray:
    """The valid convolution without a bias, (B, F, 4, 4), written out as loops."""
    w = params["0.w"]
    z = np.zeros((len(x), 3, 4, 4))
    for i in range(4):
        for j in range(4):
            z[:, :, i, j] = np.einsum("bchw,fchw->bf", x[:, :, i:i + 3, j:j + 3], w)
    return z


def test_a_conv_layer_normalises_per_channel_and_has_no_bias(conv_setup):
    spec, params, model, x, y = conv_setup
    assert spec.param_shapes()["0.gamma"] == (3,) and "0.b" not in spec.param_shapes()
    model.train_epoch(x, y, np.arange(8)[None, :], 0.0)  # eta 0: only the statistics change
    z = conv_z(params, x)
    after = model.get_params()
    np.testing.assert_allclose(after["0.running_mean"], (1 - BN_MOMENTUM) * z.mean(axis=(0, 2, 3)), rtol=1e-10)
    np.testing.assert_allclose(after["0.running_var"], BN_MOMENTUM + (1 - BN_MOMENTUM) * z.var(axis=(0, 2, 3)),
                               rtol=1e-10)


def test_a_conv_layer_normalises_before_pooling_and_infers_from_running_statistics(conv_setup):
    """gamma < 0 makes the order visible: max-pooling gamma*z picks the smallest z."""
    _, params, model, x, _ = conv_setup
    mean, var = np.array([1.0, 2.0, 3.0]), np.array([4.0, 0.5, 2.0])
    gamma, beta = np.array([-1.0, 0.5, 2.0]), np.array([0.3, -0.1, 0.0])
    model.set_params({**params, "0.running_mean": mean, "0.running_var": var, "0.gamma": gamma, "0.beta": beta})
    shape = (1, 3, 1, 1)
    h = (gamma.reshape(shape) * (conv_z(params, x) - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + BN_EPS)
         + beta.reshape(shape))
    pooled = h.reshape(len(x), 3, 2, 2, 2, 2).max(axis=(3, 5))  # (B, F, 2, 2)
    out = pooled.reshape(len(x), -1) @ params["1.w"] + params["1.b"]
    expected = np.exp(out - out.max(axis=1, keepdims=True))
    np.testing.assert_allclose(model.predict(x), expected / expected.sum(axis=1, keepdims=True), rtol=1e-10)


@needs_mnist
def test_numpy_float32_conv_batch_norm_gradient_is_as_close_to_float64_as_torchs():
    # beyond_bn at batch 64: its first layer normalises over 64 * 24 * 24 = 36,864 positions.
    # Summed row after row in float32, the statistics (and dgamma, dbeta, the mean terms of
    # dx) were ~1e-2 off and gradients up to 3e-2 relative from float64's; torch's float32
    # batch norm is ~2e-6 off. Dropout is off: float32 and float64 draw different masks.
    from nnexp import config
    from nnexp.data import load_dataset

    cfg = config.load("configs/beyond_bn.yaml")
    cfg["model"]["layers"][-1]["dropout"] = 0.0
    spec = build_spec(cfg["model"]["layers"])
    assert spec.layers[0].batch_norm and spec.layers[0].type == "conv"
    params = init_params(spec, cfg["model"]["init"], np.random.default_rng(1))
    data = load_dataset("mnist", data_dir=REAL_MNIST, train_size=64).train
    grads = {dtype: backends.get("numpy").build(spec, params, Objective("log-likelihood"), dtype=dtype)
             .loss_and_grads(data.x, data.y)[1] for dtype in ("float32", "float64")}
    for name, exact in grads["float64"].items():
        error = np.abs(grads["float32"][name] - exact).max() / np.abs(exact).max()
        assert error < 1e-5, (name, error)


def test_batch_norm_sums_over_many_rows_are_accurate_in_float32():
    # 36,864 rows with a large common part, the worst case for a row-after-row float32 sum;
    # each sum is checked against the float64 sum of the very float32 terms the layer had,
    # so what is measured is the summation, not float32's rounding of the terms.
    from nnexp.backends.numpy.layers import Layer

    spec = build_spec(_check_layers([{"type": "conv", "filters": 4, "size": 1, "batch_norm": True},
                                     {"type": "softmax", "units": 2}]), (1, 192, 192))
    rng = np.random.default_rng(0)
    z = (rng.random((192 * 192, 4)) + 3.0).astype(np.float32)
    dz = (rng.random((192 * 192, 4)) + 0.5 + 2 * (z - 3.5)).astype(np.float32)  # dgamma large too
    layer = Layer(spec.layers[0], need_dx=True)
    layer.params = {"gamma": np.full(4, 1.5, np.float32), "beta": np.zeros(4, np.float32),
                    "running_mean": np.zeros(4, np.float32), "running_var": np.ones(4, np.float32)}
    layer._normalise(z, train=True)
    xn, std = layer.normalised.astype(np.float64), layer.std.astype(np.float64)
    dx = layer._normalise_backward(dz).astype(np.float64)

    def rel(got, terms):  # error against the float64 sum, in units of the terms' size
        return np.abs(got - terms.sum(axis=0)).max() / np.abs(terms).sum(axis=0).max()

    # forward: the normalised columns have mean 0, and the std is float64's
    assert np.abs(xn.mean(axis=0)).max() < 1e-5
    var = np.var(z.astype(np.float64), axis=0)
    np.testing.assert_allclose(std, np.sqrt(var + BN_EPS), rtol=1e-6)
    # backward: dbeta, dgamma, and dx with its two mean terms taken in float64
    assert rel(layer.grads["beta"], dz.astype(np.float64)) < 1e-6
    assert rel(layer.grads["gamma"], (dz * layer.normalised).astype(np.float64)) < 1e-6
    dxn = (dz * layer.params["gamma"]).astype(np.float64)
    want = (dxn - dxn.mean(axis=0) - xn * (dxn * xn).mean(axis=0)) / std
    assert np.abs(dx - want).max() < 2e-6 * np.abs(want).max()
