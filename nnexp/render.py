"""What people read: runs' rows as text.

A comparison (`compare`) becomes a terminal table fitted to its width, or markdown, CSV or
JSON; numbers read as people read them (percent, durations); the other tables the commands
print (a gradient check, an ensemble's vote, the backends) are built here too. What is shown
while runs train is `progress`.

The consoles are here: `out` (stdout: what a command answers, such as a run directory's
path) and `err` (stderr: progress, tables, warnings and errors).

Non-goals: deciding what a row holds or how rows sort (`compare`), figures (`plots`).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from nnexp.comparison import Comparison, Row, Stat, config_cell, is_layer_key, machine_row, short_names
from nnexp.errors import UserError
from nnexp.network import build_spec

FORMATS = ("table", "markdown", "csv", "json")

# markup off by default: paths, names and values users give are printed as they are
# (`runs/[red]x` stays `runs/[red]x`); the few styled lines ask for markup and escape their values
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)  # one error, one line
out = Console(highlight=False, soft_wrap=True, markup=False)
# In a pipe, a log or CI a message stays one line, whatever its length. A terminal would
# break a long line at its last column, inside a word (`5,00` / `0 training images`), so
# there rich wraps it between words instead.
for _console in (err, out):
    _console.soft_wrap = not _console.is_terminal


def plural(n: int, word: str) -> str:
    """`1 epoch`, `2 epochs`."""
    return f"{n:,} {word}{'s' * (n != 1)}"


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

# Columns as (header, priority, cells). A narrow terminal drops the highest priority numbers
# first: the answer (label, status, validation and test accuracy) never, then what the book
# says, then what differs, the run's id, and last what only details a row.
ANSWER, BOOK, DELTA, KEYS, ID, ARCH, DETAIL, EPOCHS, MINOR = range(9)
# A row's note and tags: what people said about it, after its id (which finds it again) and
# before the architecture; folded in its cell once the details are gone (WRAP_FROM).
NOTES = ID + 0.5


def notes_cell(row: Row) -> str:
    """A row's note, then its tags as `#tag`; a group's distinct notes and all its tags.
    On one line: a cell folds it to its column's width."""
    return " ".join([*row.note.split(), *(f"#{t}" for t in row.tags)])


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
    return config_cell(row.config_value(key), key)


def one_sweep(comparison: Comparison) -> str | None:
    """The sweep every row's runs are points of, if there is one: the id column then shows
    the points alone, under the header `point`."""
    sweeps = {r.sweep for row in comparison.rows for r in row.runs}
    return next(iter(sweeps)) if len(sweeps) == 1 and None not in sweeps else None


def _ids(comparison: Comparison, terse: bool) -> tuple[str, list[str]]:
    """The id column's header and cells. `terse` (a terminal): a group whose runs no glob
    picks out shows its first run's id and how many more (`--no-group` lists each)."""
    sweep = one_sweep(comparison)
    ids = [row.id if sweep is None else row.id.removeprefix(f"{sweep}/") for row in comparison.rows]
    if terse:
        ids = [f"{row.runs[0].id.removeprefix(f'{sweep}/') if sweep else row.runs[0].id} +{len(row.runs) - 1}"
               if row.ids else text for row, text in zip(comparison.rows, ids)]
    return ("id" if sweep is None else "point"), ids


def _uniform(values: list) -> Any:
    """The one value every row shares, or None."""
    distinct = set(values)
    return next(iter(distinct)) if len(distinct) == 1 else None


def columns(comparison: Comparison, *, terse: bool = False, compact: bool = False) -> list[tuple[str, int, list[str]]]:
    """(header, priority, cells) per column, in display order (see ANSWER ... MINOR).

    `terse` (a terminal): how ours was chosen and the verdict's tolerance leave the cells
    for a note below the table where every row shares them. `compact`: the ± of a seed
    group joins its mean's cell (`97.83 ±0.07`, folded under it), for narrow terminals."""
    spread = comparison.any_group
    rows = comparison.rows
    stat = lambda row, m: row.stat(m)  # noqa: E731
    std = lambda s: "-" if s is None or s.std is None else f"{100 * s.std:.2f}"  # noqa: E731
    val = [stat(r, "best_validation_accuracy") for r in rows]
    test = [stat(r, "test_accuracy") for r in rows]

    def accuracy(header: str, stats: list) -> list:
        means = [_pct(s.mean if s else None) for s in stats]
        if not spread:
            return [(header, ANSWER, means)]
        if compact:
            return [(header, ANSWER, [m if s is None or s.std is None else f"{m} ±{std(s)}"
                                      for m, s in zip(means, stats)])]
        return [(header, ANSWER, means), ("±", ANSWER, [std(s) for s in stats])]

    cols = [("run", ANSWER, [r.display for r in rows]), ("status", ANSWER, [r.status for r in rows]),
            *accuracy("best val %", val), *accuracy("test %", test)]
    if comparison.any_reference:
        how, tolerance = book_shared(comparison) if terse else (None, None)
        book = [_book_cells(r, with_how=how is None, with_tolerance=tolerance is None) for r in rows]
        for i, (header, priority) in enumerate([("book %", BOOK), ("ours %", BOOK), ("Δ", DELTA),
                                                ("verdict", BOOK)]):
            cols.append((header, priority, [b[i] for b in book]))
    keys = display_keys(comparison)
    short = short_names([k for k in keys if k != "architecture"])
    for i, key in enumerate(keys):  # the keys drop one by one, the last first
        cols.append((short.get(key, key), ARCH if key == "architecture" else KEYS + i / 1000,
                     [display_value(r, key) for r in rows]))
    header, ids = _ids(comparison, terse)
    cols.append((header, ID, ids))
    notes = [notes_cell(r) for r in rows]
    if any(notes):  # no column where nobody said anything
        cols.append(("notes", NOTES, [n or "-" for n in notes]))
    if spread:
        cols.append(("n", DETAIL, [str(len(r.runs)) for r in rows]))
    cols += [("epochs", EPOCHS, [_epochs(stat(r, "epochs_run")) for r in rows]),
             ("best epoch", EPOCHS, [_epochs(stat(r, "best_epoch")) for r in rows])]
    if spread:
        cols += [("test min", MINOR, [_pct(t.min if t else None) for t in test]),
                 ("test max", MINOR, [_pct(t.max if t else None) for t in test])]
    cols += [("wall time", DETAIL, [duration(stat(r, "wall_time_s").mean if stat(r, "wall_time_s") else None)
                                    for r in rows]),
             ("backend/device", MINOR, [f"{r.backend}/{r.device}" for r in rows])]
    return cols


def human_table(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    """Headers and string cells of every column (markdown prints them all)."""
    cols = columns(comparison)
    return [h for h, _, _ in cols], [list(cells) for cells in zip(*(c for _, _, c in cols))]


SELECTION_WORDS = {"best-of-seeds": "best by val", "peak-test": "peak test", "single": "mean"}
SELECTION_NOTES = {"best-of-seeds": "best seed by validation", "peak-test": "peak test accuracy",
                   "single": "mean over seeds"}


def book_shared(comparison: Comparison) -> tuple[str | None, float | None]:
    """How ours was chosen and the verdict's tolerance, where every row with a reference
    shares them (None where they differ): a terminal says them once, under the table."""
    refs = [row.reference for row in comparison.rows if row.reference is not None]
    how = _uniform([ref.get("selection") for ref in refs])
    tolerance = _uniform([row.verdict()["tolerance"] for row in comparison.rows if row.reference is not None])
    return how, tolerance


def _dropped_by(row: Row) -> str:
    """The keys that took the book's number away from a row, as its columns name them."""
    by = [str(k) for k in (row.dropped or {}).get("by") or []]
    short = short_names(by)
    return ", ".join(short.get(k, k) for k in by) or "an override"


def _book_cells(row: Row, *, with_how: bool = True, with_tolerance: bool = True) -> list[str]:
    """book %, ours % (and how it was chosen), the difference in points, the verdict; for a
    row whose override dropped the book's number, the verdict says which key did."""
    v = row.verdict()
    if v["book"] is None:
        return ["-", "-", "-", f"n/a ({_dropped_by(row)} changed)" if row.dropped else "-"]
    how = f" ({SELECTION_WORDS.get((row.reference or {}).get('selection'), '')})" if with_how else ""
    ours = "-" if v["ours"] is None else f"{100 * v['ours']:.2f}{how}"
    diff = "-" if v["difference"] is None else f"{v['difference']:+.2f}"
    verdict = "-" if v["verdict"] is None else v["verdict"] + (f" (±{v['tolerance']:g})" if with_tolerance else "")
    return [f"{100 * v['book']:.2f}", ours, diff, verdict]


def _left_aligned(comparison: Comparison) -> set[str]:
    """Text columns: the run's label, status and backend, the architecture, and config keys
    with no number in them (an optimiser's name, a cost); numbers line up on the right."""
    def is_number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    keys = [k for k in display_keys(comparison) if k != "architecture"]
    short = short_names(keys)
    text_keys = {short[key] for key in keys if not any(is_number(row.config_value(key)) for row in comparison.rows)}
    return {"run", "status", "backend/device", "verdict", "ours %", "architecture", "id", "point", "notes",
            *text_keys}


def table_notes(comparison: Comparison, terse: bool) -> list[str]:
    """What a terminal table says once instead of in every cell: how ours was chosen, the
    verdict's tolerance, and why rows have no book number."""
    notes = []
    if terse and comparison.any_reference:
        how, tolerance = book_shared(comparison)
        said = []
        if how is not None:
            said.append(f"ours: {SELECTION_NOTES.get(how, how)}, as the book")
        if tolerance is not None:
            said.append(f"reproduced: within ±{tolerance:g} points")
        if said:
            notes.append("; ".join(said))
    dropped = [row for row in comparison.rows if row.dropped]
    if dropped:
        by = ", ".join(dict.fromkeys(_dropped_by(row) for row in dropped))
        books = ", ".join(dict.fromkeys(f"{row.runs[0].config.get('name')}: {row.dropped['value']:g}%"
                                        for row in dropped))
        where = "n/a: " if comparison.any_reference else "no book column: "
        notes.append(f"{where}{by} changed the experiment of the book's number ({books})")
    return notes


# --- fitting a terminal's width ---------------------------------------------------------------

GAP = 2  # spaces between columns


def _words(text: str) -> list[str]:
    return text.split() or [""]


def _segments(text: str) -> list[str]:
    """A cell's text in the pieces a line is best broken between: after a comma (outside
    brackets), before a bracket or an arrow; `[seeds 1, 2]` and `η 0.5` stay whole."""
    pieces, current, depth = [], "", 0
    for i, ch in enumerate(text):
        if ch == " " and depth == 0 and (current.endswith(",") or text[i + 1:i + 2] in ("[", "→")):
            pieces.append(current)
            current = ""
            continue
        depth += {"[": 1, "]": -1}.get(ch, 0)
        current += ch
    return [p for p in [*pieces, current] if p]


def wrap(text: str, width: int) -> list[str]:
    """`text` in lines of at most `width` cells, broken between words, never inside one (a
    word wider than `width` is left whole; callers make columns at least that wide)."""
    if cell_len(text) <= width:
        return [text]
    lines: list[str] = []
    line = ""
    for segment in _segments(text):
        units = [segment] if cell_len(segment) <= width else _words(segment)
        for unit in units:
            if line and cell_len(line) + 1 + cell_len(unit) > width:
                lines.append(line)
                line = unit
            else:
                line = f"{line} {unit}" if line else unit
    return [*lines, line] if line else lines


def _natural(col) -> int:
    header, _, cells = col
    return max(cell_len(header), *(cell_len(c) for c in cells)) if cells else cell_len(header)


def _minimum(col) -> int:
    header, _, cells = col
    return max(cell_len(w) for text in (header, *cells) for w in _words(text))


def _table_width(cols, widths=None) -> int:
    """The compact table's width: each column's width and GAP spaces between columns."""
    if not cols:
        return 0
    return sum(widths or [_natural(c) for c in cols]) + GAP * (len(cols) - 1)


def _cells_width(col) -> int:
    _, _, cells = col
    return max((cell_len(c) for c in cells), default=0)


def _widths(cols, width: int, whole: int = -1) -> list[int] | None:
    """Column widths that fit `width` with cells folded between words; None if not even
    the narrowest fit. Columns of priority `whole` or less keep their full width: the
    answer is not folded to make room for a detail. The space beyond each column's
    narrowest goes, most important column first, to whole cells (a header folds sooner
    than a value), then to whole headers, then to what is still folded."""
    widths = [_natural(c) if c[1] <= whole else _minimum(c) for c in cols]
    spare = width - _table_width(cols, widths)
    if spare < 0:
        return None
    order = sorted(range(len(cols)), key=lambda i: (cols[i][1], i))
    for target in (_cells_width, _natural):
        for i in order:
            need = target(cols[i]) - widths[i]
            if 0 < need <= spare:
                widths[i] += need
                spare -= need
    for i in order:
        more = min(spare, _natural(cols[i]) - widths[i])
        widths[i] += more
        spare -= more
    return widths


# Until only the answer and the book's columns are left, those are never folded to make room
# for more columns; the columns after them may fold (a long value, the architecture).
WHOLE_UNTIL = DELTA
# Columns may fold inside their cells only once the details (n, epochs, time) are gone:
# folding a value to show the backend would be the wrong way round.
WRAP_FROM = ARCH


@dataclass
class Layout:
    """The columns a terminal shows, their widths, and the columns left out."""

    cols: list[tuple[str, int, list[str]]]
    widths: list[int]
    hidden: list[str]


def fit_columns(variants: list[list[tuple[str, int, list[str]]]], width: int | None,
                fold_from: int = WRAP_FROM) -> Layout | None:
    """The columns that fit `width` (None: every column of the first variant, as wide as
    they are). Fewer columns before folded cells: at each cut-off, from the least important
    priority down, the columns at or above it on one line each, then (from `fold_from` on)
    folded between words; then each further variant (a more compact form of the same
    columns) folded likewise. None when even the priority-0 columns do not fit."""
    full = variants[0]
    if width is None:
        return Layout(full, [_natural(c) for c in full], [])
    names = lambda cols: {h for h, _, _ in cols}  # noqa: E731

    def layout(cols, widths):
        shown = names(cols)
        hidden = [h for h, _, _ in full if h not in shown and not (h == "±" and any("±" in c for _, _, cc in cols for c in cc))]
        return Layout(cols, widths, hidden)

    for cutoff in sorted({p for _, p, _ in full}, reverse=True):
        for n, variant in enumerate(variants):
            cols = [c for c in variant if c[1] <= cutoff]
            if n == 0 and _table_width(cols) <= width:
                return layout(cols, [_natural(c) for c in cols])
            whole = WHOLE_UNTIL if cutoff > WHOLE_UNTIL else -1
            if n > 0 and cutoff > WHOLE_UNTIL:  # the compact forms: only to keep the book's columns
                continue
            if cutoff <= fold_from and (widths := _widths(cols, width, whole)) is not None:
                return layout(cols, widths)
    return None


def fit(comparison: Comparison, width: int | None) -> Layout | None:
    """The comparison's columns that fit `width` (see `fit_columns`)."""
    terse = width is not None
    return fit_columns([columns(comparison, terse=terse), columns(comparison, terse=terse, compact=True)], width)


@dataclass
class Fitted:
    """A table fitted to a terminal (or, when even the answer does not fit, one block per
    row), and the dim lines under it: what it says once, and which columns it left out."""

    table: Table | None
    blocks: list[Text]
    notes: list[str]

    def __rich_console__(self, console, options):
        yield from ([self.table] if self.table is not None else self.blocks)
        for note in self.notes:
            yield Text(note, style="dim")


def hidden_note(hidden: list[str], width: int | None) -> list[str]:
    """One line: how many columns the terminal left out, which, and how to see them."""
    if not hidden:
        return []
    n = len(hidden)
    how = "--wide or -f markdown shows them"
    line = f"{n} more column{'s' * (n > 1)} ({', '.join(hidden)}): {how}"
    if width is not None and cell_len(line) > width:
        line = f"{n} more column{'s' * (n > 1)}: {how}"
    return [line]


def rich_table(comparison: Comparison, title: str | None = None, width: int | None = None) -> Fitted:
    """The comparison fitted to `width` (None: every column, for pipes, files and --wide),
    or, when even the label and the accuracies do not fit, one block per row."""
    layout = fit(comparison, width)
    terse = width is not None
    notes = table_notes(comparison, terse)
    if layout is None:
        return Fitted(None, vertical(comparison, width), notes)
    table = table_of(layout.cols, _left_aligned(comparison), title, widths=layout.widths)
    return Fitted(table, [], notes + hidden_note(layout.hidden, width))


def table_of(cols: list[tuple[str, int, list[str]]], left: set[str], title: str | None = None,
             styles: dict[str, list[str | None]] | None = None, widths: list[int] | None = None) -> Table:
    """A rich Table of (header, priority, cells) columns: a rule under bold headers, GAP
    spaces between columns, each cell folded between words to its column's width (None:
    as wide as the column's widest cell); `left` names the left-aligned headers, `styles`
    optional per-cell styles by header."""
    widths = widths or [_natural(c) for c in cols]
    table = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1),
                  collapse_padding=True, header_style="bold")
    for (header, _, _), w in zip(cols, widths):
        table.add_column("\n".join(wrap(header, w)), justify="left" if header in left else "right",
                         no_wrap=True, width=w)
    for i, cells in enumerate(zip(*(c for _, _, c in cols))):
        # Text: a label like [seeds 1, 2] is not markup
        table.add_row(*(Text("\n".join(wrap(cell, w)), style=((styles or {}).get(h) or [None] * (i + 1))[i] or "")
                        for (h, _, _), cell, w in zip(cols, cells, widths)))
    return table


def vertical(comparison: Comparison, width: int) -> list[Text]:
    """One block per row for terminals too narrow for a table: the label on a line of its
    own (folded between words), then `header value` pairs, as many to a line as fit."""
    cols = columns(comparison, terse=True)
    blocks = []
    for i, row in enumerate(comparison.rows):
        blocks.extend(Text(line, style="bold") for line in wrap(row.display, width))
        line = ""
        for header, _, cells in cols[1:]:
            pair = f"{header} {cells[i]}"
            if line and cell_len(line) + 3 + cell_len(pair) > width:
                blocks.append(Text(line))
                line = ""
            if not line and cell_len(pair) + 2 > width:  # a long value: folded on lines of its own,
                parts = wrap(pair, width - 2)  # indented where the indent leaves a word whole
                blocks.extend(Text(part if cell_len(part) + 2 > width else f"  {part}") for part in parts[:-1])
                line = parts[-1] if cell_len(parts[-1]) + 2 > width else f"  {parts[-1]}"
                continue
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
    """The comparison in one of FORMATS: for "table" a `Fitted` table for `width` (None:
    every column, for pipes, files and --wide), text otherwise."""
    if fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    if fmt == "table":
        return rich_table(comparison, width=width)
    return {"markdown": markdown, "csv": to_csv, "json": to_json}[fmt](comparison)


# --- the other tables ---------------------------------------------------------------------------


def gradcheck_table(results: list, title: str, width: int | None) -> Fitted:
    """A gradient check (`gradcheck.gradcheck`'s results), one row per parameter, fitted to
    `width` (None: every column); the failing verdicts in red. Where the worst difference is
    within the rounding noise of the costs, its relative error is shown and marked so."""
    verdicts = ["ok" if r.ok else "FAIL" for r in results]
    cols = [("parameter", 0, [r.name for r in results]), ("verdict", 0, verdicts),
            ("rel. error", 0, [f"{r.relative_error:.2e}" + (" (noise)" if r.under_noise else "")
                               for r in results]),
            ("analytic", 1, [f"{r.worst_analytic:.2e}" for r in results]),
            ("numeric", 1, [f"{r.worst_numeric:.2e}" for r in results]),
            ("at a kink", 2, [str(r.kinks) for r in results]),
            ("entries", 3, [str(r.checked) for r in results]),
            ("shape", 3, ["x".join(map(str, r.shape)) for r in results])]
    layout = fit_columns([cols], width, fold_from=3) or Layout(cols[:3], [_natural(c) for c in cols[:3]], [])
    table = table_of(layout.cols, {"parameter", "verdict"}, title,
                     {"verdict": ["red" if v == "FAIL" else None for v in verdicts]}, layout.widths)
    notes = []
    if any(r.under_noise for r in results):
        notes.append("(noise): a difference within the costs' rounding noise; it passes, whatever "
                     "its relative error")
    return Fitted(table, [], notes + hidden_note(layout.hidden, width))


def ensemble_table(result, checkpoint: str, width: int | None = None) -> Fitted:
    """A majority vote (`ensemble.run_ensemble`'s result): each member, then the vote in
    bold, fitted to `width` (None: as wide as it is)."""
    names = [m.name for m in result.members] + [f"ensemble of {len(result.members)}"]
    cols = [("network", 0, names),
            ("validation accuracy %", 0, [f"{100 * m.validation_accuracy:.2f}" for m in result.members]
             + [f"{100 * result.validation_accuracy:.2f}"]),
            ("test accuracy %", 0, [f"{100 * m.accuracy:.2f}" for m in result.members]
             + [f"{100 * result.accuracy:.2f}"]),
            ("test errors", 0, [str(m.errors) for m in result.members] + [f"{result.errors} of {result.n:,}"])]
    layout = fit_columns([cols], width, fold_from=0)
    if layout is None:  # narrower than the names: each member on lines of its own
        return Fitted(None, [Text(line, style="bold" if i == len(names) - 1 else "")
                             for i, (name, *rest) in enumerate(zip(*(c for _, _, c in cols)))
                             for line in wrap(f"{name}: validation {rest[0]}%, test {rest[1]}%, "
                                              f"{rest[2]} errors", width)], [])
    bold = [None] * len(result.members) + ["bold"]
    return Fitted(table_of(layout.cols, {"network"}, f"majority vote ({checkpoint} checkpoints)",
                           {header: bold for header, _, _ in cols}, layout.widths), [], [])


def book_overlap_line(overlap) -> str:
    """A vote's wrong test images against the book's (`ensemble.BookOverlap`), in one line."""
    verb = "is" if overlap.shared == 1 else "are"
    return (f"of the book's {overlap.book} wrong digits, {overlap.shared} {verb} among this vote's "
            f"{overlap.vote:,} wrong ({overlap.same_answer} with the book's wrong answer)")


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
        err.print(f"[yellow]warning:[/] {escape(line)}", markup=True, highlight=False)


def print_table(table, console: Console | None = None, *, wide: bool = False) -> None:
    """On a terminal, fit the table to it; in a pipe or file (or `wide`: every column, lines
    as long as they are), never squeeze or cut a column."""
    console = console or out
    if wide or not console.is_terminal:
        console = Console(highlight=False, width=100_000, stderr=console.stderr, markup=False,
                          force_terminal=console.is_terminal)
    console.print(table)


def table_width(console: Console) -> int | None:
    """The width a table must fit on `console`: the terminal's; None in a pipe or file."""
    return console.width if console.is_terminal else None
