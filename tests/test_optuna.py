"""`nnexp search --sampler/--pruner`: Optuna's samplers and pruners on nnexp's executors, one
study in the search directory's journal. A pruned trial's run and its resume, a search killed
mid-trial and continued, two workers and Ray sharing one study, bad input refused before
anything is made, and a search repeated trial for trial from its seed."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nnexp.cli import app
from nnexp.rundir import Run

from conftest import needs_mnist
from runfactory import kill_once_second_point_is_part_way
from test_faults_sweep import write_tiny as write_config

optuna = pytest.importorskip("optuna", reason='Optuna is not installed (pip install -e ".[optuna]")')

from nnexp import tuning  # noqa: E402 - after the skip: it needs Optuna for most of what is tested

TINY = {"name": "tiny", "data": {"train_size": 300},
        "model": {"init": "network2", "layers": [{"type": "dense", "units": 10},
                                                 {"type": "softmax", "units": 10}]},
        "training": {"epochs": 3, "eta": 0.5, "batch_size": 10}}
ETA = "training.eta=log-uniform:1e-5:1"


def write_tiny(tmp_path, **training) -> Path:
    return write_config(tmp_path, TINY, **training)


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def search_dir(runs: Path) -> Path:
    (made,) = [p for p in runs.iterdir() if p.is_dir()]
    return made


def trials_of(made: Path) -> list:
    storage = tuning._storage(made / tuning.JOURNAL)
    return optuna.load_study(study_name=tuning.STUDY, storage=storage).get_trials()


def points_of(made: Path) -> list[Path]:
    return sorted(p for p in made.iterdir() if p.is_dir() and p.name.startswith("t"))


def metrics_of(point: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in Run(point).read_metrics()]


def summary_of(point: Path) -> dict:
    return json.loads((point / "summary.json").read_text())


def params_of(point: Path) -> dict:
    config = Run(point).config()
    return {"training.eta": config["training"]["eta"], "training.lambda": config["training"]["lambda"]}


def assert_study_matches_runs(made: Path, keys=("training.eta",)) -> None:
    """Every trial of the study is its point's run, no more, no fewer: its values in the run's
    config.yaml, every epoch the run recorded reported once, its end told."""
    trials, points = trials_of(made), points_of(made)
    assert [t.number for t in trials] == list(range(len(points)))
    for trial, point in zip(trials, points):
        assert point.name == f"t{trial.number + 1:03d}"
        config = Run(point).config()
        assert {k: config[k.split(".")[0]][k.split(".")[1]] for k in keys} == trial.params
        records = Run(point).read_metrics()
        assert [r["epoch"] for r in records] == list(range(1, len(records) + 1))  # none repeated or lost
        assert trial.intermediate_values == {r["epoch"]: r["validation_accuracy"] for r in records}
        status = summary_of(point)["status"]
        if status == "pruned":
            assert trial.state == optuna.trial.TrialState.PRUNED
        else:
            assert status == "completed" and trial.state == optuna.trial.TrialState.COMPLETE
            assert trial.value == summary_of(point)["best_validation_accuracy"]


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize("args,words", [
    (("--sampler", "grid"), "--sampler 'grid': unknown; valid: random, tpe, cmaes, qmc"),
    (("--pruner", "percentile"), "--pruner 'percentile': unknown; valid: none, median, asha, hyperband"),
    (("--sampler", "tpe", "--sample", "training.eta=normal:0:1"), "unknown distribution 'normal'"),
    (("--sampler", "tpe", "--sample", "training.eta=uniform:2:1"), "LOW < HIGH"),
    (("--sampler", "tpe", "--sample", "training.eta=uniform:-1:1"), "training.eta"),
    (("--pruner", "median", "--sample", "training.eta=choice:[0.1],[0.2]"), "Optuna's samplers need"),
])
def test_bad_sampler_pruner_or_distribution_is_one_line_before_anything_runs(tmp_path, args, words):
    runs = tmp_path / "runs"
    sample = () if "--sample" in args else ("--sample", ETA)
    result = cli("search", write_tiny(tmp_path), *sample, *args, "--trials", "2", "--runs-dir", runs)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in result.output
    assert not runs.exists()  # nothing made


def test_a_search_that_needs_optuna_without_it_names_the_extra(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "optuna" else real(name, *a))
    runs = tmp_path / "runs"
    result = cli("search", write_tiny(tmp_path), "--sample", ETA, "--sampler", "tpe", "--runs-dir", runs)
    assert result.exit_code == 2
    assert 'pip install "nnexp[optuna]"' in result.output and len(result.output.strip().splitlines()) == 1
    assert not runs.exists()


# --- a pruned trial ---------------------------------------------------------------------------


@needs_mnist
def test_a_pruned_trial_keeps_its_run_is_shown_pruned_and_resumes(tmp_path):
    runs = tmp_path / "runs"
    result = cli("search", write_tiny(tmp_path, epochs=4), "--sample", ETA, "--trials", "6", "--sampler", "tpe",
                 "--pruner", "asha", "--search-seed", "1", "--jobs", "1", "--runs-dir", runs)
    assert result.exit_code == 0, result.output  # a pruned trial is done: the search succeeded
    made = search_dir(runs)
    statuses = {p.name: summary_of(p)["status"] for p in points_of(made)}
    assert "pruned" in statuses.values() and "completed" in statuses.values(), statuses
    assert_study_matches_runs(made)

    point = next(p for p in points_of(made) if statuses[p.name] == "pruned")
    summary = summary_of(point)
    epoch = summary["epochs_run"]
    assert summary["stop_reason"] == "pruned" and 1 <= epoch < 4
    assert f"pruned after epoch {epoch} by the search's asha pruner" in (point / "train.log").read_text()
    assert len(Run(point).read_metrics()) == epoch and Run(point).checkpoint_path("last").exists()
    assert Run(point).status() == "pruned"

    # compare shows it as pruned, ranked by validation with the others
    shown = cli("compare", made, "--format", "csv")
    assert shown.exit_code == 0, shown.output
    rows = list(csv.DictReader(io.StringIO(shown.output)))
    assert {row["id"].split("/")[-1]: row["status"] for row in rows} == statuses
    best = [float(row["best_validation_accuracy"]) for row in rows]
    assert best == sorted(best, reverse=True) and len(rows) == 6

    # a search continued leaves it as its pruner decided
    again = cli("search", made, "--jobs", "1")
    assert again.exit_code == 0, again.output
    assert summary_of(point)["status"] == "pruned"

    # nnexp resume continues it as any stopped run, here past the search's epochs
    before = metrics_of(point)
    resumed = cli("resume", point, "--set", "training.epochs=6")
    assert resumed.exit_code == 0, resumed.output
    assert summary_of(point)["status"] == "completed" and summary_of(point)["epochs_run"] == 6
    after = metrics_of(point)
    assert [r["epoch"] for r in after] == [1, 2, 3, 4, 5, 6] and after[:epoch] == before
    assert Run(point).config()["training"]["epochs"] == 6


# --- reproducibility --------------------------------------------------------------------------


@needs_mnist
def test_the_same_search_seed_with_one_job_repeats_the_search_trial_for_trial(tmp_path):
    config = write_tiny(tmp_path)
    made = []
    for name in ("a", "b"):
        result = cli("search", config, "--sample", ETA, "--sample", "training.lambda=log-uniform:1e-6:1e-1",
                     "--trials", "6", "--sampler", "tpe", "--pruner", "median", "--search-seed", "7",
                     "--jobs", "1", "--runs-dir", tmp_path / name)
        assert result.exit_code == 0, result.output
        made.append(search_dir(tmp_path / name))
    a, b = (points_of(m) for m in made)
    assert [p.name for p in a] == [p.name for p in b] and len(a) == 6
    assert [params_of(p) for p in a] == [params_of(p) for p in b]
    assert len({p["training.eta"] for p in map(params_of, a)}) == 6  # six different proposals
    assert [metrics_of(p) for p in a] == [metrics_of(p) for p in b]
    assert [summary_of(p)["status"] for p in a] == [summary_of(p)["status"] for p in b]
    assert_study_matches_runs(made[0], keys=("training.eta", "training.lambda"))
    # another seed proposes other values
    other = cli("search", config, "--sample", ETA, "--sample", "training.lambda=log-uniform:1e-6:1e-1",
                "--trials", "2", "--sampler", "tpe", "--search-seed", "8", "--jobs", "1", "--runs-dir", tmp_path / "c")
    assert other.exit_code == 0, other.output
    assert params_of(points_of(search_dir(tmp_path / "c"))[0]) != params_of(a[0])


@needs_mnist
def test_random_sampler_with_a_pruner_keeps_the_random_searchs_draws(tmp_path):
    config = write_tiny(tmp_path)
    plain = cli("search", config, "--sample", ETA, "--trials", "4", "--search-seed", "3", "--jobs", "1",
                "--runs-dir", tmp_path / "plain")
    pruned = cli("search", config, "--sample", ETA, "--trials", "4", "--search-seed", "3", "--jobs", "1",
                 "--pruner", "median", "--runs-dir", tmp_path / "pruned")
    assert plain.exit_code in (0, 1) and pruned.exit_code in (0, 1), pruned.output
    assert not (search_dir(tmp_path / "plain") / tuning.JOURNAL).exists()  # plain random needs no study
    etas = [[Run(p).config()["training"]["eta"] for p in points_of(search_dir(tmp_path / k))]
            for k in ("plain", "pruned")]
    assert etas[0] == etas[1]


# --- killed and continued ---------------------------------------------------------------------


@needs_mnist
def test_a_sigkilled_search_continues_without_repeating_or_losing_a_trial(tmp_path):
    config = write_tiny(tmp_path, epochs=6)
    args = ["--sample", ETA, "--trials", "4", "--sampler", "tpe", "--pruner", "median", "--search-seed", "5",
            "--jobs", "1", "--set", "data.train_size=3000"]
    reference = cli("search", config, *args, "--runs-dir", tmp_path / "reference")
    assert reference.exit_code == 0, reference.output
    runs = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "nnexp", "search", str(config), *args, "--runs-dir", str(runs)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    kill_once_second_point_is_part_way(proc, runs, "*/t00*", epochs=6, timeout=180)
    made = search_dir(runs)
    killed = trials_of(made)
    assert len(killed) == 2 and killed[1].state == optuna.trial.TrialState.RUNNING
    assert not (made / "t003").exists()

    result = cli("search", made, "--jobs", "1")  # as `nnexp sweep DIR` would
    assert result.exit_code == 0, result.output
    assert "1 already done" in result.output
    assert "resumed after epoch" in (made / "t002" / "train.log").read_text()
    assert_study_matches_runs(made)
    # what an uninterrupted search with the same seed did: the same trials, values and epochs
    ref = search_dir(tmp_path / "reference")
    assert [p.name for p in points_of(made)] == [p.name for p in points_of(ref)] == ["t001", "t002", "t003", "t004"]
    assert [Run(p).config()["training"]["eta"] for p in points_of(made)] == \
           [Run(p).config()["training"]["eta"] for p in points_of(ref)]
    assert [metrics_of(p) for p in points_of(made)] == [metrics_of(p) for p in points_of(ref)]


# --- two workers, and Ray ---------------------------------------------------------------------


@needs_mnist
def test_two_workers_share_one_study(tmp_path):
    runs = tmp_path / "runs"
    result = cli("search", write_tiny(tmp_path, epochs=4), "--sample", ETA, "--trials", "6", "--sampler", "tpe",
                 "--pruner", "median", "--jobs", "2", "--runs-dir", runs, "--set", "data.train_size=1000")
    assert result.exit_code == 0, result.output
    assert "2 local processes" in result.output
    made = search_dir(runs)
    assert_study_matches_runs(made)  # each worker reported its own trial's epochs into the one journal
    trials = trials_of(made)
    assert len(trials) == 6 and all(t.state.is_finished() for t in trials)
    # the first two trials ran at once, in two processes
    first, second = trials[0], trials[1]
    assert second.datetime_start < first.datetime_complete


@needs_mnist
def test_the_ray_executor_runs_a_pruned_search_on_one_study(tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]')")
    runs = tmp_path / "runs"
    result = cli("search", write_tiny(tmp_path, epochs=4), "--sample", ETA, "--trials", "6", "--sampler", "tpe",
                 "--pruner", "asha", "--search-seed", "1", "--executor", "ray", "--jobs", "2", "--runs-dir", runs)
    assert result.exit_code == 0, result.output
    made = search_dir(runs)
    statuses = [summary_of(p)["status"] for p in points_of(made)]
    assert "pruned" in statuses, statuses
    assert_study_matches_runs(made)
    for point in points_of(made):  # the run directories came back from the workers' scratch folders
        assert summary_of(point)["run_dir"] == str(point)
