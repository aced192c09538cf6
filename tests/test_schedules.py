"""Learning-rate schedules beyond chapter 3's halving: step, cosine and a linear warm-up.
The η of each epoch is a function of the epoch alone, so a paused run resumes on schedule."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from nnexp import training as train
from nnexp import lifecycle
from nnexp.lifecycle import Intent
from nnexp.errors import ConfigError, RunDirError
from nnexp.rundir import Run

from conftest import make_config, needs_mnist


def etas(epochs=6, **training):
    tr = make_config(training={"epochs": epochs, "eta": 0.4, **training})["training"]
    return [train.epoch_eta(tr, e, tr["eta"]) for e in range(1, epochs + 1)]


def test_constant_is_the_default_and_never_moves():
    assert etas() == [0.4] * 6


def test_step_multiplies_by_the_factor_every_n_epochs():
    assert etas(schedule="step", step_every=2, step_factor=0.5) == pytest.approx([0.4, 0.4, 0.2, 0.2, 0.1, 0.1])


def test_cosine_falls_from_eta_to_nearly_zero_over_the_run():
    got = etas(epochs=4, schedule="cosine")
    assert got == pytest.approx([0.4 * 0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4)])
    assert got[0] == 0.4 and 0 < got[-1] < 0.06 and got == sorted(got, reverse=True)


def test_warmup_rises_linearly_then_cosine_spans_the_epochs_after_it():
    got = etas(epochs=6, schedule="cosine", warmup_epochs=2)
    assert got[:3] == pytest.approx([0.4 / 3, 0.8 / 3, 0.4])  # epoch 3 is the cosine's first
    assert got[3:] == pytest.approx([0.4 * 0.5 * (1 + math.cos(math.pi * e / 4)) for e in (1, 2, 3)])


def test_warmup_rises_to_eta_then_the_step_decay_counts_from_its_end():
    got = etas(epochs=7, schedule="step", step_every=1, step_factor=0.5, warmup_epochs=3)
    assert got == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.2, 0.1, 0.05])
    got = etas(epochs=6, schedule="step", step_every=2, step_factor=0.5, warmup_epochs=1)
    assert got == pytest.approx([0.2, 0.4, 0.4, 0.2, 0.2, 0.1])


@pytest.mark.parametrize("training", [{}, {"warmup_epochs": 3}, {"schedule": "cosine"},
                                      {"schedule": "cosine", "warmup_epochs": 1},
                                      {"schedule": "cosine", "warmup_epochs": 4, "eta": 0.05}])
def test_constant_and_cosine_keep_their_exact_values(training):
    # the formulas before the step schedule's warm-up was fixed, written out: bit for bit
    tr = make_config(training={"epochs": 9, "eta": 0.4, **training})["training"]
    eta0, warmup = tr["eta"], tr["warmup_epochs"]
    for e in range(1, 10):
        eta = eta0
        if tr["schedule"] == "cosine":
            eta = eta0 * 0.5 * (1.0 + math.cos(math.pi * max(e - 1 - warmup, 0) / (9 - warmup)))
        assert train.epoch_eta(tr, e, eta0) == (eta * e / (warmup + 1) if e <= warmup else eta)


def test_halve_on_plateau_keeps_the_loops_halved_rate_under_warmup():
    tr = make_config(training={"epochs": 5, "eta": 0.4, "schedule": "halve-on-plateau", "warmup_epochs": 1,
                               "early_stopping": {"patience": 2}})["training"]
    assert train.epoch_eta(tr, 1, 0.1) == pytest.approx(0.05) and train.epoch_eta(tr, 2, 0.1) == 0.1


@pytest.mark.parametrize("training,key,words", [
    ({"schedule": "step"}, "training.step_every", "needs training.step_every"),
    ({"schedule": "cosine", "step_every": 3}, "training.step_every", "only the step schedule"),
    ({"step_factor": 0.5}, "training.step_factor", "only the step schedule"),
    ({"warmup_epochs": 6}, "training.warmup_epochs", "none of the 6 epochs"),
    ({"schedule": "linear"}, "training.schedule", "cosine"),
])
def test_schedule_settings_that_cannot_work_are_refused_by_key(training, key, words):
    with pytest.raises(ConfigError) as err:
        make_config(training={"epochs": 6, **training})
    assert err.value.path == key and words in str(err.value)


@needs_mnist
@pytest.mark.usefixtures("cached_data")
def test_a_paused_cosine_run_resumes_on_schedule_and_cannot_be_lengthened(tmp_path, monkeypatch):
    cfg = make_config(data={"train_size": 500}, training={"epochs": 3, "eta": 0.5, "schedule": "cosine",
                                                          "warmup_epochs": 1})
    whole = Run.create(tmp_path / "whole", cfg["name"])
    lifecycle.start(train.prepare(cfg), whole)
    recorded = [r["eta"] for r in whole.read_metrics()]
    assert recorded == pytest.approx(etas(epochs=3, schedule="cosine", warmup_epochs=1, eta=0.5))

    clock = iter([0.0, 100.0])  # the time limit falls after epoch 1
    monkeypatch.setattr(train.time, "monotonic", lambda: next(clock))
    run = Run.create(tmp_path / "paused", cfg["name"])
    exp = train.prepare(cfg)
    assert lifecycle.start(exp, run, deadline=50.0)["epochs_run"] == 1
    monkeypatch.undo()
    lifecycle.resume(exp, run)
    strip = lambda r: {k: v for k, v in r.items() if k != "seconds"}  # noqa: E731
    assert [strip(r) for r in run.read_metrics()] == [strip(r) for r in whole.read_metrics()]

    longer = make_config(data={"train_size": 500}, training={"epochs": 5, "eta": 0.5, "schedule": "cosine",
                                                             "warmup_epochs": 1})
    with pytest.raises(RunDirError, match="cosine schedule is spread over training.epochs"):
        lifecycle.execute(train.prepare(longer), run, Intent.EXTEND)
    assert np.isclose(run.read_summary()["epochs_run"], 3)


@needs_mnist
def test_the_command_line_refuses_to_lengthen_a_cosine_run_before_touching_it(tmp_path):
    from typer.testing import CliRunner

    from nnexp.cli import app

    cli = CliRunner()
    shallow = Path(__file__).resolve().parent.parent / "configs" / "shallow.yaml"
    made = cli.invoke(app, ["train", str(shallow), "training.epochs=2", "training.schedule=cosine",
                            "data.train_size=200", "--runs-dir", str(tmp_path)])
    assert made.exit_code == 0, made.output
    run = Run(made.stdout.strip().splitlines()[-1])
    before = (run.path / "config.yaml").read_text()
    refused = cli.invoke(app, ["resume", str(run.path), "--set", "training.epochs=4"])
    assert refused.exit_code == 2 and "cosine schedule is spread over training.epochs" in refused.output
    assert (run.path / "config.yaml").read_text() == before  # nothing half-written
