"""The command line: Typer's runner for the mapping, one real subprocess for the whole path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from nnexp.cli import app
from nnexp.rundir import Run

from conftest import needs_mnist

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


def small_config(tmp_path, **training) -> Path:
    cfg = {"name": "small", "data": {"train_size": 300},
           "model": {"init": "network2", "layers": [{"type": "dense", "units": 20},
                                                    {"type": "softmax", "units": 10}]},
           "training": {"epochs": 1, "eta": 0.5, **training}}
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@needs_mnist
def test_train_prints_the_run_directory_on_stdout(tmp_path):
    result = runner.invoke(app, ["train", str(small_config(tmp_path)), "--runs-dir", str(tmp_path / "runs"),
                                 "--set", "training.epochs=2", "--seed", "4"])
    assert result.exit_code == 0, result.output
    run = Run.open(result.stdout.strip().splitlines()[-1])
    summary = run.read_summary()
    assert summary["status"] == "completed" and summary["epochs_run"] == 2 and summary["seed"] == 4
    assert "epoch   2/2" in result.stderr and "test accuracy" in result.stderr


@needs_mnist
def test_diverging_run_exits_1_with_a_hint(tmp_path):
    path = small_config(tmp_path, eta=1e6)
    result = runner.invoke(app, ["train", str(path), "--runs-dir", str(tmp_path / "runs"),
                                 "--set", "model.layers.0.activation=linear", "--set", "model.init=large"])
    assert result.exit_code == 1
    assert "diverged" in result.stderr and "training.eta" in result.stderr
    assert "Traceback" not in result.output


def test_unknown_backend_and_device_are_one_line_errors(tmp_path):
    path = small_config(tmp_path)
    result = runner.invoke(app, ["train", str(path), "--backend", "jax", "--runs-dir", str(tmp_path / "r")])
    assert result.exit_code == 2 and "unknown backend 'jax'; valid: numpy, torch" in result.stderr
    result = runner.invoke(app, ["train", str(path), "--device", "cuda", "--runs-dir", str(tmp_path / "r")])
    assert result.exit_code == 2 and "numpy backend runs on the CPU only" in result.stderr
    assert not (tmp_path / "r").exists()


def test_gradcheck_command_passes_on_a_conv_net(tmp_path):
    path = ROOT / "configs" / "conv2_relu.yaml"
    result = runner.invoke(app, ["gradcheck", str(path), "--entries", "5", "--examples", "2"])
    assert result.exit_code == 0, result.output
    assert "all 8 parameters agree" in result.stdout


def test_backends_lists_numpy_and_torch():
    result = runner.invoke(app, ["backends"])
    assert result.exit_code == 0
    assert "numpy" in result.stdout and "torch" in result.stdout


@needs_mnist
@pytest.mark.slow
def test_readme_first_command_trains_shallow_for_one_epoch(tmp_path):
    """The issue's acceptance check, as a user runs it: a real process, the shipped config."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "nnexp", "train", str(ROOT / "configs" / "shallow.yaml"),
                           "--set", "training.epochs=1", "--runs-dir", str(tmp_path / "runs")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    run_dir = Path(proc.stdout.strip())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["best_validation_accuracy"] > 0.90
    assert (run_dir / "checkpoints" / "best.npz").is_file() and (run_dir / "env.json").is_file()
