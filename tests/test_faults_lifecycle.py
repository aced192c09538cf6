"""One run's lifecycle under faults: a resume refused (another process holds the run, a damaged
checkpoint) leaves the run as it was; an extension equals a fresh run with the new setting;
damaged checkpoint metadata is one "damaged" error; an edited point's message says which value
is the original and what helps. Each drives the real command line on small MNIST subsets, and
real processes where another process matters (a lock holder, a Ctrl-C'd sweep)."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from nnexp.cli import app
from nnexp.runs import Run

from conftest import needs_mnist

pytestmark = needs_mnist

ROOT = Path(__file__).resolve().parent.parent
# Large steps on 100 images: validation accuracy rises, then wanders, so early stopping fires
# after ~10 epochs (patience 2 stops at 9, patience 3 at 10) in a fraction of a second each.
SMALL = {"name": "small", "seed": 3, "data": {"train_size": 100},
         "model": {"init": "network2", "layers": [{"type": "dense", "units": 10},
                                                  {"type": "softmax", "units": 10}]},
         "training": {"epochs": 30, "eta": 3.0, "batch_size": 10, "early_stopping": {"patience": 3}}}


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def train(tmp_path, name: str, *sets: str) -> Run:
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump(SMALL))
    made = cli("train", config, "--runs-dir", tmp_path / name, *[a for s in sets for a in ("--set", s)])
    assert made.exit_code == 0, made.output
    return Run(made.stdout.strip().splitlines()[-1])


def files(run: Run) -> dict[str, bytes]:
    """Every file of the run but the lock, byte for byte."""
    return {str(p.relative_to(run.path)): p.read_bytes() for p in sorted(run.path.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def history(run: Run) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in run.read_metrics()]


def outcome(run: Run) -> dict:
    return {k: v for k, v in run.read_summary().items() if k not in ("wall_time_s", "run_dir")}


# --- 16: damaged checkpoint metadata is one "damaged" error -------------------------------------


def _drop(key):
    return lambda meta: {k: v for k, v in meta.items() if k != key}


def _set(path: tuple, value):
    def edit(meta):
        target = meta
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return meta
    return edit


DAMAGES = {  # last.npz's metadata edited; the last two damage best.npz the same way
    "no-loop": _drop("loop"),
    "no-model-state": _drop("model_state"),
    "no-order-rng": _drop("order_rng"),
    "extra-loop-field": _set(("loop", "extra"), 1),
    "bad-rng-state": _set(("order_rng", "state"), "x"),
    "bad-model-rng-state": _set(("model_state", "rng", "state"), {"state": -1, "inc": 1}),
    "string-epoch": lambda meta: _set(("loop", "epoch"), "2")(_set(("epoch",), "2")(meta)),
    "not-an-object": lambda meta: [1, 2],
}


def rewrite_meta(path: Path, edit) -> None:
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["meta"] = np.array(json.dumps(edit(json.loads(str(arrays["meta"])))))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(buf.getvalue())


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory) -> Run:
    return train(tmp_path_factory.mktemp("trained"), "runs", "training.epochs=2")


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_damaged_checkpoint_metadata_is_one_damaged_error_in_resume_and_evaluate(tmp_path, two_epochs, damage):
    run = Run(shutil.copytree(two_epochs.path, tmp_path / "run"))
    rewrite_meta(run.checkpoint_path("last"), DAMAGES[damage])
    if damage in ("string-epoch", "not-an-object"):
        rewrite_meta(run.checkpoint_path("best"), _set(("epoch",), "2") if damage == "string-epoch"
                     else DAMAGES[damage])
    before = files(run)
    commands = [("resume", "--set", "training.epochs=3", "last")]  # extending the completed run
    if damage != "bad-model-rng-state":  # what only the backend reads; evaluate builds no optimiser
        commands.append(("evaluate", "--checkpoint", "last", "last"))
    if damage in ("string-epoch", "not-an-object"):
        commands.append(("evaluate", "best"))
    for *args, which in commands:
        result = cli(args[0], run.path, *args[1:])
        assert result.exit_code == 2, (args, result.output)
        assert result.output.startswith(f"error: checkpoint {run.checkpoint_path(which)} is damaged"), \
            (args, result.output)
        assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    run.write_summary({**run.read_summary(), "status": "interrupted"})  # as Ctrl-C leaves it
    before = files(run)
    resumed = cli("resume", run.path)
    assert resumed.exit_code == 2, resumed.output
    assert resumed.output.startswith(f"error: checkpoint {run.checkpoint_path('last')} is damaged"), resumed.output
    assert files(run) == before
