"""What a command shows while runs train, and when they end: a reporter per epoch
(`PlainReporter` in a pipe, `BarReporter` on a terminal), `SweepDisplay` following a sweep's
points, and the closing lines (a run's outcome, a sweep's table, a search's draws).
"""

from __future__ import annotations

import contextlib
import time

from rich.console import Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.text import Text

from nnexp.comparison import compare
from nnexp.render import duration, err, out, plural, print_table, print_warnings, render, table_width
from nnexp.rundir import Run, Status
from nnexp.training import STOP_REASONS, SilentReporter


class PlainReporter(SilentReporter):
    """One line per epoch: for logs, pipes and CI."""

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
        if not self.seconds:
            return "run ETA –"
        mean = sum(self.seconds) / len(self.seconds)
        return f"run ETA {duration(mean * (self.epochs - self.epoch + 1))}"

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


class SweepDisplay:
    """What a sweep shows while it runs: on a terminal, one live line per running point and
    a count of done / failed / remaining with an ETA; elsewhere, a plain line per point
    started and finished."""

    def __init__(self, total: int, todo: list, before: dict[str, str], parallel: int):
        self.clock = time.monotonic
        self.total, self.parallel = total, max(1, parallel)
        waiting = {t.point for t in todo}
        ended = (Status.COMPLETED, Status.PRUNED)  # a pruned trial is done: its search stopped it
        self.done = sum(1 for s in before.values() if s in ended)
        self.failed = sum(1 for p, s in before.items() if s not in ended and p not in waiting)
        self.waiting, self.running = waiting, {}  # point -> (started, text)
        self.durations: list[float] = []
        self.live = None
        if err.is_terminal:
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
        left = len(self.waiting) + len(self.running)
        if not self.durations or not left:
            return "ETA –"
        mean = sum(self.durations) / len(self.durations)
        return f"ETA {duration(mean * left / min(self.parallel, left))}"

    def render(self):
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
        elif kind == "finished" and payload.status == Status.PENDING:  # its worker found the time limit past
            self.waiting.discard(point)
            self._print(f"not started {point}: the time limit has passed")
        elif kind == "finished":
            self.waiting.discard(point)
            since, _ = self.running.pop(point, (self.clock(), ""))
            self.durations.append(self.clock() - since)
            summary = payload.summary or {}
            if payload.status in (Status.COMPLETED, Status.PRUNED):
                self.done += 1
            elif payload.status != Status.INTERRUPTED:
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


@contextlib.contextmanager
def epoch_reporter(run: Run, epochs: int):
    """The reporter a run trains with: a progress bar on a terminal, a plain line per epoch
    in a pipe, a file or CI."""
    if not err.is_terminal:
        yield PlainReporter()
        return
    columns = [TextColumn("{task.description}"), BarColumn(bar_width=20), MofNCompleteColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[info]}")]
    done = len(run.read_metrics(strict=False))  # epochs a resumed run has behind it
    with Progress(*columns, console=err, transient=True) as progress:
        yield BarReporter(progress, epochs, done)


def print_outcome(summary: dict, run: Run) -> None:
    """How a run ended (on stderr), then its directory (on stdout)."""
    if summary.get("best_epoch"):
        reason = STOP_REASONS.get(summary["stop_reason"], summary["stop_reason"])
        err.print(f"best validation {100 * summary['best_validation_accuracy']:.2f}% at epoch "
                  f"{summary['best_epoch']}: test accuracy {100 * summary['test_accuracy']:.2f}% "
                  f"({plural(summary['epochs_run'], 'epoch')}, {reason}, "
                  f"{summary['wall_time_s']:.0f} s)")
    elif summary.get("stop_reason") == "time-limit":
        err.print(f"paused at the time limit before the first epoch ended; "
                  f"continue with: nnexp resume {run.path}")
    out.print(str(run.path))


def print_reference_dropped(cfg: dict) -> None:
    """One line when an override took the config's book number away (`reference_dropped`),
    so a missing book column in `compare` is no surprise."""
    dropped = cfg.get("reference_dropped")
    if not dropped:
        return
    keys = ", ".join(dropped["by"])
    err.print(f"not compared with the book's {dropped['value']:g}%: {keys} changed the experiment",
              markup=False)


def print_trials(plan) -> None:
    """A search's drawn values, one line per trial, before any trains."""
    for point in plan.points:
        drawn = ", ".join(f"{key}={value:.3g}" if isinstance(value, float) else f"{key}={value}"
                          for key, value in point.overrides.items())
        err.print(f"trial {point.id}: {drawn}", markup=False)


def print_sweep_paused(sweep, left: dict[str, list[str]]) -> None:
    """The closing line of a sweep its time limit paused (`batch.time_limited`): how many
    points paused and how many did not start, and the command that continues it."""
    said = ", ".join(f"{plural(len(points), 'point')} {how}" for how, points in
                     (("paused", left["paused"]), ("not started", left["not started"])) if points)
    err.print(f"paused by the time limit: {said}; everything up to each point's last completed epoch is saved. "
              f"Continue with: nnexp sweep {sweep.path}", markup=False, highlight=False)


def print_sweep_table(sweep, rank: bool) -> None:
    """A sweep's points that have started, compared by validation accuracy (seeds pooled,
    unless `rank`: a search's trials one by one), on stderr."""
    started = [sweep.run_path(p) for p in sweep.plan.points if Run.is_run(sweep.run_path(p))]
    if not started:
        return
    comparison, warnings = compare(started, sort="best_validation_accuracy", group=not rank)
    print_warnings(warnings)
    print_table(render(comparison, "table", width=table_width(err)), console=err)
