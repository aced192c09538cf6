"""Compare a backend's analytic gradients with centred finite differences, in float64.

The tool to reach for after adding a layer: it builds the config's network in float64,
feeds it a few random images, and for a sample of every parameter's entries compares
dC/dθ from `loss_and_grads` with (C(θ+ε) - C(θ-ε)) / 2ε. Dropout masks are held fixed
between the two evaluations by reseeding them.

Three things make a correct gradient look wrong, and each is told apart from a wrong one:

- ReLU and max-pooling have kinks: where an input sits within EPS of one, the central
  difference averages two slopes. Such an entry is tried again at steps 10, 100, 1,000 and
  10,000 times smaller, largest first, until one crosses no kink: in a deep ReLU net with a
  tiny initialisation, pre-activations of 1e-6 sit everywhere, so a step of EPS crosses
  several, and the middle layers' gradients are as small as a slope a kink adds. An input
  exactly at a kink (a max-pool tie) never gets a kink-free step: it matches one of the
  one-sided differences instead.
- Steep curvature (batch norm over three images): the step's truncation error, gone at the
  smaller steps too. Entries resolved at a smaller step or one-sidedly are counted as
  `kinks` and left out.
- Rounding: C(θ±ε) is only known to about 1e-16·|C|, so the difference of two costs carries
  noise of ~1e-16·|C|/ε. A cost of 6·10⁴ (λ 5 with the large initialisation) swamps a
  gradient of 1e-7 that way. Differences below that noise floor (NOISE times it) pass.

A wrong gradient (a wrong factor, a dropped term) fails. At the first step it is held to
TOLERANCE. At a smaller step it is held to TOLERANCE too, or to that step's noise floor where
that is larger; a step is tried only while its floor stays below MEANINGFUL (1%) of the
gradient, or of its parameter's typical (RMS) gradient for an entry far smaller than that
(entries of 1e-7 beside 1e-5 in the deep ReLU net): 1% of the larger of the two is the most a
floor ever excuses. Once a smaller step's two one-sided differences agree, nothing bends
within it and its central difference is the verdict: a one-sided match at a larger step no
longer excuses a gradient 0.1% off. A one-sided match confirms an entry (to KINK_MATCH, 1e-3)
only where no step down to that 1% limit is free of kinks. On saitoh_no_batch_norm (60 seeds,
3 images, 30 entries) 97.6% of the entries resolved this way are confirmed to TOLERANCE, 1.3%
within a noise floor, 1.1% one-sidedly.

Richardson extrapolation across two steps would not tighten this: it cancels the steps'
truncation error, which at EPS/10 is already far below TOLERANCE, while what loosens the
smaller steps is rounding noise, which it amplifies, and kinks, across which neither step's
difference is smooth.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

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
SMALL_STEPS = (1e-1, 1e-2, 1e-3, 1e-4)  # the further tries' steps, relative to EPS, largest first
NOISE = 16  # the noise floor in units of float64's rounding of the cost, per step
MEANINGFUL = 1e-2  # a smaller step is tried only while its noise floor stays this far below the gradient


@dataclass(frozen=True)
class ParamCheck:
    name: str
    shape: tuple[int, ...]
    checked: int  # entries compared
    worst_relative_error: float
    worst_analytic: float
    worst_numeric: float
    kinks: int = 0  # entries left out: confirmed at a smaller step or one-sidedly (a kink within EPS)
    # what a person reads: the real relative error of the entry shown (worst_analytic and
    # worst_numeric's), and whether their difference is within the costs' rounding noise, where
    # a relative error says nothing (worst_relative_error, the verdict's, counts it as 0)
    relative_error: float = 0.0
    under_noise: bool = False

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
        raw = relative_error(analytic, numeric)
        noisy = np.abs(analytic - numeric) <= _noise(np.maximum(np.abs(plus), np.abs(minus)), EPS)
        errors = np.where(noisy, 0.0, raw)  # as `_errors`: the rounding noise is no error
        # what "1% of the gradient" means for an entry far smaller than its neighbours: 1% of
        # the parameter's typical (RMS) gradient, which a wrong backward pass would miss by more
        typical = float(np.sqrt(np.mean(np.square(grads[name]))))
        kink = np.zeros(count, dtype=bool)
        for j in np.flatnonzero(errors > TOLERANCE):  # a kink, steep curvature, or a wrong gradient
            i, a = entries[j], float(analytic[j])
            kink[j] = _confirmed(partial(cost_at, flat, i), float(flat[i]), a, base,
                                 (float(plus[j]), float(minus[j])), max(abs(a), typical))
        model.set_params(params)
        errors = np.where(kink, 0.0, errors)
        k = int(np.argmax(errors))
        if errors[k] <= TOLERANCE and not kink.all():
            # it passes: show the entry whose relative error is really the worst, noise or not
            k = int(np.argmax(np.where(kink, -1.0, raw)))
        results.append(ParamCheck(name, params[name].shape, count, float(errors.max()),
                                  float(analytic[k]), float(numeric[k]), int(kink.sum()),
                                  relative_error=0.0 if kink[k] else float(raw[k]),
                                  under_noise=bool(noisy[k] and not kink[k] and raw[k] > 0)))
    return results


def _confirmed(cost_of, value: float, analytic: float, base: float, at_eps: tuple[float, float],
               scale: float) -> bool:
    """Whether an entry the central difference at EPS does not confirm is a kink's or steep
    curvature's, not a wrong gradient's. `cost_of(v)` is the cost with the entry at v,
    `at_eps` the costs at value ± EPS, `scale` what MEANINGFUL is a fraction of: the
    gradient's size, or its parameter's typical one where that is larger.

    At EPS, then at each smaller step while its noise floor stays below MEANINGFUL of
    `scale` (beyond, the costs' rounding would hide a wrong gradient too):
    - the central difference matches (to TOLERANCE, or within the noise floor): confirmed;
    - below EPS, the two one-sided differences agree (to TOLERANCE): nothing bends within
      the step, so the central difference's mismatch is the gradient's own: not confirmed;
    - one one-sided difference matches (to KINK_MATCH): a kink on the other side, or a
      gradient a little wrong; a smaller step tells which.
    Steps exhausted, a one-sided match at any of them confirms: an input exactly at a kink,
    or kinks closer than the smallest meaningful step.
    """
    a, one_sided = np.array([analytic]), False
    for f in (1.0, *SMALL_STEPS):
        step = EPS * f
        if f == 1.0:
            up, down = at_eps  # its central difference is the one that failed
        else:
            if _noise(base, step) > MEANINGFUL * scale:
                break
            up, down = cost_of(value + step), cost_of(value - step)
            central = np.array([(up - down) / (2 * step)])
            if _errors(a, central, np.array([max(abs(up), abs(down))]), step)[0] <= TOLERANCE:
                return True
        right, left = np.array([(up - base) / step]), np.array([(base - down) / step])
        if f < 1.0 and relative_error(right, left)[0] <= TOLERANCE:
            return False
        one_sided = one_sided or min(relative_error(a, right)[0], relative_error(a, left)[0]) <= KINK_MATCH
    return one_sided


def _noise(cost, step: float):
    """How far rounding the costs to float64 can move a difference quotient at this step."""
    return NOISE * np.finfo(np.float64).eps * np.maximum(np.abs(cost), 1.0) / step


def _errors(analytic: np.ndarray, numeric: np.ndarray, cost: np.ndarray, step: float) -> np.ndarray:
    """Relative errors, zero where the difference is within the rounding noise of the costs."""
    return np.where(np.abs(analytic - numeric) <= _noise(cost, step), 0.0, relative_error(analytic, numeric))


def gradcheck(cfg: dict, *, examples: int = 3, max_entries: int | None = 30,
              l2_coef: float | None = None) -> tuple[NetworkSpec, list[ParamCheck]]:
    """Check the backend named in `cfg` on its network, with the config's cost and init.

    The L2 and L1 coefficients are lambda and l1 themselves (rather than the tiny lambda*m/n
    of a real run) so that the penalties' gradients are large enough to be checked too;
    `l2_coef` sets the L2 one instead.
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
    objective = Objective(cfg["training"]["cost"], l2_coef=cfg["training"]["lambda"] if l2_coef is None else l2_coef,
                          l1_coef=cfg["training"]["l1"])
    model = backend.build(spec, params, objective, dtype="float64",
                          device=backend.resolve_device(cfg["device"]), seed=0)
    x = rng.random((examples, *spec.input_shape))
    y = rng.integers(0, spec.num_classes, size=examples)
    return spec, check_model(model, params, x, y, rng, max_entries)
