"""The training loop and the run directory it writes, on real MNIST subsets."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from nnexp import training as train
from nnexp import lifecycle
from nnexp.errors import ConfigError, RunFailed
from nnexp.evaluate import load_run_model, run_dataset, score
from nnexp.network import init_params
from nnexp.rundir import Run

from conftest import make_config, needs_mnist

pytestmark = [needs_mnist, pytest.mark.usefixtures("cached_data")]

RUN_FILES = {"config.yaml", "env.json", "metrics.jsonl", "summary.json", "train.log", ".lock",
             "checkpoints/best.npz", "checkpoints/last.npz"}
SUMMARY_KEYS = {"status", "best_epoch", "best_validation_accuracy", "test_accuracy", "epochs_run",
                "wall_time_s", "backend", "device", "n_params", "seed"}


def run_config(cfg, tmp_path, name="run"):
    exp = train.prepare(cfg)
    run = Run.create(tmp_path / name, cfg["name"])
    return run, lifecycle.start(exp, run)


def metrics_without_time(run):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in run.read_metrics()]


def test_short_seeded_run_learns_and_writes_a_complete_run_directory(tmp_path):
    # 784-30-10 on 5,000 images for 3 epochs: the book's net reaches ~90% on this little data.
    cfg = make_config(data={"train_size": 5000}, training={"epochs": 3, "eta": 0.5},
                      model={"init": "network2"}, seed=3)
    run, summary = run_config(cfg, tmp_path)
    assert {str(p.relative_to(run.path)) for p in run.path.rglob("*") if p.is_file()} == RUN_FILES
    assert SUMMARY_KEYS <= set(summary) and summary == json.loads((run.path / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_run"] == 3
    assert summary["best_validation_accuracy"] > 0.88
    records = run.read_metrics()
    assert [r["epoch"] for r in records] == [1, 2, 3]
    best = max(records, key=lambda r: (r["validation_accuracy"], r["epoch"]))
    assert summary["best_epoch"] == best["epoch"] and summary["test_accuracy"] == best["test_accuracy"]
    assert yaml.safe_load((run.path / "config.yaml").read_text()) == cfg
    env = json.loads((run.path / "env.json").read_text())
    assert {"python", "numpy", "git_commit", "git_dirty", "command", "host"} <= set(env)
    assert "epoch   3/3" in (run.path / "train.log").read_text()


def test_best_checkpoint_reproduces_the_reported_test_accuracy(tmp_path):
    cfg = make_config(data={"train_size": 2000}, training={"epochs": 2, "eta": 0.5})
    run, summary = run_config(cfg, tmp_path)
    loaded = load_run_model(run)
    result = score(loaded, run_dataset(loaded))
    assert loaded.epoch == summary["best_epoch"]
    assert result["accuracy"] == summary["test_accuracy"]


def test_same_seed_gives_identical_metrics_and_another_seed_does_not(tmp_path):
    # dropout and augmentation draw random numbers every epoch: all of it must be seeded
    layers = [{"type": "dense", "units": 20, "activation": "relu", "dropout": 0.3},
              {"type": "softmax", "units": 10, "dropout": 0.2}]
    cfg = make_config(layers, data={"train_size": 600, "augment": {"shift": 1}},
                      training={"epochs": 2, "eta": 0.05, "lambda": 0.1}, seed=11)
    first, _ = run_config(cfg, tmp_path, "a")
    second, _ = run_config(cfg, tmp_path, "b")
    other, _ = run_config({**cfg, "seed": 12}, tmp_path, "c")
    assert metrics_without_time(first) == metrics_without_time(second)
    assert metrics_without_time(first) != metrics_without_time(other)
    a, _, _ = first.load_checkpoint("last")
    b, _, _ = second.load_checkpoint("last")
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_early_stopping_counts_epochs_without_strict_improvement(tmp_path):
    # eta so small that nothing changes: every epoch ties the first.
    cfg = make_config(data={"train_size": 100}, training={"epochs": 10, "eta": 1e-12,
                                                          "early_stopping": {"patience": 2}})
    run, summary = run_config(cfg, tmp_path)
    assert summary["epochs_run"] == 3 and summary["stop_reason"] == "early-stopping"
    assert summary["best_epoch"] == 3, "ties go to the later epoch"


def test_halve_on_plateau_stops_at_one_128th_of_eta(tmp_path):
    cfg = make_config(data={"train_size": 100},
                      training={"epochs": 100, "eta": 1e-12, "schedule": "halve-on-plateau",
                                "early_stopping": {"patience": 1}})
    run, summary = run_config(cfg, tmp_path)
    etas = [r["eta"] for r in run.read_metrics()]
    assert etas[0] == 1e-12 and etas[-1] == pytest.approx(1e-12 / 64)
    assert summary["final_eta"] == pytest.approx(1e-12 / 128)
    assert summary["stop_reason"] == "eta-floor" and summary["epochs_run"] == 1 + 7


def test_monitor_train_adds_training_cost_and_accuracy(tmp_path):
    cfg = make_config(data={"train_size": 200}, training={"epochs": 1, "monitor_train": True})
    run, _ = run_config(cfg, tmp_path)
    record = run.read_metrics()[0]
    assert {"train_cost", "train_accuracy", "validation_cost", "test_cost", "eta", "seconds"} <= set(record)


CH5_NET = [{"type": "dense", "units": 30, "activation": "sigmoid"}] * 3 + \
    [{"type": "dense", "units": 10, "activation": "sigmoid"}]


def test_layer_speed_is_recorded_from_the_weights_each_epoch_starts_with(tmp_path):
    """Chapter 5: with 3 hidden sigmoid layers the first learns slowest and the last fastest,
    and epoch 1's record is the initial network's speed (500 full-batch steps, in small)."""
    cfg = make_config(CH5_NET, data={"train_size": 1000}, model={"init": "network2"}, seed=2,
                      training={"cost": "cross-entropy", "epochs": 3, "batch_size": 1000, "eta": 0.1,
                                "lambda": 5.0, "l2": "network2", "monitor_layer_speed": 1000})
    run, _ = run_config(cfg, tmp_path)
    speeds = [r["layer_speed"] for r in run.read_metrics()]
    assert len(speeds) == 3 and all(len(s) == 3 for s in speeds)  # hidden layers only
    assert speeds[0] != speeds[1] != speeds[2]  # measured anew every epoch

    exp = train.prepare(cfg)
    seeds = train.Seeds.from_seed(cfg["seed"])
    model = train.build_model(exp, init_params(exp.spec, "network2", seeds.init), seeds)
    x, y = exp.dataset.train.x[:1000], exp.dataset.train.y[:1000]
    _, grads = model.loss_and_grads(x, y)
    expected = [float(np.linalg.norm(grads[f"{i}.b"])) for i in range(3)]
    np.testing.assert_allclose(speeds[0], expected, rtol=1e-6)
    assert expected[0] < expected[1] < expected[2]  # the vanishing gradient
    assert "speed " in (run.path / "train.log").read_text()


def test_layer_speed_on_more_images_than_the_training_set_is_a_config_error():
    cfg = make_config(data={"train_size": 100}, training={"monitor_layer_speed": 1000})
    with pytest.raises(ConfigError, match="training.monitor_layer_speed.*1000.*100"):
        train.prepare(cfg)
    cfg = make_config([{"type": "softmax", "units": 10}], data={"train_size": 100},
                      training={"monitor_layer_speed": 10})
    with pytest.raises(ConfigError, match="training.monitor_layer_speed: the network has no hidden layer"):
        train.prepare(cfg)


def test_divergence_stops_the_run_and_keeps_the_best_checkpoint(tmp_path):
    cfg = make_config([{"type": "dense", "units": 30, "activation": "linear"}, {"type": "softmax", "units": 10}],
                      data={"train_size": 200}, training={"epochs": 5, "eta": 1e6}, model={"init": "large"})
    exp = train.prepare(cfg)
    run = Run.create(tmp_path, "diverge")
    with pytest.raises(RunFailed, match="diverged.*training.eta"):
        lifecycle.start(exp, run)
    summary = run.read_summary()
    assert summary["status"] == "diverged" and summary["stop_reason"] == "diverged"


def test_batch_larger_than_training_set_is_a_config_error(tmp_path):
    cfg = make_config(data={"train_size": 5}, training={"batch_size": 10})
    with pytest.raises(ConfigError, match="training.batch_size"):
        train.prepare(cfg)


def test_a_time_limit_pauses_between_epochs_and_resume_finishes_identically(tmp_path, monkeypatch):
    cfg = make_config(data={"train_size": 1000}, training={"epochs": 3, "eta": 0.5})
    _, whole = run_config(cfg, tmp_path, "whole")
    clock = iter([0.0, 100.0])  # the check before epoch 1 passes; the one before epoch 2 is late
    monkeypatch.setattr(train.time, "monotonic", lambda: next(clock))
    exp = train.prepare(cfg)
    run = Run.create(tmp_path / "paused", cfg["name"])
    paused = lifecycle.start(exp, run, deadline=50.0)
    assert (paused["status"], paused["stop_reason"], paused["epochs_run"]) == ("interrupted", "time-limit", 1)
    assert run.read_summary() == paused and len(run.read_metrics()) == 1
    assert "paused after epoch 1 at the time limit" in (run.path / "train.log").read_text()
    monkeypatch.undo()
    resumed = lifecycle.resume(exp, run)
    assert resumed["status"] == "completed" and resumed["epochs_run"] == 3
    expected = metrics_without_time(Run(whole["run_dir"]))
    assert metrics_without_time(run) == expected


def test_ctrl_c_between_metrics_and_checkpoint_claims_only_the_saved_epoch(tmp_path, monkeypatch):
    """The epoch whose metrics line is written but whose checkpoint is not is re-run on
    resume, so the interrupted summary must not count it."""
    cfg = make_config(data={"train_size": 1000}, training={"epochs": 3, "eta": 0.5})
    save_last = train._save_last

    def interrupted_at_epoch_2(run, model, state, seeds, config):
        if state.epoch == 2:
            raise KeyboardInterrupt
        save_last(run, model, state, seeds, config)

    monkeypatch.setattr(train, "_save_last", interrupted_at_epoch_2)
    exp = train.prepare(cfg)
    run = Run.create(tmp_path, cfg["name"])
    with pytest.raises(KeyboardInterrupt):
        lifecycle.start(exp, run)
    summary = run.read_summary()
    _, meta, _ = run.load_checkpoint("last")
    assert summary["status"] == "interrupted" and summary["epochs_run"] == meta["epoch"] == 1
    assert summary["best_epoch"] == 1


def test_ctrl_c_before_the_first_summary_still_marks_the_run_interrupted(tmp_path, monkeypatch):
    cfg = make_config(data={"train_size": 500}, training={"epochs": 2, "eta": 0.5})
    exp = train.prepare(cfg)
    run = Run.create(tmp_path, cfg["name"])

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C while the network is being built

    monkeypatch.setattr(lifecycle, "build_model", interrupted)
    with pytest.raises(KeyboardInterrupt):
        lifecycle.start(exp, run)
    summary = run.read_summary()
    assert summary["status"] == "interrupted" and summary["epochs_run"] == 0
