"""`nnexp report`: runs and sweeps as one self-contained HTML file to look at in a browser.

The page holds, with every script, style and number inside it (it opens from disk, offline):

- the compare table: the rows, labels, ids, book verdicts and order of `nnexp compare` (built
  from `compare.compare` and `render.human_table`, so the two never disagree), sortable by
  clicking a header and filterable by typing;
- learning curves per epoch from each run's metrics.jsonl (validation and test accuracy, the
  costs, training accuracy, η and chapter 5's layer speeds, where recorded), drawn with
  Plotly: hover shows run, epoch and value, a legend click hides or shows a row in every
  chart, a seed group is its mean with a min-max band, the best-validation epoch is a star,
  a cost axis is logarithmic where the curves' typical values are over 100x apart;
- per run: its resolved config (keys that differ from a chosen run highlighted), env.json,
  note and tags, status and stop reason, and a conv layer's filters where it has a checkpoint;
- with `ensemble=True`: the test images the runs' majority vote gets wrong;
- per search (a sweep of kind "search") whose trials are among the runs: its optimisation
  history (each trial's best validation accuracy, the objective, by trial number, with the
  running best) and one chart per sampled key of its values against the objective.

The data is embedded once, as JSON; the page's own JavaScript builds the charts from it.
Plotly's basic bundle (nnexp/assets: plotly.js with its scatter, bar and pie traces, 1.2 MB)
is embedded gzip-compressed and base64-encoded (0.53 MB) and unpacked by the browser's
DecompressionStream.

`watch` checks every few seconds while any run or sweep is being trained and rewrites the
file (atomically) when what it shows has changed; beside it, a beacon script names what the
file holds, and an open page that loads it twice a second reloads itself when that changes,
keeping its scroll position, hidden rows, sort, filter and open panels. The last write has
no live part.

Non-goals: a server, editing runs from the page, charts other than per-epoch curves and a
search's.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import html
import json
import math
import statistics
import struct
import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import numpy as np

from nnexp import comparison as cmp
from nnexp import search as searching
from nnexp.errors import RunDirError, UserError
from nnexp.fileio import atomic_write_text
from nnexp.render import _left_aligned, book_overlap_line, human_table
from nnexp.rundir import MANIFEST, Run, is_finite_number
from nnexp.runset import RunRecord
from nnexp.sweepplan import read_manifest
from nnexp.training import STOP_REASONS  # the loop's words for why a run stopped -> people's

LOG_RATIO = 100  # as plots.LOG_RATIO: curves' typical values this many times apart get a log axis
ERRORS_SHOWN = 100  # misclassified test images in the ensemble's grid, as `nnexp ensemble --errors`

# (metrics.jsonl key, chart title, shown in percent): the charts, in page order, each drawn
# where some run recorded its key
CHARTS = (
    ("validation_accuracy", "validation accuracy (%)", True),
    ("test_accuracy", "test accuracy (%)", True),
    ("validation_cost", "validation cost", False),
    ("train_cost", "training cost", False),
    ("test_cost", "test cost", False),
    ("train_accuracy", "training accuracy (%)", True),
    ("eta", "η (learning rate)", False),
    ("layer_speed", "speed of learning per hidden layer: ||mean dC/db|| (log)", False),
)
COSTS = ("validation_cost", "train_cost", "test_cost", "eta")  # the charts whose axis may be log


# the vendored plotly.js (nnexp/assets/README.md says where it comes from and how to update it)
PLOTLY_JS = "plotly-basic.min.js"
PLOTLY_SHA256 = "99784e3abfb07b142a15e521a439e6d9addceadb3f79553fd24c72774f0649ba"


def plotly_js() -> str:
    """plotly.js's basic bundle (scatter, bar and pie traces; the report draws scatter only)."""
    return (resources.files("nnexp") / "assets" / PLOTLY_JS).read_text(encoding="utf-8")


@functools.cache
def plotly_js_packed() -> str:
    """plotly.js, gzip-compressed and base64-encoded (computed once per process): 0.53 MB in
    the page instead of 1.2 MB."""
    return base64.b64encode(gzip.compress(plotly_js().encode("utf-8"), 6, mtime=0)).decode("ascii")


@dataclass
class Options:
    """What `nnexp report` reports on: compare's choice of runs, plus the optional extras."""

    patterns: list[str]
    sort: str = cmp.DEFAULT_SORT
    descending: bool | None = None
    group: bool = True
    where: list[str] = field(default_factory=list)
    status: list[str] = field(default_factory=list)
    last: int | None = None
    ensemble: bool = False  # the majority vote's misclassified test images (loads data and checkpoints)
    checkpoint: str = "best"
    data_dir: str | Path | None = None
    runs_dir: str | Path | None = None  # where run ids are looked up, as compare's --runs-dir


@dataclass
class Report:
    html: str
    comparison: cmp.Comparison
    warnings: list[str]
    live: bool  # some run or sweep is being trained: a watcher writes again
    stamp: str = ""  # what the page shows, hashed: a watcher writes the page again when it changes
    interrupted: bool = False  # a watcher's last write, after Ctrl-C

    @property
    def epochs(self) -> int:
        """Epochs recorded over every run shown: what a watcher's progress line reports."""
        return sum(len(r.metrics) for row in self.comparison.rows for r in row.runs)


# --- what the page holds ------------------------------------------------------------------------


def _columns(metrics: list[dict]) -> dict[str, list]:
    """metrics.jsonl as columns: each key's values in epoch order, None where a record lacks
    it or it is not finite (strict JSON); numbers exactly as read."""
    keys = list(dict.fromkeys(k for record in metrics for k in record))
    out: dict[str, list] = {}
    for key in keys:
        column = []
        for record in metrics:
            value = record.get(key)
            if isinstance(value, float) and not math.isfinite(value):
                value = None
            elif isinstance(value, list):
                value = [v if not isinstance(v, float) or math.isfinite(v) else None for v in value]
            column.append(value)
        out[key] = column
    return out


def _typical(values: list) -> float | None:
    positive = [v for v in values if is_finite_number(v) and v > 0]
    return statistics.median(positive) if positive else None


def _log_axis(comparison: cmp.Comparison, key: str) -> bool:
    """Whether the rows' typical values of `key` are over LOG_RATIO apart (a row's: the mean
    of its runs' medians), as `plots.comparison_figure` decides for its cost panel."""
    typical = []
    for row in comparison.rows:
        medians = [m for m in (_typical([r.get(key) for r in run.metrics]) for run in row.runs) if m is not None]
        if medians:
            typical.append(statistics.fmean(medians))
    return len(typical) > 1 and max(typical) > LOG_RATIO * min(typical)


def _charts(comparison: cmp.Comparison) -> list[dict]:
    recorded = {k for row in comparison.rows for run in row.runs for record in run.metrics for k in record}
    return [{"key": key, "title": title, "percent": percent,
             "log": key == "layer_speed" or (key in COSTS and _log_axis(comparison, key))}
            for key, title, percent in CHARTS if key in recorded]


def _sort_value(header: str, cell: str, machine: dict) -> float | str | None:
    """What clicking a header sorts a cell by: its number where it starts with one (97.83,
    -0.12, 0.25), the seconds for wall time, its text otherwise; None (always last) for `-`."""
    if cell in ("-", ""):
        return None
    if header == "wall time":
        return machine.get("wall_time_s")
    head = cell.split(" ")[0].lstrip("+±")
    try:
        number = float(head)
    except ValueError:
        return cell.lower()
    return number if math.isfinite(number) else cell.lower()


def _stop_reason(record: RunRecord) -> str | None:
    reason = (record.summary or {}).get("stop_reason")
    return None if reason is None else STOP_REASONS.get(reason, str(reason))


def _run_data(record: RunRecord, row: int) -> dict:
    return {
        "id": record.id, "name": record.name, "path": str(record.run.path), "row": row,
        "status": str(record.status), "stop_reason": _stop_reason(record),
        "best_epoch": record.values.get("best_epoch"),
        "note": record.notes.note, "tags": list(record.notes.tags),
        "config": {k: cmp.config_cell(v, k) for k, v in record.flat.items()},
        "env": record.run.read_env(),
        "metrics": _columns(record.metrics),
    }


def _png(gray: np.ndarray) -> bytes:
    """An 8-bit greyscale PNG of `gray` (H, W) uint8: zlib and a few chunks, no image library."""
    h, w = gray.shape

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + bytes(line) for line in np.ascontiguousarray(gray, dtype=np.uint8))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def _data_uri(gray01: np.ndarray) -> str:
    """Values in [0, 1], dark for 1 (ink on paper, as the book's figures), as a data: URI."""
    pixels = np.round(255 * (1 - np.clip(gray01, 0, 1))).astype(np.uint8)
    return "data:image/png;base64," + base64.b64encode(_png(pixels)).decode("ascii")


def _has_conv(record: RunRecord) -> bool:
    layers = (record.config.get("model") or {}).get("layers") or []
    return any(isinstance(layer, dict) and layer.get("type") == "conv" for layer in layers)


def _filters(record: RunRecord, checkpoint: str) -> dict | None:
    """The first conv layer's filters (mean over input channels) as one mosaic PNG, from the
    `checkpoint` (else the other) checkpoint; None for a run without a conv layer or either
    checkpoint. Reading one .npz takes milliseconds: every such run gets its filters."""
    if not _has_conv(record):
        return None
    from nnexp.plots import conv_weights, mosaic, normalise_tiles  # lazily: plots imports matplotlib

    for which in dict.fromkeys((checkpoint, "last" if checkpoint == "best" else "best")):
        if not record.run.checkpoint_path(which).is_file():
            continue
        try:
            layer, weights = conv_weights(record.run.path, None, which)
        except (UserError, RunDirError, OSError, ValueError):
            continue
        image, _ = mosaic(normalise_tiles(np.asarray(weights.mean(axis=1), dtype=float)))
        f, c, k, _ = weights.shape
        return {"src": _data_uri(image), "caption": f"layer {layer}: {f} filters {k}x{k}"
                + (" (mean over channels)" if c > 1 else "") + f", {which} checkpoint"}
    return None


def _ensemble(comparison: cmp.Comparison, opts: Options, cache: dict | None) -> dict:
    """The vote of every run shown, and the test images it gets wrong (first ERRORS_SHOWN).
    Keyed on the checkpoints' modification times, so a watcher votes again only when one changed."""
    from nnexp.ensemble import run_ensemble  # lazily: loads every network and the data set

    paths = [r.run.path for row in comparison.rows for r in row.runs]
    key = tuple((str(p), _mtime(Run(p).checkpoint_path(opts.checkpoint))) for p in paths)
    if cache is not None and cache.get("key") == key:
        return cache["value"]
    result, _ = run_ensemble([str(p) for p in paths], checkpoint=opts.checkpoint, data_dir=opts.data_dir)
    wrong = result.wrong[:ERRORS_SHOWN]
    test = result.test.test
    images = np.asarray(test.x[wrong], dtype=float).reshape(len(wrong), *np.shape(test.x)[-2:])
    overlap = result.against_book()  # on MNIST's test set: the book's vote's 33 wrong digits beside ours
    book = result.wrong_in_book()
    value = {
        "members": [{"name": m.name, "test": m.accuracy, "validation": m.validation_accuracy, "errors": m.errors}
                    for m in result.members],
        "accuracy": result.accuracy, "validation_accuracy": result.validation_accuracy,
        "errors": result.errors, "n": result.n, "checkpoint": opts.checkpoint,
        "wrong": [{"src": _data_uri(img), "index": int(i), "true": int(t), "predicted": int(p),
                   "book": book is not None and bool(book[k])}
                  for k, (img, i, t, p) in enumerate(zip(images, wrong, test.y[wrong], result.predictions[wrong]))],
        "book": None if overlap is None else {"line": book_overlap_line(overlap), "shared": overlap.shared},
    }
    if cache is not None:
        cache.update(key=key, value=value)
    return value


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def is_live(records: list[RunRecord]) -> bool:
    """Whether any run, or a sweep they are points of, is being trained now (its lock is
    held): only then can a run's files still change by themselves. Completed, diverged and
    failed runs never do; interrupted and killed ones wait for `nnexp resume`."""
    sweeps = {r.run.path.parent for r in records if r.sweep}
    return any(r.run.is_locked() for r in records) or any(Run(s).is_locked() for s in sweeps)


def _search_value(value: Any, kind: str) -> Any:
    """A sampled value as its chart's x: a number on a numeric axis, a label on a choice's."""
    if kind == "choice":
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return value if is_finite_number(value) else None


def _searches(records: list[RunRecord]) -> list[dict]:
    """Per search sweep whose trials are among `records` (in the order they first appear):
    its trials in the order the search proposed them (t001 = 1), each with its status, best
    validation accuracy (the objective a search ranks by; test accuracy never chooses) and
    sampled values, the running best, and one chart per sampled key. A sweep whose manifest
    cannot be read is left out here (compare has warned about it where it matters)."""
    by_sweep: dict[Path, dict[str, RunRecord]] = {}
    for record in records:
        if record.sweep:
            by_sweep.setdefault(record.run.path.parent, {})[record.run.path.name] = record
    out = []
    for path, mine in by_sweep.items():
        try:
            plan, _ = read_manifest(path / MANIFEST)
            samples = [searching.parse_sample(s) for s in plan.spec.get("samples", [])]
        except (RunDirError, UserError):
            continue
        if plan.kind != "search" or not samples:
            continue
        trials, best = [], None
        for number, point in enumerate(plan.points, start=1):
            record = mine.get(point.id)
            if record is None:  # not started, or left out by --where / --status / --last
                continue
            value = record.values.get("best_validation_accuracy")
            value = value if is_finite_number(value) else None
            if value is not None and (best is None or value > best):
                best = value
            # the manifest's overrides are the draw (an Optuna sampler writes its proposal there
            # before the trial runs); the run's config holds it where the manifest does not
            values = {s.key: point.overrides.get(s.key, record.flat.get(s.key)) for s in samples}
            trials.append({"id": point.id, "run": record.id, "number": number, "status": str(record.status),
                           "value": value, "best": best,
                           "values": {k: cmp.config_cell(v, k) for k, v in values.items()},
                           "x": {s.key: _search_value(values[s.key], s.kind) for s in samples}})
        if not trials:
            continue
        params = [{"key": s.key, "kind": s.kind, "log": s.kind == "log-uniform",
                   "categories": [_search_value(a, "choice") for a in s.args] if s.kind == "choice" else None}
                  for s in samples]
        out.append({"name": path.name, "trials": trials, "params": params})
    return out


def gather(opts: Options, cache: dict | None = None) -> tuple[dict, cmp.Comparison, list[str], bool]:
    """(the page's data, the comparison, warnings, live): everything the page shows."""
    comparison, warnings = cmp.compare(opts.patterns, sort=opts.sort, descending=opts.descending,
                                       group=opts.group, where=opts.where, status=opts.status, last=opts.last,
                                       runs_dir=opts.runs_dir)
    headers, cells = human_table(comparison)
    rows, runs = [], []
    for i, (row, texts) in enumerate(zip(comparison.rows, cells)):
        machine = cmp.machine_row(row, comparison)
        first = len(runs)
        for record in row.runs:
            runs.append(_run_data(record, i))
            filters = _filters(record, opts.checkpoint)
            if filters is not None:
                runs[-1]["filters"] = filters
        rows.append({"id": row.id, "label": row.display, "status": str(row.status), "grouped": row.grouped,
                     "runs": list(range(first, len(runs))), "cells": texts,
                     "sort": [_sort_value(h, c, machine) for h, c in zip(headers, texts)]})
    records = [r for row in comparison.rows for r in row.runs]
    left = _left_aligned(comparison)  # text columns, as markdown aligns them
    data = {"headers": headers, "text_columns": [i for i, h in enumerate(headers) if h in left], "rows": rows, "runs": runs, "charts": _charts(comparison),
            "warnings": warnings}
    data["searches"] = _searches(records)
    if opts.ensemble:
        data["ensemble"] = _ensemble(comparison, opts, cache)
    return data, comparison, warnings, is_live(records)


# --- the page -------------------------------------------------------------------------------------


def _json_for_script(value: Any) -> str:
    """JSON safe inside <script>: every `<` escaped (`</script>` or `<!--` in a note would end or
    confuse the element; `<` can only be inside a string, where \\u003c means the same)."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c")


def _table(data: dict) -> str:
    esc = html.escape
    left = ' class="text"'  # text columns: left-aligned, folded between words
    head = "".join(f'<th data-col="{i}"{left * (i in data["text_columns"])} title="click to sort">{esc(h)}</th>'
                   for i, h in enumerate(data["headers"]))
    body = []
    for i, row in enumerate(data["rows"]):
        cells = []
        for j, (text, key) in enumerate(zip(row["cells"], row["sort"])):
            sort = esc(json.dumps(key, ensure_ascii=False), quote=True)
            content = esc(text)
            if j == 0:  # the label leads to the row's (first) run's panel
                content = f'<a href="#run-{row["runs"][0]}">{content}</a>'
            if j in data["text_columns"]:  # folded at the div's width, the table as wide as it needs
                cells.append(f'<td{left} data-sort="{sort}"><div>{content}</div></td>')
            else:
                cells.append(f'<td data-sort="{sort}">{content}</td>')
        body.append(f'<tr data-row="{i}" data-status="{esc(row["status"])}">{"".join(cells)}</tr>')
    return (f'<div class="tablebox"><table id="compare"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _run_panels(data: dict) -> str:
    esc = html.escape
    first = data["runs"][0]["id"] if data["runs"] else ""
    options = "".join(f'<option value="{k}"{" selected" * (run["id"] == first)}>{esc(run["id"])}</option>'
                      for k, run in enumerate(data["runs"]))
    panels = []
    for k, run in enumerate(data["runs"]):
        label = data["rows"][run["row"]]["label"]
        tags = "".join(f'<span class="tag">{esc(t)}</span>' for t in run["tags"])
        stop = f' · {esc(run["stop_reason"])}' if run["stop_reason"] else ""
        note = f'<p class="note">{esc(run["note"])}</p>' if run["note"] else ""
        config = "".join(f'<tr data-key="{esc(key, quote=True)}"><td>{esc(key)}</td><td>{esc(value)}</td></tr>'
                         for key, value in run["config"].items())
        env = run.get("env")
        filters = ""
        if run.get("filters"):
            f = run["filters"]
            filters = (f'<h4>filters</h4><figure class="filters"><img alt="filters" src="{f["src"]}">'
                       f'<figcaption>{esc(f["caption"])}</figcaption></figure>')
        panels.append(
            f'<details class="run" id="run-{k}" data-run="{k}"><summary><b>{esc(run["id"])}</b> '
            f'<span class="label">{esc(label)}</span> · <span class="status s-{esc(run["status"])}">'
            f'{esc(run["status"])}</span>{stop} {tags}</summary>{note}'
            f'<div class="cols"><div><h4>config <small>(highlighted: differs from the chosen run)</small></h4>'
            f'<table class="config">{config}</table></div>'
            f'<div><h4>environment</h4><pre>{esc(json.dumps(env or {}, indent=2, ensure_ascii=False))}</pre>'
            f'<p class="path">{esc(run["path"])}</p>{filters}</div></div></details>')
    return (f'<p>Config differences against <select id="base">{options}</select></p>' + "".join(panels))


def _ensemble_section(data: dict) -> str:
    e = data.get("ensemble")
    if not e:
        return ""
    esc = html.escape
    members = "".join(f'<tr><td>{esc(m["name"])}</td><td>{100 * m["validation"]:.2f}</td>'
                      f'<td>{100 * m["test"]:.2f}</td><td>{m["errors"]}</td></tr>' for m in e["members"])
    also = "; wrong in the book's vote too"
    tiles = "".join(f'<figure class="digit{" book" if w.get("book") else ""}" title="test image {w["index"]}: '
                    f'true {w["true"]}, vote {w["predicted"]}{also if w.get("book") else ""}">'
                    f'<img alt="{w["true"]}" src="{w["src"]}"><span class="true">{w["true"]}</span>'
                    f'<span class="predicted">{w["predicted"]}</span></figure>' for w in e["wrong"])
    shown = f" (the first {len(e['wrong'])})" if len(e["wrong"]) < e["errors"] else ""
    line = e["book"]["line"] if e.get("book") else ""  # on MNIST's test set: against the book's 33
    book = f" {esc(line[:1].upper() + line[1:])}; framed in orange where shown." if line else ""
    return (f'<section id="ensemble"><h2>The vote</h2><p>A majority vote of {len(e["members"])} networks '
            f'({esc(e["checkpoint"])} checkpoints): validation {100 * e["validation_accuracy"]:.2f}%, test '
            f'{100 * e["accuracy"]:.2f}%, {e["errors"]} of {e["n"]:,} test images wrong{shown}. '
            f'Blue, top right: the true label; red, bottom right: the vote.{book}</p>'
            f'<table class="members"><thead><tr><th>member</th><th>val %</th><th>test %</th><th>errors</th></tr>'
            f'</thead><tbody>{members}</tbody></table><div class="errors">{tiles}</div></section>')


def _search_sections(data: dict) -> str:
    """A section per search, its charts drawn by the script from data["searches"]."""
    esc = html.escape
    return "".join(
        f'<section class="search" id="search-{i}"><h2>Search {esc(s["name"])}</h2><p>{len(s["trials"])} trials. '
        f'First each trial\'s best validation accuracy (the objective) by trial number, and the best so far; '
        f'a cross is a pruned trial, a triangle a diverged one. Then each sampled value against the objective. '
        f'Hover for the trial, its status and its values.</p><div class="charts"></div></section>'
        for i, s in enumerate(data.get("searches", [])))


def page(data: dict, title: str, watch: float | None, stamp: str = "") -> str:
    """The HTML document: styles, the table, the panels, the data, Plotly and the script."""
    esc = html.escape
    data = {**data, "watch": watch, "stamp": stamp, "written": datetime.now().strftime("%Y-%m-%d %H:%M:%S")}
    live = (f'<p class="live">Live while runs train: this page reloads itself when they change (checked every '
            f'{watch:g} s; changed {data["written"]}<span id="checked"></span>).</p>'
            if watch else f'<p class="written">Written {data["written"]}.</p>')
    warnings = "".join(f"<li>{esc(w)}</li>" for w in data["warnings"])
    return TEMPLATE.format(
        title=esc(title), live=live, warnings=f'<ul class="warnings">{warnings}</ul>' if warnings else "",
        table=_table(data), runs=_run_panels(data), ensemble=_ensemble_section(data),
        searches=_search_sections(data),
        data=_json_for_script(data), plotly=plotly_js_packed(), loader=LOADER, script=SCRIPT, style=STYLE)


def build(opts: Options, *, watch: float | None = None, cache: dict | None = None) -> Report:
    """The report as it stands now: its HTML, the comparison, warnings and whether it is live."""
    data, comparison, warnings, live = gather(opts, cache)
    title = "nnexp report: " + " ".join(map(str, opts.patterns))
    watch = watch if live else None
    stamp = hashlib.sha256(_json_for_script({**data, "title": title, "watch": watch}).encode()).hexdigest()[:16]
    return Report(page(data, title, watch, stamp), comparison, warnings, live, stamp)


def beacon_path(out: Path) -> Path:
    """The watcher's beacon beside the page (`report.html` -> `report.html.live.js`): a few bytes
    of script that an open live page loads every half second. A page cannot read files beside
    it when opened from disk, but it can run them as scripts; the beacon tells it what the file
    holds now, so the page reloads only when there is something new to show."""
    return out.with_name(out.name + ".live.js")


def write_beacon(out: Path, stamp: str) -> None:
    checked = datetime.now().strftime("%H:%M:%S")
    atomic_write_text(beacon_path(out), f"window.nnexpBeacon && nnexpBeacon({json.dumps(stamp)}, {json.dumps(checked)});\n")


def check_output(out: str | Path) -> Path:
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise UserError(f"{out}: the report is an HTML file; give a file name ending in .html")
    if out.is_dir():
        raise UserError(f"{out} is a directory; give the report's file name, e.g. {out / 'report.html'}")
    return out


def write(opts: Options, out: str | Path, *, watch: float | None = None, cache: dict | None = None) -> Report:
    """Build the report and write it to `out` atomically (a reader sees the old file or the new)."""
    out = check_output(out)
    report = build(opts, watch=watch, cache=cache)
    _write_page(out, report)
    return report


def _write_page(out: Path, report: Report) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, report.html)


def watch(opts: Options, out: str | Path, every: float, on_write: Callable[[Report, int], None] | None = None,
          sleep: Callable[[float], None] = time.sleep) -> Report:
    """Check every `every` seconds while any run or sweep is being trained, writing the page
    when what it shows has changed and the beacon (`beacon_path`) every time; once nothing
    trains, write the page without its live part and stop. Returns the last report. Ctrl-C (a
    KeyboardInterrupt) also ends with a final write, so the file left is complete and still.
    The final page's stamp is the beacon's last word (open pages reload into that file); the
    beacon is then removed, and a page that finds it gone reloads once, into the same file."""
    out = check_output(out)
    cache: dict = {}
    count, shown, was_live = 0, None, False

    def show(report: Report) -> None:
        nonlocal count, shown
        if report.stamp != shown:  # the page first, then the beacon naming it
            _write_page(out, report)
            shown, count = report.stamp, count + 1
            if on_write is not None:
                on_write(report, count)
        if was_live:
            write_beacon(out, report.stamp)

    try:
        while True:
            started = time.monotonic()
            report = build(opts, watch=every, cache=cache)
            was_live = was_live or report.live
            show(report)
            if not report.live:  # written without its live part already
                break
            sleep(max(every - (time.monotonic() - started), 0.1 * every))  # a check every `every` seconds
    except KeyboardInterrupt:
        try:
            report = build(opts, watch=None, cache=cache)
            show(report)
        except KeyboardInterrupt:  # a second Ctrl-C: the last complete file stays
            beacon_path(out).unlink(missing_ok=True)
            raise
        report.live, report.interrupted = False, True
    if was_live:
        try:
            sleep(BEACON_GRACE)  # two of an open page's checks: it sees the final stamp
        except KeyboardInterrupt:
            pass
        finally:
            beacon_path(out).unlink(missing_ok=True)
    return report


BEACON_GRACE = 1.0  # seconds the final beacon stays: two of a page's checks


# --- the template ------------------------------------------------------------------------------

STYLE = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:16px 24px;color:#222;background:#fff}
h1{font-size:20px;margin:0 0 4px}h2{font-size:17px;margin:24px 0 8px}h4{margin:8px 0 4px}
.live{color:#a15c00}.written{color:#666;margin:0}.warnings{color:#a15c00}
#filter{width:320px;padding:4px 6px;margin:6px 0}
table{border-collapse:collapse}#compare{font-size:13px;margin-bottom:8px}
.tablebox{overflow-x:auto;max-width:100%}
#compare th,#compare td{padding:3px 8px;border-bottom:1px solid #e4e4e4;text-align:right;vertical-align:top}
#compare td,#compare th{white-space:nowrap}
#compare th{cursor:pointer;background:#f4f4f4;position:sticky;top:0;user-select:none}
#compare th.asc::after{content:" \\25B2"}#compare th.desc::after{content:" \\25BC"}
#compare td:first-child,#compare th:first-child{text-align:left;min-width:180px;max-width:360px}
#compare{width:max-content}#compare .text{text-align:left}#compare td.text{white-space:normal}
#compare td.text>div{max-width:36em;overflow-wrap:break-word}
#compare tr.off td:first-child a{color:#999;text-decoration:line-through}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:8px}
.chart{height:360px;border:1px solid #eee}.chart.wide{grid-column:1/-1;height:440px}
details.run{border:1px solid #ddd;border-radius:4px;margin:4px 0;padding:4px 8px}
details.run summary{cursor:pointer}.label{color:#555}.tag{background:#e8eefc;border-radius:3px;padding:0 5px;margin-left:4px;font-size:12px}
.note{white-space:pre-wrap;background:#fafaf0;padding:4px 8px}
.cols{display:flex;gap:24px;flex-wrap:wrap}.cols>div{flex:1 1 420px;min-width:0}
table.config td{padding:1px 8px;font:12px ui-monospace,monospace;border-bottom:1px solid #f0f0f0}
table.config tr.diff td{background:#fff1b8;font-weight:bold}
pre{font-size:12px;background:#f7f7f7;padding:6px;overflow:auto;max-height:320px}.path{color:#666;font-size:12px}
.s-completed{color:#1a7f37}.s-running{color:#a15c00}.s-diverged,.s-failed{color:#c62828}
figure{margin:4px}.filters img{image-rendering:pixelated;width:min(100%,480px)}
.errors{display:flex;flex-wrap:wrap;gap:2px}.digit{position:relative;width:56px;height:56px;margin:0}
.digit img{width:56px;height:56px;image-rendering:pixelated;border:1px solid #ddd}
.digit.book img{outline:2px solid #ff7f0e}
.digit span{position:absolute;right:3px;font:bold 12px sans-serif}.digit .true{top:1px;color:#1f5fbf}
.digit .predicted{bottom:1px;color:#c62828}
table.members td,table.members th{padding:2px 8px;text-align:right}
#plot-error{color:#c62828}
"""

TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>{title}</title>
<style>{style}</style>
<script type="application/octet-stream" id="plotly-gz">{plotly}</script>
<script>{loader}</script></head>
<body>
<h1>{title}</h1>
{live}{warnings}
<h2>Runs</h2>
<input id="filter" type="search" placeholder="filter rows: type any part of a cell" autocomplete="off">
{table}
<h2>Learning curves</h2>
<p>Hover for run, epoch and value; click a legend entry to hide or show a row in every chart. A seed group is its
mean with a min–max band; the star marks the best-validation epoch.</p>
<p id="plot-error" hidden></p>
<div class="charts" id="charts"></div>
{searches}{ensemble}
<h2>Each run</h2>
{runs}
<script type="application/json" id="nnexp-data">{data}</script>
<script>{script}</script>
</body></html>
"""

# Plotly is unpacked and compiled while the browser parses the rest of the page: started here,
# in <head>, its start-up (the page's longest step) overlaps the body's parsing and the table.
LOADER = r"""
window.nnexpPlotly = (async function () {
  const b64 = document.getElementById("plotly-gz").textContent;
  const bin = atob(b64), bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  // run as a script of its own (a blob: URL, local like the page) rather than as inline text:
  // the browser compiles a script it fetches off the main thread, ~0.2 s sooner here
  const code = await new Response(stream).blob();
  const s = document.createElement("script");
  s.src = URL.createObjectURL(new Blob([code], {type: "text/javascript"}));
  await new Promise((done, failed) => { s.onload = done; s.onerror = failed; document.head.appendChild(s); });
})();
"""

SCRIPT = r"""
(function () {
"use strict";
const D = JSON.parse(document.getElementById("nnexp-data").textContent);
const STATE = "nnexp-report:" + location.pathname;
let saved = null;
try { saved = JSON.parse(sessionStorage.getItem(STATE) || "null"); sessionStorage.removeItem(STATE); } catch (e) {}
const hidden = new Set(saved ? saved.hidden : []);  // rows' ids, kept across a watcher's reloads
const charts = [];

// --- the table: click a header to sort, type to filter --------------------------------------
const table = document.getElementById("compare");
const tbody = table.tBodies[0];
let sorted = null;  // [column, descending]
function sortBy(col, desc) {
  const rows = Array.from(tbody.rows);
  const key = r => JSON.parse(r.cells[col].dataset.sort);
  rows.sort((a, b) => {
    const x = key(a), y = key(b);
    if (x === null || y === null) return (x === null) - (y === null);  // no value: last either way
    let c = (typeof x === "number" && typeof y === "number") ? x - y : String(x).localeCompare(String(y));
    return desc ? -c : c;
  });
  rows.forEach(r => tbody.appendChild(r));
  table.querySelectorAll("th").forEach(th => th.classList.remove("asc", "desc"));
  table.tHead.rows[0].cells[col].classList.add(desc ? "desc" : "asc");
  sorted = [col, desc];
}
table.tHead.addEventListener("click", ev => {
  const th = ev.target.closest("th");
  if (!th) return;
  const col = +th.dataset.col;
  const numeric = Array.from(tbody.rows).some(r => typeof JSON.parse(r.cells[col].dataset.sort) === "number");
  const first = numeric && /%|±/.test(th.textContent) ? true : false;  // accuracies: best first, as compare
  sortBy(col, sorted && sorted[0] === col ? !sorted[1] : first);
});
const filter = document.getElementById("filter");
function applyFilter() {
  const words = filter.value.toLowerCase().trim().split(/\s+/).filter(Boolean);
  for (const r of tbody.rows) {
    const text = r.textContent.toLowerCase();
    r.hidden = !words.every(w => text.includes(w));
  }
}
filter.addEventListener("input", applyFilter);

// --- config differences against a chosen run ------------------------------------------------
const base = document.getElementById("base");
function highlight() {
  const ref = D.runs[+base.value].config;
  document.querySelectorAll("details.run").forEach(d => {
    const mine = D.runs[+d.dataset.run].config;
    d.querySelectorAll("tr[data-key]").forEach(tr => {
      const k = tr.dataset.key;
      tr.classList.toggle("diff", !(k in ref) || ref[k] !== mine[k]);
    });
  });
}
if (base) base.addEventListener("change", highlight);

// --- state a watcher's reload keeps -----------------------------------------------------------
if (saved) {
  if (saved.filter) { filter.value = saved.filter; applyFilter(); }
  if (saved.sort) sortBy(saved.sort[0], saved.sort[1]);
  if (base && saved.base !== undefined && saved.base < D.runs.length) base.value = saved.base;
  (saved.open || []).forEach(id => { const d = document.getElementById(id); if (d) d.open = true; });
}
if (base) highlight();
function markRows() {
  for (const r of tbody.rows) r.classList.toggle("off", hidden.has(D.rows[+r.dataset.row].id));
}
markRows();
function reload(beacon) {  // keeping what the reader changed
  try {
    sessionStorage.setItem(STATE, JSON.stringify({
      beacon: beacon, hidden: [...hidden], scroll: [scrollX, scrollY], filter: filter.value, sort: sorted,
      base: base ? +base.value : undefined,
      open: Array.from(document.querySelectorAll("details.run[open]")).map(d => d.id)}));
  } catch (e) {}
  location.reload();
}
function watchBeacon() {
  // while watched: run the watcher's beacon (a script beside the page: a page opened from disk
  // may run files beside it, not read them) twice a second. It names what the file holds now;
  // the page reloads when that is not what it shows. Gone, the watcher has stopped: the file is
  // final, and the page reloads into it once.
  if (!D.watch) return;
  const name = decodeURIComponent(location.pathname.split("/").pop() || "index.html") + ".live.js";
  const checked = document.getElementById("checked"), GONE = STATE + ":gone";
  window.nnexpBeacon = (stamp, at) => {
    // once per stamp: should the file not be the one the beacon names, no reloading in a loop
    if (stamp !== D.stamp && !(saved && saved.beacon === stamp)) reload(stamp);
    else if (checked) checked.textContent = ", checked " + at;
  };
  let n = 0;
  (function next() {
    const s = document.createElement("script");
    s.src = encodeURIComponent(name) + "?" + (++n);  // a new address each time: never a cached copy
    s.onload = () => { s.remove(); setTimeout(next, 500); };
    s.onerror = () => {
      s.remove();
      let again = true;
      try { again = sessionStorage.getItem(GONE) !== D.stamp; sessionStorage.setItem(GONE, D.stamp); } catch (e) {}
      if (again) reload();
      else if (checked) checked.textContent = "; the watcher has stopped";
    };
    document.head.appendChild(s);
  })();
}

// --- the charts --------------------------------------------------------------------------------
function colour(i, alpha) {  // well-separated hues for any number of rows
  return "hsla(" + Math.round((i * 137.508) % 360) + ",70%," + (i % 2 ? "38%" : "48%") + "," + alpha + ")";
}
function aggregate(row, get) {  // per epoch: mean, min, max and n over the row's runs
  const by = new Map();
  for (const k of row.runs) {
    const m = D.runs[k].metrics, epochs = m.epoch || [];
    epochs.forEach((e, i) => {
      const v = get(m, i);
      if (typeof v === "number" && isFinite(v)) { if (!by.has(e)) by.set(e, []); by.get(e).push(v); }
    });
  }
  const x = [...by.keys()].sort((a, b) => a - b);
  const vals = x.map(e => by.get(e));
  return {x: x, mean: vals.map(v => v.reduce((a, b) => a + b, 0) / v.length),
          min: vals.map(v => Math.min(...v)), max: vals.map(v => Math.max(...v)), n: vals.map(v => v.length)};
}
function bestEpoch(row) {  // the run's best-validation epoch; a group's: its mean curve's (ties later)
  if (row.runs.length === 1) return D.runs[row.runs[0]].best_epoch;
  const a = aggregate(row, (m, i) => (m.validation_accuracy || [])[i]);
  let best = null, at = null;
  a.x.forEach((e, i) => { if (best === null || a.mean[i] >= best) { best = a.mean[i]; at = e; } });
  return at;
}
function traces(chart, first) {
  // one curve per row (a group's mean, over its min-max band), and one trace of stars: the
  // rows' best-validation epochs (a marker per point of every curve would cost thousands of nodes)
  const out = [], stars = [], scale = chart.percent ? 100 : 1, fmt = chart.percent ? ":.2f" : ":.4g";
  const unit = chart.percent ? "%" : "", what = chart.title.replace(/ \(.*\)$/, "");
  // dots on every curve where all are short (a one-epoch run still shows), else on none
  const dots = Math.max(0, ...D.runs.map(run => (run.metrics.epoch || []).length)) < 30;
  D.rows.forEach((row, r) => {
    const best = bestEpoch(row);
    const layers = chart.key === "layer_speed" ? Math.max(0, ...row.runs.map(k =>
      Math.max(0, ...(D.runs[k].metrics.layer_speed || []).map(s => Array.isArray(s) ? s.length : 0)))) : 1;
    for (let L = 0; L < layers; L++) {
      const get = chart.key === "layer_speed"
        ? (m, i) => { const s = (m.layer_speed || [])[i]; const v = Array.isArray(s) ? s[L] : null; return v > 0 ? v : null; }
        : (m, i) => (m[chart.key] || [])[i];
      const a = aggregate(row, get);
      if (!a.x.length) continue;
      const name = row.label + (chart.key === "layer_speed" ? " · hidden " + (L + 1) : "");
      const vis = hidden.has(row.id) ? "legendonly" : true;
      const group = row.runs.length > 1;
      if (group) {
        out.push({x: a.x.concat(a.x.slice().reverse()), y: a.max.concat(a.min.slice().reverse()).map(v => v * scale),
                  fill: "toself", fillcolor: colour(r, 0.16), line: {width: 0}, hoverinfo: "skip", showlegend: false,
                  legendgroup: row.id, visible: vis, type: "scatter", mode: "lines", meta: {row: r, kind: "band"}});
      }
      const at = chart.key === "layer_speed" ? -1 : a.x.indexOf(best);
      if (at >= 0) stars.push({row: r, x: a.x[at], y: a.mean[at] * scale, name: name, colour: colour(r, 1),
                               what: group ? "best mean validation" : "best validation"});
      out.push({
        type: "scatter", mode: dots ? "lines+markers" : "lines", x: a.x, y: a.mean.map(v => v * scale),
        name: name, legendgroup: row.id, showlegend: first && L === 0, visible: vis,
        line: {color: colour(r, 1), width: 1.8, dash: ["solid", "dash", "dot", "dashdot"][L % 4]},
        marker: {color: colour(r, 1), size: 5},
        customdata: group ? a.x.map((e, i) => [a.min[i] * scale, a.max[i] * scale, a.n[i]]) : undefined,
        hovertemplate: "<b>%{fullData.name}</b><br>epoch %{x}<br>" + what + " %{y" + fmt + "}" + unit +
          (group ? "<br>mean of %{customdata[2]}, min–max %{customdata[0]" + fmt + "}–%{customdata[1]" + fmt + "}" + unit : "") +
          "<extra></extra>",
        meta: {row: r, kind: chart.key === "layer_speed" ? "speed" : "curve"}});
    }
  });
  if (stars.length) {
    out.push(Object.assign({type: "scatter", mode: "markers", name: "best validation epoch", showlegend: false,
      hovertemplate: "<b>%{text}</b><br>epoch %{x}: %{customdata}<br>" + what + " %{y" + fmt + "}" + unit + "<extra></extra>",
      meta: {kind: "best", stars: stars}}, starPoints(stars)));
  }
  return out;
}
function starPoints(stars) {  // the stars of the rows shown
  const shown = stars.filter(s => !hidden.has(D.rows[s.row].id));
  return {x: shown.map(s => s.x), y: shown.map(s => s.y), text: shown.map(s => s.name), customdata: shown.map(s => s.what),
          marker: {symbol: "star", size: 13, color: shown.map(s => s.colour), line: {width: 0.5, color: "#333"}}};
}
function setHidden(id, hide) {
  if (hide) hidden.add(id); else hidden.delete(id);
  for (const gd of charts) {
    const idx = [];
    gd.data.forEach((t, j) => { if (t.legendgroup === id) idx.push(j); });
    if (idx.length) Plotly.restyle(gd, {visible: hide ? "legendonly" : true}, idx);
    const s = gd.data.findIndex(t => t.meta && t.meta.kind === "best");
    if (s >= 0) {
      const p = starPoints(gd.data[s].meta.stars);
      Plotly.restyle(gd, {x: [p.x], y: [p.y], text: [p.text], customdata: [p.customdata], marker: [p.marker]}, [s]);
    }
  }
  markRows();
}
// --- a search's charts: the optimisation history and each sampled value against the objective ---
const SYMBOL = {completed: "circle", pruned: "x", diverged: "triangle-up"};
function drawSearches() {
  return (D.searches || []).flatMap((s, i) => {
    const box = document.querySelector("#search-" + i + " .charts");
    const shown = s.trials.filter(t => t.value !== null);  // a trial with no validation yet has no point
    const esc = v => String(v).replace(/&/g, "&amp;").replace(/</g, "&lt;");  // hover text is HTML to Plotly
    const hover = t => "<b>" + esc(t.id) + "</b> · " + t.status +
      "<br>best validation " + (100 * t.value).toFixed(2) + "%<br>" +
      Object.entries(t.values).map(([k, v]) => esc(k) + " = " + esc(v)).join("<br>");
    const markers = ts => ({symbol: ts.map(t => SYMBOL[t.status] || "square"), size: 9,
      color: ts.map(t => t.status === "completed" ? "hsla(215,70%,45%,0.85)" : "hsla(0,70%,50%,0.85)")});
    const plot = (kind, key, traces, xaxis, title) => {
      const div = document.createElement("div");
      div.className = "chart" + (kind === "history" ? " wide" : "");
      div.dataset.kind = kind;
      if (key) div.dataset.key = key;
      box.appendChild(div);
      return Plotly.newPlot(div, traces, {
        title: {text: title, font: {size: 14}}, margin: {l: 60, r: 10, t: 36, b: 40}, hovermode: "closest",
        xaxis: xaxis, yaxis: {title: {text: "best validation accuracy (%)"}}, showlegend: kind === "history",
        legend: {font: {size: 11}}, uirevision: "keep"}, {displaylogo: false, responsive: true});
    };
    const best = s.trials.filter(t => t.best !== null);
    const history = plot("history", null, [
      {type: "scatter", mode: "lines", name: "best so far", line: {shape: "hv", color: "#1a7f37", width: 1.8},
       x: best.map(t => t.number), y: best.map(t => 100 * t.best),
       hovertemplate: "best so far %{y:.2f}% (after trial %{x})<extra></extra>", meta: {kind: "running best"}},
      {type: "scatter", mode: "markers", name: "trials", x: shown.map(t => t.number), y: shown.map(t => 100 * t.value),
       text: shown.map(hover), hovertemplate: "%{text}<extra></extra>", marker: markers(shown), meta: {kind: "trials"}}],
      {title: {text: "trial"}, tickformat: "d", dtick: s.trials[s.trials.length - 1].number <= 20 ? 1 : undefined},
      "optimisation history: " + s.name);
    const params = s.params.map(p => {
      const xaxis = {title: {text: p.key}, type: p.log ? "log" : p.categories ? "category" : "linear",
                     exponentformat: "power"};
      if (p.categories) Object.assign(xaxis, {categoryorder: "array", categoryarray: p.categories});
      const ts = shown.filter(t => t.x[p.key] !== null);
      return plot("param", p.key, [{type: "scatter", mode: "markers", name: p.key, x: ts.map(t => t.x[p.key]),
        y: ts.map(t => 100 * t.value), text: ts.map(hover), hovertemplate: "%{text}<extra></extra>", marker: markers(ts),
        meta: {kind: "param", key: p.key}}], xaxis, p.key + " (" + p.kind + ") against the objective");
    });
    return [history].concat(params);
  });
}
async function draw() {
  await window.nnexpPlotly;
  window.nnexpPlotlyAt = performance.now();  // with nnexpDrawnAt: where a page's load time goes
  const box = document.getElementById("charts");
  const longest = Math.max(0, ...D.runs.map(run => Math.max(0, ...(run.metrics.epoch || []))));
  const drawn = D.charts.map((chart, c) => {
    const div = document.createElement("div");
    div.className = "chart" + (c === 0 ? " wide" : "");
    div.dataset.key = chart.key;
    box.appendChild(div);
    charts.push(div);
    const layout = {
      title: {text: chart.title, font: {size: 14}}, margin: {l: 60, r: 10, t: 36, b: 40}, hovermode: "closest",
      // epochs are whole numbers: a tick per epoch on short runs, auto (whole) ticks on long ones
      xaxis: {title: {text: "epoch"}, rangemode: "tozero", tickformat: "d", dtick: longest <= 10 ? 1 : undefined},
      yaxis: {type: chart.log ? "log" : "linear", exponentformat: "power"},
      showlegend: c === 0, legend: {font: {size: 11}}, uirevision: "keep"};
    return Plotly.newPlot(div, traces(chart, c === 0), layout, {displaylogo: false, responsive: true}).then(gd => {
      gd.on("plotly_legendclick", ev => { const id = ev.data[ev.curveNumber].legendgroup; setHidden(id, !hidden.has(id)); return false; });
      gd.on("plotly_legenddoubleclick", () => false);
    });
  });
  await Promise.all(drawn.concat(drawSearches()));
  window.nnexpDrawnAt = performance.now();
  window.nnexpReady = true;
  if (saved && saved.scroll) window.scrollTo(saved.scroll[0], saved.scroll[1]);
  watchBeacon();  // from here: a page is drawn before it reloads
}
draw().catch(err => {
  const p = document.getElementById("plot-error");
  p.hidden = false;
  p.textContent = "The charts could not be drawn in this browser (" + err + "); the table and the runs below hold every number.";
  window.nnexpReady = true;
  console.error(err);
  watchBeacon();
});
})();
"""


def progress_line(report: Report, out: Path) -> str:
    runs = sum(len(row.runs) for row in report.comparison.rows)
    state = "live" if report.live else "final, without reloading"
    return (f"{datetime.now():%H:%M:%S} wrote {out}: {runs} run{'s' * (runs != 1)}, "
            f"{report.epochs} epoch{'s' * (report.epochs != 1)} ({state})")

