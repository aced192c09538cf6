"""Which runs a command is about, and what each one says about itself.

`nnexp compare` and `nnexp ensemble` take run directories, globs, or directories holding
runs; `find_run_dirs` turns those into run directories. A sweep directory means the points
its manifest lists, not whatever folders it holds (a copied or renamed point is no seed). `read_run` reads one into a
`RunRecord` without trusting it to be finished: a run still training, interrupted, diverged
or without a summary yet is a record with that status (its numbers recomputed from
metrics.jsonl where needed); only a damaged directory is an error, which `load_runs` turns
into a one-line warning so one bad directory does not hide the rest.

Non-goals: writing anything (that is `rundir.Run`), reading checkpoints (`evaluate`).
"""

from __future__ import annotations

import difflib
import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nnexp.config import flatten
from nnexp.errors import RunDirError, UserError
from nnexp.rundir import MANIFEST, Notes, Run, Status, best_record, is_finite_number, is_sweep_dir
from nnexp.sweepplan import read_manifest

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


# --- run ids: what compare's id column shows, accepted wherever a run is named -----------------


def resolve_run(name: str | Path, runs_dir: str | Path = "runs") -> Path:
    """The directory a run argument names. An existing path wins, as it is; otherwise `name`
    is a run id as `nnexp compare` shows it, looked up under `runs_dir` (where `nnexp train`
    puts runs): `NAME` is RUNS/NAME, `SWEEP/POINT` is RUNS/SWEEP/POINT, and each part may
    be the start of one directory's name alone (`shallow-2026` for shallow-20261203-101112).
    An unknown id, or a start that several names share, is a UserError naming the nearest ids."""
    given = Path(str(name)).expanduser()
    if given.exists():
        return given
    runs = Path(runs_dir)
    parts = Path(str(name)).parts
    if not 1 <= len(parts) <= 2 or given.is_absolute() or {".", ".."} & set(parts):
        raise UserError(f"no run {str(name)!r}: no such path")
    found = runs
    for part in parts:
        if (found / part).is_dir():
            found = found / part
            continue
        starts = [p for p in _folders(found) if p.name.startswith(part)] if found.is_dir() else []
        if len(starts) > 1:
            listed = ", ".join(p.name for p in starts[:3]) + (f" and {len(starts) - 3} more" if len(starts) > 3 else "")
            raise UserError(f"run id {str(name)!r} is ambiguous in {runs}: {part!r} starts {listed}")
        if not starts:
            raise UserError(_unknown_id(str(name), runs))
        found = starts[0]
    return found


def _unknown_id(name: str, runs: Path) -> str:
    """An unknown run id's one-line error, with the ids under `runs` nearest to it."""
    if not runs.is_dir():
        return f"no run {name!r}: no such path, and no runs directory {runs} to look its id up in (--runs-dir)"
    ids = known_ids(runs)

    def likeness(known: str) -> float:  # a typo in the whole id, or in its start (`shalow` for shallow-2026...)
        return max(difflib.SequenceMatcher(None, name, known).ratio(),
                   difflib.SequenceMatcher(None, name, known[:len(name)]).ratio())

    close = sorted((i for i in ids if likeness(i) >= 0.6), key=likeness, reverse=True)[:3]
    hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
    return f"no run {name!r}: no such path, nor a run id in {runs}{hint}"


def known_ids(runs_dir: str | Path) -> list[str]:
    """The ids of the runs and sweeps directly under `runs_dir`: run directories' names,
    sweep directories' names, and `SWEEP/POINT` for each point that has started."""
    ids = []
    for path in _folders(Path(runs_dir)):
        if Run.is_run(path):
            ids.append(path.name)
        elif is_sweep_dir(path):
            ids.append(path.name)
            ids += [f"{path.name}/{point.name}" for point in _runs_in(path)]
    return ids


def find_run_dirs(patterns: list[str | Path], runs_dir: str | Path | None = None) -> tuple[list[Path], list[str]]:
    """Run directories named by paths, globs or (with `runs_dir`) run ids (`resolve_run`);
    a directory of runs expands to its runs. A glob that matches nothing as given is tried
    under `runs_dir` too, as a seed group's id (`sweep/eta=0.25,seed=*`) is.

    Returns (paths, warnings). Paths that match nothing are warnings, not errors, so one
    typo does not hide the other runs; finding no run at all is a UserError.
    """
    found: list[Path] = []
    seen: set[Path] = set()
    warnings: list[str] = []
    unreadable: list[str] = []  # damaged sweep manifests, unknown ids: why nothing may be found

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
        unknown = f"no run directory matches {pattern}"
        if not matches and runs_dir is not None:  # a run id, or an id's glob, under the runs directory
            if _GLOB_CHARS & set(pattern) and not Path(expanded).is_absolute():
                matches = [Path(m) for m in sorted(glob.glob(str(Path(runs_dir) / pattern))) if Path(m).is_dir()]
            elif not Path(expanded).exists():
                try:
                    matches = [resolve_run(pattern, runs_dir)]
                except UserError as exc:  # with the nearest ids
                    unknown = str(exc)
                    unreadable.append(unknown)
        if not matches:
            warnings.append(unknown)
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


def load_runs(patterns: list[str | Path], runs_dir: str | Path | None = None) -> tuple[list[RunRecord], list[str]]:
    """Every readable run the patterns (or, with `runs_dir`, run ids) name, plus a warning
    per damaged or missing one."""
    paths, warnings = find_run_dirs(patterns, runs_dir)
    records = []
    for path in paths:
        try:
            records.append(read_run(path))
        except RunDirError as exc:
            warnings.append(f"skipped {path}: {one_line(str(exc))}")
    if not records:
        raise UserError("no readable run directories: " + "; ".join(warnings))
    return records, warnings
