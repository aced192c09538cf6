"""The majority vote: a hand-computed case with ties, and `nnexp ensemble` end to end on
tiny runs with random parameters (the vote only needs loadable models, not good ones).
End-to-end tests need MNIST's test set: they run where NNEXP_DATA_DIR is set."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from runfactory import FAST_CONV_LAYERS, SMALL_LAYERS, make_run, png_size
from typer.testing import CliRunner

from nnexp import plots
from nnexp.cli import app
from nnexp.ensemble import _labels, majority_vote, plot_ensemble_errors, run_ensemble
from nnexp.errors import UserError
from nnexp.evaluate import load_run_model

needs_mnist = pytest.mark.skipif(not os.environ.get("NNEXP_DATA_DIR"),
                                 reason="NNEXP_DATA_DIR (MNIST files) is not set")


def test_majority_vote_by_hand_with_ties():
    # 3 members, 4 images, 3 classes.
    outputs = np.array([
        [[0.6, 0.3, 0.1], [0.5, 0.4, 0.1], [0.1, 0.2, 0.7], [0.1, 0.2, 0.7]],  # member 0
        [[0.7, 0.2, 0.1], [0.1, 0.5, 0.4], [0.2, 0.7, 0.1], [0.3, 0.6, 0.1]],  # member 1
        [[0.2, 0.7, 0.1], [0.1, 0.3, 0.6], [0.5, 0.1, 0.4], [0.1, 0.3, 0.6]],  # member 2
    ])
    votes = outputs.argmax(axis=2)
    # image 0: votes 0, 0, 1 -> 0 by majority
    # image 1: votes 0, 1, 2 -> three-way tie; sums 0.7, 1.2, 1.1 -> 1
    # image 2: votes 2, 1, 0 -> three-way tie; sums 0.8, 1.0, 1.2 -> 2
    # image 3: votes 2, 1, 2 -> 2 by majority, although class 1's summed output (1.1) beats
    #          class 0's (0.5) and is close to 2's (1.4): only tied classes may win on outputs
    assert majority_vote(votes, outputs).tolist() == [0, 1, 2, 2]


def test_tie_breaking_considers_only_the_tied_classes():
    # Two members vote 0 and 1 (a tie); class 2 has the largest summed output but no vote.
    outputs = np.array([[[0.40, 0.05, 0.55]], [[0.05, 0.45, 0.50]]])
    votes = np.array([[0], [1]])  # given votes (e.g. from another rule), not argmax
    assert majority_vote(votes, outputs).tolist() == [1]  # 0.50 > 0.45; class 2 (1.05) is out


def test_majority_vote_checks_shapes():
    with pytest.raises(ValueError, match="do not match"):
        majority_vote(np.zeros((2, 3), int), np.zeros((3, 3, 10)))


def test_runs_trained_on_different_datasets_cannot_vote(tmp_path):
    make_run(tmp_path, "mnist", checkpoint=True)
    make_run(tmp_path, "fashion", sets={"data.dataset": "fashion-mnist"}, checkpoint=True)
    with pytest.raises(UserError, match="must share a test set"):
        run_ensemble([tmp_path])


@needs_mnist
def test_ensemble_end_to_end(tmp_path):
    runs = [make_run(tmp_path / "runs", "conv", layers=FAST_CONV_LAYERS, seed=s, checkpoint=True) for s in (1, 2)]
    runs.append(make_run(tmp_path / "runs", "dense", layers=SMALL_LAYERS, seed=3, checkpoint=True))
    result, warnings = run_ensemble([str(tmp_path / "runs" / "*")])
    assert warnings == [] and len(result.members) == 3 and result.n == 10_000
    assert result.errors == int(np.sum(result.predictions != result.test.test.y))
    assert result.accuracy == pytest.approx(1 - result.errors / result.n)
    assert sorted(m.name for m in result.members) == sorted(r.name for r in runs)
    assert all(0 <= m.accuracy <= 1 and m.errors == round((1 - m.accuracy) * result.n) for m in result.members)
    # The vote on the validation set, recomputed here from each member's own predictions.
    val = result.test.validation
    outputs = np.stack([load_run_model(r).model.predict(val.x) for r in runs])  # the vote ignores order
    expected = np.mean(majority_vote(outputs.argmax(axis=2), outputs) == val.y)
    assert result.validation_accuracy == pytest.approx(expected)
    alone = {r.name: np.mean(o.argmax(axis=1) == val.y) for r, o in zip(runs, outputs)}
    assert {m.name: m.validation_accuracy for m in result.members} == pytest.approx(alone)
    out = plot_ensemble_errors(result, tmp_path / "errors.png", limit=30)
    assert png_size(out) == plots.grid_pixels(30)

    cli = CliRunner().invoke(app, ["ensemble", str(runs[0].path), str(runs[1].path), "--errors",
                                   str(tmp_path / "cli.png"), "--backend", "numpy"])
    assert cli.exit_code == 0, cli.output
    assert "ensemble of 2" in cli.stdout and runs[0].name in cli.stdout
    assert "validation accuracy %" in cli.stdout
    assert png_size(tmp_path / "cli.png")[0] == plots.grid_pixels(100)[0]


def test_members_of_two_sweeps_are_told_apart_by_their_parent():
    paths = [Path("runs/bn/seed=1"), Path("runs/deep/seed=1"), Path("runs/deep/seed=2")]
    assert _labels(paths) == ["bn/seed=1", "deep/seed=1", "seed=2"]


def test_cli_ensemble_reports_bad_checkpoint_as_user_error(tmp_path):
    run = make_run(tmp_path, "a", checkpoint=True)
    result = CliRunner().invoke(app, ["ensemble", str(run.path), "--checkpoint", "middle"])
    assert result.exit_code == 2 and "unknown checkpoint" in result.output
