"""Interrupted, killed, concurrent and damaged runs: nothing is lost, nothing is shared.

The kill tests drive a real `nnexp train` process, stop it mid-run (SIGKILL or SIGINT),
resume it with `nnexp resume`, and require the result to equal, bit for bit, the same run
left alone: every metric (except timings) and every parameter.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from nnexp import config
from nnexp.cli import app
from nnexp.rundir import Run

from conftest import needs_mnist

runner = CliRunner()

# Dropout, augmentation and momentum all carry state across epochs: a resume must restore it.
CONFIG = {
    "name": "resumable", "seed": 5,
    "data": {"train_size": 3000, "augment": {"shift": 1}},
    "model": {"init": "network2", "layers": [
        {"type": "dense", "units": 40, "activation": "relu", "dropout": 0.2},
        {"type": "softmax", "units": 10}]},
    "training": {"epochs": 6, "eta": 0.05, "lambda": 1.0, "optimizer": "momentum",
                 "early_stopping": {"patience": 3}},
}


def write_config(tmp_path, cfg=CONFIG) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def nnexp(*args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "nnexp", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            **kwargs)


def start_and_stop(tmp_path, sig, after_epochs=2) -> tuple[Run, subprocess.CompletedProcess]:
    """Start a training process, wait until `after_epochs` epochs are recorded, send `sig`."""
    runs = tmp_path / "runs"
    proc = nnexp("train", write_config(tmp_path), "--runs-dir", runs)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = list(runs.glob("*/metrics.jsonl"))
        if found and len(found[0].read_text().splitlines()) >= after_epochs:
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    return Run(found[0].parent), subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def uninterrupted(tmp_path) -> Run:
    proc = nnexp("train", write_config(tmp_path), "--runs-dir", tmp_path / "whole")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return Run(out.strip())


def assert_same_run(a: Run, b: Run) -> None:
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]  # noqa: E731
    assert strip(a.read_metrics()) == strip(b.read_metrics())
    for which in ("best", "last"):
        pa, _, _ = a.load_checkpoint(which)
        pb, _, _ = b.load_checkpoint(which)
        assert all(np.array_equal(pa[k], pb[k]) for k in pa), which
    sa, sb = a.read_summary(), b.read_summary()
    for key in ("status", "best_epoch", "best_validation_accuracy", "test_accuracy", "epochs_run"):
        assert sa[key] == sb[key], key


@needs_mnist
def test_sigkill_then_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    run, proc = start_and_stop(tmp_path, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    assert run.read_summary()["status"] == "running"  # what a killed process leaves
    from nnexp.runset import read_run
    assert read_run(run.path).status == "killed", "compare tells a dead run from a live one"
    resumed = nnexp("resume", run.path)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert out.strip() == str(run.path)
    epochs = [r["epoch"] for r in run.read_metrics()]
    assert epochs == list(range(1, len(epochs) + 1)), "metrics neither duplicated nor truncated"
    assert_same_run(run, uninterrupted(tmp_path))


@needs_mnist
def test_ctrl_c_marks_the_run_interrupted_exits_130_and_resumes(tmp_path):
    run, proc = start_and_stop(tmp_path, signal.SIGINT)
    assert proc.returncode == 130, proc.stderr
    assert f"nnexp resume {run.path}" in proc.stderr and "Traceback" not in proc.stderr
    assert run.read_summary()["status"] == "interrupted"
    result = runner.invoke(app, ["resume", str(run.path)])
    assert result.exit_code == 0, result.output
    assert run.read_summary()["status"] == "completed"
    env = json.loads((run.path / "env.json").read_text())
    assert "train" in env["command"] and len(env["resumes"]) == 1, "the original record stays"
    assert_same_run(run, uninterrupted(tmp_path))


@needs_mnist
def test_resuming_a_completed_run_changes_nothing(tmp_path):
    run = uninterrupted(tmp_path)
    before = (run.path / "metrics.jsonl").read_text()
    result = runner.invoke(app, ["resume", str(run.path)])
    assert result.exit_code == 0 and "already completed" in result.stderr
    assert (run.path / "metrics.jsonl").read_text() == before


def test_a_run_held_by_another_process_cannot_be_resumed(tmp_path):
    run = Run.create(tmp_path, "busy")
    run.write_config({"name": "busy"})
    with run.lock():
        assert run.is_locked()
        probe = subprocess.run([sys.executable, "-c", "from nnexp.rundir import Run; import sys;"
                                f"r = Run({str(run.path)!r}); sys.exit(3 if r.is_locked() else 0)"])
        assert probe.returncode == 3
    assert not run.is_locked()


def test_concurrent_starts_get_distinct_run_directories(tmp_path):
    barrier, made, errors = threading.Barrier(8), [], []

    def create():
        barrier.wait()
        try:
            made.append(Run.create(tmp_path, "same").path)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(made)) == 8


@needs_mnist
def test_two_train_processes_started_together_write_two_runs(tmp_path):
    cfg = {**CONFIG, "training": {**CONFIG["training"], "epochs": 1}, "data": {"train_size": 200}}
    path = write_config(tmp_path, cfg)
    procs = [nnexp("train", path, "--runs-dir", tmp_path / "runs") for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    dirs = {out.strip() for out, _ in outs}
    assert len(dirs) == 2 and all(Run(d).read_summary()["status"] == "completed" for d in dirs)


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    from nnexp import rundir

    run = Run.create(tmp_path, "full-disk")
    run.write_summary({"status": "running"})

    def no_space(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rundir.os, "fsync", no_space)
    with pytest.raises(OSError):
        run.write_summary({"status": "completed"})
    assert json.loads((run.path / "summary.json").read_text()) == {"status": "running"}
    assert sorted(p.name for p in run.path.iterdir()) == ["checkpoints", "summary.json"]


def test_non_finite_numbers_are_written_as_json_null(tmp_path):
    run = Run.create(tmp_path, "nan")
    run.append_metrics({"epoch": 1, "validation_cost": float("nan"), "test_cost": np.float32("inf")})
    line = (run.path / "metrics.jsonl").read_text()
    assert json.loads(line) == {"epoch": 1, "validation_cost": None, "test_cost": None}
    assert "NaN" not in line and "Infinity" not in line


def test_a_pending_best_checkpoint_is_kept_or_dropped_by_what_last_recorded(tmp_path):
    from nnexp.lifecycle import settle_pending_best
    from nnexp.training import PENDING_BEST, LoopState

    run = Run.create(tmp_path, "pending")
    run.save_checkpoint("best", {"0.w": np.zeros(2)}, {"epoch": 3})
    run.save_checkpoint(PENDING_BEST, {"0.w": np.ones(2)}, {"epoch": 5})
    settle_pending_best(run, LoopState(epoch=4, best_epoch=3))  # epoch 5 will be re-run
    assert not run.checkpoint_path(PENDING_BEST).exists()
    assert run.load_checkpoint("best")[1]["epoch"] == 3
    run.save_checkpoint(PENDING_BEST, {"0.w": np.ones(2)}, {"epoch": 5})
    settle_pending_best(run, LoopState(epoch=5, best_epoch=5))  # last.npz counted it
    assert run.load_checkpoint("best")[1]["epoch"] == 5


def test_writes_are_atomic_and_leave_no_temporary_files(tmp_path):
    run = Run.create(tmp_path, "atomic")
    run.write_summary({"status": "running"})
    run.save_checkpoint("last", {"0.w": np.ones((2, 2))}, {"epoch": 1})
    run.write_summary({"status": "completed"})
    names = sorted(p.name for p in run.path.rglob("*"))
    assert names == ["checkpoints", "last.npz", "summary.json"]
    assert json.loads((run.path / "summary.json").read_text()) == {"status": "completed"}


def test_a_torn_metrics_line_is_ignored_and_trimmed_on_resume(tmp_path):
    run = Run.create(tmp_path, "torn")
    run.append_metrics({"epoch": 1, "validation_accuracy": 0.5})
    with open(run.path / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "valid')  # the process died mid-line
    assert [r["epoch"] for r in run.read_metrics()] == [1]
    run.truncate_metrics(1)
    assert (run.path / "metrics.jsonl").read_text().count("\n") == 1


# --- bad input through the CLI: exit 2, one line, no traceback, no run directory -------------

def _broken_checkpoint(tmp_path) -> list[str]:
    run = Run.create(tmp_path, "damaged")
    run.write_config(config.resolve(CONFIG))
    run.checkpoint_path("best").write_bytes(b"PK\x03\x04 truncated")
    return ["evaluate", str(run.path)]


def _damaged_run_config(tmp_path) -> list[str]:
    run = Run.create(tmp_path, "damaged-config")
    (run.path / "config.yaml").write_text("model: {layers: [unclosed\n")
    return ["resume", str(run.path)]


def _diverged_run(tmp_path) -> list[str]:
    run = Run.create(tmp_path, "diverged")
    run.write_config(config.resolve(CONFIG))
    run.write_summary({"status": "diverged"})
    return ["resume", str(run.path)]


def _wrong_checksum_data(tmp_path) -> list[str]:
    data = tmp_path / "data"
    data.mkdir()
    for name in os.listdir(os.environ["NNEXP_DATA_DIR"]):
        if name.endswith(".gz"):
            (data / name).write_bytes(Path(os.environ["NNEXP_DATA_DIR"], name).read_bytes())
    labels = data / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(labels.read_bytes()))
    raw[-1] = (raw[-1] + 1) % 10  # one flipped label: a valid file, the wrong content
    labels.write_bytes(gzip.compress(bytes(raw)))
    return ["train", str(write_config(tmp_path)), "--data-dir", str(data)]


BAD_CALLS = {
    "yaml syntax": lambda t: ["train", str(_text(t, "model: {layers: [unclosed"))],
    "non-mapping root": lambda t: ["train", str(_text(t, "[1, 2, 3]"))],
    "unknown key": lambda t: ["train", str(write_config(t)), "--set", "training.momentun=0.5"],
    "unknown layer": lambda t: ["train", str(write_config(t)), "--set", "model.layers.0.type=lstm"],
    "unknown activation": lambda t: ["train", str(write_config(t)), "--set", "model.layers.0.activation=gelu"],
    "unknown cost": lambda t: ["train", str(write_config(t)), "--set", "training.cost=hinge"],
    "wrong type": lambda t: ["train", str(write_config(t)), "--set", "training.epochs=[1]"],
    "negative size": lambda t: ["train", str(write_config(t)), "--set", "model.layers.0.units=-3"],
    "zero batch": lambda t: ["train", str(write_config(t)), "--set", "training.batch_size=0"],
    "missing data dir": lambda t: ["train", str(write_config(t)), "--data-dir", str(t / "nowhere")],
    "not a run dir": lambda t: ["resume", str(t)],
    "missing run dir": lambda t: ["evaluate", str(t / "no-such-run")],
    "damaged checkpoint": _broken_checkpoint,
    "wrong checksum": _wrong_checksum_data,
    "damaged run config": _damaged_run_config,
    "resume a diverged run": _diverged_run,
    "gradcheck with no examples": lambda t: ["gradcheck", str(write_config(t)), "--examples", "0"],
    "expand with a bad angle": lambda t: ["expand-mnist", "--rotate", "200", "--out", str(t / "x.npz"),
                                          "--data-dir", str(t / "no-data")],
    "unknown option value": lambda t: ["train", str(write_config(t)), "--device", "quantum"],
}


def _text(tmp_path, text) -> Path:
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    return path


@needs_mnist
@pytest.mark.parametrize("case", BAD_CALLS)
def test_bad_input_exits_2_with_one_line_and_leaves_no_run(tmp_path, case, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default runs/ would land here
    args = BAD_CALLS[case](tmp_path)
    result = runner.invoke(app, args)
    assert result.exit_code == 2, (case, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    assert "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


@needs_mnist
def test_deterministic_torch_cpu_runs_are_bit_identical(tmp_path):
    # Separate processes, since torch's deterministic mode is process-wide; one after the
    # other, since two torch thread pools on two cores slow each other down many times over.
    cfg = {**CONFIG, "backend": "torch", "device": "cpu",
           "training": {**CONFIG["training"], "epochs": 2}}
    path = write_config(tmp_path, cfg)
    outs = []
    for i in range(2):
        proc = nnexp("train", path, "--deterministic", "--runs-dir", tmp_path / f"r{i}")
        outs.append(proc.communicate(timeout=300))
        assert proc.returncode == 0, outs[-1]
    first, second = (Run(out.strip()) for out, _ in outs)
    assert first.read_config()["deterministic"] is True
    assert_same_run(first, second)
