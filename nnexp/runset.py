"""Which runs a command is about, and what each one says about itself.

`nnexp compare` and `nnexp ensemble` take run directories, globs, or directories holding
runs; `find_run_dirs` turns those into run directories. A sweep directory means the points
its manifest lists, not whatever folders it holds (a copied or renamed point is no seed). `read_run` reads one into a
`RunRecord` without trusting it to be finished: a run still training, interrupted, diverged
or without a summary yet is a record with that status (its numbers recomputed from
metrics.jsonl where needed); only a damaged directory is an error, which `load_runs` turns
into a one-line warning so one bad directory does not hide the rest.

Non-goals: writing anything (that is `runs.Run`), reading checkpoints (`evaluate`).
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nnexp.config import flatten
from nnexp.errors import RunDirError, UserError
from nnexp.runs import MANIFEST, Notes, Run, Status, best_record, is_finite_number, is_sweep_dir
from nnexp.sweep import read_manifest

METRICS = ("epochs_run", "best_epoch", "best_validation_accuracy", "test_accuracy", "wall_time_s")


@dataclass
class RunRecord:
    """What compare knows about one run directory."""

    run: Run
    config: dict  # config.yaml, resolved again: keys added to nnexp since show their defaults
    flat: dict[str, Any]
    summary: dict | None
    metrics: list[dict]
    status: Status
    values: dict[str, float | int | None]  # one per METRICS
    sweep: str | None = None  # the name of the sweep directory the run is a point of, if any
    notes: Notes = Notes()  # the run's note and tags (notes.json)

    @property
    def name(self) -> str:
        return self.run.name

    @property
    def id(self) -> str:
        """How to find the run again: its directory's name, or `sweep/point` for a sweep's
        point (a point's name alone, `seed=1`, is in every sweep)."""
        return f"{self.sweep}/{self.name}" if self.sweep else self.name


def _values_from_metrics(metrics: list[dict]) -> dict:
    """Best epoch etc. recomputed from metrics.jsonl, for runs with no summary.json yet."""
    best = best_record(metrics)
    return {
        "epochs_run": len(metrics),
        "best_epoch": best.get("epoch") if best else None,
        "best_validation_accuracy": best["validation_accuracy"] if best else None,
        "test_accuracy": best.get("test_accuracy") if best else None,
        "wall_time_s": round(sum(r.get("seconds", 0.0) for r in metrics), 3) if metrics else None,
    }


def _number(value: Any) -> float | int | None:
    """A finite number or None: a diverged run's NaN must not poison means and sorting."""
    return value if is_finite_number(value) else None


def read_run(path: str | Path) -> RunRecord:
    """One run directory as a record; a damaged one (its config, its summary, or any
    metrics.jsonl line but a torn last one) is a RunDirError, which `load_runs` turns into a
    warning: numbers recomputed from part of a run's records would look like its own."""
    run = Run.open(path)
    config = run.config(lenient=True)  # a config that no longer validates is compared as written
    summary = run.read_summary()  # a dict or None: anything else is a RunDirError
    metrics = run.read_metrics(strict=True)
    status = run.status(summary, epochs=len(metrics))
    if summary is None:
        values = _values_from_metrics(metrics)
    else:
        fallback = _values_from_metrics(metrics)
        # a value that is not a number (null, or damage such as "abc") is recomputed
        values = {k: fallback[k] if _number(summary.get(k)) is None else summary[k] for k in METRICS}
        if "best_epoch" in summary and summary["best_epoch"] is None:
            # the run says it has no best epoch (it diverged in its first): no best figures
            values.update(best_epoch=None, best_validation_accuracy=None, test_accuracy=None)
    values = {k: _number(v) for k, v in values.items()}
    sweep = run.path.parent.name if is_sweep_dir(run.path.parent) else None
    return RunRecord(run, config, flatten(config), summary, metrics, status, values, sweep,
                     run.read_notes())


_GLOB_CHARS = set("*?[")


def _folders(path: Path) -> list[Path]:
    """The visible folders in `path`, sorted: hidden ones are a sweep's runs being replaced,
    or set aside (damaged, or started anew by --retry-failed)."""
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _runs_in(path: Path) -> list[Path]:
    return [p for p in _folders(path) if Run.is_run(p)]


def _sweep_runs(path: Path) -> tuple[list[Path], list[str]]:
    """The points of the sweep directory `path` that have started, as its manifest lists them
    (sorted by name), and warnings: a folder that is not one of its points is not read. A
    damaged manifest is a RunDirError."""
    plan, _ = read_manifest(path / MANIFEST)
    ids = {p.id for p in plan.points}
    strays = [p.name for p in _folders(path) if p.name not in ids]
    listed = ", ".join(strays[:5]) + (f" and {len(strays) - 5} more" if len(strays) > 5 else "")
    warnings = [f"skipped {listed} in {path}: not among the points its {MANIFEST} lists"] if strays else []
    return sorted(path / i for i in ids if Run.is_run(path / i)), warnings


def find_run_dirs(patterns: list[str | Path]) -> tuple[list[Path], list[str]]:
    """Run directories named by paths or globs; a directory of runs expands to its runs.

    Returns (paths, warnings). Paths that match nothing are warnings, not errors, so one
    typo does not hide the other runs; finding no run at all is a UserError.
    """
    found: list[Path] = []
    seen: set[Path] = set()
    warnings: list[str] = []
    unreadable: list[str] = []  # sweeps whose manifest is damaged: why nothing may be found

    def add(path: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            found.append(path)

    for pattern in map(str, patterns):
        expanded = str(Path(pattern).expanduser())
        # a directory whose name holds *?[ is itself, not a pattern
        literal = Path(expanded).is_dir()
        matches = sorted(glob.glob(expanded)) if _GLOB_CHARS & set(pattern) and not literal else [expanded]
        matches = [Path(m) for m in matches if Path(m).is_dir()]
        if not matches:
            warnings.append(f"no run directory matches {pattern}")
        for path in matches:
            if Run.is_run(path):
                add(path)
                continue
            # a sweep directory, a folder of runs, or a folder of those
            sweeps = [path] if is_sweep_dir(path) else [sub for sub in _folders(path) if is_sweep_dir(sub)]
            children = [] if is_sweep_dir(path) else _runs_in(path)
            for sweep in sweeps:
                try:
                    runs, notes = _sweep_runs(sweep)
                except RunDirError as exc:
                    unreadable.append(f"{one_line(str(exc))}; name its runs ({sweep}/*) to read them anyway")
                    warnings.append(f"skipped {sweep}: {unreadable[-1]}")
                    continue
                children += runs
                warnings += notes
            if not children:
                warnings.append(f"{path} is not a run directory and holds none")
            for child in children:
                add(child)
    if not found:
        raise UserError("no run directories found in: " + ", ".join(map(str, patterns))
                        + "".join(f" ({why})" for why in unreadable))
    return found, warnings


def one_line(message: str, limit: int = 200) -> str:
    """A message squeezed onto one line: YAML errors come with multi-line caret diagrams."""
    text = " ".join(message.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_runs(patterns: list[str | Path]) -> tuple[list[RunRecord], list[str]]:
    """Every readable run the patterns name, plus a warning per damaged or missing one."""
    paths, warnings = find_run_dirs(patterns)
    records = []
    for path in paths:
        try:
            records.append(read_run(path))
        except RunDirError as exc:
            warnings.append(f"skipped {path}: {one_line(str(exc))}")
    if not records:
        raise UserError("no readable run directories: " + "; ".join(warnings))
    return records, warnings
