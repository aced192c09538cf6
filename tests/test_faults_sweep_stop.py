"""How a sweep on the local pool stops: SIGINT to the process group (Ctrl-C at a terminal,
`timeout -s INT`) or to the sweep's process alone, a second copy arriving while the workers
write their points' summaries, a second Ctrl-C that means stop now, and `--time-limit`.

Every test drives a real `python -m nnexp sweep` in a session of its own (its process group
stands for a terminal's) with real signals. Where a test needs a moment to last (an epoch of
a known length, a summary's write held open), a `sitecustomize` module written for it is put
on the processes' path: Python imports it in every process it starts, the pool's workers too.
Nothing waits by sleeping: the tests poll the files the sweep writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from nnexp.fileio import temporary_target
from nnexp.rundir import Run

from conftest import needs_mnist
from runfactory import finish, wait_for

pytestmark = needs_mnist

REPO = Path(__file__).resolve().parents[1]
TINY = {"name": "tiny", "data": {"train_size": 300},
        "model": {"init": "network2", "layers": [{"type": "dense", "units": 10},
                                                 {"type": "softmax", "units": 10}]},
        "training": {"epochs": 12, "eta": 0.5, "early_stopping": {"patience": None}}}
TWO = ("--grid", "training.eta=0.1,0.2")
FOUR = ("--grid", "training.eta=0.1,0.2,0.3,0.4")

# Imported by every Python process the test starts (the sweep and its spawned workers), as
# the environment asks: epochs that last a known time, and the interrupted summary's write
# held open with its temporary file made, where a process killed then leaves it behind.
HOOKS = '''
import os, time
from pathlib import Path

if os.environ.get("TEST_EPOCH_SECONDS"):
    from nnexp import training
    _evaluate = training._evaluate
    def slow_evaluate(*args, **kwargs):
        time.sleep(float(os.environ["TEST_EPOCH_SECONDS"]))
        return _evaluate(*args, **kwargs)
    training._evaluate = slow_evaluate

if os.environ.get("TEST_HOLD_DIR"):
    from nnexp import fileio, rundir
    _write = rundir.atomic_write_text
    def held_write(path, text):
        if Path(path).name != "summary.json" or '"status": "interrupted"' not in text:
            return _write(path, text)
        with fileio.atomic_path(path) as tmp:
            tmp.touch()
            (Path(os.environ["TEST_HOLD_DIR"]) / Path(path).parent.name).touch()
            time.sleep(float(os.environ["TEST_HOLD_SECONDS"]))
            tmp.write_text(text)
    rundir.atomic_write_text = held_write

if os.environ.get("TEST_STOP_GRACE"):
    from nnexp import executors
    executors.STOP_GRACE = float(os.environ["TEST_STOP_GRACE"])
'''


@pytest.fixture
def hooks(tmp_path) -> Path:
    folder = tmp_path / "hooks"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(HOOKS)
    return folder


def write_tiny(folder: Path) -> Path:
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def start(*args, hooks: Path | None = None, **env) -> subprocess.Popen:
    """`nnexp ARGS` in a session of its own, with the test's hooks if given."""
    path = [str(hooks)] if hooks else []
    return subprocess.Popen([sys.executable, "-m", "nnexp", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join([*path, str(REPO)]),
                                 "PYTHONUNBUFFERED": "1", **{k: str(v) for k, v in env.items()}})


def the_sweep(runs: Path) -> Path | None:
    made = [p for p in runs.iterdir() if p.is_dir()] if runs.exists() else []
    return made[0] if made else None


def both_mid_training(runs: Path):
    """The two points, once each has a checkpoint (an epoch behind it, more to go)."""
    made = the_sweep(runs)
    points = [made / "eta=0.1", made / "eta=0.2"] if made else []
    return points if points and all((p / "checkpoints" / "last.npz").is_file() for p in points) else None


def temporaries(made: Path) -> list[Path]:
    """Files `atomic_path` left behind anywhere in the sweep: a write that never finished."""
    return [p for p in made.rglob("*") if p.name.endswith(".tmp") or temporary_target(p.name)]


def manifest(made: Path) -> dict[str, str]:
    return {p["id"]: p["status"] for p in json.loads((made / "sweep.json").read_text())["points"]}


def assert_interrupted(point: Path) -> None:
    """Stopped at its last completed epoch, resumable, and saying so: not killed."""
    run = Run(point)
    assert run.status() == "interrupted", (point, run.read_summary())
    summary = run.read_summary()
    assert 1 <= summary["epochs_run"] < TINY["training"]["epochs"], summary
    assert (point / "checkpoints" / "last.npz").is_file()
    assert "interrupted during epoch" in (point / "train.log").read_text()


def assert_continues_to_completion(made: Path, points: list[str]) -> None:
    again = start("sweep", made, "--jobs", "2")
    out, err = finish(again, timeout=120)
    assert again.returncode == 0, err
    for name in points:
        summary = Run(made / name).read_summary()
        assert (summary["status"], summary["epochs_run"]) == ("completed", TINY["training"]["epochs"]), summary
    assert not temporaries(made), temporaries(made)


# --- signals ----------------------------------------------------------------------------------


@pytest.mark.parametrize("to_group", [True, False], ids=["sigint-to-the-group", "sigint-to-the-sweep-alone"])
def test_sigint_stops_both_points_interrupted_with_no_temporary_left(tmp_path, hooks, to_group):
    """`kill -INT -PGID` (what Ctrl-C and `timeout` do: every worker gets it too) and
    `kill -INT PID` (the sweep passes it on) end alike."""
    runs = tmp_path / "runs"
    proc = start("sweep", write_tiny(tmp_path), *TWO, "--jobs", "2", "--runs-dir", runs,
                 hooks=hooks, TEST_EPOCH_SECONDS=0.3)
    points = wait_for(proc, "both points mid-training", lambda: both_mid_training(runs))
    if to_group:
        os.killpg(proc.pid, signal.SIGINT)
    else:
        os.kill(proc.pid, signal.SIGINT)
    out, err = finish(proc, timeout=120)
    made = the_sweep(runs)
    assert proc.returncode == 130, err
    assert f"interrupted; completed points are kept and the others resume with: nnexp sweep {made}" in err, err
    assert "Traceback" not in err, err
    for point in points:
        assert_interrupted(point)
    assert manifest(made) == {"eta=0.1": "interrupted", "eta=0.2": "interrupted"}
    assert not temporaries(made), temporaries(made)
    assert_continues_to_completion(made, ["eta=0.1", "eta=0.2"])


def test_a_second_sigint_while_the_workers_write_their_summaries_lets_them_finish(tmp_path, hooks):
    """The copy `timeout -s INT` sends to the sweep's process after the one to its group, or
    a second Ctrl-C, arriving while each worker writes its interrupted summary (held open
    here for 2 s, its temporary file made): the workers finish the write, each point says
    interrupted, and no temporary is left behind (a worker killed there left one, and its
    point read as killed)."""
    runs, held = tmp_path / "runs", tmp_path / "held"
    held.mkdir()
    proc = start("sweep", write_tiny(tmp_path), *TWO, "--jobs", "2", "--runs-dir", runs, hooks=hooks,
                 TEST_EPOCH_SECONDS=0.3, TEST_HOLD_DIR=held, TEST_HOLD_SECONDS=2)
    points = wait_for(proc, "both points mid-training", lambda: both_mid_training(runs))
    os.killpg(proc.pid, signal.SIGINT)
    wait_for(proc, "both workers writing their summaries", lambda: len(list(held.iterdir())) == 2)
    os.killpg(proc.pid, signal.SIGINT)  # to every process again, the workers mid-write too
    out, err = finish(proc, timeout=120)
    made = the_sweep(runs)
    assert proc.returncode == 130, err
    assert f"nnexp sweep {made}" in err and "Traceback" not in err, err
    for point in points:
        assert_interrupted(point)
    assert not temporaries(made), temporaries(made)
    assert_continues_to_completion(made, ["eta=0.1", "eta=0.2"])


def test_a_second_ctrl_c_still_stops_a_sweep_whose_workers_do_not_end(tmp_path, hooks):
    """Stop now: workers that do not end within the grace period (here 1 s; their summaries'
    writes are held for a minute) are killed, and the sweep exits at once. Their points read
    as killed and resume from their last checkpoints; the temporaries their kill left are
    removed as they resume."""
    runs, held = tmp_path / "runs", tmp_path / "held"
    held.mkdir()
    proc = start("sweep", write_tiny(tmp_path), *TWO, "--jobs", "2", "--runs-dir", runs, hooks=hooks,
                 TEST_EPOCH_SECONDS=0.3, TEST_HOLD_DIR=held, TEST_HOLD_SECONDS=60, TEST_STOP_GRACE=1)
    points = wait_for(proc, "both points mid-training", lambda: both_mid_training(runs))
    os.killpg(proc.pid, signal.SIGINT)
    wait_for(proc, "both workers writing their summaries", lambda: len(list(held.iterdir())) == 2)
    stopped = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    out, err = finish(proc, timeout=30)
    assert proc.returncode == 130, err
    assert time.monotonic() - stopped < 20  # the grace, not the minute the writes would take
    made = the_sweep(runs)
    for point in points:
        assert Run(point).status() == "killed", Run(point).read_summary()
    assert_continues_to_completion(made, ["eta=0.1", "eta=0.2"])


# --- the time limit ---------------------------------------------------------------------------


def test_a_time_limit_pauses_the_running_points_and_starts_no_more(tmp_path, hooks):
    """Epochs of about 1 s, a limit of 9 s from the command's start: the two points running
    pause (resumable) before an epoch that would end after it, the two waiting are not
    started, the sweep exits 0 as a paused `nnexp train --time-limit` does and says how to
    continue; continued, every point completes."""
    runs = tmp_path / "runs"
    began = time.monotonic()
    proc = start("sweep", write_tiny(tmp_path), *FOUR, "--jobs", "2", "--runs-dir", runs,
                 "--time-limit", "0.15", hooks=hooks, TEST_EPOCH_SECONDS=1)
    out, err = finish(proc, timeout=120)
    took = time.monotonic() - began
    made = the_sweep(runs)
    assert proc.returncode == 0, err
    assert out.strip() == str(made)
    assert (f"paused by the time limit: 2 points paused, 2 points not started; everything up to each "
            f"point's last completed epoch is saved. Continue with: nnexp sweep {made}") in err, err
    assert took < 9 + 8, took  # the limit kept (an epoch's margin and the processes' ends aside)
    for name in ("eta=0.1", "eta=0.2"):
        run = Run(made / name)
        summary = run.read_summary()
        assert run.status() == "interrupted" and summary["stop_reason"] == "time-limit", summary
        assert 1 <= summary["epochs_run"] < TINY["training"]["epochs"], summary
        assert "at the time limit" in (made / name / "train.log").read_text()
    for name in ("eta=0.3", "eta=0.4"):
        assert Run.is_blank(made / name), list((made / name).iterdir())  # planned: nothing made
    assert manifest(made) == {"eta=0.1": "interrupted", "eta=0.2": "interrupted",
                              "eta=0.3": "pending", "eta=0.4": "pending"}
    assert not temporaries(made)
    assert_continues_to_completion(made, ["eta=0.1", "eta=0.2", "eta=0.3", "eta=0.4"])


def test_a_time_limit_already_spent_starts_nothing_and_says_so(tmp_path):
    runs = tmp_path / "runs"
    proc = start("sweep", write_tiny(tmp_path), *TWO, "--jobs", "2", "--runs-dir", runs, "--time-limit", "0")
    out, err = finish(proc, timeout=120)
    made = the_sweep(runs)
    assert proc.returncode == 0, err
    assert "paused by the time limit: 2 points not started; " in err, err
    assert f"Continue with: nnexp sweep {made}" in err
    assert manifest(made) == {"eta=0.1": "pending", "eta=0.2": "pending"}
    assert not any(Run.is_run(made / name) for name in ("eta=0.1", "eta=0.2"))
    assert_continues_to_completion(made, ["eta=0.1", "eta=0.2"])


def test_a_search_takes_the_time_limit_too(tmp_path):
    runs = tmp_path / "runs"
    proc = start("search", write_tiny(tmp_path), "--sample", "training.eta=uniform:0.1:0.5", "--trials", "2",
                 "--jobs", "1", "--runs-dir", runs, "--time-limit", "0")
    out, err = finish(proc, timeout=120)
    made = the_sweep(runs)
    assert proc.returncode == 0, err
    assert "paused by the time limit: 2 points not started; " in err, err
    assert set(manifest(made).values()) == {"pending"}


def test_a_task_that_reaches_its_worker_after_the_deadline_is_not_started(tmp_path):
    """A Ray task queued on a busy cluster may start after the sweep's time limit: it leaves
    its point planned (no run directory made) rather than training an epoch past the limit."""
    from nnexp import executors
    from nnexp.config import resolve

    point = tmp_path / "p"
    task = executors.Task("p", resolve(json.loads(json.dumps(TINY))), str(point), deadline=time.time() - 1)
    events = []
    outcome = executors.run_task(task, events.append)
    assert (outcome.point, outcome.status, outcome.summary) == ("p", "pending", None)
    assert events == [] and not point.exists()
