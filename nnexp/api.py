"""nnexp from Python (a notebook, a script): the command line's code paths, without the CLI.

    import nnexp
    run = nnexp.train("configs/shallow.yaml", epochs=5, eta=0.5, train_size=5000, note="first try")
    run                                   # shallow-... completed: best val 96.10% (epoch 5), test ...
    nnexp.runs("runs", where=["training.eta>0.1"]).to_pandas()
    nnexp.compare("runs", sort="test")    # the rows `nnexp compare -f json` prints
    nnexp.sweep("configs/shallow.yaml", grid={"training.eta": [0.1, 0.5]}, seeds=2)

`train` and `sweep` make the calls `nnexp train` and `nnexp sweep` make (`lifecycle.new_run`
and `execute`; `batch.new_sweep`, `tasks` and `run`), with progress shown in place in a
notebook (`notebook.NotebookReporter`) or as the command shows it in a terminal. `runs` and
`compare` read runs through `runset` and `compare`, as `nnexp compare` does. What they return
shows itself in one line (repr) and as an HTML table in a notebook, and turns into a pandas
DataFrame (`.to_pandas()`) where pandas is installed.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import html
import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from nnexp import batch, lifecycle
from nnexp import comparison as cmp
from nnexp import config as configs
from nnexp import sweepplan as sweeps
from nnexp.config import SCHEMA
from nnexp.errors import ConfigError, UserError
from nnexp.notebook import NotebookReporter, NotebookSweepDisplay, html_table, in_notebook, pct
from nnexp.rundir import Notes, Run, notes_given
from nnexp.runset import RunRecord, load_runs, read_run

PANDAS_MISSING = 'to_pandas() needs pandas: pip install pandas (or pip install -e ".[notebook]")'
# the keyword arguments that stand for a config key
KEYWORD_KEYS = {"epochs": "training.epochs", "eta": "training.eta", "lmbda": "training.lambda",
                "batch_size": "training.batch_size", "train_size": "data.train_size", "seed": "seed",
                "backend": "backend", "device": "device"}
PROGRESS = ("auto", "notebook", "terminal", True, False, None)


# --- what comes back: a run, a list of runs, a table --------------------------------------------


class Table(list):
    """Rows of plain values (a list of dicts), as `nnexp compare -f json` prints them:
    accuracies as fractions, missing values as None. `.to_pandas()` makes a DataFrame."""

    def __init__(self, rows: Iterable[dict] = (), *, title: str = "rows", path: Path | None = None):
        super().__init__(rows)
        self.title = title
        self.path = path  # a sweep's directory, where the rows are a sweep's

    def to_pandas(self):
        """A pandas DataFrame, one row per row here."""
        try:
            import pandas  # lazily: optional, and a second to import
        except ImportError:
            raise UserError(PANDAS_MISSING) from None
        return pandas.DataFrame(list(self))

    def __repr__(self) -> str:
        top = f"; top: {self[0].get('id')} (val {pct(self[0].get('best_validation_accuracy'))})" if self else ""
        return f"<Table {self.title}: {len(self)} row{'s' * (len(self) != 1)}{top}>"

    def _repr_html_(self) -> str:
        columns = [c for c in dict.fromkeys(k for row in self for k in row) if c not in ("runs", "seeds")]
        said = f"{html.escape(self.title)}: {len(self)} row{'s' * (len(self) != 1)}"
        return f"<p>{said}</p>" + html_table(list(self), columns)


@dataclass(frozen=True, repr=False)
class TrainedRun:
    """A run directory as Python sees it: its config, summary, per-epoch metrics, status, note
    and tags. What `nnexp.train` returns and what `nnexp.runs` lists."""

    path: Path
    summary: dict
    metrics: list[dict]
    config: dict
    status: str = ""
    id: str = ""  # the run's directory name, or sweep/point for a sweep's point
    notes: Notes = field(default_factory=Notes)
    values: dict = field(default_factory=dict)  # epochs_run, best_epoch, best_validation_accuracy, ...

    @classmethod
    def of(cls, record: RunRecord) -> "TrainedRun":
        return cls(record.run.path, record.summary or {}, record.metrics, record.config, str(record.status),
                   record.id, record.notes, dict(record.values))

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def note(self) -> str:
        return self.notes.note

    @property
    def tags(self) -> tuple[str, ...]:
        return self.notes.tags

    def row(self) -> dict[str, Any]:
        v = self.values
        return {"id": self.id, "name": self.config.get("name"), "status": self.status,
                "best_validation_accuracy": v.get("best_validation_accuracy"),
                "test_accuracy": v.get("test_accuracy"), "epochs_run": v.get("epochs_run"),
                "best_epoch": v.get("best_epoch"), "wall_time_s": v.get("wall_time_s"),
                "note": self.note, "tags": list(self.tags)}

    def __repr__(self) -> str:
        v = self.values
        best = (f"best val {pct(v.get('best_validation_accuracy'))} (epoch {v['best_epoch']}), "
                f"test {pct(v.get('test_accuracy'))}, " if v.get("best_epoch") else "")
        epochs = (self.config.get("training") or {}).get("epochs")
        return f"<TrainedRun {self.id} {self.status}: {best}{v.get('epochs_run') or 0}/{epochs} epochs>"

    def _repr_html_(self) -> str:
        return html_table([{**self.row(), "path": str(self.path)}])


class RunList(Sequence):
    """Runs, in the order `runset` finds them (a sweep's points by name): index them by
    position or by id; `.rows()` as plain dicts, `.to_pandas()` as a DataFrame."""

    def __init__(self, runs: Iterable[TrainedRun] = ()):
        self._runs = list(runs)

    def __getitem__(self, item):
        if isinstance(item, slice):
            return RunList(self._runs[item])
        if isinstance(item, str):
            for run in self._runs:
                if item in (run.id, run.name):
                    return run
            raise KeyError(item)
        return self._runs[item]

    def __len__(self) -> int:
        return len(self._runs)

    def rows(self) -> Table:
        """One dict per run: id, name, status, best validation and test accuracy (fractions),
        epochs, note, tags, path, and the config keys (dotted) whose values differ between them."""
        flats = [configs.flatten(r.config) for r in self._runs]
        keys = cmp.differing_keys(flats)
        return Table(({**run.row(), "path": str(run.path), **{k: flat.get(k) for k in keys}}
                      for run, flat in zip(self._runs, flats)), title="runs")

    def to_pandas(self):
        """`rows()` as a pandas DataFrame."""
        return self.rows().to_pandas()

    def compare(self, **options) -> Table:
        """These runs compared: `nnexp.compare` over their directories."""
        return compare(*[r.path for r in self._runs], **options)

    def __repr__(self) -> str:
        counts: dict[str, int] = {}
        for run in self._runs:
            counts[run.status] = counts.get(run.status, 0) + 1
        said = ", ".join(f"{n} {status}" for status, n in counts.items())
        return f"<RunList: {len(self)} run{'s' * (len(self) != 1)}" + (f" ({said})>" if said else ">")

    def _repr_html_(self) -> str:
        rows = self.rows()
        columns = [c for c in rows[0] if c != "path"] if rows else []
        return f"<p>{len(self)} run{'s' * (len(self) != 1)}</p>" + html_table(list(rows), columns)


# --- overrides: keyword arguments, set=, training__momentum= -------------------------------------


def _schema_keys(schema: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, sub in schema.items():
        dotted = f"{prefix}{key}"
        keys += _schema_keys(sub, dotted + ".") if isinstance(sub, dict) else [dotted]
    return keys


def _unknown(name: str, caller: str, keywords: Iterable[str]) -> ConfigError:
    """A keyword argument that names neither a keyword nor a config key: one line, with the
    nearest of both, spelt as a keyword argument would be."""
    keys = _schema_keys(SCHEMA)
    leaves: dict[str, list[str]] = {}
    for key in keys:
        leaves.setdefault(key.rsplit(".", 1)[-1], []).append(key)
    # what a name may be close to -> how to spell it: a keyword, a key with __ for its dots, or
    # the last part of a key alone (`momentun` -> training__momentum), where it names one key
    options = {k: k for k in keywords}
    options.update({k.replace(".", "__"): k.replace(".", "__") for k in keys})
    options.update({leaf: found[0].replace(".", "__") for leaf, found in leaves.items()
                    if len(found) == 1 and leaf not in options})
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.6)
    hint = options[close[0]] if close else None
    return ConfigError("", f"{caller}() got an unknown keyword argument {name!r}"
                           + (f" (did you mean {hint!r}?)" if hint else "")
                           + "; any config key: set={'training.momentum': 0.9} or training__momentum=0.9")


def _dotted(name: str) -> str | None:
    """The config key a `**dotted` argument names: `training__eta` or `training.eta`, or a bare
    `training.` key (`momentum`); None for anything else."""
    if "__" in name or "." in name:
        return name.replace("__", ".")
    if name in SCHEMA and not isinstance(SCHEMA[name], dict):
        return name
    if name in SCHEMA["training"] and not isinstance(SCHEMA["training"][name], dict):
        return f"training.{name}"
    return None


def _as_set(key: str, value: Any) -> str:
    try:  # JSON is YAML: a string stays a string, a float keeps its digits; JSON's NaN would read back as text
        return f"{key}={json.dumps(value, allow_nan=False, default=str)}"
    except ValueError:
        raise ConfigError(key, f"must be a finite number, got {value!r}") from None


def _overrides(caller: str, keywords: dict[str, Any], set_: Mapping | None, dotted: dict[str, Any],
               own: Iterable[str]) -> list[str]:
    """`--set` strings from the keyword arguments (None: not given), `set=` and `**dotted`;
    a key given twice is refused, whichever spellings named it."""
    given: dict[str, tuple[str, Any]] = {}

    def add(key: str, value: Any, spelt: str) -> None:
        if key in given:
            raise ConfigError(key, f"given twice ({given[key][0]} and {spelt})")
        given[key] = (spelt, value)

    for name, value in keywords.items():
        if value is not None:
            add(KEYWORD_KEYS[name], value, f"{name}=")
    if set_ is not None:
        if not isinstance(set_, Mapping):
            raise UserError(f"{caller}(set=...): expected a mapping of config keys to values, "
                            f"e.g. set={{'training.momentum': 0.9}}, got {type(set_).__name__}")
        for key, value in set_.items():
            add(str(key), value, f"set[{key!r}]")
    for name, value in dotted.items():
        key = _dotted(name)
        if key is None:
            raise _unknown(name, caller, own)
        add(key, value, f"{name}=")
    return [_as_set(key, value) for key, (_, value) in given.items()]


def _load_config(config: str | Path | Mapping, sets: list[str]) -> dict:
    """A config file, or a config as a mapping (a notebook's inline config), with `sets`."""
    if isinstance(config, Mapping):
        raw = copy.deepcopy(dict(config))
        return configs.resolve(configs.apply_experiment_overrides(raw, sets))
    return configs.load(config, sets)


def _progress_kind(progress: Any) -> str | None:
    """"notebook", "terminal" or None (silent), for `progress=`."""
    if progress not in PROGRESS or isinstance(progress, int) and not isinstance(progress, bool):
        raise UserError(f"progress={progress!r}: expected 'auto', 'notebook', 'terminal', True or False")
    if progress is False or progress is None:
        return None
    if progress in ("auto", True):
        return "notebook" if in_notebook() else "terminal"
    return progress


@contextlib.contextmanager
def _reporter(kind: str | None, run, cfg: dict):
    """The reporter a run trains with: in place in a notebook, the command's in a terminal."""
    epochs = cfg["training"]["epochs"]
    if kind == "notebook":
        yield NotebookReporter(cfg["name"], epochs)
    elif kind == "terminal":
        from nnexp.progress import epoch_reporter  # lazily: rich's live display, only where it is shown

        with epoch_reporter(run, epochs) as shown:
            yield shown
    else:
        yield None


# --- training ------------------------------------------------------------------------------------

TRAIN_KEYWORDS = ("epochs", "eta", "lmbda", "batch_size", "train_size", "seed", "backend", "device", "note",
                  "tags", "runs_dir", "data_dir", "time_limit_minutes", "progress", "set")


def train(config: str | Path | Mapping, *, epochs: int | None = None, eta: float | None = None,
          lmbda: float | None = None, batch_size: int | None = None, train_size: int | None = None,
          seed: int | None = None, backend: str | None = None, device: str | None = None,
          note: str | None = None, tags: str | Iterable[str] = (), runs_dir: str | Path = "runs",
          data_dir: str | Path | None = None, time_limit_minutes: float | None = None,
          progress: str | bool = "auto", set: Mapping[str, Any] | None = None,  # noqa: A002 - as --set
          **dotted: Any) -> TrainedRun:
    """Train the network a config describes: what ``nnexp train`` does, from Python.

    Parameters
    ----------
    config : str, Path or mapping
        A YAML config file (``"configs/shallow.yaml"``), or a config as a dict.
    epochs, eta, lmbda, batch_size : optional
        ``training.epochs``, ``training.eta``, ``training.lambda`` (L2; ``lambda`` is a Python
        keyword) and ``training.batch_size``.
    train_size : int, optional
        ``data.train_size``: train on the first N training images (validation and test sets
        stay whole).
    seed, backend, device : optional
        ``seed``, ``backend`` (``numpy`` or ``torch``), ``device`` (``cpu``, ``cuda``, ``auto``).
    note : str, optional
        Why the run exists; kept in RUN/notes.json and shown by ``nnexp.runs``.
    tags : str or iterable of str
        Short labels (letters, digits, ``_.:-``), kept with the note.
    runs_dir : str or Path
        Where the new run directory is made (default ``runs``).
    data_dir : str or Path, optional
        The MNIST files (default: ``data.path``, ``$NNEXP_DATA_DIR``, then the per-user cache).
    time_limit_minutes : float, optional
        Pause, resumable, before an epoch that would end after this many minutes.
    progress : "auto", "notebook", "terminal" or bool
        ``"auto"`` (or True): a display updated in place in a Jupyter notebook, the command's
        bar or line per epoch elsewhere; False: nothing.
    set : mapping, optional
        Any config key by its dotted name: ``set={"training.momentum": 0.9}``.
    **dotted
        Config keys as keyword arguments, ``__`` for the dots: ``training__momentum=0.9``
        (a bare ``training.`` key, ``momentum=0.9``, also works).

    Returns
    -------
    TrainedRun
        ``.path``, ``.summary``, ``.metrics`` (one dict per epoch), ``.config``, ``.status``,
        ``.id``, ``.note``, ``.tags``.

    Raises
    ------
    ConfigError
        An unknown keyword or key, or a bad value, before any run directory is made.

    Examples
    --------
    >>> run = nnexp.train("configs/shallow.yaml", epochs=2, train_size=1000, eta=0.5,
    ...                   set={"training.momentum": 0.9}, training__optimizer="momentum",
    ...                   note="a quick look", tags=["smoke"])        # doctest: +SKIP
    >>> run.summary["test_accuracy"], run.metrics[-1]["validation_accuracy"]  # doctest: +SKIP
    """
    keywords = {"epochs": epochs, "eta": eta, "lmbda": lmbda, "batch_size": batch_size,
                "train_size": train_size, "seed": seed, "backend": backend, "device": device}
    sets = _overrides("train", keywords, set, dotted, TRAIN_KEYWORDS)
    if note is not None and not isinstance(note, str):
        raise UserError(f"note={note!r}: expected a string")
    notes = notes_given(note, [tags] if isinstance(tags, str) else list(tags))  # tags="x": one tag, not one a letter
    kind = _progress_kind(progress)
    cfg = _load_config(config, sets)
    exp, run = lifecycle.new_run(cfg, runs_dir, data_dir, notes=notes)
    with _reporter(kind, run, cfg) as reporter:
        try:
            summary = lifecycle.execute(exp, run, lifecycle.Intent.START, reporter,
                                        deadline=lifecycle.deadline_after(time_limit_minutes))
        except BaseException:  # diverged, interrupted: the display says how the run ended, then the error
            if isinstance(reporter, NotebookReporter):
                with contextlib.suppress(UserError, OSError):
                    reporter.finish(run.read_summary() or {"status": "failed"})
            raise
        if isinstance(reporter, NotebookReporter):
            reporter.finish(summary)
    return TrainedRun.of(read_run(run.path))


# --- looking at runs -------------------------------------------------------------------------------


def _listed(value: str | Iterable[str], what: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, Iterable):
        raise UserError(f"{what}={value!r}: expected a string or a list of them")
    return [str(v) for v in value]


def _warn(messages: list[str]) -> None:
    for message in messages:
        warnings.warn(message, stacklevel=3)


def runs(*paths: str | Path, where: str | Iterable[str] = (), status: str | Iterable[str] = (),
         tags: str | Iterable[str] = (), last: int | None = None) -> RunList:
    """The runs `paths` name (run directories, globs, sweep directories, folders of them;
    default ``runs``), as `nnexp compare` finds them.

    Parameters
    ----------
    where : str or list of str
        Conditions as ``nnexp compare --where`` takes them: ``"training.eta=0.5"``,
        ``"test_accuracy>0.9"``, ``"status!=completed"`` (a config key, a metric or status).
    status : str or list of str
        Only runs with one of these statuses.
    tags : str or list of str
        Only runs carrying every one of these tags.
    last : int, optional
        Only the `last` runs started last.

    Examples
    --------
    >>> nnexp.runs("runs", where="training.eta>0.1", tags="baseline").to_pandas()  # doctest: +SKIP
    """
    records, warned = load_runs(list(paths) or ["runs"])
    _warn(warned)
    records = cmp.select(records, where=_listed(where, "where"), status=_listed(status, "status"), last=last)
    wanted = set(_listed(tags, "tags"))
    return RunList(TrainedRun.of(r) for r in records if wanted <= set(r.notes.tags))


def compare(*paths: str | Path, sort: str = "val", descending: bool | None = None, group: bool = True,
            where: str | Iterable[str] = (), status: str | Iterable[str] = (),
            last: int | None = None) -> Table:
    """What ``nnexp compare PATHS -f json`` prints, as a list of dicts (a `Table`): a row per
    run, or per group of runs that differ only in seed (``group=True``: mean, ``_std``,
    ``_min``, ``_max``), sorted by `sort` (a column, a short name such as ``val``, ``test``,
    ``eta``, or a config key); accuracies are fractions. ``.to_pandas()`` makes a DataFrame.

    Examples
    --------
    >>> nnexp.compare("runs", where="training.eta<1", sort="test").to_pandas()  # doctest: +SKIP
    """
    comparison, warned = cmp.compare(list(paths) or ["runs"], sort=sort, descending=descending, group=group,
                                     where=_listed(where, "where"), status=_listed(status, "status"), last=last)
    _warn(warned)
    return Table((cmp.machine_row(row, comparison) for row in comparison.rows), title="compare")


# --- sweeps ------------------------------------------------------------------------------------------

SWEEP_KEYWORDS = ("grid", "seeds", "jobs", "threads", "executor", "address", "runs_dir", "data_dir", "name",
                  "time_limit_minutes", "progress", "sort", "group", "set", *KEYWORD_KEYS)


def _grid(grid: Mapping | None) -> dict[str, list]:
    """`grid=` as `sweepplan.plan_sweep` takes it: config key -> values; the keyword names of
    `train` (``eta``) and ``training__eta`` name keys too."""
    if grid is None:
        return {}
    if not isinstance(grid, Mapping):
        raise UserError(f"grid: expected a mapping of config keys to lists of values, "
                        f"e.g. {{'training.eta': [0.1, 0.5]}}, got {type(grid).__name__}")
    out: dict[str, list] = {}
    for name, values in grid.items():
        key = KEYWORD_KEYS.get(name) or _dotted(str(name))
        if key is None:
            raise _unknown(str(name), "sweep(grid=...)", KEYWORD_KEYS)
        values = list(values) if isinstance(values, (list, tuple)) else [values]
        if not values:
            raise UserError(f"grid[{name!r}]: no values")
        if key in out:
            raise UserError(f"grid: {key} is given twice")
        out[key] = values
    return out


def sweep(config: str | Path, grid: Mapping[str, Any] | None = None, *, seeds: int | Sequence[int] | None = None,
          jobs: int = 1, threads: int = 1, executor: str = "local", address: str | None = None,
          runs_dir: str | Path = "runs", data_dir: str | Path | None = None, name: str | None = None,
          time_limit_minutes: float | None = None, epochs: int | None = None, eta: float | None = None, lmbda: float | None = None,
          batch_size: int | None = None, train_size: int | None = None, seed: int | None = None,
          backend: str | None = None, device: str | None = None, progress: str | bool = "auto",
          sort: str = "val", group: bool = True, set: Mapping[str, Any] | None = None,  # noqa: A002
          **dotted: Any) -> Table:
    """Many runs as one experiment: what ``nnexp sweep CONFIG --grid ... --seeds ...`` does.

    Parameters
    ----------
    config : str or Path
        A config file, or a sweep file (YAML with ``config:``, ``grid:``, ``seeds:``, ...).
    grid : mapping, optional
        Config keys and their values; the points are every combination:
        ``{"training.eta": [0.1, 0.5], "training.lambda": [0, 5]}``.
    seeds : int or list of int, optional
        N seeds counting up from the config's, or the seeds themselves.
    jobs, threads : int
        Points run at once (1: one after another, in this process) and BLAS/torch threads each.
    executor, address : str
        ``"local"`` or ``"ray"`` (and the Ray cluster's address), as ``--executor``.
    runs_dir, data_dir, name
        Where the sweep directory is made, the MNIST files, the sweep's name.
    time_limit_minutes : float, optional
        The whole sweep's budget, as ``--time-limit``: each running point pauses, resumable,
        before an epoch that would end after it, and points not yet started stay planned;
        ``nnexp sweep DIR`` continues them.
    epochs, eta, lmbda, batch_size, train_size, seed, backend, device, set, **dotted
        Overrides of the config for every point, as in `train`.
    progress : "auto", "notebook", "terminal" or bool
        In a notebook, a table of the points updated in place; elsewhere the command's display.
    sort, group
        How the returned rows are sorted and whether seeds are pooled, as in `compare`.

    Returns
    -------
    Table
        The sweep's rows as `compare` gives them; ``.path`` is the sweep directory, which
        ``nnexp sweep DIR`` continues. Points that did not complete are a warning, and their
        rows say their status.

    Examples
    --------
    >>> nnexp.sweep("configs/shallow.yaml", grid={"training.eta": [0.1, 0.5]}, seeds=2,
    ...             epochs=2, train_size=1000, jobs=2)           # doctest: +SKIP
    """
    keywords = {"epochs": epochs, "eta": eta, "lmbda": lmbda, "batch_size": batch_size,
                "train_size": train_size, "seed": seed, "backend": backend, "device": device}
    sets = _overrides("sweep", keywords, set, dotted, SWEEP_KEYWORDS)
    kind = _progress_kind(progress)
    batch.check_kind(executor, address)  # a bad choice fails before anything is read or made
    deadline = batch.deadline_after(time_limit_minutes)  # the whole call's, as --time-limit's
    plan = sweeps.plan_sweep(config, sets=sets, grid=_grid(grid), seeds=seeds, name=name)
    with batch.make_executor(executor, jobs, address, threads) as chosen:  # reached before a directory is made
        made = batch.new_sweep(plan, runs_dir, data_dir, threads=threads)
        todo, before = batch.tasks(made, data_dir=data_dir, threads=made.threads, deadline=deadline)
        with _sweep_display(kind, made, todo, before, getattr(chosen, "jobs", None) or len(todo)) as display:
            statuses = batch.run(made, chosen, todo, before, display)
    ran = {p: s for p, s in statuses.items() if p in before}
    paused = batch.time_limited(ran, before, made) if deadline is not None else None
    if paused is not None:
        _warn([f"paused by the time limit: {len(paused['paused'])} point(s) paused, "
               f"{len(paused['not started'])} not started; continue with: nnexp sweep {made.path}"])
    elif (failure := batch.not_completed(ran, made, False)) is not None:
        _warn([str(failure)])
    started = any(Run.is_run(made.run_path(p)) for p in made.plan.points)  # none: its time limit spent
    table = compare(made.path, sort=sort, group=group) if started else []
    return Table(table, title=f"sweep {made.path.name}", path=made.path)


@contextlib.contextmanager
def _sweep_display(kind: str | None, made, todo: list, before: dict, parallel: int):
    if kind == "notebook":
        yield NotebookSweepDisplay(made.plan.name, before, [t.point for t in todo])
    elif kind == "terminal":
        from nnexp.progress import SweepDisplay  # lazily: rich's live display, only where it is shown

        with SweepDisplay(len(before), todo, before, parallel) as display:
            yield display
    else:
        yield None


__all__ = ["TrainedRun", "RunList", "Table", "train", "runs", "compare", "sweep"]
