"""Rebuild a trained network from its run directory, on any backend, and score it.

A run directory carries everything needed: the resolved config and portable checkpoints.
This is what `nnexp evaluate` and `nnexp ensemble` stand on.
"""

from __future__ import annotations

from dataclasses import dataclass

from nnexp import backends
from nnexp.backends import Model, Objective
from nnexp.data import Dataset, load_dataset
from nnexp.errors import RunDirError
from nnexp.network import NetworkSpec
from nnexp.rundir import Run, is_finite_number


@dataclass
class LoadedRun:
    run: Run
    config: dict
    spec: NetworkSpec
    model: Model
    checkpoint: str
    epoch: int
    backend: str  # the backend and device the model was built on
    device: str


def load_run_model(run: Run, *, checkpoint: str = "best", backend: str | None = None,
                   device: str = "auto", dtype: str | None = None) -> LoadedRun:
    """The run's network with the parameters of its `best` or `last` checkpoint."""
    if checkpoint not in ("best", "last"):
        raise RunDirError(f"unknown checkpoint {checkpoint!r}; valid: best, last")
    cfg, spec = run.config(), run.spec()
    params, meta, _ = run.load_checkpoint(checkpoint)
    expected = spec.param_shapes()
    for name, shape in expected.items():
        if name not in params or params[name].shape != tuple(shape):
            raise RunDirError(f"checkpoint {run.checkpoint_path(checkpoint)} does not match the "
                              f"run's config (parameter {name})")
    chosen = backends.get(backend or cfg["backend"])
    resolved = chosen.resolve_device(device)
    # Inference needs no L2 coefficient: it only enters training steps.
    model = chosen.build(spec, params, Objective(cfg["training"]["cost"]),
                         dtype=dtype or cfg["dtype"], device=resolved)
    return LoadedRun(run, cfg, spec, model, checkpoint, int(meta.get("epoch", 0)), chosen.name, resolved)


def run_dataset(loaded: LoadedRun, *, dataset: str | None = None, data_dir=None) -> Dataset:
    """The dataset the run was trained on (or another one of the same shape)."""
    data = loaded.config["data"]
    name = dataset or data["dataset"]
    if name == "mnist-expanded":  # its validation and test sets are MNIST's
        name = "mnist"
    return load_dataset(name, data_dir=data_dir or (data["path"] if dataset is None else None))


def score(loaded: LoadedRun, dataset: Dataset, split: str = "test") -> dict:
    """Cost, accuracy and number of errors of the loaded model on one split, in one inference
    pass: the same `Model.evaluate` the training loop reported its accuracies with."""
    part = getattr(dataset, split)
    cost, accuracy = loaded.model.evaluate(part.x, part.y)
    n = len(part.y)
    return {"split": split, "cost": cost, "accuracy": accuracy, "errors": n - round(accuracy * n), "n": n}


def recorded_test_accuracy(run: Run) -> float | None:
    """summary.json's test accuracy, to set beside a fresh score; None when there is none to
    compare with: no summary, a damaged one, or a value that is not a finite number. A
    check that a run reproduces must not crash on the file it checks against."""
    try:
        summary = run.read_summary() or {}
    except RunDirError:
        return None
    value = summary.get("test_accuracy")
    return float(value) if is_finite_number(value) else None
