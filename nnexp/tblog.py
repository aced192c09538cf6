"""TensorBoard event files for runs: written as epochs land (`--tensorboard` on train, resume,
sweep and search, into RUN/tensorboard/), or for runs that exist (`nnexp export tensorboard`).

Either way a run's events say the same, one stream per run with the epoch as the step:

    accuracy/validation, accuracy/test, accuracy/train    (train: with monitor_train)
    cost/validation, cost/test, cost/train
    eta                                                    the η the epoch trained with
    layer_speed/hidden1, hidden2, ...                      chapter 5's speeds (monitor_layer_speed)
    time/epoch_seconds, best/new_best (1 at a new best validation accuracy)
    best/validation_accuracy, best/test_accuracy          the best so far and the test accuracy at
                                                          it: the HParams plugin's metrics
    run/status (text)                                      status and stop reason, when a session ends

plus the HParams plugin's records: the config keys that differ between the runs (a sweep's
grid keys, a search's draws) and the seed, against the two best/ metrics.

metrics.jsonl stays the truth and the events are derived from it: a resumed run's are
written again from it, so no epoch shows twice and none is missing. The writer is
torch.utils.tensorboard's SummaryWriter, from the optional `tensorboard` extra.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

from nnexp.comparison import differing_keys
from nnexp.config import flatten
from nnexp.errors import ConfigError, UserError
from nnexp.rundir import Run, Status, is_finite_number, is_new_best, is_sweep_dir
from nnexp.runset import RunRecord, load_runs
from nnexp.training import STOP_REASONS, Reporter

MISSING = 'TensorBoard event files need the tensorboard package: pip install -e ".[tensorboard]"'
EVENT_FILES = "events.out.tfevents.*"  # the names SummaryWriter gives its files
# metrics.jsonl's keys -> tags; a key not listed keeps its name, `layer_speed` is one tag per layer
TAGS = {"validation_accuracy": "accuracy/validation", "test_accuracy": "accuracy/test",
        "train_accuracy": "accuracy/train", "validation_cost": "cost/validation", "test_cost": "cost/test",
        "train_cost": "cost/train", "eta": "eta", "seconds": "time/epoch_seconds", "best": "best/new_best"}
BEST_VALIDATION, BEST_TEST = "best/validation_accuracy", "best/test_accuracy"
HPARAM_METRICS = {BEST_VALIDATION: 0.0, BEST_TEST: 0.0}  # only the names count: values are the scalars'
STATUS_TAG = "run/status"


def require(enabled: bool = True) -> None:
    """Fail with one line naming the extra, before anything is written, if event files are
    wanted and the tensorboard package is missing (finding it imports nothing)."""
    if enabled and importlib.util.find_spec("tensorboard") is None:
        raise UserError(MISSING)


def _writer_api():
    """torch's SummaryWriter and its HParams summaries."""
    require()  # torch.utils.tensorboard may be imported already: the package decides
    try:
        # lazily: torch.utils.tensorboard imports torch (seconds), and needs the optional tensorboard package
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams
    except ImportError:
        raise UserError(MISSING) from None
    return SummaryWriter, hparams


# --- what a run's events hold -----------------------------------------------------------------


def scalars(record: dict) -> dict[str, float]:
    """One metrics.jsonl record as scalars, tag -> value; its epoch is their step."""
    out = {}
    for key, value in record.items():
        if key == "epoch":
            continue
        if key == "layer_speed" and isinstance(value, list):
            # the speeds of the layers with parameters but the output layer: the hidden layers
            out.update({f"layer_speed/hidden{i}": float(v) for i, v in enumerate(value, start=1)
                        if isinstance(v, (int, float)) and not isinstance(v, bool)})
        elif isinstance(value, (int, float)):  # `best` (a bool) as 1 or 0
            out[TAGS.get(key, key)] = float(value)
    return out


class _Best:
    """The best validation accuracy so far and the test accuracy at it, by the loop's rule
    (`rundir.is_new_best`), so the last values are the run's summary."""

    def __init__(self):
        self.validation: float | None = None
        self.test: float | None = None

    def update(self, record: dict) -> dict[str, float]:
        accuracy = record.get("validation_accuracy")
        if is_finite_number(accuracy) and (self.validation is None or is_new_best(accuracy, self.validation)):
            self.validation, self.test = accuracy, record.get("test_accuracy")
        values = {BEST_VALIDATION: self.validation, BEST_TEST: self.test}
        return {tag: float(v) for tag, v in values.items() if is_finite_number(v)}


def _write_epoch(writer, record: dict, best: _Best, walltime: float | None = None) -> None:
    epoch = record.get("epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool):  # nowhere to put it
        return
    for tag, value in {**scalars(record), **best.update(record)}.items():
        writer.add_scalar(tag, value, epoch, walltime=walltime)


def _write_history(writer, run: Run, records: list[dict], best: _Best) -> None:
    """Epochs that ended before this writer existed, timed from the run's start."""
    clock = run.created_at()
    for record in records:
        seconds = record.get("seconds")
        clock += seconds if is_finite_number(seconds) else 0.0
        _write_epoch(writer, record, best, walltime=clock)


def _write_end(writer, status: str, summary: dict | None, epochs: int, hparams_api) -> None:
    """The status (and stop reason) as text; a completed run's HParams session marked done."""
    reason = (summary or {}).get("stop_reason")
    writer.add_text(STATUS_TAG, f"{status}: {STOP_REASONS.get(reason, reason)}" if reason else str(status),
                    global_step=epochs)
    if status == Status.COMPLETED:
        _, _, session_end = hparams_api({}, HPARAM_METRICS)  # its status is STATUS_SUCCESS
        writer.file_writer.add_summary(session_end, epochs)


# --- HParams ----------------------------------------------------------------------------------


def _tensorboard_value(value: Any) -> Any:
    """A config value as the HParams plugin takes it when its key is not a number in every run:
    text (booleans too: torch's writer would record them as 1.0 and 0.0)."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def hparams_of(flats: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each run's HParams, for runs' flattened configs: the keys whose values differ between
    them, plus seed. A key is a number in every run or text in every run, so the plugin can
    sort and filter it; a run without the key (or with null) has no value for it."""
    keys = differing_keys(flats)
    if "seed" not in keys:
        keys.append("seed")
    result: list[dict[str, Any]] = [{} for _ in flats]
    for key in keys:
        values = [flat.get(key) for flat in flats]
        numeric = all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in values)
        for hparams, value in zip(result, values):
            if value is not None:
                hparams[key] = value if numeric else _tensorboard_value(value)
    return result


def sweep_hparams(plan) -> dict[str, dict[str, Any]]:
    """Point id -> its HParams, over all of a sweep's points (a `sweepplan.Plan`): the same keys
    whichever points a command runs (--only), and the same as an export of the whole sweep."""
    configs = {}
    for point in plan.points:
        with contextlib.suppress(ConfigError):  # a point --only left out may not resolve: not ours to judge
            configs[point.id] = plan.config(point)
    return dict(zip(configs, hparams_of([flatten(cfg) for cfg in configs.values()])))


def _experiment(hparams_api, runs: list[dict[str, Any]]):
    """The HParams experiment summary for runs' HParams: every key, with its type and (for
    text) its values, against the best/ metrics."""
    example, choices = {}, {}
    for hparams in runs:
        for key, value in hparams.items():
            example.setdefault(key, value)
            if isinstance(value, str):
                choices.setdefault(key, set()).add(value)
    experiment, _, _ = hparams_api(example, HPARAM_METRICS, {k: sorted(v) for k, v in choices.items()})
    return experiment


# --- live: --tensorboard ----------------------------------------------------------------------


class LiveEvents:
    """A Reporter that writes each epoch into RUN/tensorboard/ as it ends, flushed, and passes
    every call on to `inner` (the terminal's, or a sweep worker's).

    The writer opens when the first epoch starts: by then a resumed run's metrics.jsonl holds
    exactly the epochs its last checkpoint holds. The events of earlier sessions are replaced
    by those epochs written again, so epochs re-run after a crash never show twice and epochs
    trained without --tensorboard are there too; purge_step=1 makes a TensorBoard that is
    already showing the run drop what it read before."""

    def __init__(self, run: Run, inner: Reporter, hparams: dict[str, Any] | None = None):
        self.run, self.inner, self.hparams = run, inner, hparams
        # imported now, not when the first epoch starts: its seconds would count as the epoch's
        self.summary_writer, self.api = _writer_api()
        self.writer, self.best = None, _Best()

    def epoch_started(self, epoch: int, num_batches: int) -> None:
        if self.writer is None:
            self._open(epoch)
        self.inner.epoch_started(epoch, num_batches)

    def batches_done(self, done: int) -> None:
        self.inner.batches_done(done)

    def evaluating(self) -> None:
        self.inner.evaluating()

    def epoch_finished(self, record: dict, line: str) -> None:
        _write_epoch(self.writer, record, self.best)
        self.writer.flush()  # on disk now, not at the writer's next timed flush
        self.inner.epoch_finished(record, line)

    def _open(self, epoch: int) -> None:
        directory = self.run.events_dir()
        if directory.is_dir():
            for old in directory.glob(EVENT_FILES):  # derived from metrics.jsonl, written again below
                old.unlink()
        self.writer = self.summary_writer(str(directory), purge_step=1)
        hparams = self.hparams if self.hparams is not None else {"seed": self.run.config(lenient=True)["seed"]}
        # the session's values only, no experiment summary: TensorBoard then gathers the keys of
        # every run under --logdir, where one run's experiment summary would hide the others' keys
        _, session_start, _ = self.api(hparams, HPARAM_METRICS)
        self.writer.file_writer.add_summary(session_start)
        _write_history(self.writer, self.run, self.run.read_metrics(strict=False)[: epoch - 1], self.best)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is None:  # no epoch started: nothing to say
            return
        try:
            summary = self.run.read_summary()
            status = self.run.status(summary)
            epochs = len(self.run.read_metrics(strict=False))
            _write_end(self.writer, status, summary, epochs, self.api)
        except (UserError, OSError):  # the run's own files say what happened; these are extra
            pass
        finally:
            self.writer.close()


@contextlib.contextmanager
def live(run: Run, reporter: Reporter, enabled: bool = True, hparams: dict[str, Any] | None = None):
    """`reporter`, and with `enabled` RUN/tensorboard/ written as epochs end (a `LiveEvents`),
    closed with the run's status however the block ends. `hparams` default to the seed."""
    if not enabled:
        yield reporter
        return
    events = LiveEvents(run, reporter, hparams)
    try:
        yield events
    finally:
        events.close()


# --- export -----------------------------------------------------------------------------------


def _names(records: list[RunRecord]) -> list[str]:
    """Each run's sub-directory: its name, a sweep's point as sweep/point; a name met twice
    gets a -2, -3, ..."""
    names, seen = [], set()
    for record in records:
        path = record.run.path
        name = f"{path.parent.name}/{path.name}" if is_sweep_dir(path.parent) else path.name
        unique, n = name, 1
        while unique in seen:
            n += 1
            unique = f"{name}-{n}"
        seen.add(unique)
        names.append(unique)
    return names


def _check_target(target: Path) -> None:
    """An earlier export may be replaced; anything else there is the user's and stays."""
    if target.is_dir() and all(p.is_file() and p.match(EVENT_FILES) for p in target.iterdir()):
        return
    if target.exists():
        raise UserError(f"{target} exists and holds more than TensorBoard event files; "
                        f"choose another --out")


def _export_run(record: RunRecord, target: Path, hparams: dict[str, Any], experiment, api) -> None:
    """One run's events into `target`, written beside it and renamed into place: a reader sees
    the old export or the new one, and an interrupted export leaves only a hidden folder."""
    summary_writer, hparams_api = api
    target.parent.mkdir(parents=True, exist_ok=True)
    incoming, old = target.with_name(f".{target.name}.incoming"), target.with_name(f".{target.name}.old")
    shutil.rmtree(incoming, ignore_errors=True)
    try:
        with summary_writer(str(incoming)) as writer:
            _, session_start, _ = hparams_api(hparams, HPARAM_METRICS)
            writer.file_writer.add_summary(experiment)
            writer.file_writer.add_summary(session_start)
            _write_history(writer, record.run, record.metrics, _Best())
            _write_end(writer, record.status, record.summary, len(record.metrics), hparams_api)
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
        incoming.rename(target)
    finally:
        shutil.rmtree(incoming, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def export(patterns: list[str], out: str | Path) -> tuple[list[Path], list[str]]:
    """Event files for the runs `patterns` name (runs, sweeps, folders of them: `runset`),
    one sub-directory of `out` each; returns those and the warnings for runs skipped.
    Exporting again replaces a run's earlier export."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a directory")
    records, warnings = load_runs(patterns)
    targets = [out / name for name in _names(records)]
    for target in targets:  # before anything is written
        _check_target(target)
    api = _writer_api()
    hparams = hparams_of([record.flat for record in records])
    experiment = _experiment(api[1], hparams)
    for record, target, run_hparams in zip(records, targets, hparams):
        _export_run(record, target, run_hparams, experiment, api)
    return targets, warnings
