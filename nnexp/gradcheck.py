"""Compare a backend's analytic gradients with centred finite differences, in float64.

The tool to reach for after adding a layer: it builds the config's network in float64,
feeds it a few random images, and for a sample of every parameter's entries compares
dC/dθ from `loss_and_grads` with (C(θ+ε) - C(θ-ε)) / 2ε. Dropout masks are held fixed
between the two evaluations by reseeding them.

ReLU and max-pooling have kinks: where an input sits within EPS of one, the central
difference averages two slopes and disagrees with a correct gradient. Such an entry shows
itself by matching one of the one-sided differences instead; it is counted as a kink and left
out of the worst error. A wrong gradient matches neither side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nnexp import backends
from nnexp.backends import Model, Objective
from nnexp.network import NetworkSpec, build_spec, init_params

# Central differences in float64: truncation error ~EPS^2, rounding ~1e-16*|C|/EPS, both
# ~1e-11 here. The floor keeps that noise from inflating the relative error of near-zero
# gradients; a real mistake (a wrong factor, a missing term) still shows as > 1e-2.
EPS = 1e-5
DENOMINATOR_FLOOR = 1e-6
TOLERANCE = 1e-4
KINK_MATCH = 1e-3  # one-sided differences carry an O(EPS) truncation error: a looser match


@dataclass(frozen=True)
class ParamCheck:
    name: str
    shape: tuple[int, ...]
    checked: int  # entries compared
    worst_relative_error: float
    worst_analytic: float
    worst_numeric: float
    kinks: int = 0  # entries left out: within EPS of a ReLU or max-pool kink

    @property
    def ok(self) -> bool:
        return self.worst_relative_error <= TOLERANCE


def relative_error(analytic: np.ndarray, numeric: np.ndarray) -> np.ndarray:
    return np.abs(analytic - numeric) / np.maximum(np.abs(analytic) + np.abs(numeric), DENOMINATOR_FLOOR)


def check_model(model: Model, params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray,
                rng: np.random.Generator, max_entries: int | None = 30,
                dropout_seed: int = 1234) -> list[ParamCheck]:
    """Finite-difference check of every parameter of `model` (built in float64) at `params`."""
    params = {k: np.array(v, dtype=np.float64) for k, v in params.items()}
    model.set_params(params)
    base, grads = model.loss_and_grads(x, y, dropout_seed)
    results = []
    for name in grads:  # the trainable parameters (batch-norm statistics have no gradient)
        flat = params[name].reshape(-1)
        count = flat.size if max_entries is None else min(flat.size, max_entries)
        entries = rng.choice(flat.size, size=count, replace=False)
        plus_minus = np.empty((count, 2))
        for j, i in enumerate(entries):
            old = flat[i]
            flat[i] = old + EPS
            model.set_params(params)
            plus, _ = model.loss_and_grads(x, y, dropout_seed)
            flat[i] = old - EPS
            model.set_params(params)
            minus, _ = model.loss_and_grads(x, y, dropout_seed)
            flat[i] = old
            plus_minus[j] = plus, minus
        model.set_params(params)
        analytic = grads[name].reshape(-1)[entries]
        plus, minus = plus_minus.T
        numeric = (plus - minus) / (2 * EPS)
        errors = relative_error(analytic, numeric)
        one_sided = np.minimum(relative_error(analytic, (plus - base) / EPS),
                               relative_error(analytic, (base - minus) / EPS))
        kink = (errors > TOLERANCE) & (one_sided <= KINK_MATCH)
        errors = np.where(kink, 0.0, errors)
        k = int(np.argmax(errors))
        results.append(ParamCheck(name, params[name].shape, count, float(errors[k]),
                                  float(analytic[k]), float(numeric[k]), int(kink.sum())))
    return results


def gradcheck(cfg: dict, *, examples: int = 3, max_entries: int | None = 30,
              l2: float | None = None) -> tuple[NetworkSpec, list[ParamCheck]]:
    """Check the backend named in `cfg` on its network, with the config's cost and init.

    The L2 and L1 coefficients are lambda and l1 themselves (rather than the tiny lambda*m/n
    of a real run) so that the penalties' gradients are large enough to be checked too.
    """
    backend = backends.get(cfg["backend"])
    spec = build_spec(cfg["model"]["layers"])
    rng = np.random.default_rng(cfg["seed"])
    params = init_params(spec, cfg["model"]["init"], rng, cfg["model"]["init_std"])
    if cfg["model"]["init"] == "network3":
        # network3 starts the softmax layer at zero, where every input gradient through it
        # vanishes; a small random start exercises the whole chain.
        for name in params:
            if np.all(params[name] == 0):
                params[name] = rng.normal(0.0, 0.1, size=params[name].shape)
    objective = Objective(cfg["training"]["cost"], cfg["training"]["lambda"] if l2 is None else l2,
                          cfg["training"]["l1"])
    model = backend.build(spec, params, objective, dtype="float64",
                          device=backend.resolve_device(cfg["device"]), seed=0)
    x = rng.random((examples, *spec.input_shape))
    y = rng.integers(0, spec.num_classes, size=examples)
    return spec, check_model(model, params, x, y, rng, max_entries)
