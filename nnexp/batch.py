"""Many runs as one experiment: a sweep's directory and manifest, its points checked, turned
into tasks and handed to an executor, and a search's trials set up.

    runs/<name>-<YYYYmmdd-HHMMSS>/
      sweep.json          the manifest: the base configs, each point's overrides and status
      eta=0.25,seed=1/    a run directory (config.yaml, metrics.jsonl, checkpoints/, ...)
      ...

What the points are is the plan's business (`sweep.Plan`); how one point trains is the
lifecycle's (`lifecycle.execute`, called by every executor). Running a sweep again skips
completed points and continues the others from their last epoch; the point's own run
directory says where it stands. Only the process that runs the sweep writes the manifest.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from nnexp import search as searching
from nnexp import tblog
from nnexp.errors import ConfigError, RunDirError, RunFailed, UserError
from nnexp.executors import Executor, Task, keep_datasets
from nnexp.lifecycle import Intent
from nnexp.fileio import atomic_write_text, to_json
from nnexp.runs import FINAL, MANIFEST, RETRYABLE, Run, Status, make_unique_dir
from nnexp.runset import read_run
from nnexp.sweep import Plan, Point, load_base, search_plan, selected
from nnexp.training import DataCache, prepare

MANIFEST_FORMAT = 1
# statuses that the run directories must settle once the executor has stopped
UNSETTLED = (Status.RUNNING, Status.PENDING, Status.LOST, Status.INTERRUPTED)


# --- the sweep directory ----------------------------------------------------------------------


@dataclass
class SweepDir:
    """A sweep directory and its manifest; the only code that writes `sweep.json`."""

    path: Path
    plan: Plan
    status: dict[str, str]  # point id -> a Status

    @classmethod
    def create(cls, runs_dir: str | Path, plan: Plan) -> "SweepDir":
        sweep = cls(make_unique_dir(runs_dir, plan.name), plan, {p.id: Status.PENDING for p in plan.points})
        sweep.save()
        return sweep

    @classmethod
    def open(cls, path: str | Path) -> "SweepDir":
        path = Path(path)
        manifest = path / MANIFEST
        if not manifest.is_file():
            raise RunDirError(f"not a sweep directory: {path} has no {MANIFEST}")
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
            points = [Point(p["id"], p["base"], dict(p["overrides"])) for p in data["points"]]
            plan = Plan(data["name"], data["kind"], dict(data["bases"]), points, dict(data.get("spec") or {}))
            status = {p["id"]: str(p.get("status", Status.PENDING)) for p in data["points"]}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RunDirError(f"{manifest} is damaged ({type(exc).__name__}: {exc})") from None
        if data.get("format") != MANIFEST_FORMAT:
            raise RunDirError(f"{manifest} has format {data.get('format')!r}; this nnexp reads {MANIFEST_FORMAT}")
        return cls(path, plan, status)

    def save(self) -> None:
        plan = self.plan
        data = {
            "format": MANIFEST_FORMAT, "name": plan.name, "kind": plan.kind,
            "updated": datetime.now().isoformat(timespec="seconds"),
            "command": sys.argv, "spec": plan.spec, "bases": plan.bases,
            "points": [{"id": p.id, "base": p.base, "overrides": p.overrides,
                        "status": self.status.get(p.id, Status.PENDING)} for p in plan.points],
        }
        atomic_write_text(self.path / MANIFEST, to_json(data))

    def run_path(self, point: Point) -> Path:
        return self.path / point.id

    def same_points(self, plan: Plan) -> bool:
        """Whether `plan` (from a command line) is the sweep this directory holds."""
        mine = [(p.id, json.dumps(self.plan.config(p), sort_keys=True)) for p in self.plan.points]
        theirs = [(p.id, json.dumps(plan.config(p), sort_keys=True)) for p in plan.points]
        return mine == theirs

    def point_status(self, point: Point) -> Status:
        """From the point's run directory, which is the truth; the manifest's word only for
        a point that failed before its run directory got a summary."""
        path = self.run_path(point)
        if Run.is_run(path):
            try:
                status = read_run(path).status
            except UserError:
                return Status.DAMAGED
            if status not in (Status.STARTING, Status.UNKNOWN):
                return status
        return Status.FAILED if self.status.get(point.id) == Status.FAILED else Status.PENDING


# --- running ----------------------------------------------------------------------------------

def check_points(plan: Plan, data_dir=None, *, skip_ruled_out: bool = False,
                 only: list[str] | None = None) -> dict[str, str]:
    """Every selected point's config and data checked before anything is made: a typo fails
    the sweep at once. With `skip_ruled_out` (search), a draw the data rules out (a batch
    larger than the training set) is returned, point id -> why, instead of raised."""
    datasets = DataCache()
    ruled_out = {}
    for point in selected(plan, only):
        cfg = plan.config(point)  # a config error is always fatal
        try:
            prepare(cfg, data_dir=data_dir, datasets=datasets)
        except ConfigError as exc:
            if not skip_ruled_out:
                raise
            ruled_out[point.id] = str(exc)
    keep_datasets(datasets)  # points run in this process reuse what was just loaded
    return ruled_out


def tasks(sweep: SweepDir, *, data_dir: str | None = None, retry_failed: bool = False, threads: int = 1,
          only: list[str] | None = None, tensorboard: bool = False):
    """The points still to run (of those `only` selects), as executor tasks, and each selected
    point's status before running. Their configs are resolved here, so a bad one fails
    before any point trains. Nothing is written: `run` does that, holding the sweep. A final
    point is skipped; a diverged, failed or damaged one is run again from scratch with
    `retry_failed`. With `tensorboard` (or once a sweep was run with it: the manifest keeps it),
    points write TensorBoard event files."""
    if tensorboard:
        sweep.plan.spec["tensorboard"] = True  # saved with the manifest by `run`
    live = bool(sweep.plan.spec.get("tensorboard"))
    tblog.require(live)
    hparams = tblog.sweep_hparams(sweep.plan) if live else {}
    todo, before = [], {}
    intent = Intent.RETRY if retry_failed else Intent.CONTINUE
    points = selected(sweep.plan, only)
    configs = {point.id: sweep.plan.config(point) for point in points}
    for point in points:
        status = before[point.id] = sweep.point_status(point)
        if status in FINAL and not (status in RETRYABLE and retry_failed):
            continue
        todo.append(Task(point.id, configs[point.id], str(sweep.run_path(point)),
                         str(data_dir) if data_dir else None, intent, threads, live, hparams.get(point.id)))
    return todo, before


def run(sweep: SweepDir, executor: Executor, todo: list[Task], before: dict[str, str],
        on_event=None) -> dict[str, str]:
    """Run `todo` on `executor`, keeping the manifest's statuses current; returns them.
    `before` is each point's status as `tasks` found it. One process runs a sweep at a time:
    a second is refused, as a second trainer of a run is."""
    finished: set[str] = set()

    def handle(event):
        kind, point, payload = event
        if point in finished:  # a worker's late "started" or "epoch" after its outcome
            return
        if kind == "started":
            sweep.status[point] = Status.RUNNING
            sweep.save()
        elif kind == "finished":
            finished.add(point)
            sweep.status[point] = payload.status
            sweep.save()
        if on_event is not None:
            on_event(event)

    with Run(sweep.path).lock():
        sweep.status.update(before)  # what the run directories say, not what the manifest last did
        for task in todo:
            if before.get(task.point) == Status.DAMAGED:  # kept aside, never deleted: it starts afresh
                path = Path(task.run_dir)
                path.rename(path.with_name(f".damaged-{datetime.now():%Y%m%d-%H%M%S}-{path.name}"))
        try:
            executor.run(todo, handle)
        finally:  # an interruption too: record what the run directories say now
            for point in sweep.plan.points:
                if sweep.status.get(point.id) in UNSETTLED:
                    sweep.status[point.id] = sweep.point_status(point)
            sweep.save()
    return dict(sweep.status)


def not_completed(statuses: dict[str, str], sweep: SweepDir, retry_failed: bool) -> RunFailed | None:
    """The error a sweep command ends with when some of the points it ran did not complete."""
    unfinished = {p: s for p, s in statuses.items() if s != Status.COMPLETED}
    if not unfinished:
        return None
    listed = ", ".join(f"{p} ({s})" for p, s in list(unfinished.items())[:5])
    more = f" and {len(unfinished) - 5} more" if len(unfinished) > 5 else ""
    # a retry starts over only what its run directory says is diverged, failed or damaged: a
    # point refused (an edited config.yaml) stays interrupted, and its own message says what helps
    retryable = any(sweep.point_status(point) in RETRYABLE for point in sweep.plan.points if point.id in unfinished)
    return RunFailed(f"{len(unfinished)} of {len(statuses)} points did not complete: {listed}{more}. "
                     f"Continue with: nnexp sweep {sweep.path}"
                     + (" (--retry-failed to run failed ones again)" if retryable and not retry_failed else ""))


# --- making a sweep directory -----------------------------------------------------------------


def open_sweep(path: str | Path, data_dir=None, only: list[str] | None = None) -> SweepDir:
    """An existing sweep directory, its selected points checked again (the data may have moved)."""
    sweep = SweepDir.open(path)
    check_points(sweep.plan, data_dir, skip_ruled_out=sweep.plan.kind == "search", only=only)
    return sweep


def new_sweep(plan: Plan, runs_dir: str | Path, data_dir=None, *, only: list[str] | None = None,
              resume_dir: str | Path | None = None) -> SweepDir:
    """A new sweep directory for `plan` once every selected point checks out; or, with
    `resume_dir`, that directory, if it holds the same sweep."""
    check_points(plan, data_dir, only=only)
    if resume_dir is None:
        return SweepDir.create(runs_dir, plan)
    made = SweepDir.open(resume_dir)
    if not made.same_points(plan):
        raise UserError(f"{resume_dir} holds a different sweep (other points or configs); "
                        f"continue it with: nnexp sweep {resume_dir}")
    return made


@dataclass(frozen=True)
class NewSearch:
    sweep: SweepDir
    ruled_out: dict[str, str]  # trial id -> why the data rules its draw out (marked failed)


def plan_search(config_path: str | Path, sets: list[str], samples: list[str], trials: int,
                search_seed: int) -> Plan:
    """A random search as a sweep's plan: every trial's values drawn up front from one seeded
    generator, so a search is reproducible and a bad sample spec fails before anything trains."""
    parsed = [searching.parse_sample(s) for s in samples]
    draws = searching.plan(parsed, trials, search_seed)
    base = load_base(config_path, sets)
    return search_plan(f"{base['name']}-search", base, draws,
                       {"samples": samples, "trials": trials, "search_seed": search_seed})


def new_search(plan: Plan, runs_dir: str | Path, data_dir=None) -> NewSearch:
    """The search's sweep directory, once every draw's config is checked. A draw the data
    rules out (a batch larger than the training set) is marked failed, not fatal."""
    ruled_out = check_points(plan, data_dir, skip_ruled_out=True)
    made = SweepDir.create(runs_dir, plan)
    for point in ruled_out:
        made.status[point] = Status.FAILED
    made.save()
    return NewSearch(made, ruled_out)
