"""`nnexp expand-mnist` and training on the expanded set, as a user runs them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from nnexp.cli import app
from nnexp.data import load_expanded
from nnexp.rundir import Run

from conftest import needs_mnist

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()
pytestmark = needs_mnist


def test_expand_mnist_writes_the_book_set_and_refuses_to_overwrite(tmp_path):
    out, preview = tmp_path / "expanded.npz", tmp_path / "preview.png"
    result = runner.invoke(app, ["expand-mnist", "--out", str(out), "--seed", "3", "--preview", str(preview)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out) and "250,000 images" in result.stderr
    images, labels, meta = load_expanded(out)
    assert images.shape == (250_000, 28, 28) and images.dtype == np.uint8 and len(labels) == 250_000
    assert meta["seed"] == 3
    assert preview.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    again = runner.invoke(app, ["expand-mnist", "--out", str(out)])
    assert again.exit_code == 2 and "--force" in again.stderr
    forced = runner.invoke(app, ["expand-mnist", "--out", str(out), "--seed", "3", "--force"])
    assert forced.exit_code == 0
    assert np.array_equal(load_expanded(out)[0], images), "same seed, same images"


def test_training_on_the_expanded_set_builds_it_on_first_use(tmp_path):
    result = runner.invoke(app, ["train", str(ROOT / "configs" / "expanded.yaml"),
                                 "--set", "training.epochs=1", "--set", "data.train_size=500",
                                 "--set", "model.layers.0.filters=4", "--set", "model.layers.1.filters=4",
                                 "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    summary = Run.open(result.stdout.strip().splitlines()[-1]).read_summary()
    assert summary["dataset"] == "mnist-expanded" and summary["status"] == "completed"
    assert summary["train_size"] == 500
