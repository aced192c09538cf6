"""Compare run directories: read them into rows, find what differs, group seeds, sort.

`nnexp compare` answers "which of these runs did best, and what was different about it?".
So a row shows only the config keys whose values differ between the runs shown (everything
else is noise), and runs that differ only in `seed` collapse into one row with mean ± sample
std, min, max and n: the book's claims are about a configuration, not about one lucky seed.

Finding and reading the runs is `runset`'s job: incomplete runs arrive with their status,
damaged ones as warnings. Showing a comparison (tables, markdown, CSV, JSON) is `render`'s.

Non-goals: no reading of checkpoints (that is `evaluate`/`ensemble`), no statistics beyond
mean/std/min/max (significance testing would need more seeds than anyone runs here).
"""

from __future__ import annotations

import difflib
import fnmatch
import json
import os
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nnexp.config import reference_tolerance
from nnexp.errors import UserError
from nnexp.rundir import Status, check_tag
from nnexp.runset import METRICS, RunRecord, load_runs
from nnexp.yamlio import parse_yaml

DEFAULT_SORT = "best_validation_accuracy"  # the selection rule everywhere in nnexp (and the book's)
# `name` differs by design; backend and device have a column of their own (what actually ran).
NOT_CONFIG_COLUMNS = ("name", "backend", "device")
# the book's number (and the one an override dropped): shown in its own columns, never a difference
NOT_CONFIG_SUBTREES = ("reference", "reference_dropped")
MISSING = object()  # a config key one run has and another lacks (shown as "-")


# --- rows and groups --------------------------------------------------------------------------


@dataclass(frozen=True)
class Stat:
    """A metric over the runs of a row. std is the sample std (ddof=1); None when n < 2."""

    mean: float
    std: float | None
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> "Stat | None":
        if not values:
            return None
        std = statistics.stdev(values) if len(values) > 1 else None
        return cls(statistics.fmean(values), std, min(values), max(values), len(values))


@dataclass
class Row:
    """One line of the comparison: a single run, or the runs that differ only in seed."""

    runs: list[RunRecord]
    text: str | None = None  # what differs about the row (`η 0.25, λ 5`), set by `build`
    ids: str | None = None  # the runs' ids, where no glob picks out just them, set by `build`

    @property
    def display(self) -> str:
        """The row's label for people: what differs, else the run's (or group's) name."""
        return self.text or self.label

    @property
    def grouped(self) -> bool:
        return len(self.runs) > 1

    @property
    def label(self) -> str:
        if not self.grouped:
            return self.runs[0].name
        base = self.runs[0].config.get("name") or self.runs[0].name
        return f"{base} [{seed_list(self.seeds)}]"

    @property
    def seeds(self) -> list:
        return [r.config.get("seed") for r in self.runs]

    @property
    def id(self) -> str:
        """How to find the row's runs again: a run's id (`run_dir` or `sweep/point`); for a
        group, a glob over its runs' ids where they share a prefix (`sweep/seed=*`)."""
        return self.ids or common_id([r.id for r in self.runs])

    @property
    def status(self) -> str:
        return self.runs[0].status  # a row only groups runs of one status

    @property
    def note(self) -> str:
        """The runs' notes: a group's distinct ones, in run order, joined by `; `. Notes
        never split a group: they say why runs exist, not what they are."""
        return "; ".join(dict.fromkeys(r.notes.note for r in self.runs if r.notes.note))

    @property
    def tags(self) -> list[str]:
        """Every tag any of the row's runs has, once each, in run order."""
        return list(dict.fromkeys(t for r in self.runs for t in r.notes.tags))

    @property
    def backend(self) -> str:
        return _joined(r.summary.get("backend") if r.summary else r.config.get("backend") for r in self.runs)

    @property
    def device(self) -> str:
        return _joined(r.summary.get("device") if r.summary else r.config.get("device") for r in self.runs)

    def stat(self, metric: str) -> Stat | None:
        return Stat.of([r.values[metric] for r in self.runs if r.values[metric] is not None])

    def config_value(self, key: str) -> Any:
        return self.runs[0].flat.get(key, MISSING)

    @property
    def reference(self) -> dict | None:
        """The book's number the row's config carries (`reference:`), if any."""
        ref = self.runs[0].config.get("reference")
        return ref if isinstance(ref, dict) and ref.get("value") is not None else None

    def ours(self) -> float | None:
        """Our number chosen as the book chose its own (a fraction): the seed with the best
        validation accuracy for `best-of-seeds`, the highest test accuracy over the epochs for
        `peak-test` (averaged over seeds), else the mean over the seeds."""
        ref = self.reference
        if ref is None:
            return None
        metric = "test_accuracy" if ref.get("metric", "test_accuracy") == "test_accuracy" else "best_validation_accuracy"
        return exact(self._ours(ref, metric))

    def _ours(self, ref: dict, metric: str) -> float | None:
        if ref.get("selection") == "best-of-seeds":
            scored = [r for r in self.runs if r.values["best_validation_accuracy"] is not None]
            if not scored:
                return None
            # ties on validation: the lower seed, so the choice never looks at the test set
            best = max(scored, key=lambda r: (r.values["best_validation_accuracy"], -(r.config.get("seed") or 0)))
            return best.values[metric]
        if ref.get("selection") == "peak-test" and metric == "test_accuracy":
            peaks = [max(m["test_accuracy"] for m in r.metrics if isinstance(m.get("test_accuracy"), (int, float)))
                     for r in self.runs if any(isinstance(m.get("test_accuracy"), (int, float)) for m in r.metrics)]
            return statistics.fmean(peaks) if peaks else None
        stat = self.stat(metric)
        return stat.mean if stat else None

    @property
    def dropped(self) -> dict | None:
        """The book's number the config file had and an override took away (`reference_dropped`:
        value, source, and `by`, the keys that changed the experiment); None otherwise."""
        if self.reference is not None:
            return None
        dropped = self.runs[0].config.get("reference_dropped")
        return dropped if isinstance(dropped, dict) and dropped.get("value") is not None else None

    def verdict(self) -> dict[str, Any]:
        """Book, ours, their difference in points and the verdict against the tolerance."""
        ref, ours = self.reference, self.ours()
        if ref is None:
            return {"book": None, "ours": None, "difference": None, "tolerance": None, "verdict": None}
        tolerance = reference_tolerance(ref)
        book = exact(ref["value"] / 100)
        diff = None if ours is None else round(100 * (ours - book), 4)
        if diff is None or self.status != Status.COMPLETED:
            verdict = None
        elif abs(diff) <= tolerance + 1e-9:
            verdict = "reproduced"
        else:
            verdict = "above" if diff > 0 else "below"
        return {"book": book, "ours": ours, "difference": diff, "tolerance": tolerance, "verdict": verdict}


_ID_BREAKS = "/=,-_"  # where a shared prefix of ids may end: a glob never cuts a value in two


def common_id(ids: list[str]) -> str:
    """One id for several runs: the id itself for one; `prefix*suffix` where they share a
    prefix ending at a separator (`sweep/seed=*`, `shallow-20261130-*`); else the ids listed."""
    if len(set(ids)) == 1:
        return ids[0]
    prefix = ids[0][:len(os.path.commonprefix(ids))]
    prefix = prefix[:max((prefix.rfind(c) for c in _ID_BREAKS), default=-1) + 1]
    rests = [i[len(prefix):] for i in ids]
    suffix = os.path.commonprefix([r[::-1] for r in rests])[::-1]
    suffix = suffix[min((suffix.find(c) for c in _ID_BREAKS if c in suffix), default=len(suffix)):]
    if prefix:
        return f"{prefix}*{suffix}"
    return ", ".join(ids)


def _joined(values) -> str:
    distinct = list(dict.fromkeys("-" if v is None else str(v) for v in values))
    return ",".join(distinct)


def _config_key(record: RunRecord, ignore: tuple[str, ...]) -> str:
    return json.dumps({k: v for k, v in record.flat.items() if k not in ignore}, sort_keys=True, default=str)


def group_runs(records: list[RunRecord], group: bool = True) -> list[Row]:
    """Rows in order of first appearance. With `group`, runs whose configs differ only in
    `seed` share a row, but only runs of the same status: averaging a finished run with one
    still at epoch 3 would describe neither. Two runs of one seed are the same experiment
    twice, not two seeds: the second goes to a row of its own (`repeated_seeds` warns)."""
    if not group:
        return [Row([r]) for r in records]
    rows: dict[tuple[str, str], list[Row]] = {}
    order: list[Row] = []
    for record in records:
        key = (_config_key(record, ("name", "seed")), record.status)
        seed = record.config.get("seed")
        candidates = rows.setdefault(key, [])
        row = next((r for r in candidates if seed not in r.seeds), None)
        if row is None:
            row = Row([])
            candidates.append(row)
            order.append(row)
        row.runs.append(record)
    return order


def repeated_seeds(records: list[RunRecord]) -> list[str]:
    """A warning per seed that more than one run of the same config and status used:
    `group_runs` shows such runs apart, since pooling them would count one experiment as
    several seeds."""
    by_config: dict[tuple, list[RunRecord]] = {}
    for record in records:
        key = (_config_key(record, ("name",)), record.status)
        by_config.setdefault(key, []).append(record)
    warnings = []
    for same in by_config.values():
        if len(same) > 1:
            name = same[0].config.get("name") or same[0].name
            ids = ", ".join(r.id for r in same)
            warnings.append(f"{len(same)} runs of {name} with the same config and seed "
                            f"{same[0].config.get('seed')} ({ids}): shown as separate rows, not pooled as seeds")
    return warnings


def differing_keys(flats: list[dict[str, Any]], ignore: tuple[str, ...] = NOT_CONFIG_COLUMNS) -> list[str]:
    """The dotted keys whose values are not the same in every config (a key some lack counts).

    Keys come out in config order, keys only some configs have (an extra layer) placed after
    their predecessor, so `model.layers.2.*` stays next to `model.layers.1.*`.
    """
    order: list[str] = []
    for flat in flats:
        after = -1
        for key in flat:
            if key in order:
                after = order.index(key)
            else:
                order.insert(after + 1, key)
                after += 1
    marker = json.dumps  # compares 1 and 1.0 and True as different, as YAML would show them
    keys = [key for key in order if key not in ignore and key.split(".")[0] not in NOT_CONFIG_SUBTREES
            and len({marker(f[key], default=str) if key in f else "\0missing" for f in flats}) > 1]
    # `data.augment: null` in one run and `data.augment.shift: 2` in another: the subtree's
    # columns already say "-" for the run without it, so the null parent adds nothing.
    return [key for key in keys
            if not (any(other.startswith(key + ".") for other in keys)
                    and all(f.get(key) is None for f in flats))]


@dataclass
class Comparison:
    """The rows to show, the config keys that tell them apart, and how they are grouped."""

    rows: list[Row]
    keys: list[str]
    grouped: bool  # grouping was asked for (stat columns are part of the output)

    @property
    def any_group(self) -> bool:
        return any(row.grouped for row in self.rows)

    @property
    def any_reference(self) -> bool:
        return any(row.reference is not None for row in self.rows)

    @property
    def any_dropped(self) -> bool:
        """Some row's config had the book's number until an override changed the experiment."""
        return any(row.dropped is not None for row in self.rows)


def build(records: list[RunRecord], *, group: bool = True) -> Comparison:
    rows = group_runs(records, group)
    ignore = NOT_CONFIG_COLUMNS + (("seed",) if group else ())
    comparison = Comparison(rows, differing_keys([r.flat for r in records], ignore), group)
    _label_rows(comparison)
    everyone = [r.id for r in records]
    for row in rows:  # a group's glob must find its runs and no other run compared
        mine = [r.id for r in row.runs]
        if sorted(fnmatch.filter(everyone, common_id(mine))) != sorted(mine):
            row.ids = ", ".join(mine)
    return comparison


# --- what people read: labels, short key names ----------------------------------------------

SYMBOLS = {"training.eta": "η", "training.lambda": "λ", "training.l1": "λ1"}
SHORTENED = ("training", "data")  # prefixes dropped where the rest names one key alone
# the table's own headers: a config key never shows under one of these names
RESERVED = {"run", "status", "best val %", "test %", "±", "book %", "ours %", "Δ", "verdict", "n",
            "epochs", "best epoch", "test min", "test max", "wall time", "backend/device", "architecture",
            "notes"}


def short_names(keys: list[str]) -> dict[str, str]:
    """Each key as a column or label shows it: η, λ, and `batch_size` for `training.batch_size`
    where no other key shown ends the same."""
    rests = [k.partition(".")[2] if k.partition(".")[0] in SHORTENED else None for k in keys]
    out = {}
    for key, rest in zip(keys, rests):
        if key in SYMBOLS:
            out[key] = SYMBOLS[key]
        elif rest and rests.count(rest) == 1 and rest not in keys and rest not in RESERVED:
            out[key] = rest
        else:
            out[key] = key
    return out


# what null means for the keys where it means something: every training image, no patience
NULL_MEANS = {"data.train_size": "all", "training.early_stopping.patience": "none"}


def config_cell(value: Any, key: str | None = None) -> str:
    """A config value as labels and table cells show it (`-` where a run lacks the key;
    null as what it means for `key`, such as `all` for data.train_size)."""
    if value is MISSING:
        return "-"
    if value is None:
        return NULL_MEANS.get(key, "null")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def is_layer_key(key: str) -> bool:
    """Whether a dotted key is about the network's layers (the architecture)."""
    return key.startswith("model.layers")


def _label_rows(comparison: Comparison) -> None:
    """Label each row shortly: where config names differ, the name, then only what differs
    among that name's runs (`ch3_l2, η 0.5`); in a table of one name, what differs
    (`η 0.25, λ 5`), else the name. What differs across the whole table has columns: it is
    not repeated in every label. Layer keys join a label only where nothing else tells two
    rows apart. Rows that would still read alike fall back to their runs' directory names."""
    names = [str(row.runs[0].config.get("name") or row.runs[0].name) for row in comparison.rows]
    several = len(set(names)) > 1
    short = short_names([k for k in comparison.keys if not is_layer_key(k)])
    ignore = NOT_CONFIG_COLUMNS + (("seed",) if comparison.grouped else ())
    texts: list[str | None] = [None] * len(comparison.rows)
    for name in dict.fromkeys(names):
        mine = [i for i, n in enumerate(names) if n == name]
        rows = [comparison.rows[i] for i in mine]
        keys = differing_keys([r.flat for row in rows for r in row.runs], ignore)
        plain = [k for k in keys if not is_layer_key(k)]
        parts = {i: [f"{short.get(k, k)} {config_cell(row.config_value(k), k)}" for k in plain]
                 for i, row in zip(mine, rows)}
        if len({", ".join(p) for p in parts.values()}) < len(rows) and any(is_layer_key(k) for k in keys):
            # only the network tells these rows apart: its keys that differ, shortly
            for i, row in zip(mine, rows):
                parts[i] = [f"{k.removeprefix('model.')} {config_cell(row.config_value(k), k)}"
                            for k in keys if is_layer_key(k)] + parts[i]
        for i in mine:
            texts[i] = ", ".join(([name] if several else []) + parts[i]) or name
    for i, row in enumerate(comparison.rows):
        if row.grouped:
            texts[i] += f" [{seed_list(row.seeds)}]"
    alike = {text for text in texts if texts.count(text) > 1}
    texts = [None if text in alike else text for text in texts]  # rows alike: their own names
    for row, text in zip(comparison.rows, texts):
        row.text = text


def seed_list(seeds: list) -> str:
    """`seeds 1, 2, 3` for a few; `6 seeds` beyond five (the n column lists no more)."""
    try:
        seeds = sorted(seeds)
    except TypeError:  # a seed missing from an old config (None) beside numbers: as found
        pass
    return f"seeds {', '.join(map(str, seeds))}" if len(seeds) <= 5 else f"{len(seeds)} seeds"


# --- machine rows and sorting -----------------------------------------------------------------


def exact(value: float | None) -> float | None:
    """A computed number without float noise (0.9923, not 0.9923000000000001): 12
    significant digits, far more than any accuracy or time here carries."""
    return None if value is None else float(f"{value:.12g}")


def machine_row(row: Row, comparison: Comparison) -> dict[str, Any]:
    """A row as plain values: accuracies as fractions, missing values as None.

    This is what csv and json print and what sorting looks at; the human formats only
    render it. In grouped mode each metric also has ``_std``, ``_min`` and ``_max``.
    """
    out: dict[str, Any] = {"name": row.label, "id": row.id, "runs": [r.name for r in row.runs],
                           "status": row.status, "backend": row.backend, "device": row.device,
                           "n": len(row.runs), "seeds": row.seeds}
    for key in comparison.keys:
        value = row.config_value(key)
        out[key] = None if value is MISSING else value
    for metric in METRICS:
        stat = row.stat(metric)
        out[metric] = exact(stat.mean) if stat else None
        if comparison.grouped:
            out[f"{metric}_std"] = exact(stat.std) if stat else None
            out[f"{metric}_min"] = stat.min if stat else None
            out[f"{metric}_max"] = stat.max if stat else None
    if comparison.any_reference:
        ref = row.reference or {}
        out["book_selection"] = ref.get("selection")
        out.update({f"book_{k}" if k in ("ours", "difference", "tolerance", "verdict") else k: v
                    for k, v in row.verdict().items()})
    if comparison.any_dropped:
        out["book_dropped_by"] = (row.dropped or {}).get("by")
    out["note"], out["tags"] = row.note, row.tags
    return out


# `--sort` by what the table shows: its headers, and the short names people type
SORT_ALIASES = {
    "run": "name", "label": "name", "best val %": "best_validation_accuracy", "val %": "best_validation_accuracy",
    "val": "best_validation_accuracy", "validation": "best_validation_accuracy",
    "test %": "test_accuracy", "test": "test_accuracy", "book %": "book", "ours %": "book_ours",
    "ours": "book_ours", "Δ": "book_difference", "diff": "book_difference", "delta": "book_difference",
    "verdict": "book_verdict", "epochs": "epochs_run", "best epoch": "best_epoch",
    "test min": "test_accuracy_min", "test max": "test_accuracy_max", "wall time": "wall_time_s",
    "time": "wall_time_s", "backend/device": "backend", "point": "id",
}
HIGHER_IS_BETTER = ("book", "book_ours")  # sorted best first, as the accuracies are


def sort_keys(comparison: Comparison) -> list[str]:
    """Every key `--sort` accepts as written: the output columns plus any config key of any run."""
    columns = list(machine_row(comparison.rows[0], comparison)) if comparison.rows else []
    config_keys = dict.fromkeys(k for row in comparison.rows for r in row.runs for k in r.flat)
    # lists, and free text (what people said about a run is for --where tag=, not for ranking)
    return [k for k in dict.fromkeys([*columns, *config_keys]) if k not in ("runs", "seeds", "note", "tags")]


def sort_names(comparison: Comparison) -> dict[str, str]:
    """What people may type after --sort, each mapped to the key it sorts by: the keys as
    written, the table's headers (`best val %`), short names (`val`, `test`, `η`, `eta`,
    `batch_size`) where they name one key."""
    valid = sort_keys(comparison)
    names = {k: k for k in valid}
    names.update({alias: key for alias, key in SORT_ALIASES.items() if key in valid})
    config_keys = [k for k in valid if "." in k]
    names.update({short: key for key, short in short_names(config_keys).items() if short not in names})
    names.update({symbol: key for key, symbol in SYMBOLS.items() if key in valid})
    last = {}
    for key in config_keys:  # `eta` for training.eta, where no other key ends the same
        last.setdefault(key.rsplit(".", 1)[-1], []).append(key)
    names.update({tail: keys[0] for tail, keys in last.items() if len(keys) == 1 and tail not in names})
    return names


def resolve_sort_key(comparison: Comparison, key: str) -> str:
    """The key `--sort KEY` means; an unknown one is a UserError with the nearest names."""
    names = sort_names(comparison)
    if key in names:
        return names[key]
    lowered = {name.lower(): target for name, target in names.items()}
    if key.strip().lower() in lowered:
        return lowered[key.strip().lower()]
    close = difflib.get_close_matches(key, list(names), n=3, cutoff=0.6)
    hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
    shown = [h for h in ("val", "test", "book", "ours", "Δ", "verdict", "epochs", "wall time", "n", "id")
             if h in names]
    shown += [short for key, short in short_names(comparison.keys).items() if not is_layer_key(key)][:6]
    raise UserError(f"unknown sort key {key!r}{hint}; sort by a column ({', '.join(dict.fromkeys(shown))}) "
                    "or any config key, e.g. training.eta")


def sort_rows(comparison: Comparison, key: str = DEFAULT_SORT, descending: bool | None = None) -> Comparison:
    """Sorted by `key` (see `resolve_sort_key`); runs without a value go last whatever the
    direction.

    `descending=None` means: highest first for accuracies (what one compares them for),
    lowest first for everything else (names, eta, wall time).
    """
    key = resolve_sort_key(comparison, key)
    if descending is None:
        descending = "accuracy" in key or key in HIGHER_IS_BETTER

    def value(row: Row) -> Any:
        machine = machine_row(row, comparison)
        found = machine[key] if key in machine else row.config_value(key)
        return None if found is MISSING else found

    def rank(row: Row):
        v = value(row)
        return (0, v) if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, str(v))

    present = [r for r in comparison.rows if value(r) is not None]
    absent = [r for r in comparison.rows if value(r) is None]
    present.sort(key=lambda r: r.label)  # stable tie-break: by name, whatever the direction
    present.sort(key=rank, reverse=descending)
    return Comparison(present + absent, comparison.keys, comparison.grouped)


def curves(comparison: Comparison) -> list[tuple[str, list[list[dict]]]]:
    """(label, per-run metric records) per row: what `plots.comparison_figure` draws."""
    return [(row.display if row.status == Status.COMPLETED else f"{row.display} ({row.status})",
             [r.metrics for r in row.runs]) for row in comparison.rows]


_WHERE = re.compile(r"^\s*([^=!<>\s]+)\s*(!=|<=|>=|=|<|>)\s*(.*)$")


def parse_where(text: str) -> tuple[str, str, Any]:
    """``KEY=VALUE``, ``KEY!=VALUE``, ``KEY<VALUE``, ``KEY>VALUE`` (and <=, >=): a config key
    (``training.eta``), a metric (``test_accuracy``, fractions) or ``status``; VALUE as YAML.
    ``tag=NAME`` and ``tag!=NAME``: the runs with (without) that tag, NAME as written."""
    match = _WHERE.match(text)
    if not match:
        raise UserError(f"--where {text!r}: expected KEY=VALUE, KEY!=VALUE, KEY<VALUE or KEY>VALUE, "
                        "e.g. training.eta=0.25")
    key, op, raw = match.groups()
    if key == "tag":  # not YAML: tag=1 or tag=yes names a tag, not a number or a boolean
        if op not in ("=", "!="):
            raise UserError(f"--where {text!r}: a tag is matched with = or !=, e.g. tag=baseline")
        return key, op, check_tag(raw.strip())
    try:
        value = parse_yaml(raw) if raw.strip() else None
    except Exception:  # noqa: BLE001 - any YAML error: one line naming the option
        value = raw
    if op in ("<", ">", "<=", ">=") and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise UserError(f"--where {text!r}: {op} needs a number")
    return key, op, value


def _matches(record: RunRecord, where: tuple[str, str, Any]) -> bool:
    key, op, value = where
    if key == "tag":
        return (value in record.notes.tags) == (op == "=")
    if key == "status":
        have = record.status
    elif key in record.values:
        have = record.values[key]
    else:
        have = record.flat.get(key, MISSING)
    if op in ("=", "!="):
        same = have is not MISSING and (have == value or (isinstance(have, str) and have == str(value)))
        return same if op == "=" else not same
    if have is MISSING or have is None or isinstance(have, bool) or not isinstance(have, (int, float)):
        return False
    return {"<": have < value, ">": have > value, "<=": have <= value, ">=": have >= value}[op]


def select(records: list[RunRecord], *, where: list[str] = (), status: list[str] = (),
           last: int | None = None) -> list[RunRecord]:
    """The runs that pass every --where and any --status, then the `last` most recently
    started of them: by when each was created (`Run.created_at`), not when its config.yaml
    was last written, which `resume --set` does again."""
    conditions = [parse_where(w) for w in where]
    known = {k for r in records for k in r.flat} | set(METRICS) | {"status", "tag"}
    for key, _, _ in conditions:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            raise UserError(f"--where: no run has a key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    chosen = [r for r in records if all(_matches(r, c) for c in conditions)
              and (not status or r.status in status)]
    if last is not None:
        chosen = sorted(chosen, key=lambda r: r.run.created_at())[-last:] if last > 0 else []
        chosen.sort(key=lambda r: records.index(r))
    return chosen


def compare(patterns: list[str | Path], *, sort: str = DEFAULT_SORT, descending: bool | None = None,
            group: bool = True, where: list[str] = (), status: list[str] = (),
            last: int | None = None, runs_dir: str | Path | None = None) -> tuple[Comparison, list[str]]:
    """Read, choose, group and sort the runs the patterns (or, with `runs_dir`, run ids)
    name: (comparison, warnings)."""
    records, warnings = load_runs(patterns, runs_dir)
    records = select(records, where=where, status=status, last=last)
    if not records:
        raise UserError("no run matches --where / --status / --last")
    repeated = repeated_seeds(records) if group else []  # apart anyway, one run a row
    return sort_rows(build(records, group=group), sort, descending), warnings + repeated
