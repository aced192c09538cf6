"""`nnexp export record`: copies of runs to keep, in a repository or to send.

A record is what every reader of runs needs and nothing else: the config, env.json, the
metrics, the summary, the log, the notes and the chosen checkpoints, compressed in the
precision the run trained in (`Run.copy_record`). `nnexp compare`, `report`, `evaluate` and
`ensemble` give the same answers on the copy as on the run. A sweep's points keep their
places, SWEEP/POINT beside a copy of the sweep's manifest, so the copy still reads as the
sweep (its seed groups, its book verdicts). Event files (`tensorboard/`) are left out:
`nnexp export tensorboard` makes them again from the metrics.

Non-goals: merging into an earlier copy of a run (a copy is never overwritten), moving runs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from nnexp.errors import UserError
from nnexp.rundir import MANIFEST, is_sweep_dir
from nnexp.runset import load_runs

CHECKPOINTS = {"best": ("best",), "last": ("last",), "both": ("best", "last"), "none": ()}


def export(patterns: list[str | Path], out: str | Path, checkpoint: str = "best",
           runs_dir: str | Path | None = None) -> tuple[list[Path], list[str]]:
    """Copy the runs `patterns` name (runs, sweeps, ids: `runset`) under `out`, a run as
    OUT/NAME and a sweep's point as OUT/SWEEP/POINT; returns the copies and the warnings.
    Everything is checked before anything is written: a copy already there, or a run being
    trained (its record would be caught half-way), is a one-line error."""
    if checkpoint not in CHECKPOINTS:
        raise UserError(f"--checkpoint {checkpoint!r}: choose one of {', '.join(CHECKPOINTS)}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a directory")
    records, warnings = load_runs(patterns, runs_dir)
    targets = []
    for record in records:
        path = record.run.path
        sweep = path.parent if is_sweep_dir(path.parent) else None
        target = out / sweep.name / path.name if sweep else out / path.name
        if target.exists() or target in targets:
            raise UserError(f"{target} exists already; a copy is never overwritten: remove it or choose another --out")
        if record.run.is_locked():
            raise UserError(f"{path} is being trained; copy it once it has stopped")
        targets.append(target)
    for record, target in zip(records, targets):
        sweep = record.run.path.parent
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.parent != out:  # the sweep's manifest as it is now: its points, its plan
            shutil.copy2(sweep / MANIFEST, target.parent / MANIFEST)
        for which in record.run.copy_record(target, CHECKPOINTS[checkpoint]):
            warnings.append(f"{record.run.path} has no {which} checkpoint: its copy has none")
    return targets, warnings
