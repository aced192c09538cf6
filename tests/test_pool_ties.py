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


def test_on_blank_images_the_folded_pool_sends_the_bias_its_gradient_once_per_window():
    # network3 adds the bias after the pool: every window of a blank image ties 4 ways, but
    # the bias sees each window's gradient once, as under the first-max rule
    x, y = np.zeros((4, 1, 28, 28)), np.arange(4)
    for backend in ("numpy", "torch"):
        loss_first, first = grads(backend, "first", x, y)
        loss_all, every = grads(backend, "all", x, y)
        assert loss_all == pytest.approx(loss_first, rel=1e-15)  # the forward pass does not change
        np.testing.assert_allclose(every["0.b"], first["0.b"], rtol=1e-12, err_msg=backend)
        assert np.abs(first["0.b"]).max() > 0


def test_a_separate_pool_layer_pools_the_biased_output_so_all_takes_p_squared_times_the_bias_gradient():
    # conv (no pool) -> pool: the bias is inside the pooled input, and Theano's rule applied
    # to that graph sends the bias the gradient of every tied maximum
    x, y = np.zeros((4, 1, 28, 28)), np.arange(4)
    loss_first, first = grads("numpy", "first", x, y, separate_pool=True)
    loss_all, every = grads("numpy", "all", x, y, separate_pool=True)
    assert loss_first == loss_all
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


# --- network3's ConvPoolLayer, written out independently in float64 ---------------------------
#
# network3.py: conv_out = conv2d(input, w) (valid); pooled_out = max_pool_2d(conv_out, 2x2);
# output = sigmoid(pooled_out + b.dimshuffle('x', 0, 'x', 'x')); Theano's max-pool gradient
# (DownsampleFactorMaxGrad) goes to every input equal to its window's maximum. Theano's conv2d
# flips the kernel; nnexp's does not, so the reference correlates, which only renames the
# weights. The softmax layer and the mean log-likelihood follow, differentiated by hand.


def _network3_loss_and_grads(params: dict, x: np.ndarray, y: np.ndarray, ties: str) -> tuple[float, dict]:
    w, b, w2, b2 = params["0.w"], params["0.b"], params["1.w"], params["1.b"]
    n, _, height, width = x.shape
    f, _, k, _ = w.shape
    ho, wo = height - k + 1, width - k + 1
    conv = np.zeros((n, f, ho, wo))
    for u in range(k):
        for v in range(k):
            conv += np.einsum("nchw,fc->nfhw", x[:, :, u:u + ho, v:v + wo], w[:, :, u, v])
    windows = conv.reshape(n, f, ho // 2, 2, wo // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, f, ho // 2, wo // 2, 4)
    pooled = windows.max(axis=-1)
    route = windows == pooled[..., None]  # Theano: every tied maximum
    tied_windows = int((route.sum(axis=-1) > 1).sum())
    if ties == "first":  # torch's rule, for the comparison: the first in row-major window order
        route = np.arange(4) == route.argmax(axis=-1)[..., None]
    a = 1.0 / (1.0 + np.exp(-(pooled + b[None, :, None, None])))
    flat = a.reshape(n, -1)  # (C, H, W) order
    zs = flat @ w2 + b2
    zs = zs - zs.max(axis=1, keepdims=True)
    logp = zs - np.log(np.exp(zs).sum(axis=1, keepdims=True))
    loss = -logp[np.arange(n), y].mean()
    dzs = np.exp(logp)
    dzs[np.arange(n), y] -= 1.0
    dzs /= n
    grads = {"1.w": flat.T @ dzs, "1.b": dzs.sum(axis=0)}
    dz = (dzs @ w2.T).reshape(a.shape) * a * (1.0 - a)  # at pooled + b
    grads["0.b"] = dz.sum(axis=(0, 2, 3))  # b is added once per window
    dwin = route * dz[..., None]  # (n, f, ho/2, wo/2, 4)
    dconv = dwin.reshape(n, f, ho // 2, wo // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, f, ho, wo)
    grads["0.w"] = np.stack([np.stack([np.einsum("nfhw,nchw->fc", dconv, x[:, :, u:u + ho, v:v + wo])
                                       for v in range(k)], axis=-1) for u in range(k)], axis=-2)
    return loss, grads, tied_windows


def _images_with_ties(n: int, rng) -> np.ndarray:
    x = np.zeros((n, 1, 16, 16))  # blank borders: windows tie at the bias
    x[:, :, 4:12, 4:12] = rng.random((n, 1, 8, 8))
    x[:, :, 5:10, 5:10] = 1.0  # a saturated stroke: windows tie at another value
    return x


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("ties", ["first", "all"])
def test_conv_pool_gradient_matches_network3s_layer(backend, ties):
    rng = np.random.default_rng(3)
    x, y = _images_with_ties(5, rng), rng.integers(0, 10, size=5)
    layer_list = [{"type": "conv", "filters": 3, "size": 3, "pool": 2, "activation": "sigmoid", "pool_ties": ties},
                  {"type": "softmax", "units": 10}]
    spec = build_spec(config.resolve({"model": {"layers": layer_list}})["model"]["layers"], (1, 16, 16))
    params = init_params(spec, "xavier", rng)
    params["0.b"] = rng.normal(size=3)  # network3's N(0, 1) biases
    model = backends.get(backend).build(spec, params, Objective("log-likelihood"), dtype="float64", device="cpu")
    loss, got = model.loss_and_grads(x, y)
    ref_loss, want, tied_windows = _network3_loss_and_grads(params, x, y, ties)
    assert tied_windows > 50  # the images do exercise the tie rule
    assert loss == pytest.approx(ref_loss, rel=1e-14)
    for name in want:
        scale = np.abs(want[name]).max()
        assert np.abs(got[name] - want[name]).max() <= 1e-14 * scale, name


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_first_rule_keeps_the_bias_before_the_pool(backend):
    # Under the first-max rule the bias stays inside the pooled values, as before `all` moved
    # it: a bias of 1 rounds (float32) the window's inputs 1e-8 and 2e-8 into a tie, and the
    # first of them, the input 1, gets the gradient. Were the bias added after the pool, the
    # exact maximum, the input 2, would get it, and dw/db would be 2 instead of 1.
    layer_list = [{"type": "conv", "filters": 1, "size": 1, "pool": 2, "activation": "linear"},
                  {"type": "softmax", "units": 2}]
    spec = build_spec(config.resolve({"model": {"layers": layer_list}})["model"]["layers"], (1, 2, 2))
    params = {"0.w": np.full((1, 1, 1, 1), 1e-8), "0.b": np.ones(1),
              "1.w": np.array([[1.0, -1.0]]), "1.b": np.zeros(2)}
    model = backends.get(backend).build(spec, params, Objective("log-likelihood"), dtype="float32", device="cpu")
    _, g = model.loss_and_grads(np.array([[[[1.0, 2.0], [0.0, 0.0]]]]), np.array([0]))
    assert g["0.b"][0] != 0
    assert g["0.w"][0, 0, 0, 0] == g["0.b"][0]
