"""Initialisation: each scheme's weight scale per layer, as the books' code draws it.

Scales are checked on the sample standard deviation of large layers, so a wrong formula
(fan-in for fan-out, a missing square root, the pool factor) is far outside the tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest

from nnexp.config import _check_layers
from nnexp.network import build_spec, init_params

CONV2 = _check_layers([
    {"type": "conv", "filters": 20, "size": 5, "pool": 2, "activation": "relu"},
    {"type": "conv", "filters": 40, "size": 5, "pool": 2, "activation": "relu"},
    {"type": "dense", "units": 100, "activation": "relu"},
    {"type": "softmax", "units": 10},
])


def sds(init: str, **kwargs) -> dict[str, float]:
    params = init_params(build_spec(CONV2), init, np.random.default_rng(0), **kwargs)
    return {name: float(value.std()) for name, value in params.items()}


def test_network3_scales_by_fan_out_with_the_pool_area():
    got = sds("network3")
    # n_out of a conv layer = filters * k^2 / pool^2: conv1 20*25/4, conv2 40*25/4 (chapter 6)
    assert got["0.w"] == pytest.approx(np.sqrt(1 / 125), rel=0.05)  # 0.0894
    assert got["1.w"] == pytest.approx(np.sqrt(1 / 250), rel=0.02)  # 0.0632
    assert got["2.w"] == pytest.approx(np.sqrt(1 / 100), rel=0.02)
    assert got["0.b"] == pytest.approx(1.0, rel=0.5) and got["2.b"] == pytest.approx(1.0, rel=0.2)
    assert got["3.w"] == got["3.b"] == 0.0  # the softmax layer starts at zero


@pytest.mark.parametrize("init,scale", [("network2", lambda n: 1 / np.sqrt(n)), ("xavier", lambda n: np.sqrt(1 / n)),
                                        ("he", lambda n: np.sqrt(2 / n)), ("large", lambda n: 1.0),
                                        ("small", lambda n: 0.01)])
def test_fan_in_schemes(init, scale):
    got = sds(init)
    fan_in = {"0.w": 1 * 25, "1.w": 20 * 25, "2.w": 40 * 4 * 4, "3.w": 100}
    for name, n in fan_in.items():
        assert got[name] == pytest.approx(scale(n), rel=0.05), name
    book_biases = init in ("network2", "large")
    assert (got["2.b"] > 0.5) == book_biases  # N(0, 1) in the books' code, zero in Saitoh's


def test_small_takes_its_scale_from_init_std():
    assert sds("small", small_std=0.05)["1.w"] == pytest.approx(0.05, rel=0.02)


def test_batch_norm_starts_as_the_identity():
    spec = build_spec(_check_layers([{"type": "dense", "units": 50, "batch_norm": True},
                                     {"type": "softmax", "units": 10}]))
    params = init_params(spec, "he", np.random.default_rng(0))
    assert "0.b" not in params
    assert params["0.w"].std() == pytest.approx(np.sqrt(2 / 784), rel=0.05)
    for name, value in (("gamma", 1.0), ("beta", 0.0), ("running_mean", 0.0), ("running_var", 1.0)):
        np.testing.assert_array_equal(params[f"0.{name}"], np.full(50, value))
