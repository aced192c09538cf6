"""Random hyper-parameter search (Saitoh ch. 6): draw config values, train one run per draw.

`nnexp search CONFIG --sample training.eta=log-uniform:1e-6:1e-2 --trials 100` draws every
trial's values up front from one seeded generator, so a search is reproducible and a bad
sample spec or config key fails before anything trains. A search is a sweep whose points are
the draws (`sweepplan.search_plan`): each trial an ordinary run directory ``tNNN`` in the search's
sweep directory, run by the sweep's executors; `nnexp compare` reads them back.

A search whose values a sampler proposes from the trials before (--sampler tpe, ...), or whose
trials a pruner may stop (--pruner), runs through an Optuna study: `tuning`.

Distributions: ``log-uniform:LOW:HIGH`` (10 ** U(log10 LOW, log10 HIGH), for learning rates and
penalties), ``uniform:LOW:HIGH``, ``choice:A,B,...`` (each value read as YAML).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import yaml

from nnexp.errors import UserError
from nnexp.yamlio import parse_yaml

DISTRIBUTIONS = ("log-uniform", "uniform", "choice")


@dataclass(frozen=True)
class Sample:
    """One --sample: a dotted config key and the distribution its values come from."""

    key: str
    kind: str
    args: tuple

    def draw(self, rng: np.random.Generator) -> Any:
        if self.kind == "log-uniform":
            low, high = self.args
            return float(10.0 ** rng.uniform(math.log10(low), math.log10(high)))
        if self.kind == "uniform":
            return float(rng.uniform(*self.args))
        return self.args[int(rng.integers(len(self.args)))]


def parse_sample(text: str) -> Sample:
    """``KEY=KIND:ARGS`` -> Sample; a malformed spec is a UserError that quotes it."""
    def bad(why: str) -> UserError:
        return UserError(f"--sample {text!r}: {why}")

    key, sep, spec = text.partition("=")
    if not sep or not key.strip():
        raise bad("expected KEY=DISTRIBUTION:ARGS, e.g. training.eta=log-uniform:1e-6:1e-2")
    kind, _, rest = spec.partition(":")
    if kind not in DISTRIBUTIONS:
        raise bad(f"unknown distribution {kind!r}; valid: {', '.join(DISTRIBUTIONS)}")
    if kind == "choice":
        try:
            values = tuple(parse_yaml(v.strip()) for v in rest.split(",") if v.strip())
        except yaml.YAMLError as exc:
            raise bad(f"a value is not valid YAML ({str(exc).splitlines()[0]})") from None
        if not values:
            raise bad("choice needs at least one value: choice:A,B,...")
        return Sample(key.strip(), kind, values)
    parts = rest.split(":")
    try:
        low, high = (float(parse_yaml(p)) for p in parts) if len(parts) == 2 else (None, None)
    except (TypeError, ValueError, yaml.YAMLError):
        low = high = None
    if low is None or not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        raise bad(f"{kind} needs two numbers LOW:HIGH with LOW < HIGH")
    if kind == "log-uniform" and low <= 0:
        raise bad("log-uniform needs LOW > 0")
    return Sample(key.strip(), kind, (low, high))


def plan(samples: list[Sample], trials: int, seed: int) -> list[dict[str, Any]]:
    """Every trial's drawn values, key by key in the order the samples were given."""
    if len({s.key for s in samples}) != len(samples):
        raise UserError("--sample: a key is sampled twice")
    rng = np.random.default_rng(seed)
    return [{s.key: s.draw(rng) for s in samples} for _ in range(trials)]

