"""The `nnexp` command line: one thin function per command, and the only module that prints.

Run directories' paths go to stdout (so `RUN=$(nnexp train ...)` works); progress, tables
and errors go to stderr. Errors that are the user's to fix (`UserError`) become one line and
exit code 2; a run that failed (`RunFailed`) exits 1; Ctrl-C exits 130.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
import typer.core
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from typer.core import TyperGroup

from nnexp.errors import NnexpError

class OneLineErrors(TyperGroup):
    """click's own usage errors (a bad option value, a missing argument) reported like
    nnexp's: one line on stderr and exit code 2, instead of a usage box."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.Abort:
            err.print("aborted")
            sys.exit(1)
        except typer.TyperException as exc:  # typer's (vendored) click usage errors
            ctx = getattr(exc, "ctx", None)
            if type(exc).__name__ == "NoArgsIsHelpError":  # a bare `nnexp`: typer printed the help
                sys.exit(0)
            where = f"nnexp {ctx.info_name} --help" if ctx is not None and ctx.parent else "nnexp --help"
            err.print(f"[bold red]error:[/] {escape(exc.format_message())} (see: {where})", markup=True)
            sys.exit(getattr(exc, "exit_code", 2))
        sys.exit(code if isinstance(code, int) else 0)


def _flags_without_type(display_type_rich):
    """Typer's help shows a flag as `--force <bool>`, as if it took a value: show it bare."""
    @functools.wraps(display_type_rich)
    def display(self, ctx):
        return None if getattr(self, "is_flag", False) else display_type_rich(self, ctx)
    return display


if hasattr(typer.core.TyperOption, "display_type_rich"):
    typer.core.TyperOption.display_type_rich = _flags_without_type(typer.core.TyperOption.display_type_rich)


app = typer.Typer(
    name="nnexp",
    cls=OneLineErrors,
    help="Train and compare the classic networks of Nielsen's and Saitoh's books from YAML configs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from nnexp import __version__

        out.print(f"nnexp {__version__}", markup=False)
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[Optional[bool], typer.Option(
        "--version", callback=_version, is_eager=True, help="Print nnexp's version and exit.")] = None) -> None:
    """Train and compare the classic networks of Nielsen's and Saitoh's books from YAML configs."""
# markup off by default: paths, names and values users give are printed as they are
# (`runs/[red]x` stays `runs/[red]x`); the few styled lines ask for markup and escape their values
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)  # one error, one line
out = Console(highlight=False, soft_wrap=True, markup=False)

# --- shared options ---------------------------------------------------------------------------

SetOpt = Annotated[Optional[list[str]], typer.Option(
    "--set", "-s", metavar="KEY.PATH=VALUE",
    help="Override a config key, e.g. --set training.epochs=1 (repeatable).")]
BackendOpt = Annotated[Optional[str], typer.Option(help="Backend to use (same as --set backend=...).")]
DeviceOpt = Annotated[Optional[str], typer.Option(help="cpu | cuda | auto (same as --set device=...).")]
DeterministicOpt = Annotated[Optional[bool], typer.Option(
    "--deterministic", help="Bit-identical results from run to run on torch (numpy always is); "
                            "same as --set deterministic=true.")]
SeedOpt = Annotated[Optional[int], typer.Option(help="Random seed (same as --set seed=...).")]
DataDirOpt = Annotated[Optional[Path], typer.Option(
    help="Directory holding the dataset's IDX files (default: data.path, $NNEXP_DATA_DIR, "
         "then the per-user cache).")]
RunsDirOpt = Annotated[Path, typer.Option(help="Where new run directories are created.")]
TimeLimitOpt = Annotated[Optional[float], typer.Option(
    "--time-limit", metavar="MINUTES", min=0.0,
    help="Pause the run, resumable, before an epoch that would end after this many minutes "
         "(a cluster job's or a GPU lease's wall time).")]
ConfigArg = Annotated[Path, typer.Argument(help="Experiment config (YAML).", show_default=False)]
RunArg = Annotated[Path, typer.Argument(help="A run directory.", show_default=False)]
AssignArg = Annotated[Optional[list[str]], typer.Argument(
    metavar="[KEY.PATH=VALUE]...", show_default=False,
    help="Config overrides, as --set: training.eta=0.1 model.layers.0.units=100.")]


def _assignments(items: list[str] | None) -> list[str]:
    """Positional KEY=VALUE overrides; anything else is a one-line error."""
    from nnexp.errors import UserError

    for item in items or []:
        if "=" not in item or not item.partition("=")[0].strip():
            raise UserError(f"unexpected argument {item!r}: overrides are KEY.PATH=VALUE, "
                            "e.g. training.eta=0.1")
    return list(items or [])


def _users_path(filename) -> str:
    """The path the user asked for, not the temporary file nnexp was writing it through."""
    from nnexp.fileio import temporary_target

    path = Path(str(filename))
    target = temporary_target(path.name)
    return str(path.with_name(target)) if target else str(path)


def command(*args, **kwargs):
    """`app.command`, plus the one place where domain errors become messages and exit codes."""

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*a, **kw):
            try:
                return fn(*a, **kw)
            except NnexpError as exc:
                err.print(f"[bold red]error:[/] {escape(str(exc))}", markup=True, highlight=False)
                raise typer.Exit(exc.exit_code) from None
            except KeyboardInterrupt:
                err.print("interrupted")
                raise typer.Exit(130) from None
            except OSError as exc:  # the environment failed us (disk full, permissions)
                where = f": {_users_path(exc.filename)}" if exc.filename else ""
                err.print(f"[bold red]error:[/] {escape(str(exc.strerror or exc))}{escape(where)}", markup=True)
                raise typer.Exit(1) from None

        return app.command(*args, **kwargs)(wrapper)

    return decorate


def _overrides(overrides: list[str] | None, **sugar) -> list[str]:
    """--set overrides after the options that are shorthand for one (--backend B is
    --set backend=B), so an explicit --set wins."""
    return [*(f"{key}={value}" for key, value in sugar.items() if value is not None), *(overrides or [])]


def _load_config(path: Path, overrides: list[str] | None, **sugar) -> dict:
    from nnexp import config

    return config.load(path, _overrides(overrides, **sugar))


# --- progress ---------------------------------------------------------------------------------


class PlainReporter:
    """One line per epoch: for logs, pipes and CI."""

    def epoch_started(self, epoch: int, num_batches: int) -> None:
        pass

    def batches_done(self, done: int) -> None:
        pass

    def evaluating(self) -> None:
        pass

    def epoch_finished(self, record: dict, line: str) -> None:
        err.print(line, markup=False)


class BarReporter(PlainReporter):
    """A progress bar over the epoch's mini-batches, then over its evaluation, with the last
    epoch's validation cost and accuracy and an ETA for the whole run; each finished epoch is
    printed above it."""

    def __init__(self, progress: Progress, epochs: int, done: int = 0):
        self.progress, self.task, self.epochs, self.epoch = progress, None, epochs, done
        self.seconds: list[float] = []
        self.last = ""

    def _eta(self) -> str:
        from nnexp.compare import _duration

        if not self.seconds:
            return "run ETA –"
        mean = sum(self.seconds) / len(self.seconds)
        return f"run ETA {_duration(mean * (self.epochs - self.epoch + 1))}"

    def epoch_started(self, epoch: int, num_batches: int) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.epoch = epoch
        self.task = self.progress.add_task(f"epoch {epoch}/{self.epochs}", total=num_batches,
                                           info=f"{self.last}  {self._eta()}".strip())

    def batches_done(self, done: int) -> None:
        self.progress.update(self.task, completed=done)

    def evaluating(self) -> None:
        self.progress.update(self.task, description=f"epoch {self.epoch}/{self.epochs} scoring")

    def epoch_finished(self, record: dict, line: str) -> None:
        self.seconds.append(record["seconds"])
        self.last = f"last: val {100 * record['validation_accuracy']:.2f}%, cost {record['validation_cost']:.4f}"
        self.progress.console.print(line, markup=False)


def _deadline(minutes: float | None) -> float | None:
    import time

    return None if minutes is None else time.monotonic() + 60 * minutes


def _train_and_report(step, exp, run) -> None:
    """Run `step(exp, run, reporter)` (start or resume) with a progress bar on a terminal and
    plain lines otherwise; report the outcome and print the run directory."""
    try:
        if not err.is_terminal:
            summary = step(exp, run, PlainReporter())
        else:
            columns = [TextColumn("{task.description}"), BarColumn(bar_width=20), MofNCompleteColumn(),
                       TimeRemainingColumn(), TextColumn("{task.fields[info]}")]
            done = len(run.read_metrics(strict=False))  # epochs a resumed run has behind it
            with Progress(*columns, console=err, transient=True) as progress:
                summary = step(exp, run, BarReporter(progress, exp.config["training"]["epochs"], done))
    except KeyboardInterrupt:
        err.print(f"interrupted; everything up to the last completed epoch is saved. "
                  f"Resume with: nnexp resume {run.path}")
        raise typer.Exit(130) from None
    if summary.get("best_epoch"):
        from nnexp.training import STOP_REASONS

        reason = STOP_REASONS.get(summary["stop_reason"], summary["stop_reason"])
        err.print(f"best validation {100 * summary['best_validation_accuracy']:.2f}% at epoch "
                  f"{summary['best_epoch']}: test accuracy {100 * summary['test_accuracy']:.2f}% "
                  f"({summary['epochs_run']} epochs, {reason}, "
                  f"{summary['wall_time_s']:.0f} s)")
    elif summary.get("stop_reason") == "time-limit":
        err.print(f"paused at the time limit before the first epoch ended; "
                  f"continue with: nnexp resume {run.path}")
    out.print(str(run.path))


# --- commands ---------------------------------------------------------------------------------


@command()
def train(config_path: ConfigArg, assignments: AssignArg = None, set_: SetOpt = None, backend: BackendOpt = None,
          device: DeviceOpt = None, seed: SeedOpt = None, deterministic: DeterministicOpt = None,
          data_dir: DataDirOpt = None, runs_dir: RunsDirOpt = Path("runs"),
          time_limit: TimeLimitOpt = None) -> None:
    """Train the network a config describes; prints the new run directory."""
    from nnexp import training
    from nnexp.runs import Run

    cfg = _load_config(config_path, [*_assignments(assignments), *(set_ or [])], backend=backend,
                       device=device, seed=seed, deterministic="true" if deterministic else None)
    exp = training.prepare(cfg, data_dir=data_dir)  # all input checks happen before the run exists
    run = Run.create(runs_dir, cfg["name"])
    err.print(f"run directory: {run.path}  ({exp.backend.name}/{exp.device}, "
              f"{exp.spec.n_params:,} parameters, {len(exp.dataset.train.y):,} training images)")
    _train_and_report(functools.partial(training.execute, deadline=_deadline(time_limit)), exp, run)


class SweepDisplay:
    """What a sweep shows while it runs: on a terminal, one live line per running point and
    a count of done / failed / remaining with an ETA; elsewhere, a plain line per point
    started and finished."""

    def __init__(self, total: int, todo: list, before: dict[str, str], parallel: int):
        import time

        from nnexp.sweep import DONE

        self.clock = time.monotonic
        self.total, self.parallel = total, max(1, parallel)
        waiting = {t.point for t in todo}
        self.done = sum(1 for s in before.values() if s == DONE)
        self.failed = sum(1 for p, s in before.items() if s != DONE and p not in waiting)
        self.waiting, self.running = waiting, {}  # point -> (started, text)
        self.durations: list[float] = []
        self.live = None
        if err.is_terminal:
            from rich.live import Live

            self.live = Live(self.render(), console=err, transient=True, refresh_per_second=4)

    def __enter__(self):
        if self.live is not None:
            self.live.__enter__()
        return self

    def __exit__(self, *exc):
        if self.live is not None:
            self.live.__exit__(*exc)

    def _print(self, text: str) -> None:
        (self.live.console if self.live is not None else err).print(text, markup=False, highlight=False)

    def eta(self) -> str:
        from nnexp.compare import _duration

        left = len(self.waiting) + len(self.running)
        if not self.durations or not left:
            return "ETA –"
        mean = sum(self.durations) / len(self.durations)
        return f"ETA {_duration(mean * left / min(self.parallel, left))}"

    def render(self):
        from rich.console import Group
        from rich.text import Text

        now = self.clock()
        lines = [Text(f"  {point}  {text or 'starting'}  ({now - since:.0f} s)")
                 for point, (since, text) in self.running.items()]
        lines.append(Text(f"{self.done}/{self.total} done, {self.failed} failed, "
                          f"{len(self.waiting) + len(self.running)} to run · {self.eta()}", style="bold"))
        return Group(*lines)

    def __call__(self, event) -> None:
        kind, point, payload = event
        if kind == "started":
            self.waiting.discard(point)
            self.running[point] = (self.clock(), "")
            if self.live is None:
                self._print(f"started {point}")
        elif kind == "epoch" and point in self.running:
            record, epochs = payload
            self.running[point] = (self.running[point][0],
                                   f"epoch {record['epoch']}/{epochs}  val {100 * record['validation_accuracy']:.2f}%  "
                                   f"η {record['eta']:g}")
        elif kind == "finished":
            self.waiting.discard(point)
            since, _ = self.running.pop(point, (self.clock(), ""))
            self.durations.append(self.clock() - since)
            summary = payload.summary or {}
            if payload.status == "completed":
                self.done += 1
            elif payload.status not in ("interrupted",):
                self.failed += 1
            text = f"[{self.done + self.failed}/{self.total}] {point}: {payload.status}"
            if summary.get("best_epoch"):
                text += (f", best validation {100 * summary['best_validation_accuracy']:.2f}%, "
                         f"test {100 * summary['test_accuracy']:.2f}% ({summary.get('wall_time_s', 0):.0f} s)")
            if payload.error:
                text += f": {payload.error}"
            self._print(text)
        if self.live is not None:
            self.live.update(self.render())


ExecutorOpt = Annotated[str, typer.Option(help="local (processes on this machine) | ray.")]
JobsOpt = Annotated[Optional[int], typer.Option(
    "--jobs", "-j", min=1, help="Points run at once (default: this machine's cores).")]
AddressOpt = Annotated[Optional[str], typer.Option(
    help="The Ray cluster to use (--executor ray; default: start a local Ray for the sweep).")]
RetryOpt = Annotated[bool, typer.Option("--retry-failed", help="Run diverged and failed points again.")]
ThreadsOpt = Annotated[int, typer.Option(
    min=1, help="BLAS/torch threads per point. A point's metrics are identical under every "
                "executor and --jobs at the same --threads.")]


def _run_sweep(sweep, executor, *, data_dir, retry_failed: bool, threads: int, rank: bool = False,
               only: list[str] | None = None) -> None:
    """Run a sweep's remaining points, show them, print its table; exit 1 unless all completed."""
    from nnexp import compare as cmp
    from nnexp import sweep as sweeps
    from nnexp.errors import RunFailed

    todo, before = sweeps.tasks(sweep, data_dir=data_dir, retry_failed=retry_failed, threads=threads,
                                only=only)
    skipped = len(before) - len(todo)
    chosen = f" ({len(before)} selected by --only)" if only else ""
    err.print(f"sweep {sweep.path}: {len(sweep.plan.points)} points{chosen}"
              + (f", {skipped} already done or not retried" if skipped else "")
              + f"; {executor.description}", markup=False)
    parallel = getattr(executor, "jobs", None) or len(todo)
    try:
        with SweepDisplay(len(before), todo, before, parallel) as display:
            statuses = sweeps.run(sweep, executor, todo, before, display)
    except KeyboardInterrupt:
        err.print(f"interrupted; completed points are kept and the others resume with: "
                  f"nnexp sweep {sweep.path}")
        raise typer.Exit(130) from None
    started = [sweep.run_path(p) for p in sweep.plan.points if (sweep.run_path(p) / "config.yaml").is_file()]
    statuses = {p: s for p, s in statuses.items() if p in before}  # the points this command ran
    if started:
        comparison, warnings = cmp.compare(started, sort="best_validation_accuracy", group=not rank)
        _warn(warnings)
        _print_table(cmp.render(comparison, "table", width=err.width if err.is_terminal else None),
                     console=err)
    out.print(str(sweep.path), markup=False)
    unfinished = {p: s for p, s in statuses.items() if s != sweeps.DONE}
    if unfinished:
        listed = ", ".join(f"{p} ({s})" for p, s in list(unfinished.items())[:5])
        more = f" and {len(unfinished) - 5} more" if len(unfinished) > 5 else ""
        raise RunFailed(f"{len(unfinished)} of {len(statuses)} points did not complete: {listed}{more}. "
                        f"Continue with: nnexp sweep {sweep.path}"
                        + ("" if retry_failed else " (--retry-failed to run failed ones again)"))


@command()
def sweep(target: Annotated[Path, typer.Argument(
              help="A config, a sweep file (YAML with config:, grid:, seeds:), or a sweep "
                   "directory to continue.", show_default=False)],
          grid: Annotated[Optional[list[str]], typer.Option(
              "--grid", "-g", metavar="KEY.PATH=V1,V2,...",
              help="A config key and its values (repeatable); the points are every combination.")] = None,
          seeds: Annotated[Optional[str], typer.Option(
              metavar="N|S1,S2,...", help="N seeds counting up from the config's, or a list.")] = None,
          jobs: JobsOpt = None, threads: ThreadsOpt = 1, executor: ExecutorOpt = "local",
          address: AddressOpt = None, set_: SetOpt = None, backend: BackendOpt = None,
          device: DeviceOpt = None, data_dir: DataDirOpt = None, runs_dir: RunsDirOpt = Path("runs"),
          name: Annotated[Optional[str], typer.Option(help="The sweep's name (default: the config's).")] = None,
          resume_dir: Annotated[Optional[Path], typer.Option(
              "--resume", metavar="DIR", help="Continue this sweep directory made by the same command.")] = None,
          retry_failed: RetryOpt = False,
          only: Annotated[Optional[list[str]], typer.Option(
              metavar="GLOB", help="Run only the points whose ids match (repeatable), e.g. "
                                   "'conv2_relu,*'; the others stay planned.")] = None) -> None:
    """Many runs as one experiment: a grid of config values x seeds, run in parallel; prints the sweep directory.

    Running it again (`nnexp sweep DIR`) continues it."""
    from nnexp import executors
    from nnexp import sweep as sweeps
    from nnexp.errors import UserError

    chosen = executors.make_executor(executor, jobs, address, threads)
    sets = _overrides(set_, backend=backend, device=device)
    if sweeps.SweepDir.is_sweep(target):
        if grid or seeds or sets or name or resume_dir:
            raise UserError(f"{target} is a sweep directory: it is continued as it was planned; "
                            "--grid, --seeds, --set, --name and --resume do not apply")
        existing = sweeps.SweepDir.open(target)
        sweeps.check_points(existing.plan, data_dir, skip_ruled_out=existing.plan.kind == "search", only=only)
        _run_sweep(existing, chosen, data_dir=data_dir, retry_failed=retry_failed, threads=threads,
                   rank=existing.plan.kind == "search", only=only)
        return
    grid_values = sweeps.parse_grid(grid or [])
    if sweeps.is_sweep_file(target):
        plan = sweeps.read_sweep_file(target, sets=sets, grid=grid_values, seeds=seeds, name=name)
    else:
        base = sweeps.load_base(target, sets)
        from nnexp import config

        first_seed = config.resolve(base)["seed"]
        plan = sweeps.grid_plan(name or base["name"], {base["name"]: base}, grid_values,
                                sweeps.parse_seeds(seeds, first_seed))
    sweeps.check_points(plan, data_dir, only=only)
    if resume_dir is not None:
        made = sweeps.SweepDir.open(resume_dir)
        if not made.same_points(plan):
            raise UserError(f"{resume_dir} holds a different sweep (other points or configs); "
                            f"continue it with: nnexp sweep {resume_dir}")
    else:
        made = sweeps.SweepDir.create(runs_dir, plan)
    _run_sweep(made, chosen, data_dir=data_dir, retry_failed=retry_failed, threads=threads, only=only)


@command()
def search(config_path: ConfigArg,
           sample: Annotated[list[str], typer.Option(
               "--sample", metavar="KEY.PATH=DIST:ARGS", show_default=False,
               help="A config key to draw per trial: log-uniform:LOW:HIGH, uniform:LOW:HIGH or "
                    "choice:A,B,... (repeatable), e.g. training.eta=log-uniform:1e-6:1e-2.")],
           trials: Annotated[int, typer.Option(min=1, help="Number of runs.")] = 10,
           search_seed: Annotated[int, typer.Option(min=0, help="Seeds the draws (not the networks).")] = 0,
           jobs: JobsOpt = None, threads: ThreadsOpt = 1, executor: ExecutorOpt = "local",
           address: AddressOpt = None, set_: SetOpt = None, backend: BackendOpt = None,
           device: DeviceOpt = None, data_dir: DataDirOpt = None,
           runs_dir: RunsDirOpt = Path("runs")) -> None:
    """Random hyper-parameter search: a sweep whose points are random draws, ranked by validation accuracy; prints the sweep directory.

    `nnexp sweep DIR` continues it."""
    from nnexp import executors
    from nnexp import search as searching
    from nnexp import sweep as sweeps

    chosen = executors.make_executor(executor, jobs, address, threads)
    samples = [searching.parse_sample(s) for s in sample]
    draws = searching.plan(samples, trials, search_seed)
    sets = _overrides(set_, backend=backend, device=device)
    base = sweeps.load_base(config_path, sets)
    plan = sweeps.search_plan(f"{base['name']}-search", base, draws,
                              {"samples": sample, "trials": trials, "search_seed": search_seed})
    for point in plan.points:  # every draw's config is checked before the first one trains
        drawn = ", ".join(f"{key}={value:.3g}" if isinstance(value, float) else f"{key}={value}"
                          for key, value in point.overrides.items())
        err.print(f"trial {point.id}: {drawn}", markup=False)
    ruled_out = sweeps.check_points(plan, data_dir, skip_ruled_out=True)
    made = sweeps.SweepDir.create(runs_dir, plan)
    for point, why in ruled_out.items():  # a draw the data rules out (a batch larger than the set)
        err.print(f"[yellow]trial {point} skipped:[/] {escape(why)}", markup=True)
        made.status[point] = "failed"
    made.save()
    _run_sweep(made, chosen, data_dir=data_dir, retry_failed=False, threads=threads, rank=True)


@command()
def resume(run_dir: RunArg, data_dir: DataDirOpt = None, time_limit: TimeLimitOpt = None,
           set_: Annotated[Optional[list[str]], typer.Option(
               "--set", "-s", metavar="KEY.PATH=VALUE",
               help="Extend the run: training.epochs=N or training.early_stopping.patience=N; "
                    "no other key can change a run's past.")] = None) -> None:
    """Continue an interrupted run from its last completed epoch, or extend a completed one."""
    from nnexp import config
    from nnexp import training
    from nnexp.errors import ConfigError, RunDirError
    from nnexp.runs import Run

    run = Run.open(run_dir)
    summary = run.read_summary() or {}
    stored = run.read_config()
    for key in config.override_keys(set_ or []):
        if key not in training.RESUMABLE_KEYS:
            raise ConfigError(key, f"cannot change when resuming (it would change what the run has "
                                   f"already done); only {' and '.join(training.RESUMABLE_KEYS)} can")
        if key == "training.epochs" and not training.extendable(config.resolve(stored)):
            raise ConfigError(key, f"cannot change when resuming: {training.FIXED_LENGTH}")
    # extended past the book's setting, the run is no longer the book's experiment
    cfg = config.resolve(config.apply_experiment_overrides(stored, set_ or []))
    done = summary.get("epochs_run")
    if set_ and isinstance(done, int) and cfg["training"]["epochs"] < done:
        raise ConfigError("training.epochs", f"the run has already trained {done} epochs; "
                                             f"a run can be extended, not shortened")
    extend = summary.get("status") == "completed"
    if extend and cfg == config.resolve(stored):
        err.print(f"{run.path} already completed ({summary.get('stop_reason')}); nothing to do "
                  f"(--set training.epochs=N extends it)")
        out.print(str(run.path))
        return
    if summary.get("status") == "diverged":
        raise RunDirError(f"{run.path} diverged; resuming would diverge again. Train anew "
                          "with a smaller training.eta")
    exp = training.prepare(cfg, data_dir=data_dir)
    if set_:
        run.write_config(cfg)  # the run's record now says how far it is meant to go
        run.log(f"extended: {', '.join(set_)}")
    _train_and_report(functools.partial(training.execute, deadline=_deadline(time_limit), extend=extend,
                                        continue_failed=True), exp, run)


@command("show-config")
def show_config(config_path: ConfigArg, assignments: AssignArg = None, set_: SetOpt = None,
                backend: BackendOpt = None, device: DeviceOpt = None, seed: SeedOpt = None) -> None:
    """Print the fully resolved config (every default filled in) after --set overrides."""
    from nnexp.config import dump
    from nnexp.network import build_spec

    cfg = _load_config(config_path, [*_assignments(assignments), *(set_ or [])], backend=backend,
                       device=device, seed=seed)
    out.print(dump(cfg).rstrip("\n"), markup=False)
    spec = build_spec(cfg["model"]["layers"])
    err.print(f"# {spec.n_params:,} parameters: " + " | ".join(l.describe() for l in spec.layers),
              markup=False)


@command()
def gradcheck(config_path: ConfigArg, set_: SetOpt = None, backend: BackendOpt = None,
              examples: Annotated[int, typer.Option(min=1, help="Random input images.")] = 3,
              entries: Annotated[int, typer.Option(
                  min=0, help="Entries sampled per parameter (0 = all).")] = 30) -> None:
    """Compare the backend's gradients with centred finite differences (float64)."""
    from nnexp.gradcheck import EPS, TOLERANCE
    from nnexp.gradcheck import gradcheck as run_check

    cfg = _load_config(config_path, set_, backend=backend)
    spec, results = run_check(cfg, examples=examples, max_entries=entries or None)
    from nnexp.compare import fit_columns, table_of

    verdicts = ["ok" if r.ok else "FAIL" for r in results]
    cols = [("parameter", 0, [r.name for r in results]), ("verdict", 0, verdicts),
            ("rel. error", 0, [f"{r.worst_relative_error:.2e}" for r in results]),
            ("analytic", 1, [f"{r.worst_analytic:.2e}" for r in results]),
            ("numeric", 1, [f"{r.worst_numeric:.2e}" for r in results]),
            ("at a kink", 2, [str(r.kinks) for r in results]),
            ("entries", 3, [str(r.checked) for r in results]),
            ("shape", 3, ["x".join(map(str, r.shape)) for r in results])]
    width = out.width if out.is_terminal else None
    cols = fit_columns(cols, width) or cols[:3]
    title = f"gradient check: {cfg['name']} on {cfg['backend']} (float64)"
    _print_table(table_of(cols, {"parameter", "verdict"}, title,
                          {"verdict": ["red" if v == "FAIL" else None for v in verdicts]}))
    bad = [r.name for r in results if not r.ok]
    if bad:
        err.print(f"[red]gradients disagree (> {TOLERANCE:g}) for: {escape(', '.join(bad))}[/]", markup=True)
        raise typer.Exit(1)
    kinks = sum(r.kinks for r in results)
    note = (f"; {kinks} entries within {EPS:g} of a ReLU or max-pool kink (or on steep curvature) were "
            "checked at a smaller step, or one-sidedly where no step was free of kinks") if kinks else ""
    out.print(f"all {len(results)} parameters agree to {TOLERANCE:g}{note}")


@command("expand-mnist")
def expand_mnist(
    out_path: Annotated[Optional[Path], typer.Option(
        "--out", help="Output .npz (default: the per-user cache, where `dataset: mnist-expanded` looks).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the one shuffle (the book's was unseeded).")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing file.")] = False,
    rotate: Annotated[Optional[float], typer.Option(
        help="Also add two copies rotated by +DEG and -DEG (beyond the book).")] = None,
    elastic: Annotated[int, typer.Option(
        help="Also add N elastic distortions per image (Simard 2003; beyond the book).")] = 0,
    preview: Annotated[Optional[Path], typer.Option(
        help="Write a PNG of a few originals beside their copies.")] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Build the book's 250,000-image training set: each training image, its 4 one-pixel shifts, one seeded shuffle."""
    from nnexp.data.expand import build_expanded

    with err.status("building the expanded training set ..."):
        result = build_expanded(out=out_path, seed=seed, force=force, rotate_deg=rotate,
                                elastic=elastic, data_dir=data_dir, preview=preview)
    err.print(f"wrote {result.n_images:,} images ({', '.join(result.transforms)}) "
              f"in {result.seconds:.1f} s")
    if preview is not None:
        err.print(f"preview: {preview}")
    out.print(str(result.path))


@command("backends")
def list_backends() -> None:
    """List the backends, whether they can run here, and on which devices."""
    from nnexp import backends as registry

    table = Table()
    for col in ("backend", "available", "devices", "details"):
        table.add_column(col)
    for name in registry.names():
        backend = registry.get(name, require_available=False)
        ok, why = backend.available()
        table.add_row(name, "yes" if ok else "no", ", ".join(backend.devices()) if ok else "-",
                      f"{backend.description}; {why}")
    out.print(table)


# --- looking at runs: compare, plot, ensemble, filters ----------------------------------------

RunsArg = Annotated[list[str], typer.Argument(
    help="Run directories, globs, or directories holding runs.", show_default=False)]
OutOpt = Annotated[Optional[Path], typer.Option("--out", "-o", help="The PNG file to write.")]
CheckpointOpt = Annotated[str, typer.Option(help="Which checkpoint's parameters: best | last.")]


def _warn(warnings: list[str]) -> None:
    from rich.markup import escape

    for line in warnings:
        err.print(f"[yellow]warning:[/] {escape(line)}", markup=True, highlight=False, soft_wrap=True)


def _print_table(table, console: Console | None = None) -> None:
    """On a terminal, fit the table to it; in a pipe or file, never squeeze or cut a column."""
    console = console or out
    if not console.is_terminal:
        console = Console(highlight=False, width=100_000, stderr=console.stderr)
    console.print(table)


@command("compare")
def compare_runs(
        runs: RunsArg,
        sort: Annotated[str, typer.Option(help="Column or config key to sort by, e.g. training.eta.")]
        = "test_accuracy",
        descending: Annotated[Optional[bool], typer.Option(
            "--desc/--asc", help="Sort order (default: descending for accuracies, else ascending).",
            show_default=False)] = None,
        group: Annotated[bool, typer.Option(help="Pool runs that differ only in seed into one row.")] = True,
        format_: Annotated[str, typer.Option("--format", "-f", help="table | markdown | csv | json.")]
        = "table",
        plot_file: Annotated[Optional[Path], typer.Option(
            "--plot", help="Also draw validation accuracy and training cost per epoch into this PNG.")]
        = None,
        where: Annotated[Optional[list[str]], typer.Option(
            metavar="KEY=VALUE", help="Only runs where a config key, metric or status has a value; "
                                      "also !=, <, >, <=, >= (repeatable), e.g. 'training.eta<0.5'.")] = None,
        status: Annotated[Optional[list[str]], typer.Option(
            help="Only runs with this status: completed, running, interrupted, diverged, ... (repeatable).")]
        = None,
        last: Annotated[Optional[int], typer.Option(min=1, help="Only the N runs started last.")] = None) -> None:
    """Compare runs: which won, and what differs (a sweep directory means its points)."""
    from nnexp import compare as cmp

    comparison, warnings = cmp.compare(runs, sort=sort, descending=descending, group=group,
                                       where=where or [], status=status or [], last=last)
    _warn(warnings)
    rendered = cmp.render(comparison, format_, width=out.width if out.is_terminal else None)
    if isinstance(rendered, str):
        typer.echo(rendered, nl=False)
    else:
        _print_table(rendered)
    if plot_file is not None:
        from nnexp.plots import plot_comparison

        err.print(f"plot: {plot_comparison(cmp.curves(comparison), plot_file)}")


@command("plot")
def plot_run(run_dir: RunArg, output: OutOpt = None) -> None:
    """Draw a run's learning curves (default RUN/curves.png); prints the PNG's path."""
    from nnexp.plots import plot_run as draw

    out.print(str(draw(run_dir, output)), markup=False)


@command()
def ensemble(runs: RunsArg,
             errors: Annotated[Optional[Path], typer.Option(
                 help="Draw the test digits the vote gets wrong into this PNG.")] = None,
             checkpoint: CheckpointOpt = "best", data_dir: DataDirOpt = None,
             backend: BackendOpt = None) -> None:
    """Majority vote of several trained networks on their shared test set (chapter 6).

    The vote is scored on the validation set too: choose between votes by that column."""
    from rich.markup import escape

    from nnexp.ensemble import plot_ensemble_errors, run_ensemble

    result, warnings = run_ensemble(runs, checkpoint=checkpoint, backend=backend, data_dir=data_dir)
    _warn(warnings)
    table = Table(title=f"majority vote ({checkpoint} checkpoints)")
    for col in ("network", "validation accuracy %", "test accuracy %", "test errors"):
        table.add_column(col, justify="left" if col == "network" else "right")
    for m in result.members:
        table.add_row(escape(m.name), f"{100 * m.validation_accuracy:.2f}", f"{100 * m.accuracy:.2f}",
                      str(m.errors))
    table.add_row(f"[bold]ensemble of {len(result.members)}[/]", f"[bold]{100 * result.validation_accuracy:.2f}[/]",
                  f"[bold]{100 * result.accuracy:.2f}[/]", f"[bold]{result.errors}[/] of {result.n:,}")
    _print_table(table)
    if errors is not None:
        out.print(str(plot_ensemble_errors(result, errors)), markup=False)


@command()
def filters(run_dir: RunArg,
            layer: Annotated[Optional[int], typer.Option(
                help="Index in model.layers of a conv layer (default: the first conv layer).")] = None,
            output: OutOpt = None, checkpoint: CheckpointOpt = "best",
            channel: Annotated[Optional[int], typer.Option(
                help="Input channel to show (default: the mean over channels).")] = None) -> None:
    """Draw a conv layer's learned filters (default RUN/filters-layer<N>.png); prints the path."""
    from nnexp.plots import plot_filters

    out.print(str(plot_filters(run_dir, layer, output, checkpoint, channel)), markup=False)


@command()
def evaluate(run_dir: RunArg, backend: BackendOpt = None, device: DeviceOpt = None,
             checkpoint: CheckpointOpt = "best",
             dataset: Annotated[Optional[str], typer.Option(
                 help="Score on another data set of the same shape, e.g. fashion-mnist "
                      "(default: the run's own).")] = None,
             data_dir: DataDirOpt = None) -> None:
    """Rebuild a run's network from a checkpoint, on any backend, and score it on the test set."""
    from nnexp.evaluate import load_run_model, recorded_test_accuracy, run_dataset, score
    from nnexp.runs import Run

    run = Run.open(run_dir)
    loaded = load_run_model(run, checkpoint=checkpoint, backend=backend, device=device or "auto")
    data = run_dataset(loaded, dataset=dataset, data_dir=data_dir)
    result = score(loaded, data)
    out.print(f"{run.path}: {checkpoint} checkpoint (epoch {loaded.epoch}) on {loaded.backend}/{loaded.device}, "
              f"{data.name} test set", markup=False)
    out.print(f"test accuracy {100 * result['accuracy']:.2f}% ({result['n'] - result['errors']:,}/"
              f"{result['n']:,}), cost {result['cost']:.4f}, {result['errors']:,} errors", markup=False)
    recorded = recorded_test_accuracy(run)
    if checkpoint == "best" and dataset in (None, loaded.config["data"]["dataset"]) and recorded is not None:
        same = result["accuracy"] == recorded
        detail = "" if same else f" (summary.json: {100 * recorded:.2f}%)"
        out.print(f"reproduces summary.json's test accuracy: {'yes' if same else 'no'}{detail}",
                  markup=False)


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
