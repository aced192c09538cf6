"""Where points run and how they stop, under real faults: a worker SIGKILLed (as the
out-of-memory killer does) or sent SIGINT alone, SIGTERM to the sweep's process (a scheduler's
stop) or to `nnexp train`, Ctrl-C while the workers start, and Ctrl-C or SIGTERM during a sweep on
a real local Ray; a Ray cluster that cannot run a point or cannot be reached, another Ray on the
machine, and a diverged point on Ray.

Every test drives real `python -m nnexp` processes and real signals. A worker is found by the pid
its run directory's `.lock` holds: the process that trains the point."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from nnexp.rundir import Run

from conftest import needs_mnist
from runfactory import finish, wait_for

pytestmark = needs_mnist

TINY = {"name": "tiny", "data": {"train_size": 300},
        "model": {"init": "network2", "layers": [{"type": "dense", "units": 10},
                                                 {"type": "softmax", "units": 10}]},
        "training": {"epochs": 2, "eta": 0.5}}
FOUR = ("--grid", "training.eta=0.1,0.2,0.3,0.4")
ENDLESS = 100_000  # epochs no test waits for: the point is stopped, never completed


def write_tiny(tmp_path, epochs: int) -> Path:
    raw = json.loads(json.dumps(TINY))
    raw["training"]["epochs"] = epochs
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def start(*args, env: dict | None = None) -> subprocess.Popen:
    """`nnexp ARGS` in a session of its own (its process group stands for a terminal's)."""
    return subprocess.Popen([sys.executable, "-m", "nnexp", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]),
                                 "PYTHONUNBUFFERED": "1", **(env or {})})


def epochs_in(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def the_sweep(runs: Path) -> Path | None:
    made = [p for p in runs.iterdir() if p.is_dir()] if runs.exists() else []
    return made[0] if made else None


def points_with_epochs(runs: Path, at_least: int, count: int):
    """The point directories (at least `count`) that have `at_least` epochs recorded, or None."""
    made = the_sweep(runs)
    if made is None:
        return None
    busy = sorted(p for p in made.iterdir() if p.is_dir() and epochs_in(p) >= at_least)
    return busy if len(busy) >= count else None


def trainer_pid(run_dir: Path) -> int:
    """The process training `run_dir`: the pid its lock file holds."""
    return int((run_dir / ".lock").read_text().strip())


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"  # a zombie is dead, not yet reaped
    except FileNotFoundError:
        return False


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rpartition(")")[2].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                pass
    return found


def statuses(made: Path) -> dict[str, str]:
    return {p["id"]: p["status"] for p in json.loads((made / "sweep.json").read_text())["points"]}


def assert_stopped_at_an_epoch(point: Path, at_least: int) -> None:
    """An interrupted point: its summary claims the epochs its last checkpoint holds (the
    metrics may have one more, which resume trims), and it can resume."""
    summary = Run(point).read_summary()
    assert summary["status"] == "interrupted", summary
    assert summary["run_dir"] == str(point)
    assert epochs_in(point) - 1 <= summary["epochs_run"] <= epochs_in(point)
    assert summary["epochs_run"] >= at_least
    assert (point / "checkpoints" / "last.npz").is_file()


# --- the local pool ---------------------------------------------------------------------------


def test_a_sigkilled_worker_fails_its_point_and_the_sweep_carries_on(tmp_path):
    """The out-of-memory killer's SIGKILL to one worker: its point becomes failed (a re-run
    does not die on it again), its epochs stay, every other point completes."""
    runs = tmp_path / "runs"
    proc = start("sweep", write_tiny(tmp_path, 40), *FOUR, "--jobs", "2", "--runs-dir", runs)
    victim = wait_for(proc, "a point with 3 epochs", lambda: points_with_epochs(runs, 3, 1))[0]
    os.kill(trainer_pid(victim), signal.SIGKILL)
    kept = epochs_in(victim)
    out, err = finish(proc)
    assert proc.returncode == 1, err
    assert f"1 of 4 points did not complete: {victim.name} (failed)" in err, err
    assert "killed by SIGKILL" in err and "out-of-memory" in err
    assert "Traceback" not in err
    made = the_sweep(runs)
    assert out.strip() == str(made)
    assert statuses(made) == {p: ("failed" if p == victim.name else "completed")
                              for p in ("eta=0.1", "eta=0.2", "eta=0.3", "eta=0.4")}
    summary = Run(victim).read_summary()
    assert summary["status"] == "failed" and epochs_in(victim) >= kept >= 2
    assert "killed by SIGKILL" in (victim / "train.log").read_text()
    again = start("sweep", made, "--jobs", "2")
    out, err = finish(again)
    assert again.returncode == 1 and "4 already done or not retried" in err, err
    assert epochs_in(victim) >= kept and Run(victim).read_summary()["status"] == "failed"


def test_sigint_to_one_worker_stops_that_point_only(tmp_path):
    runs = tmp_path / "runs"
    proc = start("sweep", write_tiny(tmp_path, 40), *FOUR, "--jobs", "2", "--runs-dir", runs)
    victim = wait_for(proc, "a point with 3 epochs", lambda: points_with_epochs(runs, 3, 1))[0]
    os.kill(trainer_pid(victim), signal.SIGINT)
    out, err = finish(proc)
    assert proc.returncode == 1, err
    assert f"1 of 4 points did not complete: {victim.name} (interrupted)" in err, err
    assert "not started" not in err and "Traceback" not in err
    made = the_sweep(runs)
    assert statuses(made) == {p: ("interrupted" if p == victim.name else "completed")
                              for p in ("eta=0.1", "eta=0.2", "eta=0.3", "eta=0.4")}
    assert_stopped_at_an_epoch(victim, 2)


def test_sigterm_to_the_sweep_stops_every_point_at_its_last_epoch_and_leaves_no_orphan(tmp_path):
    runs = tmp_path / "runs"
    proc = start("sweep", write_tiny(tmp_path, ENDLESS), *FOUR, "--jobs", "2", "--runs-dir", runs)
    busy = wait_for(proc, "two points with 3 epochs", lambda: points_with_epochs(runs, 3, 2))
    workers = children(proc.pid)
    assert len(workers) >= 2 and {trainer_pid(p) for p in busy} <= set(workers)
    proc.send_signal(signal.SIGTERM)  # the sweep's process alone, as `kill PID` or a scheduler does
    out, err = finish(proc, timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "nnexp sweep" in err
    for point in busy:
        assert_stopped_at_an_epoch(point, 2)
    made = the_sweep(runs)
    assert sorted(s for s in statuses(made).values()) == ["interrupted", "interrupted", "pending", "pending"]
    deadline = time.monotonic() + 20
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in workers if alive(pid)], "orphaned workers"


def test_sigterm_to_train_ends_the_run_interrupted_and_resumable(tmp_path):
    runs = tmp_path / "runs"
    proc = start("train", write_tiny(tmp_path, 400), "--runs-dir", runs)
    (run_dir,) = wait_for(proc, "3 epochs", lambda: [p for p in runs.glob("*") if epochs_in(p) >= 3])
    proc.send_signal(signal.SIGTERM)
    out, err = finish(proc)
    assert proc.returncode == 130, err
    assert f"nnexp resume {run_dir}" in err and "Traceback" not in err
    assert_stopped_at_an_epoch(run_dir, 2)


def test_ctrl_c_while_the_workers_start_prints_no_traceback(tmp_path):
    runs = tmp_path / "runs"
    proc = start("sweep", write_tiny(tmp_path, ENDLESS), *FOUR, "--jobs", "2", "--runs-dir", runs)
    workers = wait_for(proc, "the workers", lambda: (lambda c: c if len(c) >= 2 else None)(children(proc.pid)),
                       timeout=60)
    time.sleep(0.2)  # the workers import NumPy and nnexp (about 0.5 s)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C at a terminal does: every process of the group
    out, err = finish(proc)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    deadline = time.monotonic() + 20
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in workers if alive(pid)], "orphaned workers"


# --- Ray --------------------------------------------------------------------------------------


@pytest.fixture
def ray_tmp():
    """A short private folder for Ray's session files and the workers' scratch folders (Ray's
    socket paths must stay short, and another Ray on the machine must not see this one)."""
    pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]')")
    path = Path(tempfile.mkdtemp(prefix="nx", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def ray_env(ray_tmp: Path) -> dict:
    return {"TMPDIR": str(ray_tmp), "RAY_TMPDIR": str(ray_tmp), "RAY_AUTH_MODE": "disabled"}


def scratch_points(ray_tmp: Path, at_least: int, count: int):
    """The Ray workers' scratch run directories with `at_least` epochs, or None."""
    busy = [p for p in ray_tmp.glob("nnexp-*/*") if epochs_in(p) >= at_least]
    return busy if len(busy) >= count else None


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_stopping_a_ray_sweep_brings_each_point_back_at_its_last_epoch(tmp_path, ray_tmp, stop):
    runs = tmp_path / "runs"
    proc = start("sweep", write_tiny(tmp_path, ENDLESS), "--grid", "training.eta=0.1,0.2",
                 "--executor", "ray", "--jobs", "2", "--runs-dir", runs, env=ray_env(ray_tmp))
    wait_for(proc, "two Ray points with 3 epochs", lambda: scratch_points(ray_tmp, 3, 2), timeout=240)
    if stop == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGTERM)
    out, err = finish(proc)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    made = the_sweep(runs)
    assert statuses(made) == {"eta=0.1": "interrupted", "eta=0.2": "interrupted"}
    for point in (made / "eta=0.1", made / "eta=0.2"):
        assert_stopped_at_an_epoch(point, 2)
        assert str(ray_tmp) not in (point / "train.log").read_text(), "the log names the worker's scratch folder"
    assert not list(ray_tmp.glob("nnexp-*")), "scratch folders left on the workers"


HEAD = """
import logging, os, sys
import ray
ray.init(address="local", num_cpus=1, include_dashboard=False, logging_level=logging.ERROR)
address = ray.get_runtime_context().gcs_address
try:  # where `ray start --head` leaves its address, for ray.init() to join
    ray._private.utils.write_ray_address(address)
except AttributeError:
    pass
print(address, flush=True)
sys.stdin.read()  # until the test is done with this cluster
ray.shutdown()
"""


@pytest.fixture
def other_ray(ray_tmp):
    """A Ray cluster of one CPU already running on this machine; its address."""
    head = subprocess.Popen([sys.executable, "-c", HEAD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, **ray_env(ray_tmp)})
    address = head.stdout.readline().strip()
    try:
        assert address, "the other Ray did not start"
        yield address
    finally:
        head.stdin.close()
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()


def test_ray_beside_another_ray_and_a_diverged_point_names_its_sweep_folder(tmp_path, ray_tmp, other_ray):
    """Without --address, a Ray of the sweep's own, though another runs (its address in the
    environment and where `ray start` leaves it)."""
    runs = tmp_path / "runs"
    proc = start("sweep", write_tiny(tmp_path, 2), "--grid", "training.eta=0.5,1e9", "--set", "model.init=large",
                 "--set", "model.layers.0.activation=linear", "--executor", "ray", "--jobs", "2",
                 "--runs-dir", runs, env={**ray_env(ray_tmp), "RAY_ADDRESS": other_ray})
    out, err = finish(proc, timeout=300)
    assert "num_cpus" not in err, err
    assert proc.returncode == 1, err
    made = the_sweep(runs)
    assert statuses(made) == {"eta=0.5": "completed", "eta=1000000000.0": "diverged"}
    assert f"Run directory: {made / 'eta=1000000000.0'}" in err, err
    assert str(ray_tmp) not in err and "nnexp-" not in err


def test_threads_no_ray_node_has_is_a_one_line_error_before_anything_runs(tmp_path, ray_tmp, other_ray):
    runs = tmp_path / "runs"
    proc = start("sweep", write_tiny(tmp_path, 2), "--executor", "ray", "--address", other_ray,
                 "--threads", "2", "--runs-dir", runs, env=ray_env(ray_tmp))
    out, err = finish(proc, timeout=120)
    assert proc.returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --threads 2") and "no node" in lines[0], err
    assert not runs.exists() or not list(runs.iterdir()), "a sweep folder was left behind"


def test_an_unreachable_ray_leaves_no_sweep_folder(tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]')")
    runs = tmp_path / "runs"
    proc = start("sweep", write_tiny(tmp_path, 2), "--executor", "ray", "--address", "127.0.0.1:9",
                 "--runs-dir", runs)
    out, err = finish(proc, timeout=120)
    assert proc.returncode == 2 and "cannot reach the Ray cluster at 127.0.0.1:9" in err, err
    assert not runs.exists() or not list(runs.iterdir()), "a sweep folder was left behind"
