"""Compare a backend's analytic gradients with centred finite differences, in float64.

The tool to reach for after adding a layer: it builds the config's network in float64,
feeds it a few random images, and for a sample of every parameter's entries compares
dC/dθ from `loss_and_grads` with (C(θ+ε) - C(θ-ε)) / 2ε. Dropout masks are held fixed
between the two evaluations by reseeding them.

Three things make a correct gradient look wrong, and each is told apart from a wrong one:

- ReLU and max-pooling have kinks: where an input sits within EPS of one, the central
  difference averages two slopes. Such an entry matches one of the one-sided differences,
  or the central difference at a step 100 or 10,000 times smaller, which crosses none (in
  a deep ReLU net with a tiny initialisation, pre-activations of 1e-6 sit everywhere).
- Steep curvature (batch norm over three images): the step's truncation error, gone at the
  smaller step too. Entries resolved either way are counted as `kinks` and left out.
- Rounding: C(θ±ε) is only known to about 1e-16·|C|, so the difference of two costs carries
  noise of ~1e-16·|C|/ε. A cost of 6·10⁴ (λ 5 with the large initialisation) swamps a
  gradient of 1e-7 that way. Differences below that noise floor (NOISE times it) pass.

A wrong gradient (a wrong factor, a dropped term) fails: at the first step to TOLERANCE; at
the smaller steps, tried only while their noise floor stays below 1% of the gradient, to about
that 1%. So an entry resolved at a smaller step is verified less tightly than the others, and
is counted apart (`kinks`).
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
SMALL_STEPS = (1e-2, 1e-4)  # the further tries' steps, relative to EPS: below the next kink
NOISE = 16  # the noise floor in units of float64's rounding of the cost, per step
MEANINGFUL = 1e-2  # a smaller step is tried only while its noise floor stays this far below |gradient|


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

    def cost_at(flat, i, value):
        old = flat[i]
        flat[i] = value
        model.set_params(params)
        cost, _ = model.loss_and_grads(x, y, dropout_seed)
        flat[i] = old
        return cost

    for name in grads:  # the trainable parameters (batch-norm statistics have no gradient)
        flat = params[name].reshape(-1)
        count = flat.size if max_entries is None else min(flat.size, max_entries)
        entries = rng.choice(flat.size, size=count, replace=False)
        plus_minus = np.array([(cost_at(flat, i, flat[i] + EPS), cost_at(flat, i, flat[i] - EPS))
                               for i in entries]).reshape(count, 2)
        model.set_params(params)
        analytic = grads[name].reshape(-1)[entries]
        plus, minus = plus_minus.T
        numeric = (plus - minus) / (2 * EPS)
        errors = _errors(analytic, numeric, np.maximum(np.abs(plus), np.abs(minus)), EPS)
        one_sided = np.minimum(relative_error(analytic, (plus - base) / EPS),
                               relative_error(analytic, (base - minus) / EPS))
        kink = (errors > TOLERANCE) & (one_sided <= KINK_MATCH)
        for j in np.flatnonzero((errors > TOLERANCE) & ~kink):  # more tries, at smaller steps
            for step in (EPS * f for f in SMALL_STEPS):
                i, a = entries[j], analytic[j:j + 1]
                if _noise(base, step) > MEANINGFUL * abs(a[0]):
                    break  # at this step the costs' rounding would hide a wrong gradient too
                up, down = cost_at(flat, i, flat[i] + step), cost_at(flat, i, flat[i] - step)
                central = _errors(a, np.array([(up - down) / (2 * step)]), np.array([max(abs(up), abs(down))]), step)
                sided = min(relative_error(a, np.array([(up - base) / step]))[0],
                            relative_error(a, np.array([(base - down) / step]))[0])
                if central[0] <= TOLERANCE or sided <= KINK_MATCH:  # an input exactly at a kink: one side
                    kink[j] = True
                    break
        model.set_params(params)
        errors = np.where(kink, 0.0, errors)
        k = int(np.argmax(errors))
        results.append(ParamCheck(name, params[name].shape, count, float(errors[k]),
                                  float(analytic[k]), float(numeric[k]), int(kink.sum())))
    return results


def _noise(cost, step: float):
    """How far rounding the costs to float64 can move a difference quotient at this step."""
    return NOISE * np.finfo(np.float64).eps * np.maximum(np.abs(cost), 1.0) / step


def _errors(analytic: np.ndarray, numeric: np.ndarray, cost: np.ndarray, step: float) -> np.ndarray:
    """Relative errors, zero where the difference is within the rounding noise of the costs."""
    return np.where(np.abs(analytic - numeric) <= _noise(cost, step), 0.0, relative_error(analytic, numeric))


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
