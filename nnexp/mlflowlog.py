"""MLflow runs for nnexp runs (`nnexp export mlflow`), for people who keep their runs in MLflow.

Which runs, how a sweep expands (one MLflow run per point) and the warnings for damaged runs
are `runset.load_runs`', as for `nnexp export tensorboard`. Each nnexp run becomes one MLflow
run, named by its id (`RunRecord.id`: the directory's name, or SWEEP/POINT), holding:

    params    the flattened resolved config (`config.flatten`: model.layers.0.units, seed,
              backend, ...), values as text (JSON for non-strings: true, null, [..]),
              cut at MLflow's length limit (config.yaml, in the artifacts, has them whole)
    metrics   every number of every metrics.jsonl record, step = epoch, under its own key
              (validation_accuracy, test_cost, eta, seconds, best as 1/0, ...); a list such
              as layer_speed as layer_speed/hidden1, hidden2, ...; a nested object as key/sub;
              plus best_validation_accuracy and best_test_accuracy, the best so far by the
              training loop's rule. A null (a diverged epoch's NaN) is no value.
    tags      nnexp.id (how a later export finds the run again), nnexp.status, nnexp.stop_reason,
              nnexp.sweep, nnexp.path, nnexp.backend, nnexp.device (what the run ran on), one
              nnexp.tag.NAME = "true" per tag of notes.json, its note as mlflow.note.content
              (the MLflow UI's description), nnexp.fingerprint
    times     start: when the run started (`Run.created_at`); end: start + the summary's wall
              time; each epoch's metrics at start + the seconds of the epochs up to it
    status    FINISHED (completed), FAILED (diverged, failed), RUNNING (still training),
              KILLED (interrupted, killed, or ended without a summary)
    artifacts the run directory's files (hidden ones, such as the lock, left out), checkpoints/
              too unless `checkpoints=False`

Exporting again never makes a second MLflow run for an nnexp run: the MLflow run whose
nnexp.id tag matches is left as it is when nothing it was made from changed (the fingerprint:
the files' names, sizes and times, the status, what was asked), updated in place when the
run only grew (more epochs, a new status, tags, a note), and replaced (the old one deleted,
a new one made) when values it already holds changed: a `resume --set` of the config, or
epochs re-run after a crash. MLflow keeps params as first written and every value logged at
a step, so only a new run can hold the new values alone.

Stores: any tracking URI the installed MLflow takes. With mlflow-skinny (the `mlflow` extra),
`sqlite:///PATH` (MLflow 3's local store; the extra brings SQLAlchemy and Alembic for it) and
a server's http(s)://. `file:///DIR`, the old file store, is refused by MLflow 3 unless
MLFLOW_ALLOW_FILE_STORE=true is set. An experiment this export creates in a sqlite store keeps
its artifacts beside the database file, in mlartifacts/, not in the working directory.
Tested with mlflow-skinny 3.18 (SQLAlchemy 2.1) and 2.10, the extra's lower bound (with
SQLAlchemy 2.0: MLflow 2.10's store does not import under SQLAlchemy 2.1).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from nnexp.errors import UserError
from nnexp.rundir import Status, is_finite_number, is_new_best
from nnexp.runset import RunRecord, load_runs, one_line

MISSING = ('MLflow export needs the mlflow extra: pip install "nnexp[mlflow]" '
           '(from a checkout: pip install -e ".[mlflow]")')
DEFAULT_EXPERIMENT = "nnexp"
ID_TAG, FINGERPRINT_TAG, TAG_PREFIX, NOTE_TAG = "nnexp.id", "nnexp.fingerprint", "nnexp.tag.", "mlflow.note.content"
# what a fingerprint covers besides the files: bump it when what an export writes changes,
# so runs exported by an older nnexp are brought up to date
FORMAT = 1
RUN_STATUS = {Status.COMPLETED: "FINISHED", Status.DIVERGED: "FAILED", Status.FAILED: "FAILED",
              Status.DAMAGED: "FAILED", Status.RUNNING: "RUNNING", Status.STARTING: "RUNNING"}
KILLED = "KILLED"  # interrupted, killed, unknown: ended without finishing
CHECKPOINTS = "checkpoints"

# MLflow's limits, read from the installed version where it says them (`_limits`)
_LIMITS = {"MAX_PARAM_VAL_LENGTH": 6000, "MAX_TAG_VAL_LENGTH": 5000, "MAX_ENTITY_KEY_LENGTH": 250,
           "MAX_PARAMS_TAGS_PER_BATCH": 100, "MAX_METRICS_PER_BATCH": 1000}
_BAD_KEY_CHARS = re.compile(r"[^/\w.\- :]")  # what MLflow refuses in a param, metric or tag key


def require() -> None:
    """Fail with one line naming the extra if MLflow is missing (finding it imports nothing)."""
    if importlib.util.find_spec("mlflow") is None:
        raise UserError(MISSING)


def _limits() -> dict[str, int]:
    try:
        from mlflow.utils import validation
    except ImportError:
        return dict(_LIMITS)
    return {name: getattr(validation, name, default) for name, default in _LIMITS.items()}


# --- what an MLflow run holds -----------------------------------------------------------------


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _key(key: str, limit: int = 250) -> str:
    """A key MLflow takes: characters it refuses as `_`, no empty or `..` path parts."""
    parts = [p if p not in ("", ".", "..") else "_" for p in _BAD_KEY_CHARS.sub("_", key).split("/")]
    return "/".join(parts)[:limit]


def params_of(flat: dict[str, Any], limits: dict[str, int] | None = None) -> dict[str, str]:
    """A run's flattened config as MLflow params: key -> text."""
    limits = limits or _LIMITS
    return {_key(k, limits["MAX_ENTITY_KEY_LENGTH"]): _cut(_text(v), limits["MAX_PARAM_VAL_LENGTH"])
            for k, v in flat.items()}


def _numbers(key: str, value: Any) -> dict[str, float]:
    """One metrics.jsonl field as metric key -> value: a number (a bool as 1 or 0) as itself,
    layer_speed's list as one key per hidden layer, anything else nested as key/sub."""
    if isinstance(value, bool):
        return {key: float(value)}
    if is_finite_number(value):
        return {key: float(value)}
    if isinstance(value, list):
        names = [f"hidden{i}" for i in range(1, len(value) + 1)] if key == "layer_speed" else range(len(value))
        pairs = zip(names, value)
    elif isinstance(value, dict):
        pairs = value.items()
    else:  # null (a NaN as strict JSON writes it), text: no number
        return {}
    out: dict[str, float] = {}
    for name, sub in pairs:
        out.update(_numbers(f"{key}/{name}", sub))
    return out


def metrics_of(records: list[dict], start: float) -> dict[str, dict[int, tuple[float, int]]]:
    """metric key -> {epoch: (value, timestamp in ms)} for a run's metrics.jsonl records; an
    epoch's time is the run's start plus the seconds of the epochs up to it."""
    out: dict[str, dict[int, tuple[float, int]]] = {}
    clock, best_validation, best_test = start, None, None
    for record in records:
        epoch = record.get("epoch")
        seconds = record.get("seconds")
        clock += seconds if is_finite_number(seconds) else 0.0
        if not isinstance(epoch, int) or isinstance(epoch, bool):  # no step to put it at
            continue
        values = {}
        for key, value in record.items():
            if key != "epoch":
                values.update(_numbers(_key(key), value))
        accuracy = record.get("validation_accuracy")
        if is_finite_number(accuracy) and (best_validation is None or is_new_best(accuracy, best_validation)):
            best_validation, best_test = accuracy, record.get("test_accuracy")
        if best_validation is not None:
            values["best_validation_accuracy"] = float(best_validation)
        if is_finite_number(best_test):
            values["best_test_accuracy"] = float(best_test)
        for key, value in values.items():
            out.setdefault(key, {})[epoch] = (value, int(clock * 1000))
    return out


def tags_of(record: RunRecord, limits: dict[str, int] | None = None) -> dict[str, str]:
    """The MLflow tags of a run but its fingerprint."""
    limits = limits or _LIMITS
    summary = record.summary or {}
    tags = {ID_TAG: record.id, "nnexp.status": str(record.status), "nnexp.path": str(record.run.path.resolve())}
    for key, name in (("stop_reason", "nnexp.stop_reason"), ("backend", "nnexp.backend"), ("device", "nnexp.device")):
        if isinstance(summary.get(key), str):
            tags[name] = summary[key]
    if record.sweep:
        tags["nnexp.sweep"] = record.sweep
    for tag in record.notes.tags:
        tags[_key(TAG_PREFIX + tag, limits["MAX_ENTITY_KEY_LENGTH"])] = "true"
    if record.notes.note:
        tags[NOTE_TAG] = record.notes.note
    return {k: _cut(v, limits["MAX_TAG_VAL_LENGTH"]) for k, v in tags.items()}


def run_status(status: Status) -> str:
    return RUN_STATUS.get(status, KILLED)


def times_of(record: RunRecord) -> tuple[int, int | None]:
    """(start, end) in ms: end is None while the run has no wall time to go by."""
    start = record.run.created_at()
    wall = (record.summary or {}).get("wall_time_s")
    end = start + wall if is_finite_number(wall) and run_status(record.status) != "RUNNING" else None
    return int(start * 1000), None if end is None else int(end * 1000)


def artifact_files(record: RunRecord, checkpoints: bool = True) -> list[Path]:
    """The run directory's files to log, relative to it: hidden files (the lock, an atomic
    write's temporary) are not the run's, and checkpoints/ only when asked for."""
    root = record.run.path
    files = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        if not checkpoints and relative.parts[0] == CHECKPOINTS:
            continue
        files.append(relative)
    return files


def fingerprint(record: RunRecord, files: list[Path]) -> str:
    """What an MLflow run was made from: its files' names, sizes and modification times (the
    files themselves are not read: checkpoints can be large), its status (a lock gone turns
    running into killed with no file changed), and the format of the export."""
    parts = [f"format={FORMAT}", f"status={record.status}"]
    for relative in files:
        stat = (record.run.path / relative).stat()
        parts.append(f"{relative.as_posix()}\t{stat.st_size}\t{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()[:32]


# --- the store --------------------------------------------------------------------------------


def _store_error_types() -> tuple[type[BaseException], ...]:
    """What a store raises when it cannot be reached or used, as opposed to a bug of ours."""
    from mlflow.exceptions import MlflowException

    types: list[type[BaseException]] = [MlflowException, ImportError, OSError]
    with contextlib.suppress(ImportError):
        import requests

        types.append(requests.RequestException)
    with contextlib.suppress(ImportError):
        import sqlalchemy.exc

        types.append(sqlalchemy.exc.SQLAlchemyError)
    return tuple(types)


@contextlib.contextmanager
def _store(uri: str):
    """MLflow's own messages (a refused URI, a store that cannot be opened, a server that does
    not answer) as one line naming the URI; its INFO logging (creating a database's tables)
    quiet while the export runs."""
    logger = logging.getLogger("mlflow")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    except _store_error_types() as exc:
        message = str(exc) or type(exc).__name__
        if "sqlalchemy" in message.lower() and isinstance(exc, ImportError):
            message = f"{message}; {MISSING}"
        elif "MLFLOW_ALLOW_FILE_STORE" in message:  # MLflow's own sentence names the way out last, past the cut
            message = ("MLflow refuses its old file store (in maintenance mode since MLflow 3): "
                       "use sqlite:///PATH, or set MLFLOW_ALLOW_FILE_STORE=true")
        raise UserError(f"--tracking-uri {uri}: {one_line(message, 400)}") from None
    finally:
        logger.setLevel(level)


def _client(uri: str):
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise UserError(MISSING) from None
    return MlflowClient(tracking_uri=uri)


def _sqlite_file(uri: str) -> Path | None:
    """The database file of a local sqlite store; None for any other store."""
    parsed = urlparse(uri)
    if parsed.scheme != "sqlite" or not parsed.path or parsed.path.endswith(":memory:"):
        return None
    # sqlite:///runs.db is relative to the working directory, sqlite:////abs/runs.db absolute
    return Path(unquote(parsed.path[1:] if uri.startswith("sqlite:///") else parsed.path)).resolve()


def _check_sqlite(uri: str) -> None:
    """A sqlite store's folder made, or one line on why it cannot be: given a file it cannot
    open, MLflow 2 retries for minutes before it says so."""
    path = _sqlite_file(uri)
    if path is None:
        return
    if path.is_dir():
        raise UserError(f"--tracking-uri {uri}: {path} is a directory; name the database file in it, "
                        f"e.g. sqlite:///{path / 'mlflow.db'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--tracking-uri {uri}: cannot make {path.parent} ({exc.strerror or exc})") from None


def _artifact_location(uri: str) -> str | None:
    """Where a new experiment in a local sqlite store keeps artifacts: mlartifacts/ beside the
    database file. MLflow's default is ./mlruns in whatever directory the store was first
    opened from; a server, or a store of another kind, decides for itself (None)."""
    path = _sqlite_file(uri)
    return None if path is None else (path.parent / "mlartifacts").as_uri()


def _experiment_id(client, name: str, uri: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return client.create_experiment(name, artifact_location=_artifact_location(uri))
    if experiment.lifecycle_stage != "active":
        raise UserError(f"MLflow experiment {name!r} is deleted; restore it "
                        f"(mlflow experiments restore) or choose another --experiment")
    return experiment.experiment_id


def _existing(client, experiment_id: str) -> dict[str, Any]:
    """nnexp id -> the (active) MLflow run made for it, over all runs of the experiment, read
    a page at a time; matched here rather than in a filter string, which cannot quote every
    character a run's name may hold."""
    from mlflow.entities import ViewType

    found: dict[str, Any] = {}
    token = None
    while True:
        page = client.search_runs([experiment_id], "", run_view_type=ViewType.ACTIVE_ONLY,
                                  max_results=1000, page_token=token)
        for mlrun in page:
            nnexp_id = mlrun.data.tags.get(ID_TAG)
            if nnexp_id is not None:
                found.setdefault(nnexp_id, mlrun)
        token = page.token
        if not token:
            return found


# --- one run ----------------------------------------------------------------------------------


@dataclass
class Exported:
    """What the export did with one nnexp run."""

    id: str  # the nnexp run's id
    run_id: str  # the MLflow run's
    outcome: str  # created | updated | replaced | unchanged


def _chunks(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i: i + size]


def _log(client, run_id: str, limits: dict[str, int], params: dict[str, str] = (),
         metrics: list[tuple[str, float, int, int]] = (), tags: dict[str, str] = ()) -> None:
    """In batches of the sizes MLflow takes (older clients do not split them)."""
    from mlflow.entities import Metric, Param, RunTag

    params = [Param(k, v) for k, v in dict(params).items()]
    tags = [RunTag(k, v) for k, v in dict(tags).items()]
    for batch in _chunks(params + tags, limits["MAX_PARAMS_TAGS_PER_BATCH"]):
        client.log_batch(run_id, params=[p for p in batch if isinstance(p, Param)],
                         tags=[t for t in batch if isinstance(t, RunTag)])
    metrics = [Metric(key, value, timestamp, step) for key, value, timestamp, step in metrics]
    for batch in _chunks(metrics, limits["MAX_METRICS_PER_BATCH"]):
        client.log_batch(run_id, metrics=batch)


def _flat_metrics(metrics: dict[str, dict[int, tuple[float, int]]]) -> list[tuple[str, float, int, int]]:
    return [(key, value, timestamp, step) for key, steps in metrics.items()
            for step, (value, timestamp) in sorted(steps.items())]


def _finish(client, run_id: str, record: RunRecord, files: list[Path], end: int | None, print_id: str) -> None:
    """The artifacts, the status and end time, and last the fingerprint: an export cut short
    leaves a run whose fingerprint does not match, which the next export brings up to date."""
    for relative in files:
        parent = relative.parent.as_posix()
        client.log_artifact(run_id, str(record.run.path / relative), None if parent == "." else parent)
    status = run_status(record.status)
    if status == "RUNNING":
        client.update_run(run_id, status=status)
    else:
        client.set_terminated(run_id, status, end_time=end)
    client.set_tag(run_id, FINGERPRINT_TAG, print_id)


def _create(client, experiment_id: str, record: RunRecord, content: dict, limits: dict[str, int]) -> str:
    """A new MLflow run holding everything; deleted again if any of it fails, so no half-made
    run is found by the next export."""
    start, end = content["times"]
    mlrun = client.create_run(experiment_id, start_time=start, tags={ID_TAG: record.id}, run_name=record.id)
    run_id = mlrun.info.run_id
    try:
        _log(client, run_id, limits, content["params"], _flat_metrics(content["metrics"]), content["tags"])
        _finish(client, run_id, record, content["files"], end, content["fingerprint"])
    except BaseException:
        with contextlib.suppress(Exception):
            client.delete_run(run_id)
        raise
    return run_id


def _update(client, mlrun, record: RunRecord, content: dict, limits: dict[str, int]) -> bool:
    """Bring `mlrun` up to date in place, if all it holds still stands (its params, and each
    metric value at its step): only what is new is logged, stale nnexp tags and note removed.
    False, with nothing changed, when it does not."""
    run_id = mlrun.info.run_id
    params, metrics = content["params"], content["metrics"]
    if any(key not in params or params[key] != value for key, value in mlrun.data.params.items()):
        return False
    held: dict[str, dict[int, float]] = {}
    for key in mlrun.data.metrics:
        held[key] = {m.step: m.value for m in client.get_metric_history(run_id, key)}
        mine = metrics.get(key, {})
        if any(step not in mine or mine[step][0] != value for step, value in held[key].items()):
            return False
    new_metrics = {key: {step: v for step, v in steps.items() if step not in held.get(key, {})}
                   for key, steps in metrics.items()}
    stale = [key for key in mlrun.data.tags
             if (key.startswith(TAG_PREFIX) or key in (NOTE_TAG, "nnexp.sweep", "nnexp.stop_reason"))
             and key not in content["tags"]]
    for key in stale:
        client.delete_tag(run_id, key)
    _log(client, run_id, limits, {k: v for k, v in params.items() if k not in mlrun.data.params},
         _flat_metrics(new_metrics), content["tags"])
    _finish(client, run_id, record, content["files"], content["times"][1], content["fingerprint"])
    return True


def _export_run(client, experiment_id: str, record: RunRecord, mlrun, checkpoints: bool,
                limits: dict[str, int]) -> Exported:
    files = artifact_files(record, checkpoints)
    print_id = fingerprint(record, files)
    if mlrun is not None and mlrun.data.tags.get(FINGERPRINT_TAG) == print_id:
        return Exported(record.id, mlrun.info.run_id, "unchanged")
    times = times_of(record)
    content = {"params": params_of(record.flat, limits), "metrics": metrics_of(record.metrics, times[0] / 1000),
               "tags": tags_of(record, limits), "times": times, "files": files, "fingerprint": print_id}
    if mlrun is None:
        return Exported(record.id, _create(client, experiment_id, record, content, limits), "created")
    if _update(client, mlrun, record, content, limits):
        return Exported(record.id, mlrun.info.run_id, "updated")
    # made anew before the old one goes: a failure on the way leaves the old run as it was
    run_id = _create(client, experiment_id, record, content, limits)
    client.delete_run(mlrun.info.run_id)
    return Exported(record.id, run_id, "replaced")


# --- export -----------------------------------------------------------------------------------


def export(patterns: list[str], tracking_uri: str, experiment: str = DEFAULT_EXPERIMENT,
           checkpoints: bool = True) -> tuple[list[Exported], list[str]]:
    """One MLflow run per nnexp run the patterns name (runs, sweeps, folders of them), in the
    experiment `experiment` of the store at `tracking_uri` (created if missing); returns what
    was done with each, and the warnings for runs skipped."""
    if not tracking_uri.strip():
        raise UserError("--tracking-uri is empty; give e.g. sqlite:///mlflow.db")
    if not experiment.strip():
        raise UserError("--experiment is empty; give a name")
    records, warnings = load_runs(patterns)  # nothing is written for a command that names no run
    require()
    _check_sqlite(tracking_uri)
    limits = _limits()
    with _store(tracking_uri):
        client = _client(tracking_uri)
        experiment_id = _experiment_id(client, experiment, tracking_uri)
        existing = _existing(client, experiment_id)
        done = [_export_run(client, experiment_id, record, existing.get(record.id), checkpoints, limits)
                for record in records]
    return done, warnings


def viewer_hint(tracking_uri: str) -> str:
    """How to look at the exported runs."""
    if urlparse(tracking_uri).scheme in ("http", "https"):
        return f"open {tracking_uri}"
    return f"mlflow ui --backend-store-uri {tracking_uri} (the full mlflow package)"
