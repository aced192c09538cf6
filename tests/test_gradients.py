"""The NumPy backend's backward passes against centred finite differences, in float64.

One table of small networks covers every layer type (first and later positions, since the
first layer skips its input gradient), every activation, every cost with its output layer,
both L2 forms and dropout with a fixed mask.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nnexp import backends
from nnexp.backends import Objective
from nnexp.config import _check_layers
from nnexp.gradcheck import TOLERANCE, check_model, gradcheck
from nnexp.network import build_spec, init_params

from conftest import make_config

SHAPE = (1, 10, 10)


def dense(units, activation="sigmoid", dropout=0.0):
    return {"type": "dense", "units": units, "activation": activation, "dropout": dropout}


def conv(filters, size, pool=1, activation="sigmoid", pad=0, **more):
    return {"type": "conv", "filters": filters, "size": size, "pool": pool, "activation": activation,
            "pad": pad, **more}


def softmax(units=4, dropout=0.0):
    return {"type": "softmax", "units": units, "dropout": dropout}


CASES = {
    **{f"dense-{act}": ([dense(6, act), softmax()], "log-likelihood", 0.0)
       for act in ("sigmoid", "tanh", "relu", "linear")},
    "cross-entropy": ([dense(6), dense(4, "sigmoid")], "cross-entropy", 0.0),
    **{f"quadratic-{act}": ([dense(6, "tanh"), dense(4, act)], "quadratic", 0.0)
       for act in ("sigmoid", "tanh", "linear", "relu")},
    "conv-first": ([conv(3, 3), softmax()], "log-likelihood", 0.0),
    "conv-pool-first": ([conv(3, 3, pool=2, activation="relu"), softmax()], "log-likelihood", 0.0),
    **{f"conv-pool-second-{act}": ([conv(2, 3), conv(3, 3, pool=2, activation=act), dense(5, "relu"),
                                    softmax()], "log-likelihood", 0.0)
       for act in ("sigmoid", "tanh", "relu", "linear")},
    "padded": ([conv(2, 3, pad=1, activation="relu"), conv(3, 3, pool=2, pad=2, activation="tanh"),
                softmax()], "log-likelihood", 0.0),
    "separate-pool": ([conv(3, 3, activation="tanh"), {"type": "pool", "size": 2}, softmax()],
                      "log-likelihood", 0.0),
    "pool-first": ([{"type": "pool", "size": 2}, dense(5), softmax()], "log-likelihood", 0.0),
    "l2": ([conv(2, 3, pool=2), dense(5), softmax()], "log-likelihood", 0.7),
    "batch-norm": ([conv(2, 3, pool=2), {**dense(5, "relu"), "batch_norm": True},
                    {**dense(4, "tanh"), "batch_norm": True}, softmax()], "log-likelihood", 0.3),
    "batch-norm-output": ([dense(6, "tanh"), {**dense(4, "sigmoid"), "batch_norm": True}],
                          "cross-entropy", 0.0),
    "batch-norm-dropout": ([{**dense(6, "relu"), "batch_norm": True}, {**dense(5, "sigmoid", dropout=0.5),
                                                                        "batch_norm": True},
                            softmax(dropout=0.2)], "log-likelihood", 0.0),
    "dropout": ([conv(2, 3, pool=2, activation="relu"), dense(6, "relu", dropout=0.5),
                 softmax(dropout=0.3)], "log-likelihood", 0.2),
    # strides that tile the input exactly and that leave its last rows and columns unused
    "stride-first": ([conv(3, 4, stride=2, activation="tanh"), softmax()], "log-likelihood", 0.0),
    "stride-second": ([conv(2, 3, pad=1, activation="relu"), conv(3, 3, stride=2, pool=2, activation="tanh"),
                       softmax()], "log-likelihood", 0.0),
    "conv-batch-norm": ([conv(3, 3, pool=2, activation="relu", batch_norm=True),
                         conv(2, 3, stride=2, activation="tanh", batch_norm=True), softmax()],
                        "log-likelihood", 0.3),
}


@pytest.mark.parametrize("case", CASES)
def test_backward_matches_finite_differences(case):
    layers, cost, l2 = CASES[case]
    spec = build_spec(_check_layers(layers), SHAPE)
    rng = np.random.default_rng(7)
    params = init_params(spec, "network2", rng)
    model = backends.get("numpy").build(spec, params, Objective(cost, l2_coef=l2), dtype="float64")
    x = rng.random((3, *SHAPE))
    y = rng.integers(0, spec.num_classes, size=3)
    results = check_model(model, params, x, y, rng, max_entries=None)
    worst = {r.name: r.worst_relative_error for r in results}
    assert set(worst) == set(spec.trainable_names)
    assert max(worst.values()) < TOLERANCE, worst
    assert all(r.kinks == 0 for r in results)  # every entry checked by central differences


@pytest.mark.parametrize("l2,l1", [(0.0, 0.3), (0.7, 0.3)], ids=["l1", "l1+l2"])
def test_penalty_gradients_match_finite_differences(l2, l1):
    """L1's gradient l1*sign(w) (weights only): finite differences agree away from w = 0,
    where random weights never sit."""
    spec = build_spec(_check_layers([conv(2, 3, pool=2), dense(5), softmax()]), SHAPE)
    rng = np.random.default_rng(8)
    params = init_params(spec, "network2", rng)
    objective = Objective("log-likelihood", l2_coef=l2, l1_coef=l1)
    model = backends.get("numpy").build(spec, params, objective, dtype="float64")
    x, y = rng.random((3, *SHAPE)), rng.integers(0, spec.num_classes, size=3)
    worst = {r.name: r.worst_relative_error for r in check_model(model, params, x, y, rng, max_entries=None)}
    assert max(worst.values()) < TOLERANCE, worst
    plain = backends.get("numpy").build(spec, params, Objective("log-likelihood", l2_coef=l2), dtype="float64")
    loss, grads = model.loss_and_grads(x, y)
    loss0, grads0 = plain.loss_and_grads(x, y)
    weights = [n for n in params if n.endswith(".w")]
    assert loss - loss0 == pytest.approx(l1 * sum(np.abs(params[n]).sum() for n in weights))
    for name in params:  # biases carry no penalty
        extra = l1 * np.sign(params[name]) if name.endswith(".w") else 0.0
        np.testing.assert_allclose(grads[name], grads0[name] + extra, rtol=1e-12, atol=1e-12)


def scale_dense_bias_gradients(monkeypatch, factor: float) -> None:
    """Break every dense layer's backward pass: its bias gradient comes out `factor` times
    too large."""
    from nnexp.backends.numpy import layers

    original = layers.Dense.backward_z

    def scaled(self, dz):
        out = original(self, dz)
        self.grads["b"] = factor * self.grads["b"]
        return out

    monkeypatch.setattr(layers.Dense, "backward_z", scaled)


def test_check_catches_a_wrong_gradient(monkeypatch):
    """The checker itself must fail when backward is wrong (here: the bias gradient doubled)."""
    spec = build_spec(_check_layers([dense(5), softmax()]), SHAPE)
    rng = np.random.default_rng(0)
    params = init_params(spec, "network2", rng)
    model = backends.get("numpy").build(spec, params, Objective("log-likelihood"), dtype="float64")
    scale_dense_bias_gradients(monkeypatch, 2.0)
    results = check_model(model, params, rng.random((3, *SHAPE)), np.array([0, 1, 2]), rng)
    assert not all(r.ok for r in results)


def test_an_input_at_a_relu_kink_is_told_apart_from_a_wrong_gradient(monkeypatch):
    """One unit's pre-activation sits 3e-6 above ReLU's kink: a -EPS step crosses it, so the
    central difference halves that bias's slope. The check must call it a kink, not a failure,
    and still fail a gradient that is wrong."""
    spec = build_spec(_check_layers([dense(3, "relu"), softmax()]), SHAPE)
    rng = np.random.default_rng(5)
    params = init_params(spec, "network2", rng)
    x, y = rng.random((1, *SHAPE)), np.array([1])
    params["0.b"][0] = 3e-6 - float(x.reshape(-1) @ params["0.w"][:, 0])
    model = backends.get("numpy").build(spec, params, Objective("log-likelihood"), dtype="float64")
    bias = {r.name: r for r in check_model(model, params, x, y, rng, max_entries=None)}["0.b"]
    assert bias.ok and bias.kinks == 1

    scale_dense_bias_gradients(monkeypatch, 1.1)
    bias = {r.name: r for r in check_model(model, params, x, y, rng, max_entries=None)}["0.b"]
    assert not bias.ok


def test_dropout_masks_are_fixed_by_seed_and_differ_between_seeds():
    spec = build_spec(_check_layers([dense(20, dropout=0.5), softmax()]), SHAPE)
    params = init_params(spec, "network2", np.random.default_rng(0))
    model = backends.get("numpy").build(spec, params, Objective("log-likelihood"), dtype="float64")
    x, y = np.random.default_rng(1).random((4, *SHAPE)), np.array([0, 1, 2, 3])
    assert model.loss_and_grads(x, y, 5)[0] == model.loss_and_grads(x, y, 5)[0]
    assert model.loss_and_grads(x, y, 5)[0] != model.loss_and_grads(x, y, 6)[0]


def test_inference_dropout_scales_the_input_by_keep_probability():
    """network3's form: inference computes (1-p)·xW + b, not inverted dropout."""
    spec = build_spec(_check_layers([softmax(4, dropout=0.25)]), SHAPE)
    params = init_params(spec, "network2", np.random.default_rng(0))
    model = backends.get("numpy").build(spec, params, Objective("log-likelihood"), dtype="float64")
    x = np.random.default_rng(1).random((2, *SHAPE))
    z = 0.75 * x.reshape(2, -1) @ params["0.w"] + params["0.b"]
    expected = np.exp(z - z.max(1, keepdims=True))
    np.testing.assert_allclose(model.predict(x), expected / expected.sum(1, keepdims=True), rtol=1e-12)


def test_max_pool_ties_send_the_gradient_to_one_input():
    """A blank image convolves to the bias everywhere, so every pool window is a 4-way tie.
    Each window's gradient must reach exactly one position (as in torch), not all four."""
    from nnexp.backends.numpy.layers import Conv

    spec = build_spec(_check_layers([conv(2, 3, pool=2, activation="linear"), softmax(2)]), SHAPE)
    layer = Conv(spec.layers[0], need_dx=True)
    layer.params = {"w": np.ones((3 * 3 * 1, 2)), "b": np.array([0.5, -1.0])}
    a = layer.forward(np.zeros((1, 10, 10, 1)), train=True)  # (1, 4, 4, 2): conv 8x8, pooled
    assert np.all(a == layer.params["b"])
    layer.backward_z(np.ones_like(a))
    np.testing.assert_array_equal(layer.grads["b"], [16.0, 16.0])  # 16 windows, once each
    assert layer.mask.sum(axis=0).max() == 1 and layer.mask[0].all()  # the first offset wins


@pytest.mark.parametrize("form,lmbda,expected", [("network2", 5.0, 5.0 / 50_000),
                                                 ("network3", 0.1, 0.1 * 10 / 50_000),
                                                 ("plain", 0.1, 0.1)])
def test_l2_coefficient_forms(form, lmbda, expected):
    objective = Objective.from_training("log-likelihood", form, lmbda, 0.0, 50_000, 10)
    assert objective.l2_coef == pytest.approx(expected)


def test_gradcheck_entry_point_on_the_chapter6_architecture():
    cfg = make_config([conv(20, 5, 2, "relu"), conv(40, 5, 2, "relu"), dense(100, "relu"), softmax(10)],
                      model={"init": "network3"})
    spec, results = gradcheck(cfg, examples=2, max_entries=8)
    assert [r.name for r in results] == list(spec.param_shapes())
    assert all(r.ok for r in results), [(r.name, r.worst_relative_error) for r in results]


CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
SHIPPED = sorted(p for p in CONFIG_DIR.glob("*.yaml") if "\nconfig:" not in p.read_text())  # not sweep files


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_gradcheck_passes_every_shipped_config(path, backend):
    """No false alarms: large costs (λ 5 with the large init), tiny pre-activations (a deep
    ReLU net started at std 0.01), batch norm over three images all pass as correct."""
    if backend == "torch":
        pytest.importorskip("torch")
    from nnexp import config as configs

    cfg = configs.load(path, [f"backend={backend}", "device=cpu"])
    _, results = gradcheck(cfg, examples=2, max_entries=2)
    assert all(r.ok for r in results), [(r.name, r.worst_relative_error, r.worst_analytic, r.worst_numeric)
                                        for r in results if not r.ok]


def test_a_wrong_gradient_fails_even_beside_a_huge_cost(monkeypatch):
    """The noise floor scales with the cost, not past a real mistake: λ 5 with the large
    initialisation (a cost near 10⁴) and the dense bias gradient 10% too large still fails."""
    spec = build_spec(_check_layers([dense(30), softmax()]), SHAPE)
    rng = np.random.default_rng(3)
    params = init_params(spec, "large", rng)
    model = backends.get("numpy").build(spec, params, Objective("log-likelihood", l2_coef=5.0), dtype="float64")
    x, y = rng.random((3, *SHAPE)), rng.integers(0, spec.num_classes, size=3)
    assert all(r.ok for r in check_model(model, params, x, y, rng, max_entries=20))
    scale_dense_bias_gradients(monkeypatch, 1.1)
    assert not {r.name: r for r in check_model(model, params, x, y, rng, max_entries=20)}["0.b"].ok
