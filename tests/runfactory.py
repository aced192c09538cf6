"""Synthetic run directories for tests, written through `nnexp.rundir.Run` like real ones.

Tests of compare, plots and ensemble need runs with chosen accuracies, statuses and
configs, and training real ones would take minutes. `make_run` writes the same files the
training loop writes (resolved config, metrics.jsonl, summary.json, checkpoints), with
numbers the test picked, so expected values can be computed by hand.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from nnexp.batch import SweepDir
from nnexp.network import build_spec, init_params
from nnexp.rundir import Run, Status
from nnexp.sweepplan import Plan, Point

from conftest import make_config

SMALL_LAYERS = [{"type": "dense", "units": 30}, {"type": "softmax", "units": 10}]
CONV_LAYERS = [{"type": "conv", "filters": 4, "size": 5, "pool": 2},
               {"type": "dense", "units": 20}, {"type": "softmax", "units": 10}]
# A conv net that scores MNIST's 10,000 test images in ~0.2 s on the NumPy backend: a 25x25
# kernel leaves 4x4 positions per image, so the im2col work is tiny.
FAST_CONV_LAYERS = [{"type": "conv", "filters": 2, "size": 25, "pool": 2}, {"type": "softmax", "units": 10}]


def _records(val: list[float], test: list[float] | None, monitor_train: bool) -> list[dict]:
    test = test if test is not None else [v - 0.01 for v in val]
    records = []
    for i, (v, t) in enumerate(zip(val, test), start=1):
        record = {"epoch": i, "eta": 0.1,
                  "validation_cost": 1.0 - v if math.isfinite(v) else float("nan"),
                  "validation_accuracy": v, "test_cost": 1.0 - t, "test_accuracy": t}
        if monitor_train:
            record["train_accuracy"] = min(v + 0.02, 1.0)
            record["train_cost"] = 1.0 - record["train_accuracy"]
        record["seconds"] = 2.0
        records.append(record)
    return records


def make_run(root: str | Path, name: str = "shallow", *, layers: list[dict] | None = None,
             seed: int = 0, sets: dict | None = None, val: list[float] | None = None,
             test: list[float] | None = None, status: str | None = "completed",
             wall_time_s: float | None = None, backend: str = "numpy", device: str = "cpu",
             checkpoint: bool = False) -> Run:
    """A run directory with the given per-epoch validation (and test) accuracies.

    `status=None` writes no summary.json (a run that has not finished its first epoch, or
    predates summaries). The summary's best epoch follows the training loop's rule: highest
    validation accuracy, ties to the later epoch. `checkpoint=True` saves random initial
    parameters as best.npz and last.npz, enough for anything that only needs a loadable model.
    """
    cfg = make_config(layers or SMALL_LAYERS, name=name, seed=seed, training={"epochs": 10}, sets=sets)
    run = Run.create(root, name)
    run.write_config(cfg)
    val = [0.90, 0.93, 0.95] if val is None else val
    records = _records(val, test, cfg["training"]["monitor_train"])
    for i, record in enumerate(records):
        record["best"] = all(record["validation_accuracy"] >= r["validation_accuracy"] for r in records[:i])
        run.append_metrics(record)
    if status is not None:
        best = max((r for r in records if math.isfinite(r["validation_accuracy"])),
                   key=lambda r: (r["validation_accuracy"], r["epoch"]), default=None)
        run.write_summary({
            "name": name, "status": status, "stop_reason": "epochs" if status == "completed" else None,
            "best_epoch": best["epoch"] if best else None,
            "best_validation_accuracy": best["validation_accuracy"] if best else None,
            "test_accuracy": best["test_accuracy"] if best else None,
            "epochs_run": len(records), "epochs": cfg["training"]["epochs"], "final_eta": 0.1,
            "wall_time_s": wall_time_s if wall_time_s is not None else 2.0 * len(records),
            "backend": backend, "device": device, "seed": seed, "dataset": "mnist",
            "run_dir": str(run.path),
        })
    if checkpoint:
        params = init_params(build_spec(cfg["model"]["layers"]), "xavier", np.random.default_rng(seed))
        run.save_checkpoint("best", params, {"epoch": len(records)})
        run.save_checkpoint("last", params, {"epoch": len(records)})
    return run


def png_size(path: str | Path) -> tuple[int, int]:
    """(width, height) read from a PNG's IHDR chunk; fails unless the file is a PNG."""
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def write_manifest(sweep: str | Path) -> Path:
    """A sweep.json listing the run directories made in `sweep` as its points (each its own
    base, its config as it stands), as `nnexp sweep` writes one: readers of a sweep read the
    points its manifest lists."""
    sweep = Path(sweep)
    runs = [Run(p) for p in sorted(sweep.iterdir()) if Run.is_run(p)]
    plan = Plan(sweep.name.rsplit("-", 2)[0], "grid", {r.name: r.read_config() for r in runs},
                [Point(r.name, r.name, {}) for r in runs])
    SweepDir(sweep, plan, {r.name: Status.COMPLETED for r in runs}, 1, ["nnexp", "sweep"]).save()
    return sweep


def kill_once_second_point_is_part_way(proc: subprocess.Popen, runs: Path, pattern: str, epochs: int,
                                       timeout: float) -> list[int]:
    """SIGKILL `proc`'s process group (started with start_new_session=True) once the first of
    the points `runs.glob(pattern)` finds has all its `epochs` and the second is part-way, past
    its first checkpoint: killed between a metrics record and its checkpoint, a point rightly
    starts over, and the tests that use this are about resuming. Returns the points' epoch
    counts then; fails the test if that moment never comes."""
    states: list[int] = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            points = sorted(runs.glob(pattern)) if runs.exists() else []
            states = [len(Run(p).read_metrics(strict=False)) for p in points]
            if (len(states) >= 2 and states[0] == epochs and 1 <= states[1] < epochs
                    and Run(points[1]).checkpoint_path("last").exists()):
                return states
            time.sleep(0.02)
        raise AssertionError(f"never reached the moment to kill it (epochs recorded: {states})")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def finish(proc: subprocess.Popen, timeout: float = 180) -> tuple[str, str]:
    """The output of `proc` (started with start_new_session=True) once it ends; its process
    group killed and the test failed if that takes over `timeout` seconds."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"nnexp did not end within {timeout} s; stderr: {err[-3000:]}")


def wait_for(proc: subprocess.Popen, what: str, check, timeout: float = 120):
    """Poll `check()` until it returns something true; fail if `proc` ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"nnexp ended before {what}: rc {proc.returncode}; {err[-3000:]}")
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    pytest.fail(f"timed out waiting for {what}")
