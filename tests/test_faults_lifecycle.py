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
from nnexp.rundir import Run

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


# --- 1: an extension writes its config only once it really starts --------------------------------


def test_an_extension_refused_because_another_process_holds_the_run_changes_nothing(tmp_path):
    run = train(tmp_path, "runs", "training.epochs=2")
    holder = subprocess.Popen(  # a real second process holding the run, as a trainer does
        [sys.executable, "-c", "import sys\nfrom nnexp.rundir import Run\nwith Run(sys.argv[1]).lock():\n"
                               "    print('held', flush=True)\n    sys.stdin.read()\n", str(run.path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "held"
        before = files(run)
        refused = cli("resume", run.path, "--set", "training.epochs=3")
        assert refused.exit_code == 2, refused.output
        assert "being trained by another process" in refused.output and "Traceback" not in refused.output
        assert files(run) == before  # config.yaml still says 2 epochs; no "extended" in train.log
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert holder.returncode == 0
    done = cli("resume", run.path, "--set", "training.epochs=3")  # not "already completed"
    assert done.exit_code == 0, done.output
    assert run.read_summary()["epochs_run"] == 3 and run.config()["training"]["epochs"] == 3
    log = (run.path / "train.log").read_text()
    assert log.count("extended:") == 1 and "extended: training.epochs=3 (was 2)" in log


def test_an_extension_refused_for_a_damaged_checkpoint_changes_nothing(tmp_path):
    run = train(tmp_path, "runs", "training.epochs=2")
    last = run.checkpoint_path("last")
    good = last.read_bytes()
    last.write_bytes(good[: len(good) // 2])  # a torn copy, say
    before = files(run)
    refused = cli("resume", run.path, "--set", "training.epochs=3")
    assert refused.exit_code == 2 and f"checkpoint {last} is damaged" in refused.output, refused.output
    assert files(run) == before
    last.write_bytes(good)  # restored: the same command now extends it
    done = cli("resume", run.path, "--set", "training.epochs=3")
    assert done.exit_code == 0 and "nothing to do" not in done.output, done.output
    assert run.read_summary()["epochs_run"] == 3


def test_an_extension_paused_before_its_first_new_epoch_resumes_to_its_new_length(tmp_path):
    fresh = train(tmp_path, "fresh")  # patience 3: stops early after epoch 10
    run = train(tmp_path, "runs", "training.early_stopping.patience=2")  # after epoch 9
    paused = cli("resume", run.path, "--set", "training.early_stopping.patience=3", "--time-limit", "0")
    assert paused.exit_code == 0, paused.output
    assert run.read_summary()["status"] == "interrupted" and run.read_summary()["epochs_run"] == 9
    assert run.config()["training"]["early_stopping"]["patience"] == 3  # it started: config.yaml says so
    done = cli("resume", run.path)  # last.npz still says "stopped early", under patience 2
    assert done.exit_code == 0, done.output
    assert history(run) == history(fresh) and outcome(run) == outcome(fresh)
    assert (run.path / "train.log").read_text().count("extended:") == 1


# --- 6: an extension equals a fresh run with the new setting ------------------------------------


@pytest.mark.parametrize("started,extended", [
    (["training.early_stopping.patience=2"], ["training.early_stopping.patience=3"]),
    (["training.epochs=8"], ["training.epochs=30"]),
], ids=["early-stopped-then-more-patience", "fewer-epochs-then-more"])
def test_an_extended_run_equals_a_fresh_run_with_its_new_setting(tmp_path, started, extended):
    fresh = train(tmp_path, "fresh")  # patience 3, 30 epochs
    assert fresh.read_summary()["stop_reason"] == "early-stopping"
    assert fresh.read_summary()["epochs_run"] < 30  # early stopping really decides
    run = train(tmp_path, "extended", *started)
    assert run.read_summary()["epochs_run"] < fresh.read_summary()["epochs_run"]
    done = cli("resume", run.path, *[a for s in extended for a in ("--set", s)])
    assert done.exit_code == 0, done.output
    assert history(run) == history(fresh)
    assert outcome(run) == outcome(fresh)


def test_a_run_stopped_at_the_eta_floor_stays_stopped_as_a_fresh_run_with_more_epochs_would(tmp_path):
    plateau = ["training.schedule=halve-on-plateau", "training.early_stopping.patience=1"]
    fresh = train(tmp_path, "fresh", *plateau, "training.epochs=80")
    assert fresh.read_summary()["stop_reason"] == "eta-floor"
    run = train(tmp_path, "extended", *plateau, "training.epochs=60")
    before = files(run)
    again = cli("resume", run.path, "--set", "training.epochs=80")
    assert again.exit_code == 0 and "nothing to do" in again.output and "η₀/128" in again.output, again.output
    assert history(run) == history(fresh) and files(run) == before


def test_a_new_patience_that_would_change_what_the_run_did_is_refused_by_key(tmp_path):
    run = train(tmp_path, "runs")  # patience 3: 10 epochs
    before = files(run)
    shorter = cli("resume", run.path, "--set", "training.early_stopping.patience=1")
    assert shorter.exit_code == 2 and "training.early_stopping.patience: with 1 the run would have stopped " \
                                       "after epoch 3" in shorter.output, shorter.output
    plateau = train(tmp_path, "plateau", "training.schedule=halve-on-plateau", "training.early_stopping.patience=1")
    other_eta = cli("resume", plateau.path, "--set", "training.early_stopping.patience=2")
    assert other_eta.exit_code == 2 and "patience decides when η halves" in other_eta.output, other_eta.output
    assert files(run) == before and "extended" not in (plateau.path / "train.log").read_text()


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
        assert files(run) == before
    run.write_summary({**run.read_summary(), "status": "interrupted"})  # as Ctrl-C leaves it
    before = files(run)
    resumed = cli("resume", run.path)
    assert resumed.exit_code == 2, resumed.output
    assert resumed.output.startswith(f"error: checkpoint {run.checkpoint_path('last')} is damaged"), resumed.output
    assert files(run) == before


# --- 20: an edited point says which value is the original, and what helps ----------------------


def test_an_edited_interrupted_point_names_the_original_value_and_what_helps(tmp_path):
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump({**SMALL, "data": {"train_size": 1000},
                                      "training": {**SMALL["training"], "eta": 0.5, "early_stopping":
                                                   {"patience": None}}}))
    runs = tmp_path / "runs"
    sweep = subprocess.Popen([sys.executable, "-m", "nnexp", "sweep", str(config), "--seeds", "1",
                              "--jobs", "1", "--runs-dir", str(runs)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, start_new_session=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any(len(Run(p).read_metrics()) >= 2
                                                      for p in runs.glob("*/seed=*")):
            assert sweep.poll() is None, sweep.stderr.read().decode()[-2000:]
            time.sleep(0.02)
        os.killpg(sweep.pid, signal.SIGINT)  # Ctrl-C: the point stops at its last epoch
        sweep.wait(timeout=60)
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
    (point,) = runs.glob("*/seed=*")
    made = point.parent
    assert Run(point).read_summary()["status"] == "interrupted"
    original = (point / "config.yaml").read_text()
    assert "batch_size: 10\n" in original
    (point / "config.yaml").write_text(original.replace("batch_size: 10\n", "batch_size: 20\n"))

    says = (f"{point / 'config.yaml'} says training.batch_size = 20, but the run was trained with 10; "
            f"to continue it, restore training.batch_size: 10 in that file, or move {point} aside")
    continued = cli("sweep", made, "--jobs", "1")
    assert continued.exit_code == 1 and says in " ".join(continued.output.split()), continued.output
    assert "--retry-failed" not in continued.output  # a retry would meet the same refusal
    resumed = cli("resume", point)
    assert resumed.exit_code == 2 and says in resumed.output, resumed.output
    (point / "config.yaml").write_text(original)  # what it says helps
    assert cli("sweep", made, "--jobs", "1").exit_code == 0
    assert Run(point).read_summary()["epochs_run"] == 30


def test_a_sweep_still_offers_a_retry_where_one_helps(tmp_path):
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump(SMALL))
    result = cli("sweep", config, "--grid", "training.eta=0.5,1e9", "--set", "model.init=large",
                 "--set", "model.layers.0.activation=linear", "--set", "training.epochs=1",
                 "--jobs", "1", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 1 and "(diverged)" in result.output, result.output
    assert "(--retry-failed to run failed ones again)" in result.output
