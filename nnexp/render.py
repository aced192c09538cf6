"""What people read: runs' rows as text, and progress while runs train.

A comparison (`compare`) becomes a terminal table fitted to its width, or markdown, CSV or
JSON; numbers read as people read them (percent, durations); the other tables the commands
print (a gradient check, an ensemble's vote, the backends) are built here too. While runs
train, a reporter prints each epoch (`PlainReporter`, `BarReporter`) and `SweepDisplay`
follows a sweep's points.

The consoles are here: `out` (stdout: what a command answers, such as a run directory's
path) and `err` (stderr: progress, tables, warnings and errors).

Non-goals: deciding what a row holds or how rows sort (`compare`), figures (`plots`).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from nnexp.compare import Comparison, Row, Stat, compare, config_cell, is_layer_key, machine_row, short_names
from nnexp.errors import UserError
from nnexp.network import build_spec
from nnexp.runs import Run, Status
from nnexp.training import STOP_REASONS, SilentReporter

FORMATS = ("table", "markdown", "csv", "json")

# markup off by default: paths, names and values users give are printed as they are
# (`runs/[red]x` stays `runs/[red]x`); the few styled lines ask for markup and escape their values
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)  # one error, one line
out = Console(highlight=False, soft_wrap=True, markup=False)


# --- numbers as people read them ---------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m {int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h {int(seconds % 3600 // 60):02d}m"


def _epochs(stat: Stat | None) -> str:
    return "-" if stat is None else f"{stat.mean:g}" if stat.mean == int(stat.mean) else f"{stat.mean:.1f}"


# --- a comparison's columns ------------------------------------------------------------------


def architecture(layers: Any) -> str:
    """A network in one line: ``conv 20@5 p2 relu → dense 100 relu → softmax 10`` ("?" for
    layers that no longer make a network, as an old run's config may)."""
    try:
        spec = build_spec(layers)
    except (UserError, TypeError, AttributeError, KeyError, ValueError):
        return "?"
    return " → ".join(layer.brief() for layer in spec.layers)


def display_keys(comparison: Comparison) -> list[str]:
    """The columns people see for the differing keys: one `architecture` column in place of
    the per-layer keys, when the networks differ."""
    keys = [k for k in comparison.keys if not is_layer_key(k)]
    return keys + (["architecture"] if any(is_layer_key(k) for k in comparison.keys) else [])


def display_value(row: Row, key: str) -> str:
    if key == "architecture":
        return architecture(row.runs[0].config.get("model", {}).get("layers"))
    return config_cell(row.config_value(key))


def columns(comparison: Comparison) -> list[tuple[str, int, list[str]]]:
    """(header, priority, cells) per column, in display order. Priority 0 is never dropped
    (the label, status, best validation and test accuracy and their ±); a narrow terminal
    drops the highest numbers first."""
    spread = comparison.any_group
    rows = comparison.rows
    stat = lambda row, m: row.stat(m)  # noqa: E731
    std = lambda s: "-" if s is None or s.std is None else f"{100 * s.std:.2f}"  # noqa: E731
    val = [stat(r, "best_validation_accuracy") for r in rows]
    test = [stat(r, "test_accuracy") for r in rows]
    cols = [("run", 0, [r.display for r in rows]), ("status", 0, [r.status for r in rows]),
            ("best val %", 0, [_pct(v.mean if v else None) for v in val])]
    if spread:
        cols.append(("±", 0, [std(v) for v in val]))
    cols.append(("test %", 0, [_pct(t.mean if t else None) for t in test]))
    if spread:
        cols.append(("±", 0, [std(t) for t in test]))
    if comparison.any_reference:
        book = [_book_cells(r) for r in rows]
        for i, (header, priority) in enumerate([("book %", 1), ("ours %", 1), ("Δ", 2), ("verdict", 1)]):
            cols.append((header, priority, [b[i] for b in book]))
    keys = display_keys(comparison)
    short = short_names([k for k in keys if k != "architecture"])
    for key in keys:
        cols.append((short.get(key, key), 3 if key == "architecture" else 2, [display_value(r, key) for r in rows]))
    if spread:
        cols.append(("n", 4, [str(len(r.runs)) for r in rows]))
    cols += [("epochs", 5, [_epochs(stat(r, "epochs_run")) for r in rows]),
             ("best epoch", 5, [_epochs(stat(r, "best_epoch")) for r in rows])]
    if spread:
        cols += [("test min", 6, [_pct(t.min if t else None) for t in test]),
                 ("test max", 6, [_pct(t.max if t else None) for t in test])]
    cols += [("wall time", 4, [duration(stat(r, "wall_time_s").mean if stat(r, "wall_time_s") else None)
                               for r in rows]),
             ("backend/device", 6, [f"{r.backend}/{r.device}" for r in rows])]
    return cols


def human_table(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    """Headers and string cells of every column (markdown prints them all)."""
    cols = columns(comparison)
    return [h for h, _, _ in cols], [list(cells) for cells in zip(*(c for _, _, c in cols))]


SELECTION_WORDS = {"best-of-seeds": "best by val", "peak-test": "peak test", "single": "mean"}


def _book_cells(row: Row) -> list[str]:
    """book %, ours % (and how it was chosen), the difference in points, the verdict."""
    v = row.verdict()
    if v["book"] is None:
        return ["-", "-", "-", "-"]
    how = SELECTION_WORDS.get((row.reference or {}).get("selection"), "")
    ours = "-" if v["ours"] is None else f"{100 * v['ours']:.2f} ({how})"
    diff = "-" if v["difference"] is None else f"{v['difference']:+.2f}"
    verdict = "-" if v["verdict"] is None else f"{v['verdict']} (±{v['tolerance']:g})"
    return [f"{100 * v['book']:.2f}", ours, diff, verdict]


def _left_aligned(comparison: Comparison) -> set[str]:
    """Text columns: the run's label, status and backend, the architecture, and config keys
    with no number in them (an optimiser's name, a cost); numbers line up on the right."""
    def is_number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    keys = [k for k in display_keys(comparison) if k != "architecture"]
    short = short_names(keys)
    text_keys = {short[key] for key in keys if not any(is_number(row.config_value(key)) for row in comparison.rows)}
    return {"run", "status", "backend/device", "verdict", "ours %", "architecture", *text_keys}


# --- fitting a terminal's width ---------------------------------------------------------------


def _table_width(cols) -> int:
    """What rich's default box needs: each column's widest cell, 1 space each side, borders."""
    return sum(max(len(h), *(len(c) for c in cells)) + 3 for h, _, cells in cols) + 1 if cols else 0


def fit(comparison: Comparison, width: int | None):
    """The comparison's columns that fit `width` (see `fit_columns`)."""
    return fit_columns(columns(comparison), width)


def fit_columns(cols: list[tuple[str, int, list[str]]], width: int | None):
    """The (header, priority, cells) columns that fit `width` (None: all), dropping the
    least important (highest priority number) first; None when even the priority-0 ones do
    not fit."""
    if width is None:
        return cols
    for cutoff in sorted({p for _, p, _ in cols}, reverse=True):
        if _table_width(cols) <= width:
            return cols
        if cutoff == 0:
            break
        cols = [c for c in cols if c[1] < cutoff]
    return cols if _table_width(cols) <= width else None


def rich_table(comparison: Comparison, title: str | None = None, width: int | None = None):
    """A rich Table that fits `width` (None: every column), or, when even the label and the
    accuracies do not fit, one block per row."""
    cols = fit(comparison, width)
    if cols is None:
        return Group(*vertical(comparison, width))
    return table_of(cols, _left_aligned(comparison), title)


def table_of(cols: list[tuple[str, int, list[str]]], left: set[str], title: str | None = None,
             styles: dict[str, list[str | None]] | None = None):
    """A rich Table of (header, priority, cells) columns, cells never wrapped; `left` names the
    left-aligned headers, `styles` optional per-cell styles by header."""
    table = Table(title=title)
    for header, _, _ in cols:
        table.add_column(header, justify="left" if header in left else "right", no_wrap=True)
    for i, cells in enumerate(zip(*(c for _, _, c in cols))):
        # Text: a label like [seeds 1, 2] is not markup
        table.add_row(*(Text(cell, style=((styles or {}).get(h) or [None] * (i + 1))[i] or "")
                        for (h, _, _), cell in zip(cols, cells)))
    return table


def vertical(comparison: Comparison, width: int):
    """One block per row for terminals too narrow for a table: the label on a line of its
    own, then `header value` pairs wrapped to the width."""
    cols = columns(comparison)
    blocks = []
    for i, row in enumerate(comparison.rows):
        blocks.append(Text(row.display, style="bold"))
        line = ""
        for header, _, cells in cols[1:]:
            pair = f"{header} {cells[i]}"
            if line and len(line) + 3 + len(pair) > width:
                blocks.append(Text(line))
                line = ""
            line = f"{line} · {pair}" if line else f"  {pair}"
        if line:
            blocks.append(Text(line))
    return blocks


# --- the formats --------------------------------------------------------------------------------


def markdown(comparison: Comparison) -> str:
    headers, cells = human_table(comparison)
    esc = lambda s: s.replace("|", "\\|")  # noqa: E731
    left = _left_aligned(comparison)
    lines = ["| " + " | ".join(map(esc, headers)) + " |",
             "|" + "|".join(":---" if h in left else "---:" for h in headers) + "|"]
    lines += ["| " + " | ".join(map(esc, row)) + " |" for row in cells]
    return "\n".join(lines) + "\n"


def to_csv(comparison: Comparison) -> str:
    """One header line, one line per row; lists (runs, seeds) space-separated, None empty.
    Floats are written with repr, so they parse back to the very same numbers."""
    rows = [machine_row(row, comparison) for row in comparison.rows]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    headers = list(rows[0]) if rows else []
    writer.writerow(headers)
    for row in rows:
        writer.writerow(["" if v is None else " ".join(map(str, v)) if isinstance(v, list)
                         else repr(v) if isinstance(v, float) else str(v).lower() if isinstance(v, bool)
                         else v for v in row.values()])
    return buf.getvalue()


def to_json(comparison: Comparison) -> str:
    return json.dumps([machine_row(row, comparison) for row in comparison.rows], indent=2, default=str) + "\n"


def render(comparison: Comparison, fmt: str = "table", width: int | None = None):
    """The comparison in one of FORMATS: for "table" a rich renderable fitted to `width`
    (None: every column, for pipes and files), text otherwise."""
    if fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    if fmt == "table":
        return rich_table(comparison, width=width)
    return {"markdown": markdown, "csv": to_csv, "json": to_json}[fmt](comparison)


# --- the other tables ---------------------------------------------------------------------------


def gradcheck_table(results: list, title: str, width: int | None) -> Table:
    """A gradient check (`gradcheck.gradcheck`'s results), one row per parameter, fitted to
    `width` (None: every column); the failing verdicts in red."""
    verdicts = ["ok" if r.ok else "FAIL" for r in results]
    cols = [("parameter", 0, [r.name for r in results]), ("verdict", 0, verdicts),
            ("rel. error", 0, [f"{r.worst_relative_error:.2e}" for r in results]),
            ("analytic", 1, [f"{r.worst_analytic:.2e}" for r in results]),
            ("numeric", 1, [f"{r.worst_numeric:.2e}" for r in results]),
            ("at a kink", 2, [str(r.kinks) for r in results]),
            ("entries", 3, [str(r.checked) for r in results]),
            ("shape", 3, ["x".join(map(str, r.shape)) for r in results])]
    cols = fit_columns(cols, width) or cols[:3]
    return table_of(cols, {"parameter", "verdict"}, title,
                    {"verdict": ["red" if v == "FAIL" else None for v in verdicts]})


def ensemble_table(result, checkpoint: str) -> Table:
    """A majority vote (`ensemble.run_ensemble`'s result): each member, then the vote."""
    table = Table(title=f"majority vote ({checkpoint} checkpoints)")
    for col in ("network", "validation accuracy %", "test accuracy %", "test errors"):
        table.add_column(col, justify="left" if col == "network" else "right")
    for m in result.members:
        table.add_row(escape(m.name), f"{100 * m.validation_accuracy:.2f}", f"{100 * m.accuracy:.2f}",
                      str(m.errors))
    table.add_row(f"[bold]ensemble of {len(result.members)}[/]", f"[bold]{100 * result.validation_accuracy:.2f}[/]",
                  f"[bold]{100 * result.accuracy:.2f}[/]", f"[bold]{result.errors}[/] of {result.n:,}")
    return table


def backends_table(entries: list[tuple[str, bool, list[str], str, str]]) -> Table:
    """The backends: (name, whether it can run here, its devices, description, why) each."""
    table = Table()
    for col in ("backend", "available", "devices", "details"):
        table.add_column(col)
    for name, ok, devices, description, why in entries:
        table.add_row(name, "yes" if ok else "no", ", ".join(devices) if ok else "-", f"{description}; {why}")
    return table


# --- printing -----------------------------------------------------------------------------------


def print_warnings(warnings: list[str]) -> None:
    for line in warnings:
        err.print(f"[yellow]warning:[/] {escape(line)}", markup=True, highlight=False, soft_wrap=True)


def print_table(table, console: Console | None = None) -> None:
    """On a terminal, fit the table to it; in a pipe or file, never squeeze or cut a column."""
    console = console or out
    if not console.is_terminal:
        console = Console(highlight=False, width=100_000, stderr=console.stderr)
    console.print(table)


# --- progress -----------------------------------------------------------------------------------


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
        self.done = sum(1 for s in before.values() if s == Status.COMPLETED)
        self.failed = sum(1 for p, s in before.items() if s != Status.COMPLETED and p not in waiting)
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
        elif kind == "finished":
            self.waiting.discard(point)
            since, _ = self.running.pop(point, (self.clock(), ""))
            self.durations.append(self.clock() - since)
            summary = payload.summary or {}
            if payload.status == Status.COMPLETED:
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
                  f"({summary['epochs_run']} epochs, {reason}, "
                  f"{summary['wall_time_s']:.0f} s)")
    elif summary.get("stop_reason") == "time-limit":
        err.print(f"paused at the time limit before the first epoch ended; "
                  f"continue with: nnexp resume {run.path}")
    out.print(str(run.path))


def print_trials(plan) -> None:
    """A search's drawn values, one line per trial, before any trains."""
    for point in plan.points:
        drawn = ", ".join(f"{key}={value:.3g}" if isinstance(value, float) else f"{key}={value}"
                          for key, value in point.overrides.items())
        err.print(f"trial {point.id}: {drawn}", markup=False)


def print_sweep_table(sweep, rank: bool) -> None:
    """A sweep's points that have started, compared by validation accuracy (seeds pooled,
    unless `rank`: a search's trials one by one), on stderr."""
    started = [sweep.run_path(p) for p in sweep.plan.points if Run.is_run(sweep.run_path(p))]
    if not started:
        return
    comparison, warnings = compare(started, sort="best_validation_accuracy", group=not rank)
    print_warnings(warnings)
    print_table(render(comparison, "table", width=err.width if err.is_terminal else None), console=err)
