"""Many runs as one experiment: a sweep's directory and manifest, its points checked, turned
into tasks and handed to an executor, and a search's trials set up.

    runs/<name>-<YYYYmmdd-HHMMSS>/
      sweep.json          the manifest: the base configs, each point's overrides and status,
                          the threads per point, the command that made it
      eta=0.25,seed=1/    a run directory (config.yaml, metrics.jsonl, checkpoints/, ...)
      ...
      .diverged-<stamp>-eta=2.5/   a run set aside (damaged, or started anew by --retry-failed)

What the points are is the plan's business (`sweepplan.Plan`); how one point trains is the
lifecycle's (`lifecycle.execute`, called by every executor). Running a sweep again skips
completed points and continues the others from their last epoch; the point's own run
directory says where it stands. Only the process that runs the sweep writes the manifest.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from nnexp import config as configs
from nnexp import search as searching
from nnexp import tblog, tuning
from nnexp.errors import ConfigError, NnexpError, RunDirError, RunFailed, UserError
from nnexp.executors import (EXECUTORS, Deferred, Executor, LocalPool, Outcome, SerialExecutor, Task, available_cpus,
                             keep_datasets)
from nnexp.lifecycle import Intent, config_change
from nnexp.fileio import atomic_write_text, to_json
from nnexp.rayexec import RayExecutor
from nnexp.rundir import FINAL, MANIFEST, NOTES, RETRYABLE, Notes, Run, Status, make_unique_dir
from nnexp.runset import read_run
from nnexp.sweepplan import MANIFEST_FORMAT, Plan, Point, load_base, overrides, read_manifest, search_plan, selected
from nnexp.training import DataCache, prepare

# statuses that the run directories must settle once the executor has stopped
UNSETTLED = (Status.RUNNING, Status.PENDING, Status.LOST, Status.INTERRUPTED)


# --- the sweep directory ----------------------------------------------------------------------


@dataclass
class SweepDir:
    """A sweep directory and its manifest; the only code that writes `sweep.json`."""

    path: Path
    plan: Plan
    status: dict[str, str]  # point id -> a Status
    # BLAS/torch threads per point: a point's float32 sums depend on them, so a sweep is
    # continued with the threads it was started with (None: a manifest older than the record)
    threads: int | None = None
    command: list[str] | None = None  # the command line that made the sweep
    study: "tuning.SearchStudy | None" = None  # a search that learns: its study, while it runs

    @classmethod
    def create(cls, runs_dir: str | Path, plan: Plan, threads: int = 1) -> "SweepDir":
        sweep = cls(make_unique_dir(runs_dir, plan.name), plan, {p.id: Status.PENDING for p in plan.points},
                    threads, list(sys.argv))
        try:
            sweep.save()
        except OSError as exc:  # a full disk: no sweep without its manifest is left behind
            shutil.rmtree(sweep.path, ignore_errors=True)
            raise NnexpError(f"cannot write {sweep.path / MANIFEST}: {exc.strerror or exc}") from None
        return sweep

    @classmethod
    def open(cls, path: str | Path) -> "SweepDir":
        """The sweep directory at `path`; a manifest that is not what `save` writes is one
        RunDirError naming the file and what is wrong."""
        path = Path(path)
        manifest = path / MANIFEST
        if not manifest.is_file():
            raise RunDirError(f"not a sweep directory: {path} has no {MANIFEST}")
        plan, data = read_manifest(manifest)
        status = {}
        for i, point in enumerate(data["points"]):
            word = point.get("status", Status.PENDING)
            if not isinstance(word, str) or word not in {s.value for s in Status}:
                raise RunDirError(f"{manifest} is damaged: points.{i}.status: {word!r} is not a status")
            status[point["id"]] = Status(word)
        threads = data.get("threads")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise RunDirError(f"{manifest} is damaged: threads: expected a number of threads >= 1, got {threads!r}")
        command = data.get("command")
        command = command if isinstance(command, list) and all(isinstance(a, str) for a in command) else None
        return cls(path, plan, status, threads, command)

    def save(self) -> None:
        plan = self.plan
        data = {
            "format": MANIFEST_FORMAT, "name": plan.name, "kind": plan.kind,
            "updated": datetime.now().isoformat(timespec="seconds"),
            "command": self.command, "threads": self.threads, "spec": plan.spec, "bases": plan.bases,
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
        elif not Run.is_blank(path):  # a run's files without its config.yaml
            return Status.DAMAGED
        return Status.FAILED if self.status.get(point.id) == Status.FAILED else Status.PENDING

    def point_config(self, point: Point) -> dict:
        """The config a point goes on under: the plan's, or the point's own config.yaml where
        that differs from the plan's only in how far the run goes (lifecycle.RESUMABLE_KEYS:
        `nnexp resume POINT --set training.epochs=12` extended it). A point edited in any
        other way gets the plan's, which `lifecycle.execute` refuses, naming the key."""
        planned = self.plan.config(point)
        path = self.run_path(point)
        if not Run.is_run(path):
            return planned
        try:
            own = Run(path).config()
        except UserError:  # unreadable or no longer valid: execute reports it
            return planned
        return own if config_change(own, planned) is None else planned


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
          only: list[str] | None = None, tensorboard: bool = False, deadline: float | None = None):
    """The points still to run (of those `only` selects), as executor tasks, and each selected
    point's status before running. Their configs are resolved here, so a bad one fails
    before any point trains. Nothing is written: `run` does that, holding the sweep.

    A completed point is skipped; a failed one with a last checkpoint (a full disk stopped
    it) continues from it, as `nnexp resume` would; a diverged, damaged or other failed one
    is skipped, or with `retry_failed` set aside by `run` (never deleted) and started anew.
    With `tensorboard` (or once a sweep was run with it: the manifest keeps it), points
    write TensorBoard event files. `deadline` (--time-limit, a `time.time()` value) goes
    with every task: see `executors.Task.deadline`."""
    if tensorboard:
        sweep.plan.spec["tensorboard"] = True  # saved with the manifest by `run`
    live = bool(sweep.plan.spec.get("tensorboard"))
    tblog.require(live)
    hparams = tblog.sweep_hparams(sweep.plan) if live else {}
    todo, before = [], {}
    points = selected(sweep.plan, only)
    for point in points:
        status = before[point.id] = sweep.point_status(point)
        path = sweep.run_path(point)
        if status == Status.FAILED and Run(path).checkpoint_path("last").exists() and not _worker_died(path):
            intent = Intent.RESUME
        elif status in FINAL:
            if not (status in RETRYABLE and retry_failed):
                continue
            intent = Intent.START  # in the place of the run `run` sets aside
        else:
            intent = Intent.CONTINUE
        config = sweep.plan.config(point) if intent == Intent.START else sweep.point_config(point)
        if learns(sweep.plan):  # its values are proposed (or found in the study) as it is about to run
            todo.append(Deferred(point.id, str(path), intent, _trial_maker(
                sweep, point, intent, str(data_dir) if data_dir else None, threads, live, hparams.get(point.id),
                deadline), deadline))
            continue
        todo.append(Task(point.id, config, str(path), str(data_dir) if data_dir else None, intent, threads,
                         live, hparams.get(point.id), deadline=deadline))
    return todo, before


def deadline_after(minutes: float | None) -> float | None:
    """A sweep's `--time-limit MINUTES` as the wall-clock (`time.time()`) deadline its tasks
    carry to their workers (`executors.Task.deadline`)."""
    return None if minutes is None else time.time() + 60 * minutes


def learns(plan: Plan) -> bool:
    """Whether `plan` is a search run through an Optuna study (a sampler or a pruner)."""
    return plan.kind == "search" and "sampler" in plan.spec


def _trial_maker(sweep: SweepDir, point: Point, intent: Intent, data_dir, threads, live, hparams, deadline):
    """The Task of a search's point, made when an executor is about to run it: its values
    are the study's for that trial (proposed now by the sampler, or earlier, before a stop),
    written into sweep.json before the point's run directory is made."""

    def make() -> Task | Outcome:
        index = _index(sweep, point.id)
        params = sweep.study.params(index, point.overrides)
        made = Point(point.id, point.base, params)
        if params != point.overrides:
            sweep.plan.points[index] = made
            try:
                sweep.save()
            except OSError as exc:
                raise NnexpError(f"cannot write {sweep.path / MANIFEST}: {exc.strerror or exc}") from None
        try:
            config = sweep.plan.config(made) if intent == Intent.START else sweep.point_config(made)
        except ConfigError as exc:  # a value the config refuses: this trial fails, the search goes on
            return Outcome(point.id, Status.FAILED, None, str(exc))
        return Task(point.id, config, str(sweep.run_path(made)), data_dir, intent, threads, live, hparams,
                    sweep.study.ref(index), deadline)

    return make


def run(sweep: SweepDir, executor: Executor, todo: list[Task], before: dict[str, str],
        on_event=None, *, notes: Notes | None = None) -> dict[str, str]:
    """Run `todo` on `executor`, keeping the manifest's statuses current; returns them.
    `before` is each point's status as `tasks` found it. One process runs a sweep at a time:
    a second is refused, as a second trainer of a run is.

    `notes` (--note, --tag) go to every point this call makes, written into its directory
    before any point trains (`give_notes`); a point that already has a run or notes keeps its own.

    A manifest that cannot be written (a full disk) stops the executor as Ctrl-C does, every
    point at its last completed epoch: an error names the file and how to continue."""
    finished: set[str] = set()
    unwritable: list[OSError] = []

    def save():
        if unwritable:  # said once; the run directories keep the truth meanwhile
            return
        try:
            sweep.save()
        except OSError as exc:
            unwritable.append(exc)
            raise NnexpError(f"cannot write {sweep.path / MANIFEST}: {exc.strerror or exc}; the sweep "
                             f"stopped, each point at its last completed epoch. Make room, then continue "
                             f"with: nnexp sweep {sweep.path}") from None

    def handle(event):
        kind, point, payload = event
        if point in finished:  # a worker's late "started" or "epoch" after its outcome
            return
        if kind == "started":
            sweep.status[point] = Status.RUNNING
            save()
        elif kind == "finished":
            finished.add(point)
            sweep.status[point] = payload.status
            save()
            if sweep.study is not None:
                sweep.study.tell(_index(sweep, point), payload.status, payload.summary)
        if on_event is not None:
            on_event(event)

    with Run(sweep.path).lock():
        sweep.status.update(before)  # what the run directories say, not what the manifest last did
        for task in todo:
            path = Path(task.run_dir)
            mine = notes
            if task.intent == Intent.START and not Run.is_blank(path):
                # started anew: the old run is kept aside, hidden, never deleted
                aside = Run(path).set_aside(str(before.get(task.point, Status.FAILED)))
                if (aside / NOTES).is_file():  # the same point, started over: why it exists still holds
                    mine = Run(aside).read_notes()
            give_notes(path, mine)
        save()  # the threads this sweep now runs with, before any point does
        if learns(sweep.plan):
            sweep.study = tuning.SearchStudy(sweep.path, sweep.plan.spec)
            sweep.study.settle(sweep)  # trials that ended while no process was telling
        try:
            executor.run(todo, handle)
        finally:  # an interruption too: record what the run directories say now
            for point in sweep.plan.points:
                if sweep.status.get(point.id) in UNSETTLED:
                    sweep.status[point.id] = sweep.point_status(point)
            if not unwritable:
                save()
    return dict(sweep.status)


def give_notes(path: Path, notes: Notes | None) -> None:
    """Make the point directory `path` with `notes` in it, unless there is nothing to give or
    it already holds a run or notes of its own (a continued sweep's points keep theirs)."""
    if notes is None or (path / NOTES).exists() or not Run.is_blank(path):
        return
    run = Run.at(path)
    try:
        run.write_notes(notes)
    except OSError as exc:
        raise RunDirError(f"cannot write {path / NOTES}: {exc.strerror or exc}") from None


def _index(sweep: SweepDir, point_id: str) -> int:
    return next(i for i, p in enumerate(sweep.plan.points) if p.id == point_id)


def _worker_died(path: Path) -> bool:
    """Whether a failed point failed because its worker process died (`executors`): unlike a
    point a full disk stopped, it is not continued unasked, since it would most likely die again."""
    try:
        return (Run(path).read_summary() or {}).get("stop_reason") == "worker-died"
    except UserError:
        return False


def time_limited(statuses: dict[str, str], before: dict[str, str], sweep: SweepDir) -> dict[str, list[str]] | None:
    """Whether a sweep run under a time limit was paused by it: every point of `statuses`
    (those it ran) that did not complete either paused at the limit (interrupted, stop reason
    time-limit) or was not started (planned still, or as it was before). Then the points by
    how they were left, "paused" and "not started"; else None (none was left, or one failed,
    diverged or was interrupted otherwise, which `not_completed` reports)."""
    left: dict[str, list[str]] = {"paused": [], "not started": []}
    for point, status in statuses.items():
        if status in (Status.COMPLETED, Status.PRUNED):
            continue
        if status == Status.INTERRUPTED and _stop_reason(sweep.path / point) == "time-limit":
            left["paused"].append(point)
        elif status == Status.PENDING or status == before.get(point) == Status.INTERRUPTED:
            left["not started"].append(point)
        else:
            return None
    return left if left["paused"] or left["not started"] else None


def _stop_reason(path: Path) -> str | None:
    try:
        return (Run(path).read_summary() or {}).get("stop_reason")
    except UserError:
        return None


def not_completed(statuses: dict[str, str], sweep: SweepDir, retry_failed: bool) -> RunFailed | None:
    """The error a sweep command ends with when some of the points it ran did not complete."""
    # a pruned trial is done: its search stopped it, as it meant to
    unfinished = {p: s for p, s in statuses.items() if s not in (Status.COMPLETED, Status.PRUNED)}
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
              resume_dir: str | Path | None = None, threads: int = 1) -> SweepDir:
    """A new sweep directory for `plan`, whose points run with `threads` threads, once every
    selected point checks out; or, with `resume_dir`, that directory, if it holds the same sweep."""
    check_points(plan, data_dir, only=only)
    if resume_dir is None:
        return SweepDir.create(runs_dir, plan, threads)
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
                search_seed: int, sampler: str = "random", pruner: str = "none") -> Plan:
    """A search as a sweep's plan. Random (the default, no pruner): every trial's values drawn
    up front from one seeded generator, so a search is reproducible and a bad sample spec
    fails before anything trains. With another sampler or a pruner (`tuning`): the values
    are proposed as trials run, so the points start empty (--sampler random with a pruner:
    nnexp's own draws); every distribution's ends are checked against the config now."""
    tuning.check_choices(sampler, pruner)
    parsed = [searching.parse_sample(s) for s in samples]
    draws = searching.plan(parsed, trials, search_seed)
    base = load_base(config_path, sets)
    spec = {"samples": samples, "trials": trials, "search_seed": search_seed}
    if tuning.uses_optuna(sampler, pruner):
        tuning.check_samples(parsed)
        for sample in parsed:  # the values a sampler may propose: each end of each range
            for value in sample.args:
                configs.resolve(configs.apply_experiment_overrides(base, overrides({sample.key: value})))
        spec.update(sampler=sampler, pruner=pruner, epochs=configs.resolve(base)["training"]["epochs"])
        if sampler != "random":
            draws = [{} for _ in draws]
    return search_plan(f"{base['name']}-search", base, draws, spec)


def new_search(plan: Plan, runs_dir: str | Path, data_dir=None, threads: int = 1) -> NewSearch:
    """The search's sweep directory, once every draw's config is checked. A draw the data
    rules out (a batch larger than the training set) is marked failed, not fatal."""
    ruled_out = check_points(plan, data_dir, skip_ruled_out=True)
    made = SweepDir.create(runs_dir, plan, threads)
    if learns(plan):
        try:
            tuning.create_study(made.path)
        except BaseException:  # no search without its study is left behind
            shutil.rmtree(made.path, ignore_errors=True)
            raise
    for point in ruled_out:
        made.status[point] = Status.FAILED
    made.save()
    return NewSearch(made, ruled_out)


# --- where the points run ---------------------------------------------------------------------


def check_kind(kind: str, address: str | None) -> None:
    """A one-line error for an executor that cannot be had, before anything is made."""
    if kind not in EXECUTORS:
        raise UserError(f"unknown executor {kind!r}; valid: {', '.join(EXECUTORS)}")
    if address and kind != "ray":
        raise UserError("--address is for --executor ray")


def make_executor(kind: str, jobs: int | None, address: str | None, threads: int = 1) -> Executor:
    """`jobs` points at once (default: one per core, or as a Ray cluster schedules them),
    each with `threads` threads. Enter it (`with`) to reach a Ray cluster before anything
    is made."""
    check_kind(kind, address)
    if kind == "ray":
        return RayExecutor(address, jobs, threads)
    jobs = jobs or max(1, available_cpus() // threads)
    return SerialExecutor(threads) if jobs == 1 else LocalPool(jobs, threads)
