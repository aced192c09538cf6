"""nnexp from Python (a notebook, a script): the CLI's code path, without the CLI.

    import nnexp
    run = nnexp.train("configs/shallow.yaml", **{"training.eta": 0.5}, epochs=5)
    run.summary["test_accuracy"], run.metrics[-1], run.path

Overrides are config keys, dotted (``**{"training.eta": 0.5}``) or with ``__`` for the dots
(``training__eta=0.5``); a bare name that is a `training.` key (``epochs=5``) means that key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nnexp import config as configs
from nnexp import lifecycle
from nnexp.config import SCHEMA
from nnexp.errors import ConfigError


@dataclass(frozen=True)
class TrainedRun:
    """A finished (or paused) run: its directory, summary, per-epoch metrics and config."""

    path: Path
    summary: dict
    metrics: list[dict]
    config: dict


def _key(name: str) -> str:
    key = name.replace("__", ".")
    if "." not in key and key not in SCHEMA and key in SCHEMA["training"]:
        key = f"training.{key}"
    return key


def train(config: str | Path, *, runs_dir: str | Path = "runs", data_dir: str | Path | None = None,
          time_limit_minutes: float | None = None, **overrides: Any) -> TrainedRun:
    """Train the network `config` describes, with `overrides`; what `nnexp train` does."""
    sets = []
    for name, value in overrides.items():
        try:  # JSON would write NaN as NaN, which reads back as a string
            sets.append(f"{_key(name)}={json.dumps(value, allow_nan=False)}")
        except ValueError:
            raise ConfigError(_key(name), f"must be a finite number, got {value!r}") from None
    cfg = configs.load(config, sets)
    exp, run = lifecycle.new_run(cfg, runs_dir, data_dir)
    summary = lifecycle.execute(exp, run, lifecycle.Intent.START,
                                deadline=lifecycle.deadline_after(time_limit_minutes))
    return TrainedRun(run.path, summary, run.read_metrics(), cfg)
