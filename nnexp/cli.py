"""The `nnexp` command line: one thin function per command. What they print is built in
`render`; what they do is one call each into `lifecycle` (a run), `batch` (many runs),
`compare`, `ensemble`, `evaluate` or `plots`.

Run directories' paths go to stdout (so `RUN=$(nnexp train ...)` works); progress, tables
and errors go to stderr. Errors that are the user's to fix (`UserError`) become one line and
exit code 2; a run that failed (`RunFailed`) exits 1; Ctrl-C exits 130.
"""

from __future__ import annotations

import functools
import signal
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Optional

import typer
import typer.core
from rich.markup import escape
from typer.core import TyperGroup

from nnexp import __version__, batch, lifecycle, mlflowlog, records, report, tblog
from nnexp import backends as registry
from nnexp import comparison as cmp
from nnexp import config as configs
from nnexp import sweepplan as sweeps
from nnexp.data.expand import build_expanded
from nnexp.ensemble import plot_ensemble_errors, run_ensemble
from nnexp.errors import NnexpError, UserError
from nnexp.evaluate import load_run_model, recorded_test_accuracy, run_dataset, score
from nnexp.fileio import temporary_target
from nnexp.gradcheck import EPS, TOLERANCE
from nnexp.gradcheck import gradcheck as run_check
from nnexp.lifecycle import Intent
from nnexp.network import build_spec
from nnexp.progress import (SweepDisplay, epoch_reporter, print_outcome, print_reference_dropped, print_sweep_paused,
                            print_sweep_table, print_trials)
from nnexp.render import (backends_table, book_overlap_line, ensemble_table, err, gradcheck_table, out, plural,
                          print_table, print_warnings, render, table_width)
from nnexp.rundir import Notes, Run, is_sweep_dir, notes_given, tag_arguments
from nnexp.runset import find_run_dirs, resolve_run
from nnexp.training import prepare


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
            names = []  # the command's words below `nnexp`: `export tensorboard` for a sub-command's
            while ctx is not None and ctx.parent is not None:
                names.insert(0, ctx.info_name)
                ctx = ctx.parent
            where = " ".join(["nnexp", *names, "--help"])
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

        out.print(f"nnexp {__version__}", markup=False)
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[Optional[bool], typer.Option(
        "--version", callback=_version, is_eager=True, help="Print nnexp's version and exit.")] = None) -> None:
    """Train and compare the classic networks of Nielsen's and Saitoh's books from YAML configs."""


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
TensorBoardOpt = Annotated[bool, typer.Option(
    "--tensorboard", help="Also write TensorBoard event files into each run directory as epochs end "
                          "(watch with: tensorboard --logdir runs); needs the tensorboard extra.")]
ConfigArg = Annotated[Path, typer.Argument(help="Experiment config (YAML).", show_default=False)]
RunArg = Annotated[Path, typer.Argument(
    help="A run directory, or its id as compare shows it (NAME, SWEEP/POINT, or the start of one).",
    show_default=False)]
FindRunsOpt = Annotated[Path, typer.Option(
    "--runs-dir", help="Where run ids are looked up (where train makes runs).")]
NoteOpt = Annotated[Optional[str], typer.Option(
    "--note", metavar="TEXT", help="Why this run: a note kept in its notes.json, never in its config "
                                   "(change it with: nnexp note RUN TEXT).")]
TagOpt = Annotated[Optional[list[str]], typer.Option(
    "--tag", metavar="NAME", help="A tag for the run (repeatable), e.g. --tag baseline; "
                                  "compare --where tag=NAME chooses by it.")]
AssignArg = Annotated[Optional[list[str]], typer.Argument(
    metavar="[KEY.PATH=VALUE]...", show_default=False,
    help="Config overrides, as --set: training.eta=0.1 model.layers.0.units=100.")]


def _assignments(items: list[str] | None) -> list[str]:
    """Positional KEY=VALUE overrides; anything else is a one-line error."""

    for item in items or []:
        if "=" not in item or not item.partition("=")[0].strip():
            raise UserError(f"unexpected argument {item!r}: overrides are KEY.PATH=VALUE, "
                            "e.g. training.eta=0.1")
    return list(items or [])


def _users_path(filename) -> str:
    """The path the user asked for, not the temporary file nnexp was writing it through."""

    path = Path(str(filename))
    target = temporary_target(path.name)
    return str(path.with_name(target)) if target else str(path)


def command(*args, on: typer.Typer | None = None, **kwargs):
    """`app.command` (or `on`'s, a sub-command's), plus the one place where domain errors
    become messages and exit codes."""

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

        return (on or app).command(*args, **kwargs)(wrapper)

    return decorate


def _overrides(overrides: list[str] | None, **sugar) -> list[str]:
    """--set overrides after the options that are shorthand for one (--backend B is
    --set backend=B), so an explicit --set wins."""
    return [*(f"{key}={value}" for key, value in sugar.items() if value is not None), *(overrides or [])]


def _load_config(path: Path, overrides: list[str] | None, **sugar) -> dict:
    return configs.load(path, _overrides(overrides, **sugar))


def _execute(exp, run, intent: Intent, time_limit: float | None, tensorboard: bool = False) -> None:
    """The one call every training command makes (`lifecycle.execute`), with its progress
    shown (and with `tensorboard` written as event files); then its outcome and the run
    directory. Ctrl-C says how to resume."""
    try:
        with epoch_reporter(run, exp.config["training"]["epochs"]) as shown, \
                tblog.live(run, shown, tensorboard) as reporter:
            summary = lifecycle.execute(exp, run, intent, reporter, deadline=lifecycle.deadline_after(time_limit))
    except KeyboardInterrupt:
        err.print(f"interrupted; everything up to the last completed epoch is saved. "
                  f"Resume with: nnexp resume {run.path}")
        raise typer.Exit(130) from None
    print_outcome(summary, run)


# --- commands ---------------------------------------------------------------------------------


@command()
def train(config_path: ConfigArg, assignments: AssignArg = None, set_: SetOpt = None, backend: BackendOpt = None,
          device: DeviceOpt = None, seed: SeedOpt = None, deterministic: DeterministicOpt = None,
          data_dir: DataDirOpt = None, runs_dir: RunsDirOpt = Path("runs"),
          time_limit: TimeLimitOpt = None, tensorboard: TensorBoardOpt = False, note: NoteOpt = None,
          tag: TagOpt = None) -> None:
    """Train the network a config describes; prints the new run directory."""
    notes = notes_given(note, tag)  # a bad tag fails before anything is made
    tblog.require(tensorboard)
    cfg = _load_config(config_path, [*_assignments(assignments), *(set_ or [])], backend=backend,
                       device=device, seed=seed, deterministic="true" if deterministic else None)
    exp, run = lifecycle.new_run(cfg, runs_dir, data_dir, notes=notes)
    err.print(f"run directory: {run.path}  ({exp.backend.name}/{exp.device}, "
              f"{exp.spec.n_params:,} parameters, {len(exp.dataset.train.y):,} training images)")
    print_reference_dropped(cfg)
    _execute(exp, run, Intent.START, time_limit, tensorboard)


ExecutorOpt = Annotated[str, typer.Option(help="local (processes on this machine) | ray.")]
JobsOpt = Annotated[Optional[int], typer.Option(
    "--jobs", "-j", min=1, help="Points run at once (default: this machine's cores).")]
AddressOpt = Annotated[Optional[str], typer.Option(
    help="The Ray cluster to use (--executor ray; default: start a local Ray for the sweep).")]
RetryOpt = Annotated[bool, typer.Option(
    "--retry-failed", help="Start diverged, damaged and failed points afresh, their old run directories "
                           "moved aside (.diverged-..., never deleted); a failed point with a last "
                           "checkpoint is continued from it anyway.")]
SweepTimeLimitOpt = Annotated[Optional[float], typer.Option(
    "--time-limit", metavar="MINUTES", min=0.0,
    help="The whole command's budget: every running point pauses, resumable, before an epoch that would end "
         "after it, and no point starts once it is near; `nnexp sweep DIR` continues.")]
ThreadsOpt = Annotated[Optional[int], typer.Option(
    min=1, show_default=False,
    help="BLAS/torch threads per point (default 1; a continued sweep: those it was started with). "
         "A point's metrics are identical under every executor and --jobs at the same --threads.")]


def _threads_note(sweep, asked: int | None, continuing: bool) -> str:
    """What the first line says about a continued sweep's threads, which its points' metrics depend on."""
    if not continuing:
        return ""
    if asked is None:
        return (" (as the sweep was started; --threads T to change)" if sweep.threads is not None
                else " (its sweep.json records none)")
    if sweep.threads is not None and asked != sweep.threads:
        return f" (--threads {asked}; the sweep was started with {sweep.threads})"
    return ""


def _run_sweep(sweep, executor, *, data_dir, retry_failed: bool, note: str = "", rank: bool = False,
               only: list[str] | None = None, tensorboard: bool = False, notes: Notes | None = None,
               deadline: float | None = None) -> None:
    """Run a sweep's remaining points with the threads it records, show them, print its table;
    exit 1 unless all completed, or were paused or left by the time limit (`deadline`), as a
    run `nnexp train --time-limit` paused is."""
    todo, before = batch.tasks(sweep, data_dir=data_dir, retry_failed=retry_failed, threads=sweep.threads,
                               only=only, tensorboard=tensorboard, deadline=deadline)
    skipped = len(before) - len(todo)
    selected = f" ({len(before)} selected by --only)" if only else ""
    err.print(f"sweep {sweep.path}: {plural(len(sweep.plan.points), 'point')}{selected}"
              + (f", {skipped} already done or not retried" if skipped else "")
              + f"; {executor.description}{note}", markup=False)
    parallel = getattr(executor, "jobs", None) or len(todo)
    try:
        with SweepDisplay(len(before), todo, before, parallel) as display:
            statuses = batch.run(sweep, executor, todo, before, display, notes=notes)
    except KeyboardInterrupt:
        err.print(f"interrupted; completed points are kept and the others resume with: "
                  f"nnexp sweep {sweep.path}")
        raise typer.Exit(130) from None
    print_sweep_table(sweep, rank)
    out.print(str(sweep.path), markup=False)
    ran = {p: s for p, s in statuses.items() if p in before}
    paused = batch.time_limited(ran, before, sweep) if deadline is not None else None
    if paused is not None:
        print_sweep_paused(sweep, paused)
        return
    failure = batch.not_completed(ran, sweep, retry_failed)
    if failure is not None:
        raise failure


def _continue_sweep(made, threads: int | None, executor: str, jobs: int | None, address: str | None,
                    **run) -> None:
    """An existing sweep goes on with the threads it was started with, unless --threads says otherwise."""
    note = _threads_note(made, threads, continuing=True)
    made.threads = threads or made.threads or 1
    with batch.make_executor(executor, jobs, address, made.threads) as chosen:
        _run_sweep(made, chosen, note=note, **run)


@command()
def sweep(target: Annotated[Path, typer.Argument(
              help="A config, a sweep file (YAML with config:, grid:, seeds:), or a sweep "
                   "directory to continue.", show_default=False)],
          grid: Annotated[Optional[list[str]], typer.Option(
              "--grid", "-g", metavar="KEY.PATH=V1,V2,...",
              help="A config key and its values (repeatable); the points are every combination.")] = None,
          seeds: Annotated[Optional[str], typer.Option(
              metavar="N|S1,S2,...", help="N seeds counting up from the config's, or a list.")] = None,
          jobs: JobsOpt = None, threads: ThreadsOpt = None, executor: ExecutorOpt = "local",
          address: AddressOpt = None, set_: SetOpt = None, backend: BackendOpt = None,
          device: DeviceOpt = None, data_dir: DataDirOpt = None, runs_dir: RunsDirOpt = Path("runs"),
          name: Annotated[Optional[str], typer.Option(help="The sweep's name (default: the config's).")] = None,
          resume_dir: Annotated[Optional[Path], typer.Option(
              "--resume", metavar="DIR", help="Continue this sweep directory made by the same command.")] = None,
          retry_failed: RetryOpt = False,
          only: Annotated[Optional[list[str]], typer.Option(
              metavar="GLOB", help="Run only the points whose ids match (repeatable), e.g. "
                                   "'conv2_relu,*'; the others stay planned.")] = None,
          tensorboard: TensorBoardOpt = False,
          note: Annotated[Optional[str], typer.Option(
              "--note", metavar="TEXT", help="A note for every point this command starts (notes.json; "
                                             "points already started keep theirs).")] = None,
          tag: Annotated[Optional[list[str]], typer.Option(
              "--tag", metavar="NAME", help="A tag for every point this command starts (repeatable).")]
          = None, time_limit: SweepTimeLimitOpt = None) -> None:
    """Many runs as one experiment: a grid of config values x seeds, run in parallel; prints the sweep directory.

    Running it again (`nnexp sweep DIR`) continues it, with its threads, and with --tensorboard if it had it."""
    deadline = batch.deadline_after(time_limit)  # the whole command's: checking the points counts
    notes = notes_given(note, tag)  # a bad tag fails before anything is made
    tblog.require(tensorboard)
    batch.check_kind(executor, address)  # a bad choice fails before anything is read or made
    sets = _overrides(set_, backend=backend, device=device)
    run = dict(data_dir=data_dir, retry_failed=retry_failed, only=only, tensorboard=tensorboard, notes=notes,
               deadline=deadline)
    if is_sweep_dir(target):
        if grid or seeds or sets or name or resume_dir:
            raise UserError(f"{target} is a sweep directory: it is continued as it was planned; "
                            "--grid, --seeds, --set, --name and --resume do not apply")
        made = batch.open_sweep(target, data_dir, only)
        _continue_sweep(made, threads, executor, jobs, address, rank=made.plan.kind == "search", **run)
        return
    plan = sweeps.plan_sweep(target, sets=sets, grid=grid or [], seeds=seeds, name=name)
    if resume_dir is not None:
        _continue_sweep(batch.new_sweep(plan, runs_dir, data_dir, only=only, resume_dir=resume_dir),
                        threads, executor, jobs, address, **run)
        return
    # a Ray cluster is reached, or refused, before a sweep directory is made
    with batch.make_executor(executor, jobs, address, threads or 1) as chosen:
        made = batch.new_sweep(plan, runs_dir, data_dir, only=only, threads=threads or 1)
        _run_sweep(made, chosen, **run)


@command()
def search(config_path: Annotated[Path, typer.Argument(
               help="Experiment config (YAML), or a search directory to continue.", show_default=False)],
           sample: Annotated[Optional[list[str]], typer.Option(
               "--sample", metavar="KEY.PATH=DIST:ARGS", show_default=False,
               help="A config key to draw per trial: log-uniform:LOW:HIGH, uniform:LOW:HIGH or "
                    "choice:A,B,... (repeatable), e.g. training.eta=log-uniform:1e-6:1e-2.")] = None,
           trials: Annotated[int, typer.Option(min=1, help="Number of runs.")] = 10,
           search_seed: Annotated[int, typer.Option(min=0, help="Seeds the draws (not the networks).")] = 0,
           sampler: Annotated[str, typer.Option(
               help="random (nnexp's own draws) | tpe | cmaes | qmc: Optuna's samplers propose each "
                    "trial's values from the trials before it (needs the optuna extra).")] = "random",
           pruner: Annotated[str, typer.Option(
               help="none | median | asha | hyperband: stop a trial whose validation accuracy lags "
                    "the others' (Optuna's pruners; needs the optuna extra).")] = "none",
           jobs: JobsOpt = None, threads: ThreadsOpt = None, executor: ExecutorOpt = "local",
           address: AddressOpt = None, set_: SetOpt = None, backend: BackendOpt = None,
           device: DeviceOpt = None, data_dir: DataDirOpt = None,
           runs_dir: RunsDirOpt = Path("runs"), tensorboard: TensorBoardOpt = False,
           note: Annotated[Optional[str], typer.Option(
               "--note", metavar="TEXT", help="A note for every trial (notes.json).")] = None,
           tag: Annotated[Optional[list[str]], typer.Option(
               "--tag", metavar="NAME", help="A tag for every trial (repeatable).")] = None,
           time_limit: SweepTimeLimitOpt = None) -> None:
    """Hyper-parameter search: a sweep whose points are trials, random draws or proposed by a sampler that learns, ranked by validation accuracy; prints the sweep directory.

    `nnexp search DIR` (or `nnexp sweep DIR`) continues it."""
    deadline = batch.deadline_after(time_limit)  # the whole command's, as sweep's
    notes = notes_given(note, tag)  # a bad tag fails before anything is made
    tblog.require(tensorboard)
    batch.check_kind(executor, address)  # a bad choice fails before anything is drawn or made
    if is_sweep_dir(config_path):
        if sample or set_:
            raise UserError(f"{config_path} is a search directory: it is continued as it was planned; "
                            "--sample and --set do not apply")
        made = batch.open_sweep(config_path, data_dir)
        _continue_sweep(made, threads, executor, jobs, address, data_dir=data_dir, retry_failed=False,
                        rank=True, tensorboard=tensorboard, notes=notes, deadline=deadline)
        return
    if not sample:
        raise UserError("Missing option '--sample' (a config is searched over at least one, e.g. "
                        "--sample training.eta=log-uniform:1e-6:1e-2)")
    plan = batch.plan_search(config_path, _overrides(set_, backend=backend, device=device), sample, trials,
                             search_seed, sampler, pruner)
    if sampler != "random":
        err.print(f"{plural(trials, 'trial')}, their values proposed by the {sampler} sampler as they run"
                  + (f"; pruner: {pruner}" if pruner != "none" else ""), markup=False)
    else:
        print_trials(plan)
    with batch.make_executor(executor, jobs, address, threads or 1) as chosen:  # reached before a directory is made
        made = batch.new_search(plan, runs_dir, data_dir, threads or 1)
        for point, why in made.ruled_out.items():  # a draw the data rules out (a batch larger than the set)
            err.print(f"[yellow]trial {point} skipped:[/] {escape(why)}", markup=True)
        _run_sweep(made.sweep, chosen, data_dir=data_dir, retry_failed=False, rank=True, tensorboard=tensorboard,
                   notes=notes, deadline=deadline)


@command()
def resume(run_dir: RunArg, data_dir: DataDirOpt = None, time_limit: TimeLimitOpt = None,
           set_: Annotated[Optional[list[str]], typer.Option(
               "--set", "-s", metavar="KEY.PATH=VALUE",
               help="Extend the run: training.epochs=N or training.early_stopping.patience=N; "
                    "no other key can change a run's past.")] = None,
           tensorboard: TensorBoardOpt = False, runs_dir: FindRunsOpt = Path("runs")) -> None:
    """Continue an interrupted run from its last completed epoch, or extend a completed one."""
    tblog.require(tensorboard)
    run = Run.open(resolve_run(run_dir, runs_dir))
    intent, cfg = lifecycle.resume_intent(run, set_ or [])
    if intent is None:
        err.print(f"{run.path} already completed ({(run.read_summary() or {}).get('stop_reason')}); "
                  f"nothing to do: {lifecycle.nothing_to_do(run, cfg)}")
        out.print(str(run.path))
        return
    exp = prepare(cfg, data_dir=data_dir)
    _execute(exp, run, intent, time_limit, tensorboard)  # config.yaml says the new setting once it starts


@command("show-config")
def show_config(config_path: ConfigArg, assignments: AssignArg = None, set_: SetOpt = None,
                backend: BackendOpt = None, device: DeviceOpt = None, seed: SeedOpt = None) -> None:
    """Print the fully resolved config (every default filled in) after --set overrides."""

    cfg = _load_config(config_path, [*_assignments(assignments), *(set_ or [])], backend=backend,
                       device=device, seed=seed)
    out.print(configs.dump(cfg).rstrip("\n"), markup=False)
    spec = build_spec(cfg["model"]["layers"])
    err.print(f"# {spec.n_params:,} parameters: " + " | ".join(l.describe() for l in spec.layers),
              markup=False)


@command()
def gradcheck(config_path: ConfigArg, set_: SetOpt = None, backend: BackendOpt = None,
              examples: Annotated[int, typer.Option(min=1, help="Random input images.")] = 3,
              entries: Annotated[int, typer.Option(
                  min=0, help="Entries sampled per parameter (0 = all).")] = 30) -> None:
    """Compare the backend's gradients with centred finite differences (float64)."""

    cfg = _load_config(config_path, set_, backend=backend)
    spec, results = run_check(cfg, examples=examples, max_entries=entries or None)
    title = f"gradient check: {cfg['name']} on {cfg['backend']} (float64)"
    print_table(gradcheck_table(results, title, table_width(out)))
    bad = [r.name for r in results if not r.ok]
    if bad:
        err.print(f"[red]gradients disagree (> {TOLERANCE:g}) for: {escape(', '.join(bad))}[/]", markup=True)
        raise typer.Exit(1)
    kinks = sum(r.kinks for r in results)
    note = (f"; {kinks} entries within {EPS:g} of a ReLU or max-pool kink (or on steep curvature) were "
            "checked at a smaller step, or one-sidedly where no step was free of kinks") if kinks else ""
    out.print(f"all {plural(len(results), 'parameter')} agree to {TOLERANCE:g}{note}")


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

    entries = []
    for name in registry.names():
        backend = registry.get(name, require_available=False)
        ok, why = backend.available()
        entries.append((name, ok, backend.devices() if ok else [], backend.description, why))
    out.print(backends_table(entries))


# --- looking at runs: compare, plot, ensemble, filters ----------------------------------------

RunsArg = Annotated[list[str], typer.Argument(
    help="Run directories, globs, directories holding runs, or run ids (NAME, SWEEP/POINT).", show_default=False)]
OutOpt = Annotated[Optional[Path], typer.Option("--out", "-o", help="The PNG file to write.")]
CheckpointOpt = Annotated[str, typer.Option(help="Which checkpoint's parameters: best | last.")]


@command("compare")
def compare_runs(
        runs: RunsArg,
        sort: Annotated[str, typer.Option(
            help="Column or config key to sort by: a header (best val %, test %, Δ, ...), a short name "
                 "(val, test, η, eta) or a key (training.eta).")] = cmp.DEFAULT_SORT,
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
                                      "also !=, <, >, <=, >= (repeatable), e.g. 'training.eta<0.5'; "
                                      "tag=NAME (tag!=NAME): the runs with (without) a tag.")] = None,
        status: Annotated[Optional[list[str]], typer.Option(
            help="Only runs with this status: completed, running, interrupted, diverged, ... (repeatable).")]
        = None,
        last: Annotated[Optional[int], typer.Option(min=1, help="Only the N runs started last.")] = None,
        wide: Annotated[bool, typer.Option(
            "--wide", help="On a terminal too, every column, lines as long as they need.")] = False,
        runs_dir: FindRunsOpt = Path("runs")) -> None:
    """Compare runs: which won, and what differs (a sweep directory means its points)."""

    comparison, warnings = cmp.compare(runs, sort=sort, descending=descending, group=group,
                                       where=where or [], status=status or [], last=last, runs_dir=runs_dir)
    print_warnings(warnings)
    rendered = render(comparison, format_, width=None if wide else table_width(out))
    if isinstance(rendered, str):
        typer.echo(rendered, nl=False)
    else:
        print_table(rendered, wide=wide)
    if plot_file is not None:
        from nnexp.plots import plot_comparison  # lazily: matplotlib takes a second to import

        err.print(f"plot: {plot_comparison(cmp.curves(comparison), plot_file)}")


@command("plot")
def plot_run(run_dir: RunArg, output: OutOpt = None, runs_dir: FindRunsOpt = Path("runs")) -> None:
    """Draw a run's learning curves (default RUN/curves.png); prints the PNG's path."""
    from nnexp.plots import plot_run as draw  # lazily: matplotlib takes a second to import

    out.print(str(draw(resolve_run(run_dir, runs_dir), output)), markup=False)


@command()
def ensemble(runs: RunsArg,
             errors: Annotated[Optional[Path], typer.Option(
                 help="Draw the test digits the vote gets wrong into this PNG (on MNIST, those the "
                      "book's vote got wrong too framed).")] = None,
             checkpoint: CheckpointOpt = "best", data_dir: DataDirOpt = None,
             backend: BackendOpt = None, runs_dir: FindRunsOpt = Path("runs")) -> None:
    """Majority vote of several trained networks on their shared test set (chapter 6).

    The vote is scored on the validation set too: choose between votes by that column. On
    MNIST's test set, a line says how many of the 33 digits the book's vote got wrong this
    vote gets wrong too."""

    result, warnings = run_ensemble(runs, checkpoint=checkpoint, backend=backend, data_dir=data_dir,
                                    runs_dir=runs_dir)
    print_warnings(warnings)
    print_table(ensemble_table(result, checkpoint, table_width(out)))
    if (book := result.against_book()) is not None:
        out.print(book_overlap_line(book), markup=False)
    if errors is not None:
        out.print(str(plot_ensemble_errors(result, errors)), markup=False)


@command()
def filters(run_dir: RunArg,
            layer: Annotated[Optional[int], typer.Option(
                help="Index in model.layers of a conv layer (default: the first conv layer).")] = None,
            output: OutOpt = None, checkpoint: CheckpointOpt = "best",
            channel: Annotated[Optional[int], typer.Option(
                help="Input channel to show (default: the mean over channels).")] = None,
            runs_dir: FindRunsOpt = Path("runs")) -> None:
    """Draw a conv layer's learned filters (default RUN/filters-layer<N>.png); prints the path."""
    from nnexp.plots import plot_filters  # lazily: matplotlib takes a second to import

    out.print(str(plot_filters(resolve_run(run_dir, runs_dir), layer, output, checkpoint, channel)), markup=False)


@command()
def evaluate(run_dir: RunArg, backend: BackendOpt = None, device: DeviceOpt = None,
             checkpoint: CheckpointOpt = "best",
             dataset: Annotated[Optional[str], typer.Option(
                 help="Score on another data set of the same shape, e.g. fashion-mnist "
                      "(default: the run's own).")] = None,
             data_dir: DataDirOpt = None, runs_dir: FindRunsOpt = Path("runs")) -> None:
    """Rebuild a run's network from a checkpoint, on any backend, and score it on the test set."""

    run = Run.open(resolve_run(run_dir, runs_dir))
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


@command("report")
def report_runs(
        runs: RunsArg,
        output: Annotated[Path, typer.Option("--out", "-o", help="The HTML file to write.")] = Path("report.html"),
        watch: Annotated[Optional[float], typer.Option(
            "--watch", metavar="SECONDS", min=0.1,
            help="Check every SECONDS while any run or sweep trains and rewrite the file when it changes; an "
                 "open page reloads itself then (FILE.live.js beside it tells it). Stops when none trains, or on "
                 "Ctrl-C.")] = None,
        ensemble: Annotated[bool, typer.Option(
            "--ensemble", help="Also show the test images the runs' majority vote gets wrong (loads every "
                               "network and the test set).")] = False,
        sort: Annotated[str, typer.Option(
            help="The table's first order, as compare's --sort: a header, short name or config key.")]
        = cmp.DEFAULT_SORT,
        descending: Annotated[Optional[bool], typer.Option(
            "--desc/--asc", help="Sort order, as compare's.", show_default=False)] = None,
        group: Annotated[bool, typer.Option(help="Pool runs that differ only in seed into one row.")] = True,
        where: Annotated[Optional[list[str]], typer.Option(
            metavar="KEY=VALUE", help="Only runs where a config key, metric or status has a value; also !=, <, >, "
                                      "<=, >= (repeatable), as compare's.")] = None,
        status: Annotated[Optional[list[str]], typer.Option(
            help="Only runs with this status (repeatable).")] = None,
        last: Annotated[Optional[int], typer.Option(min=1, help="Only the N runs started last.")] = None,
        checkpoint: CheckpointOpt = "best", data_dir: DataDirOpt = None,
        runs_dir: FindRunsOpt = Path("runs")) -> None:
    """One self-contained HTML page of runs: compare's table, interactive learning curves, configs; prints its path."""
    output = report.check_output(output)
    opts = report.Options(runs, sort=sort, descending=descending, group=group, where=where or [],
                          status=status or [], last=last, ensemble=ensemble, checkpoint=checkpoint,
                          data_dir=data_dir, runs_dir=runs_dir)
    if watch is None:
        print_warnings(report.write(opts, output).warnings)
        out.print(str(output), markup=False)
        return

    seen = []  # epochs recorded at the last line printed: a line when they change, not every write

    def written(made, count: int) -> None:
        if count == 1:
            print_warnings(made.warnings)
            out.print(str(output), markup=False)  # at once: the page can be opened while it is live
            sys.stdout.flush()
        if not seen or seen[-1] != made.epochs or not made.live:
            err.print(report.progress_line(made, output), markup=False)
            seen.append(made.epochs)

    made = report.watch(opts, output, watch, written)
    err.print(f"stopped watching; {output} is complete, without reloading" if made.interrupted
              else "no run or sweep is training any more: the report is final", markup=False)


# --- notes and tags: why runs exist, kept beside their configs -----------------------------------

# `-NAME` removes a tag: an argument, not an unknown option
_TAG_ARGS = {"ignore_unknown_options": True}


@command(context_settings=_TAG_ARGS)
def tag(args: Annotated[list[str], typer.Argument(
            metavar="RUN... +TAG|-TAG...", show_default=False,
            help="Runs (directories, ids, sweeps: their points), then tags to add (+NAME, or NAME) "
                 "or remove (-NAME); with no +/-, the last argument is a tag to add. One run alone: "
                 "print its tags.")],
        runs_dir: FindRunsOpt = Path("runs")) -> None:
    """Add or remove runs' tags (kept in notes.json, never in the config); prints each run's tags."""
    names, add, remove = tag_arguments(args)
    # an unknown name is an error here, not a warning as in compare: a tag meant for it would be lost
    paths, warnings = find_run_dirs([name if set(name) & set("*?[") else resolve_run(name, runs_dir)
                                     for name in names], runs_dir)
    print_warnings(warnings)
    for path in paths:
        run = Run.open(path)
        notes = run.change_notes(lambda notes: notes.tagged(add, remove)) if add or remove else run.read_notes()
        out.print(f"{path}: {' '.join(f'#{t}' for t in notes.tags) or '(no tags)'}", markup=False)


@command(context_settings=_TAG_ARGS)
def note(run_dir: RunArg,
         text: Annotated[Optional[str], typer.Argument(
             show_default=False, help="The run's new note, replacing the old; \"\" clears it. Without it: print the note.")]
         = None,
         runs_dir: FindRunsOpt = Path("runs")) -> None:
    """Print or replace a run's note (kept in notes.json, never in the config)."""
    run = Run.open(resolve_run(run_dir, runs_dir))
    if text is None:
        notes = run.read_notes()
        if notes.note:
            out.print(notes.note, markup=False)
        else:
            err.print(f"{run.path} has no note", markup=False)
        return
    run.change_notes(lambda notes: replace(notes, note=text.strip()))  # its tags as they are then
    err.print(f"{run.path}: note {'set' if text.strip() else 'cleared'}", markup=False)


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt


# --- export: runs in other tools' formats ------------------------------------------------------

export_app = typer.Typer(name="export", no_args_is_help=True,
                         help="Write runs elsewhere: TensorBoard event files, MLflow runs, or copies to keep.")
app.add_typer(export_app)


@command("tensorboard", on=export_app)
def export_tensorboard(runs: RunsArg, out_dir: Annotated[Path, typer.Option(
        "--out", "-o", show_default=False,
        help="Directory to write: a sub-directory per run (a sweep's point as SWEEP/POINT); "
             "an earlier export of a run there is replaced.")]) -> None:
    """TensorBoard event files for runs and sweeps: per-epoch scalars, HParams, status; prints DIR.

    Then: tensorboard --logdir DIR"""
    written, warnings = tblog.export(runs, out_dir)
    print_warnings(warnings)
    err.print(f"{len(written)} run{'s' * (len(written) != 1)} written; view with: tensorboard --logdir {out_dir}",
              markup=False)
    out.print(str(out_dir), markup=False)


@command("mlflow", on=export_app)
def export_mlflow(
    runs: RunsArg,
    tracking_uri: Annotated[str, typer.Option(
        "--tracking-uri", show_default=False,
        help="The MLflow store: sqlite:///PATH (local), http(s)://HOST:PORT (a server).")],
    experiment: Annotated[str, typer.Option(
        help="The MLflow experiment to put the runs in; created if missing.")] = mlflowlog.DEFAULT_EXPERIMENT,
    no_checkpoints: Annotated[bool, typer.Option(
        "--no-checkpoints", help="Leave checkpoints/ out of the artifacts.")] = False,
) -> None:
    """One MLflow run per run (a sweep: per point): config as params, epochs as metrics, tags,
    note, status, the run directory as artifacts; prints the MLflow run ids.

    Exporting again updates the MLflow run made before (found by its nnexp.id tag), never a second one."""
    done, warnings = mlflowlog.export(runs, tracking_uri, experiment, checkpoints=not no_checkpoints)
    print_warnings(warnings)
    for item in done:
        err.print(f"{item.outcome:<9} {item.id} -> MLflow run {item.run_id}", markup=False, highlight=False)
    counts = {o: sum(d.outcome == o for d in done) for o in ("created", "updated", "replaced", "unchanged")}
    said = ", ".join(f"{n} {o}" for o, n in counts.items() if n)
    err.print(f"{plural(len(done), 'run')} in experiment {experiment}: {said}; "
              f"view with: {mlflowlog.viewer_hint(tracking_uri)}", markup=False, highlight=False)
    for item in done:
        out.print(item.run_id, markup=False)


@command("record", on=export_app)
def export_record(
    runs: RunsArg,
    out_dir: Annotated[Path, typer.Option(
        "--out", "-o", show_default=False,
        help="Directory to copy into: a run as DIR/NAME, a sweep's point as DIR/SWEEP/POINT beside the "
             "sweep's manifest; a copy already there is never overwritten.")],
    checkpoint: Annotated[str, typer.Option(
        help="Checkpoints to copy: best, last, both or none.")] = "best",
    runs_dir: FindRunsOpt = Path("runs")) -> None:
    """Copies of runs to keep (in a repository, or to send), checkpoints compressed; prints each copy.

    A copy holds the config, env.json, metrics, summary, log, notes and the chosen checkpoints
    in the precision the run trained in: compare, report, evaluate and ensemble give the same
    answers on it."""
    copies, warnings = records.export(runs, out_dir, checkpoint, runs_dir)
    print_warnings(warnings)
    for copy in copies:
        size = sum(p.stat().st_size for p in copy.rglob("*") if p.is_file())
        err.print(f"{copy}: {f'{size / 1e6:.1f} MB' if size >= 1e5 else f'{size / 1e3:.0f} kB'}", markup=False,
                  highlight=False)
        out.print(str(copy), markup=False)


def main() -> None:
    # SIGTERM (`kill PID`, a scheduler's stop) ends nnexp as Ctrl-C does: a run, or every
    # point of a sweep, stops at its last completed epoch, resumable, and no worker is left
    signal.signal(signal.SIGTERM, _terminate)
    app()


if __name__ == "__main__":
    sys.exit(main())
