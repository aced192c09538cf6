"""What a Jupyter notebook shows while runs train, and how runs and tables look in one.

`NotebookReporter` is a training Reporter (the interface the loop calls, `training.Reporter`)
that keeps one output of the cell up to date: a bar over the run's epochs and a row with the
last epoch's validation and test accuracy, the best so far, the time spent and an ETA.
`NotebookSweepDisplay` does the same for a sweep's points, from the executor's events.
Both go through IPython's own display machinery (`display(..., display_id=True)` and the
handle's `update`), so nothing beyond IPython is needed: no ipywidgets, no JavaScript.

`html_table` is the small HTML table the Python API's objects show themselves as
(`_repr_html_`). Nothing here imports IPython until something is displayed: `import nnexp`
stays light, and a script never needs it.
"""

from __future__ import annotations

import html
import sys
import time
from typing import Any, Callable, Iterable, Protocol

from nnexp.render import duration
from nnexp.rundir import Status
from nnexp.training import SilentReporter

UPDATE_EVERY_S = 0.5  # the bar within an epoch: a notebook redraws the whole output per update


class Handle(Protocol):
    def update(self, html_text: str, text: str) -> None: ...


# displays HTML (and its plain-text form, for front ends without HTML) once, and returns the
# handle that replaces it
Show = Callable[[str, str], Handle]


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (IPython with a kernel attached): a plain
    `ipython` in a terminal, or a script, gets the terminal's reporters."""
    ipython = sys.modules.get("IPython")  # a kernel has imported it long before nnexp: never import it here
    if ipython is None:
        return False
    shell = getattr(ipython, "get_ipython", lambda: None)()
    return shell is not None and getattr(shell, "kernel", None) is not None


class _IPythonHandle:
    def __init__(self, html_text: str, text: str):
        from IPython.display import display  # lazily: only a notebook has, or needs, IPython

        self._handle = display({"text/html": html_text, "text/plain": text}, raw=True, display_id=True)

    def update(self, html_text: str, text: str) -> None:
        self._handle.update({"text/html": html_text, "text/plain": text}, raw=True)


def ipython_show(html_text: str, text: str) -> Handle:
    """Display `html_text` (`text` where HTML cannot be shown) as a cell output that later
    updates replace in place."""
    return _IPythonHandle(html_text, text)


# --- numbers and tables ------------------------------------------------------------------------


def pct(value: Any) -> str:
    return f"{100 * value:.2f}%" if isinstance(value, (int, float)) and not isinstance(value, bool) else "–"


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and ("accuracy" in key):
        return f"{100 * value:.2f}"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return str(value)


def _header(key: str) -> str:
    return f"{key} %" if "accuracy" in key else key


def html_table(rows: list[dict], columns: Iterable[str] | None = None, limit: int = 50) -> str:
    """Rows of plain values as an HTML table: accuracies (fractions) shown as percentages,
    the first `limit` rows and a line saying how many more."""
    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
    columns = list(columns)
    head = "".join(f"<th>{html.escape(_header(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(c, row.get(c)))}</td>" for c in columns) + "</tr>"
                   for row in rows[:limit])
    more = f"<p>… and {len(rows) - limit} more rows</p>" if len(rows) > limit else ""
    return f'<table class="nnexp"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}'


def _bar(fraction: float, width_px: int = 160) -> str:
    fraction = min(max(fraction, 0.0), 1.0)
    return (f'<span style="display:inline-block;width:{width_px}px;height:0.8em;background:#ddd;'
            f'vertical-align:middle"><span style="display:block;height:100%;width:{100 * fraction:.1f}%;'
            f'background:#4a7fb5"></span></span>')


# --- one run -----------------------------------------------------------------------------------


class NotebookReporter(SilentReporter):
    """One cell output, replaced as the run goes: the run's name, a bar over its epochs (the
    current epoch's mini-batches filling its share), then epoch k/N, the last epoch's
    validation and test accuracy, the best validation accuracy so far (and the test accuracy
    at it), elapsed time and the run's ETA (the mean epoch so far times the epochs left)."""

    def __init__(self, name: str, epochs: int, done: int = 0, show: Show | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.name, self.epochs, self.done = name, epochs, done
        self.show, self.clock = show or ipython_show, clock
        self.handle: Handle | None = None
        self.started = clock()
        self.epoch, self.batches, self.batch, self.phase = done, 0, 0, "starting"
        self.last: dict | None = None
        self.best: dict | None = None
        self.seconds: list[float] = []
        self.outcome: str | None = None
        self.updated = 0.0

    # the Reporter interface the loop calls
    def epoch_started(self, epoch: int, num_batches: int) -> None:
        self.epoch, self.batches, self.batch, self.phase = epoch, num_batches, 0, "training"
        self._draw()

    def batches_done(self, done: int) -> None:
        self.batch = done
        if self.clock() - self.updated >= UPDATE_EVERY_S:
            self._draw()

    def evaluating(self) -> None:
        self.phase = "scoring"
        self._draw()

    def epoch_finished(self, record: dict, line: str) -> None:
        self.last, self.phase = record, "done"
        self.batch = self.batches
        self.seconds.append(record.get("seconds", 0.0))
        if record.get("best"):
            self.best = record
        self._draw()

    def finish(self, summary: dict) -> None:
        """The run's outcome, in the place of the progress."""
        status = summary.get("status", "")
        if summary.get("best_epoch"):
            self.outcome = (f"{status}: best validation {pct(summary.get('best_validation_accuracy'))} at epoch "
                            f"{summary['best_epoch']}, test {pct(summary.get('test_accuracy'))}")
        else:
            reason = summary.get("stop_reason")
            self.outcome = f"{status}: {reason}" if reason else str(status)
        self._draw()

    # what is shown
    def eta(self) -> float | None:
        if not self.seconds:
            return None
        left = self.epochs - self.epoch + (0 if self.phase == "done" else 1)
        return sum(self.seconds) / len(self.seconds) * max(left, 0)

    def fraction(self) -> float:
        """How much of the run is done: its finished epochs, and the share of the current one's
        mini-batches."""
        if self.outcome is not None and self.outcome.startswith(Status.COMPLETED):
            return 1.0  # an early stop ends the run before its last epoch
        within = 0.0 if self.phase == "done" else (self.batch / self.batches if self.batches else 0.0)
        finished = self.epoch - (0 if self.phase == "done" else 1)
        return min(1.0, (finished + within) / self.epochs) if self.epochs else 1.0

    def cells(self) -> dict[str, str]:
        last, best = self.last or {}, self.best or {}
        return {"epoch": f"{self.epoch}/{self.epochs}" + ("" if self.phase == "done" else f" ({self.phase})"),
                "val": pct(last.get("validation_accuracy")), "test": pct(last.get("test_accuracy")),
                "best val": pct(best.get("validation_accuracy")) + (f" (epoch {best['epoch']})" if best else ""),
                "test at best": pct(best.get("test_accuracy")),
                "elapsed": duration(self.clock() - self.started),
                "ETA": "–" if self.outcome is not None else duration(self.eta())}

    def html(self) -> str:
        cells, fraction = self.cells(), self.fraction()
        head = "".join(f"<th>{html.escape(k)}</th>" for k in cells)
        row = "".join(f"<td>{html.escape(v)}</td>" for v in cells.values())
        outcome = f"<div>{html.escape(self.outcome)}</div>" if self.outcome else ""
        return (f'<div class="nnexp-progress"><b>{html.escape(self.name)}</b> {_bar(fraction)} '
                f'{100 * fraction:.0f}%<table><tr>{head}</tr><tr>{row}</tr></table>{outcome}</div>')

    def text(self) -> str:
        """The same in one line, for front ends that show no HTML."""
        said = "  ".join(f"{k} {v}" for k, v in self.cells().items())
        return f"{self.name}: {said}" + (f"\n{self.outcome}" if self.outcome else "")

    def _draw(self) -> None:
        self.updated = self.clock()
        if self.handle is None:
            self.handle = self.show(self.html(), self.text())
        else:
            self.handle.update(self.html(), self.text())


# --- a sweep ------------------------------------------------------------------------------------


class NotebookSweepDisplay:
    """A sweep's points in one cell output, replaced as events arrive (the executor's
    ("started" | "epoch" | "finished", point, payload), as `progress.SweepDisplay` takes them):
    a bar over the points, then a row per point with its status, epoch and accuracy."""

    def __init__(self, name: str, before: dict[str, str], todo_points: list[str], show: Show | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.name, self.show, self.clock = name, show or ipython_show, clock
        self.started = clock()
        waiting = set(todo_points)
        # points not to run this time keep the status their run directory gives them
        self.points: dict[str, dict] = {p: {"status": "waiting" if p in waiting else str(s)}
                                        for p, s in before.items()}
        self.handle: Handle | None = None
        self._draw()

    def __call__(self, event) -> None:
        kind, point, payload = event
        state = self.points.setdefault(point, {})
        if kind == "started":
            state["status"] = "running"
        elif kind == "epoch":
            record, epochs = payload
            state.update(epoch=f"{record['epoch']}/{epochs}", val=record.get("validation_accuracy"))
        elif kind == "finished":
            summary = payload.summary or {}
            state.update(status=str(payload.status), val=summary.get("best_validation_accuracy", state.get("val")),
                         test=summary.get("test_accuracy"), error=payload.error)
        self._draw()

    def html(self) -> str:
        total = len(self.points)
        final = sum(1 for s in self.points.values() if s["status"] not in ("waiting", "running"))
        rows = "".join(
            f"<tr><td>{html.escape(p)}</td><td>{html.escape(s['status'])}</td>"
            f"<td>{html.escape(s.get('epoch', '–'))}</td><td>{pct(s.get('val'))}</td><td>{pct(s.get('test'))}</td>"
            f"<td>{html.escape(s.get('error') or '')}</td></tr>" for p, s in self.points.items())
        return (f'<div class="nnexp-progress"><b>{html.escape(self.name)}</b> {_bar(final / total if total else 1)} '
                f'{final}/{total} points, {duration(self.clock() - self.started)}'
                f'<table><tr><th>point</th><th>status</th><th>epoch</th><th>val (best)</th><th>test</th>'
                f'<th></th></tr>{rows}</table></div>')

    def text(self) -> str:
        final = sum(1 for s in self.points.values() if s["status"] not in ("waiting", "running"))
        lines = [f"{self.name}: {final}/{len(self.points)} points, {duration(self.clock() - self.started)}"]
        lines += [f"  {p}: {s['status']}  epoch {s.get('epoch', '–')}  val {pct(s.get('val'))}  "
                  f"test {pct(s.get('test'))}" + (f"  {s['error']}" if s.get("error") else "")
                  for p, s in self.points.items()]
        return "\n".join(lines)

    def _draw(self) -> None:
        if self.handle is None:
            self.handle = self.show(self.html(), self.text())
        else:
            self.handle.update(self.html(), self.text())
