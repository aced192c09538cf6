"""Random augmentation of the whole training array, drawn afresh for each epoch.

Why per epoch rather than a bigger file: the expanded file fixes one set of copies forever;
drawing new shifts, angles and distortions each epoch gives the network a different variant
of every image each time, at the cost of a few seconds per epoch. The config's
``data.augment`` mapping names what to apply; the keys compose in the order of AUGMENT_KEYS.

Non-goals: labels never change, so they are not passed; no colour or crop transforms.
"""

from __future__ import annotations

import math

import numpy as np

from nnexp.data.expand import elastic, rotate_each, shift
from nnexp.errors import ConfigError

AUGMENT_KEYS = ("shift", "rotate", "elastic")
ELASTIC_DEFAULTS = {"alpha": 34.0, "sigma": 4.0}  # Simard et al. (2003) for MNIST


def check_augment_spec(spec: dict | None) -> dict:
    """Validate a ``data.augment`` mapping and return it normalised:
    ``{"shift": int px, "rotate": float deg, "elastic": {"alpha", "sigma"}}``, each key only
    when given and active. Errors name the key path, e.g. ``data.augment.shift``.
    """
    if not spec:
        return {}
    if not isinstance(spec, dict):
        raise ConfigError("data.augment", f"expected a mapping of {', '.join(AUGMENT_KEYS)}, got {spec!r}")
    unknown = sorted(set(spec) - set(AUGMENT_KEYS))
    if unknown:
        raise ConfigError(f"data.augment.{unknown[0]}", f"unknown augmentation; valid keys: {', '.join(AUGMENT_KEYS)}")
    out: dict = {}
    if "shift" in spec:
        s = spec["shift"]
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 0 <= s <= 27:
            raise ConfigError("data.augment.shift", f"expected a whole number of pixels 0..27, got {s!r}")
        if s:
            out["shift"] = int(s)
    if "rotate" in spec:
        r = spec["rotate"]
        number = isinstance(r, (int, float, np.number)) and not isinstance(r, bool)
        if not (number and math.isfinite(r) and 0 <= r <= 180):
            raise ConfigError("data.augment.rotate", f"expected a number of degrees 0..180, got {r!r}")
        if r:
            out["rotate"] = float(r)
    if "elastic" in spec:
        e = spec["elastic"]
        if e is True:
            e = {}
        if e is False or e is None:
            return out
        if not isinstance(e, dict) or set(e) - set(ELASTIC_DEFAULTS):
            raise ConfigError("data.augment.elastic", f"expected true or a mapping with alpha and sigma, got {e!r}")
        params = {**ELASTIC_DEFAULTS, **e}
        for k, v in params.items():
            if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not (math.isfinite(v) and v >= 0):
                raise ConfigError(f"data.augment.elastic.{k}", f"expected a number 0 or more, got {v!r}")
        out["elastic"] = {k: float(v) for k, v in params.items()}
    return out


def augment_epoch(x: np.ndarray, spec: dict | None, rng: np.random.Generator) -> np.ndarray:
    """A new (N, 1, 28, 28) array of randomly transformed copies of `x`, one per image.

    ``shift: s`` moves each image by integers (dy, dx) drawn uniformly from -s..s (zero
    fill); ``rotate: d`` by an angle uniform in (-d, d) degrees; ``elastic`` applies a fresh
    Simard distortion. An empty spec returns `x` itself (no copy).
    """
    spec = check_augment_spec(spec)
    if not spec:
        return x
    out = x
    if "shift" in spec:
        out = _random_shift(out, spec["shift"], rng)
    if "rotate" in spec:
        d = spec["rotate"]
        out = rotate_each(out, rng.uniform(-d, d, size=len(out)))
    if "elastic" in spec:
        out = elastic(out, rng, **spec["elastic"])
    return out


def _random_shift(x: np.ndarray, s: int, rng: np.random.Generator) -> np.ndarray:
    """Shift each image by its own (dy, dx) in -s..s: one vectorised `shift` per distinct pair
    ((2s+1)^2 groups), instead of a Python loop over images."""
    n = len(x)
    dy, dx = rng.integers(-s, s + 1, size=(2, n))  # (N,), (N,)
    code = (dy + s) * (2 * s + 1) + (dx + s)  # (N,) one integer per (dy, dx) pair
    out = np.empty_like(x)
    for c in np.unique(code):
        idx = np.flatnonzero(code == c)  # images sharing this shift
        out[idx] = shift(x[idx], int(dy[idx[0]]), int(dx[idx[0]]))
    return out
