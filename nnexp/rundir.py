"""The run directory: the only code that reads or writes one.

    runs/<name>-<YYYYmmdd-HHMMSS>[-N]/
      config.yaml          the resolved config (every default filled in)
      env.json             versions, git commit + dirty flag, command line, host, data checksums
      metrics.jsonl        one JSON object per completed epoch
      summary.json         status, best epoch, accuracies, timings (rewritten every epoch)
      train.log            the plain per-epoch lines the command printed
      notes.json           why the run exists: a note and tags (changed any time, never the experiment)
      checkpoints/best.npz parameters at the best-validation epoch
      checkpoints/last.npz parameters + optimiser/RNG/loop state after the last epoch
      tensorboard/         TensorBoard event files (--tensorboard), rewritten from metrics.jsonl
      .lock                held (flock; filelock where fcntl is missing) by the process training the run
      .notes.lock          held for the moment notes.json is read, changed and written again

Directories are created with one atomic mkdir, so two runs started at the same moment never
share one. Every JSON and checkpoint file is written to a temporary file and renamed, so a
crash leaves the previous version, never half of a new one. Checkpoints are plain arrays
(``param/<name>``) plus JSON metadata: any backend can load them.

Everyone else asks the run: where it stands (`Run.status`, one of `Status`), its config
resolved (`Run.config`) and its network (`Run.spec`); `is_new_best` is the best-epoch rule.
A checkpoint is checked as it is loaded (`load_checkpoint`): metadata that is not what the
training loop writes (`LoopState` and the rest) is one "damaged" error, never a traceback.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import shutil
import zipfile
from dataclasses import dataclass, fields
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Callable

import numpy as np

from nnexp import config as configs
from nnexp.errors import RunDirError, UserError
from nnexp.fileio import atomic_write_bytes, atomic_write_text, temporary_target, to_json
from nnexp.network import NetworkSpec, build_spec
from nnexp.yamlio import read_yaml_file

try:
    import fcntl
except ImportError:  # Windows: `_file_lock` stands in
    fcntl = None



class Status(StrEnum):
    """Where a run (or a sweep's point) stands: the one list of these words.

    The training loop writes the first five into summary.json, a search's trial `PRUNED`
    (`tuning`); the others are inferred by
    readers: from the lock (`KILLED`), from a missing summary (`STARTING`, `UNKNOWN`), from a
    sweep's manifest (`PENDING`, `DAMAGED`) and from an executor that lost its worker (`LOST`).
    A StrEnum, so a status compares equal to its word and is written to JSON as it."""

    RUNNING = "running"
    COMPLETED = "completed"
    INTERRUPTED = "interrupted"  # Ctrl-C, SIGTERM or --time-limit: resumable
    DIVERGED = "diverged"  # the cost became NaN or infinite
    FAILED = "failed"  # a bug or the environment (a full disk) stopped it
    KILLED = "killed"  # summary says running, but no process holds the run
    STARTING = "starting"  # no summary and no epoch yet
    UNKNOWN = "unknown"  # epochs recorded, but no summary
    PENDING = "pending"  # a sweep's point not yet started
    DAMAGED = "damaged"  # a sweep's point whose run directory cannot be read
    LOST = "lost"  # an executor lost the worker running the point: its run directory decides
    PRUNED = "pruned"  # a search's pruner stopped the trial after an epoch: resumable, by `nnexp resume`


# Statuses a run does not leave by itself: a sweep skips them, and only a retry (diverged,
# failed, damaged: RETRYABLE) runs them again. A pruned trial is final for its search (the
# search decided it) but not for the run: `nnexp resume` continues it as any stopped run
FINAL = frozenset({Status.COMPLETED, Status.DIVERGED, Status.FAILED, Status.DAMAGED, Status.PRUNED})
RETRYABLE = frozenset({Status.DIVERGED, Status.FAILED, Status.DAMAGED})

CHECKPOINT_FORMAT = 1
# The stops last.npz may record (a divergence or a time limit never saves one): the loop's
# words, which `training.STOP_REASONS` puts in people's
SAVED_STOPS = ("epochs", "early-stopping", "eta-floor")
# A sweep directory holds this manifest beside its points' run directories (written by
# `batch.SweepDir`); readers of runs recognise a sweep by it
MANIFEST = "sweep.json"
# The files a run's training process writes through `atomic_path`, beside checkpoints/*.npz:
# their temporaries can only be its own, so the lock's holder may remove them
RUN_FILES = ("config.yaml", "env.json", "summary.json", "metrics.jsonl")
# the stamp `make_unique_dir` puts in a run's name: <name>-<YYYYmmdd-HHMMSS>[-N]
STAMP_FORMAT = "%Y%m%d-%H%M%S"
_NAME_STAMP = re.compile(r"-(\d{8}-\d{6})(?:-(\d+))?$")


@dataclass
class LoopState:
    """Everything the training loop must remember to continue after an interruption. It is
    defined here, beside the checkpoints, because last.npz holds it (``meta["loop"]``) and a
    loaded one must be checked field by field (`loop_damage`)."""

    epoch: int = 0  # last completed epoch
    eta: float = 0.0
    best_epoch: int = 0
    best_validation_accuracy: float = -1.0
    test_accuracy: float | None = None  # at best_epoch
    bad_epochs: int = 0  # epochs since the last strict improvement (kept at an early stop)
    wall_time_s: float = 0.0
    stop_reason: str | None = None  # one of SAVED_STOPS, or None while it goes on


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_accuracy(value) -> bool:
    return is_finite_number(value) and -1 <= value <= 1  # -1: LoopState's "none yet"


def _is_number(value) -> bool:
    return is_finite_number(value)  # defined further down, with the readers' helpers


# what each LoopState field must hold in last.npz
_LOOP_FIELDS = {
    "epoch": _is_count, "eta": _is_number, "best_epoch": _is_count,
    "best_validation_accuracy": _is_accuracy,
    "test_accuracy": lambda v: v is None or _is_accuracy(v),
    "bad_epochs": _is_count, "wall_time_s": _is_number,
    "stop_reason": lambda v: v is None or v in SAVED_STOPS,
}
assert set(_LOOP_FIELDS) == {f.name for f in fields(LoopState)}, "a LoopState field without its check"


def loop_damage(record) -> str | None:
    """Why last.npz's loop record cannot be a `LoopState` the loop saved; None if it can."""
    if not isinstance(record, dict):
        return f"its loop state is not an object ({type(record).__name__})"
    missing, extra = set(_LOOP_FIELDS) - set(record), set(record) - set(_LOOP_FIELDS)
    if missing or extra:
        return "its loop state " + "; ".join(
            part for part in (f"lacks {', '.join(sorted(missing))}" if missing else "",
                              f"has unknown {', '.join(sorted(extra))}" if extra else "") if part)
    for name, valid in _LOOP_FIELDS.items():
        if not valid(record[name]):
            return f"its loop state's {name} is {record[name]!r}"
    return None


def _rng_damage(state) -> str | None:
    """Why a saved RNG state cannot be restored into the streams `training.Seeds` makes
    (default_rng's bit generator); numpy itself is the judge."""
    try:
        np.random.default_rng(0).bit_generator.state = state
    except (TypeError, ValueError, KeyError, OverflowError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def checkpoint_damage(which: str, meta) -> str | None:
    """Why a checkpoint's metadata is not what the training loop writes as `which`, or None.
    Every checkpoint names its parameters and its epoch; last.npz also holds what resume
    continues from: the loop's state, the model's JSON state, both NumPy RNG streams, and
    (since nnexp recorded it) the config it was trained with. An unknown key beside these is
    harmless and allowed; an unknown loop field is not, since the loop would be rebuilt from it."""
    if not isinstance(meta, dict):
        return f"its metadata is not a JSON object ({type(meta).__name__})"
    if meta.get("format") != CHECKPOINT_FORMAT:
        return f"checkpoint format {meta.get('format')!r}, this nnexp reads {CHECKPOINT_FORMAT}"
    names = meta.get("params")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return f"params is {names!r}, not a list of parameter names"
    if not _is_count(meta.get("epoch")):
        return f"epoch is {meta.get('epoch')!r}, not a whole number"
    if which != "last":
        return None
    missing = [k for k in ("loop", "model_state", "order_rng", "augment_rng") if k not in meta]
    if missing:
        return f"it lacks {', '.join(missing)}"
    why = loop_damage(meta["loop"])
    if why is None and meta["loop"]["epoch"] != meta["epoch"]:
        why = f"its loop state is at epoch {meta['loop']['epoch']}, its metadata at {meta['epoch']}"
    if why is not None:
        return why
    if not isinstance(meta["model_state"], dict):
        return f"model_state is not an object ({type(meta['model_state']).__name__})"
    if "config" in meta and not isinstance(meta["config"], dict):
        return f"config is not an object ({type(meta['config']).__name__})"
    for stream in ("order_rng", "augment_rng"):
        why = _rng_damage(meta[stream])
        if why is not None:
            return f"{stream} is not an RNG state ({why})"
    return None


def _file_lock(path: Path, timeout: float = 0):
    """(lock, its timeout exception) from `filelock`, for platforms without fcntl. Only a lock
    the OS drops when its process dies will do: a soft lock (a marker file) left behind by a
    killed run would block its resume for ever."""
    try:
        import filelock  # only where fcntl is missing (Windows); an optional dependency
    except ImportError:
        filelock = None
    if filelock is None:
        raise RunDirError(f"cannot lock {path}: this platform has no fcntl; pip install filelock")
    if issubclass(filelock.FileLock, filelock.SoftFileLock):
        raise RunDirError(f"cannot lock {path}: this platform has neither fcntl nor an OS file lock")
    return filelock.FileLock(str(path), timeout=timeout), filelock.Timeout


def _damage(record) -> str | None:
    """Why a parsed metrics line is not a record the training loop could have written."""
    if not isinstance(record, dict):
        return f"not a JSON object ({type(record).__name__})"
    epoch = record.get("epoch")
    if isinstance(epoch, bool) or not isinstance(epoch, int):
        return "no integer epoch"
    return None


def _torn(raw: bytes) -> bool:
    """Whether an unterminated last line can be a record cut short by a crash: ASCII (to_json
    escapes the rest) and the start of a JSON object, or the zeros a power cut may leave."""
    head = raw.strip(b"\0 ")
    return raw.isascii() and (not head or head.startswith(b"{"))


def make_unique_dir(parent: str | os.PathLike, name: str) -> Path:
    """A new directory ``parent/<name>-<YYYYmmdd-HHMMSS>[-N]`` (runs and sweeps). One atomic
    mkdir each, so two started at the same moment never share one."""
    parent = Path(parent)
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"cannot create the runs directory {parent}: {exc.strerror}") from None
    stamp = datetime.now().strftime(STAMP_FORMAT)
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "run"
    for n in range(1, 10_000):
        path = parent / (f"{safe}-{stamp}" + (f"-{n}" if n > 1 else ""))
        try:
            path.mkdir()  # atomic: exactly one process wins each name
        except FileExistsError:
            continue
        except OSError as exc:
            raise RunDirError(f"cannot create a directory in {parent}: {exc.strerror}") from None
        return path
    raise RunDirError(f"too many directories named {safe}-{stamp} in {parent}")


class Run:
    """A run directory on disk."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    # --- creating and opening -----------------------------------------------------------------

    @classmethod
    def create(cls, runs_dir: str | os.PathLike, name: str) -> "Run":
        """A fresh, empty run directory; never an existing one."""
        run = cls(make_unique_dir(runs_dir, name))
        (run.path / "checkpoints").mkdir()
        return run

    @classmethod
    def at(cls, path: str | os.PathLike) -> "Run":
        """The run directory at exactly `path` (a sweep's point), created if missing; one
        that exists is returned as it is, for `train.execute` to resume or skip."""
        run = cls(path)
        try:
            (run.path / "checkpoints").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunDirError(f"cannot create the run directory {run.path}: {exc.strerror}") from None
        return run

    @classmethod
    def open(cls, path: str | os.PathLike) -> "Run":
        """An existing run directory; anything else is a RunDirError."""
        run = cls(path)
        if not run.path.is_dir():
            raise RunDirError(f"not a run directory: {run.path} does not exist")
        if not (run.path / "config.yaml").is_file():
            raise RunDirError(f"not a run directory: {run.path} has no config.yaml")
        return run

    @staticmethod
    def is_run(path: str | os.PathLike) -> bool:
        return (Path(path) / "config.yaml").is_file()

    @staticmethod
    def is_blank(path: str | os.PathLike) -> bool:
        """Whether `path` holds nothing a run wrote: it is missing, or holds only what `Run.at`
        makes (an empty checkpoints/), the lock, its notes.json (written as the directory is
        made, before anything trains), and temporaries a killed write left. A folder
        with more than that but no config.yaml lost its config: it is damaged, and a run started
        in it would append new epochs to the old ones."""
        path = Path(path)
        if not path.is_dir():
            return not path.exists()
        for child in path.iterdir():
            if child.name in (".lock", NOTES_LOCK, NOTES) or (temporary_target(child.name) is not None and child.is_file()):
                continue
            if child.name == "checkpoints" and child.is_dir() and not any(child.iterdir()):
                continue
            return False
        return True

    def set_aside(self, why: str) -> Path:
        """Rename the run directory to a hidden `.<why>-<stamp>-<name>` beside it, which every
        reader of runs skips, and return the new path: a run started over keeps its old
        epochs. Holding the lock, so no process is training it meanwhile."""
        stamp = datetime.now().strftime(STAMP_FORMAT)
        with self.lock():
            for n in range(1, 1000):
                aside = self.path.with_name(f".{why}-{stamp}{f'-{n}' if n > 1 else ''}-{self.name}")
                if not aside.exists():
                    self.path.rename(aside)
                    return aside
        raise RunDirError(f"cannot set {self.path} aside: too many folders named {aside.name}")

    @contextlib.contextmanager
    def lock(self):
        """Hold the run for one training process. The OS drops the lock when the process
        dies, even by SIGKILL, so a stale "running" status never blocks a resume."""
        if fcntl is None:
            with self._fallback_lock():
                yield self
            return
        with open(self.path / ".lock", "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                pid = f.read().strip() or "?"
                raise RunDirError(f"{self.path} is being trained by another process (pid {pid})") from None
            f.seek(0)
            f.truncate()
            f.write(str(os.getpid()))
            f.flush()
            try:
                yield self
            finally:
                f.truncate(0)
                fcntl.flock(f, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def _fallback_lock(self):
        """`lock` without fcntl. The lock file stays empty: on Windows another process could
        not read a pid from a locked file anyway."""
        lock, busy = _file_lock(self.path / ".lock")
        try:
            lock.acquire()
        except busy:
            raise RunDirError(f"{self.path} is being trained by another process") from None
        try:
            yield
        finally:
            lock.release()

    def is_locked(self) -> bool:
        """True while some process trains this run."""
        if fcntl is None:
            try:
                lock, busy = _file_lock(self.path / ".lock")
            except RunDirError:
                return False  # no process here can hold a lock either
            try:
                lock.acquire()
            except busy:
                return True
            except OSError:
                return False
            lock.release()
            return False
        try:
            # opened for reading, never created: asking must not write into a run that
            # compare, report or a finished copy under results/ only reads. No .lock file
            # means no trainer: `lock` creates it before it takes the lock.
            with open(self.path / ".lock", "r") as f:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(f, fcntl.LOCK_UN)
                return False
        except BlockingIOError:
            return True
        except OSError:
            return False

    # --- config, environment, summary ---------------------------------------------------------

    def write_config(self, cfg: dict) -> None:
        atomic_write_text(self.path / "config.yaml", configs.dump(cfg))

    def read_config(self) -> dict:
        """config.yaml as written: a damaged file is a RunDirError naming it."""
        return read_yaml_file(self.path / "config.yaml", error=RunDirError)

    def config(self, *, lenient: bool = False) -> dict:
        """The run's config resolved again: keys added to nnexp since the run started read as
        their defaults, so a new key is never mistaken for a change. A config that no longer
        validates is a ConfigError, or with `lenient` (readers comparing old runs) the
        config as written."""
        raw = self.read_config()
        try:
            return configs.resolve(raw)
        except UserError:
            if lenient:
                return raw
            raise

    def spec(self) -> NetworkSpec:
        """The network this run trains: shapes, parameter names and layouts."""
        return build_spec(self.config()["model"]["layers"])

    def status(self, summary: dict | None = None, *, epochs: int | None = None) -> Status:
        """Where the run stands, from its summary (read here unless given) and its lock: a run
        whose summary says running but which no process holds died without a word (KILLED,
        resumable); one with no summary yet is STARTING, or UNKNOWN once it has `epochs`
        (counted from metrics.jsonl unless given). A damaged summary is a RunDirError."""
        if summary is None:
            summary = self.read_summary()
        if summary is None:
            if epochs is None:
                epochs = len(self.read_metrics(strict=False))
            return Status.UNKNOWN if epochs else Status.STARTING
        try:
            status = Status(summary.get("status") or Status.UNKNOWN)
        except ValueError:
            return Status.UNKNOWN
        if status == Status.RUNNING and not self.is_locked():
            return Status.KILLED
        return status

    def write_env(self, env: dict) -> None:
        atomic_write_text(self.path / "env.json", to_json(env))

    def read_env(self) -> dict:
        """The environment record; {} where it is missing or damaged (not a JSON object):
        it informs, and nothing should fail for want of it."""
        try:
            record = json.loads((self.path / "env.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return record if isinstance(record, dict) else {}

    # --- notes and tags: what a person says about the run, kept out of its config -------------

    def read_notes(self) -> "Notes":
        """The run's note and tags; empty where there are none. They are not part of the
        config, so adding one never changes the experiment, its label or its reference. A
        damaged notes.json reads as empty rather than failing: it informs, like env.json."""
        try:
            record = json.loads((self.path / NOTES).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return Notes()
        if not isinstance(record, dict):
            return Notes()
        note = record.get("note")
        tags = record.get("tags")
        return Notes(note if isinstance(note, str) else "",
                     tuple(t for t in tags if isinstance(t, str)) if isinstance(tags, list) else ())

    def write_notes(self, notes: "Notes") -> None:
        """Replace notes.json. Safe while the run trains: the trainer never writes notes.json
        and never holds it open, so an atomic replace (temporary file + rename) is all it takes.
        To change what is there, `change_notes`."""
        atomic_write_text(self.path / NOTES, to_json({"note": notes.note, "tags": list(notes.tags)}))

    def change_notes(self, change: Callable[["Notes"], "Notes"]) -> "Notes":
        """Read the notes, change them and write them back, as one step: two `nnexp tag`s at
        once each keep the other's tag. The lock is notes.json's own, never the training
        lock, so a run in progress keeps nobody waiting; it is held for milliseconds, so a
        second writer waits rather than failing."""
        with self._notes_lock():
            notes = change(self.read_notes())
            self.write_notes(notes)
            return notes

    @contextlib.contextmanager
    def _notes_lock(self):
        if fcntl is None:
            lock, busy = _file_lock(self.path / NOTES_LOCK, timeout=30)
            try:
                lock.acquire()
            except busy:
                raise RunDirError(f"{self.path / NOTES}: another process has been changing it for 30 s") from None
            try:
                yield
            finally:
                lock.release()
            return
        with open(self.path / NOTES_LOCK, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # blocking: another writer is done in milliseconds
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def add_resume_to_env(self, env: dict) -> None:
        """Record a resume beside the original environment, which stays as it was."""
        record = self.read_env()  # damaged: a fresh record rather than a failure
        if not isinstance(record.get("resumes"), list):
            record["resumes"] = []
        record["resumes"].append(env)
        self.write_env(record)

    def created_at(self) -> float:
        """When the run was started, as a Unix time, from what nothing rewrites later: env.json's
        ``unix_time`` (or its ``started``), written once when training starts and kept as it was
        by every resume; else the stamp in the directory's name; else config.yaml's mtime, the
        last resort, since ``resume --set`` rewrites that file. Never raises: a damaged or
        missing record falls through to the next."""
        env = self.read_env()
        if is_finite_number(env.get("unix_time")):
            return float(env["unix_time"])
        try:
            return datetime.fromisoformat(env["started"]).timestamp()
        except (KeyError, TypeError, ValueError, OverflowError, OSError):
            pass
        stamp = _NAME_STAMP.search(self.path.name)
        if stamp:
            try:  # a local time to the second; "-N" orders runs made within that second
                return datetime.strptime(stamp[1], STAMP_FORMAT).timestamp() + int(stamp[2] or 1) * 1e-6
            except (ValueError, OverflowError, OSError):
                pass
        try:
            return (self.path / "config.yaml").stat().st_mtime
        except OSError:
            return 0.0

    def write_summary(self, summary: dict) -> None:
        atomic_write_text(self.path / "summary.json", to_json(summary))

    def overwrite_summary_in_place(self, summary: dict) -> None:
        """The last resort on a full disk, where no new file fits: rewrite summary.json's own
        blocks. A reader may catch it half-written, which beats a status that says running
        forever. When the whole summary does not fit the old file, its status alone does."""
        path = self.path / "summary.json"
        try:
            size = path.stat().st_size
            full = to_json(summary, indent=None).encode("utf-8")
            brief = to_json({"status": summary["status"], "epochs_run": summary.get("epochs_run")},
                            indent=None).encode("utf-8")
            data = full if len(full) <= size else brief
            with open(path, "r+b") as f:
                f.write(data)
                f.truncate(len(data))
        except OSError:
            pass  # nothing more can be done on this disk; the run shows as killed, and resumes
    def read_summary(self) -> dict | None:
        """The summary, or None if the run never got far enough to write one; a damaged one
        (not JSON, or not a JSON object) is a RunDirError naming the file."""
        path = self.path / "summary.json"
        if not path.exists():
            return None
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RunDirError(f"{path} is damaged: {exc}") from None
        if not isinstance(summary, dict):
            raise RunDirError(f"{path} is damaged: not a JSON object ({type(summary).__name__})")
        return summary

    # --- metrics and log ----------------------------------------------------------------------

    def append_metrics(self, record: dict) -> None:
        with open(self.path / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(to_json(record, indent=None) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read_metrics(self, strict: bool = True) -> list[dict]:
        """Per-epoch records: JSON objects with an integer epoch.

        A torn last line (a crash mid-write: ASCII, as every line written is, with no newline
        yet) is dropped silently. Any other bad line is damage, which must not silently hide
        the records after it: `strict` raises a RunDirError naming the file and line, otherwise
        the line is skipped and the rest read."""
        path = self.path / "metrics.jsonl"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise RunDirError(f"{path} cannot be read: {exc.strerror or exc}") from None
        lines = data.split(b"\n")
        torn = lines.pop()  # b"" when the file ends with a newline, as it should
        records = []
        for number, raw in enumerate(lines + [torn], start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
                why = _damage(record)
            except UnicodeDecodeError:
                record, why = None, "not UTF-8 text"
            except ValueError as exc:
                record, why = None, f"not JSON ({str(exc)[:80]})"
            if why is None:
                records.append(record)
            elif raw is torn and _torn(raw):
                break
            elif strict:
                raise RunDirError(f"{path} line {number} is damaged: {why}")
        return records

    def truncate_metrics(self, epochs: int) -> None:
        """Keep the records of the first `epochs` epochs only (used when resuming). A damaged
        line is a RunDirError: rewriting the file without it would lose good records too."""
        try:
            records = self.read_metrics(strict=True)
        except RunDirError as exc:
            raise RunDirError(f"{exc}; repair or delete that line, then resume again") from None
        kept = [r for r in records if r["epoch"] <= epochs]
        atomic_write_text(self.path / "metrics.jsonl",
                          "".join(to_json(r, indent=None) + "\n" for r in kept))

    def log(self, line: str) -> None:
        with open(self.path / "train.log", "a", encoding="utf-8") as f:
            f.write(line.rstrip("\n") + "\n")

    def remove_stale_temp_files(self) -> list[Path]:
        """Remove the temporaries `atomic_path` left when a process was killed mid-write (a
        SIGKILL runs no cleanup), in the run directory and checkpoints/. Only those of the
        run's own files: call it holding `lock`, so no other process can be writing them.
        Returns the files removed."""
        removed = []
        for folder, own in ((self.path, RUN_FILES.__contains__),
                            (self.path / "checkpoints", lambda name: name.endswith(".npz"))):
            try:
                children = list(folder.iterdir())
            except OSError:
                continue
            for child in children:
                target = temporary_target(child.name)
                if target is not None and own(target) and child.is_file():
                    child.unlink(missing_ok=True)
                    removed.append(child)
        return removed

    def events_dir(self) -> Path:
        """Where `--tensorboard` writes the run's TensorBoard event files (`tblog`): derived
        from metrics.jsonl, so they may be rewritten from it at any time."""
        return self.path / "tensorboard"

    # --- checkpoints --------------------------------------------------------------------------

    def checkpoint_path(self, which: str) -> Path:
        return self.path / "checkpoints" / f"{which}.npz"

    def save_checkpoint(self, which: str, params: dict[str, np.ndarray], meta: dict,
                        state_arrays: dict[str, np.ndarray] | None = None, *, compressed: bool = False) -> None:
        """`compressed`: deflated, for a copy to keep (`copy_record`); training writes them plain,
        every epoch, where compressing would cost a second each time."""
        arrays = {f"param/{name}": np.asarray(value) for name, value in params.items()}
        for name, value in (state_arrays or {}).items():
            arrays[f"state/{name}"] = np.asarray(value)
        meta = {"format": CHECKPOINT_FORMAT, "params": list(params), **meta}
        arrays["meta"] = np.array(to_json(meta))
        buf = io.BytesIO()
        (np.savez_compressed if compressed else np.savez)(buf, **arrays)
        atomic_write_bytes(self.checkpoint_path(which), buf.getvalue())

    def promote_checkpoint(self, src: str, dst: str) -> None:
        os.replace(self.checkpoint_path(src), self.checkpoint_path(dst))

    def load_checkpoint(self, which: str) -> tuple[dict[str, np.ndarray], dict, dict[str, np.ndarray]]:
        """(params, meta, state arrays); a missing or damaged file, or metadata that is not
        what the loop writes as `which` (`checkpoint_damage`), is a RunDirError naming it."""
        path = self.checkpoint_path(which)
        if not path.exists():
            raise RunDirError(f"{self.path} has no {which} checkpoint ({path.name})")
        try:
            with np.load(path, allow_pickle=False) as npz:
                meta = json.loads(str(npz["meta"]))
                why = checkpoint_damage(which, meta)
                if why is not None:
                    raise ValueError(why)
                params = {n: npz[f"param/{n}"] for n in meta["params"]}
                state = {k[len("state/"):]: npz[k] for k in npz.files if k.startswith("state/")}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise RunDirError(f"checkpoint {path} is damaged and was not loaded ({exc})") from None
        return params, meta, state


    # --- a copy to keep --------------------------------------------------------------------------

    def copy_record(self, target: Path, checkpoints: tuple[str, ...] = ("best",)) -> list[str]:
        """Copy the run's record (config, env, metrics, summary, log, notes) and `checkpoints`
        to the new directory `target`; returns the checkpoints it had none of. Written beside
        `target` and renamed into place: an interrupted copy leaves only a hidden folder.

        A checkpoint's arrays are stored in the precision the run trained in (its config's
        dtype; the training loop saves float64 whatever it trained in) and compressed: a
        float32 net's checkpoint is half the size, and its numbers are the same, since a
        float32 value goes to float64 and back unchanged; an array that would not is kept as
        it was. So `nnexp evaluate` and `nnexp ensemble` give the same answers on the copy."""
        dtype = np.dtype(self.config(lenient=True).get("dtype", "float32"))
        incoming = Run(target.with_name(f".{target.name}.incoming"))
        shutil.rmtree(incoming.path, ignore_errors=True)
        (incoming.path / "checkpoints").mkdir(parents=True)
        missing = []
        try:
            for name in (*RUN_FILES, "train.log", NOTES):
                if (self.path / name).is_file():
                    shutil.copy2(self.path / name, incoming.path / name)
            for which in checkpoints:
                if not self.checkpoint_path(which).is_file():
                    missing.append(which)
                    continue
                params, meta, state = self.load_checkpoint(which)  # a damaged one is an error, never a copy
                incoming.save_checkpoint(which, {k: _narrowed(v, dtype) for k, v in params.items()}, meta,
                                         {k: _narrowed(v, dtype) for k, v in state.items()}, compressed=True)
            incoming.path.rename(target)
        except BaseException:
            shutil.rmtree(incoming.path, ignore_errors=True)
            raise
        return missing


def _narrowed(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """`array` in `dtype` where that changes no value (float64 parameters of a float32 net)."""
    if array.dtype != np.float64 or dtype == np.float64:
        return array
    narrow = array.astype(dtype)
    return narrow if np.array_equal(narrow.astype(np.float64), array, equal_nan=True) else array


NOTES = "notes.json"
NOTES_LOCK = ".notes.lock"
_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,39}")


@dataclass(frozen=True)
class Notes:
    """Why a run exists: free text and short tags (``baseline``, ``ch3``, ``keep``)."""

    note: str = ""
    tags: tuple[str, ...] = ()

    def tagged(self, add: list[str] = (), remove: list[str] = ()) -> "Notes":
        """These notes with `add` tags added (in order, once each) and `remove` removed."""
        tags = [t for t in self.tags if t not in remove]
        tags += [t for t in dict.fromkeys(add) if t not in tags]
        return Notes(self.note, tuple(tags))


def notes_given(note: str | None, tags: list[str] | None) -> "Notes | None":
    """The notes `--note TEXT` and `--tag NAME` give a run being made, every tag checked
    (a bad one is a UserError, raised before anything is made); None when neither is given."""
    checked = [check_tag(t) for t in tags or []]
    if note is None and not checked:
        return None
    return Notes(note or "").tagged(checked)


def tag_arguments(args: list[str]) -> tuple[list[str], list[str], list[str]]:
    """`nnexp tag RUN... +NAME -NAME NAME` read as (runs, tags to add, tags to remove): the
    runs come first; from the first argument starting with + or -, each is a change, a bare
    NAME meaning +NAME. With no + or -, the last of two or more arguments is a tag to add
    (`nnexp tag RUN keep`); one argument alone is a run whose tags are to be shown."""
    first = next((i for i, a in enumerate(args) if a[:1] in ("+", "-")), None)
    if first is None:
        first = len(args) - 1 if len(args) > 1 else len(args)
    names, changes = list(args[:first]), args[first:]
    if not names:
        raise UserError("nnexp tag: name the runs first, then the tags, e.g. nnexp tag RUN +baseline -old")
    add = [check_tag(c.removeprefix("+")) for c in changes if not c.startswith("-")]
    remove = [check_tag(c[1:]) for c in changes if c.startswith("-")]
    return names, add, remove


def check_tag(tag: str) -> str:
    """`tag` if it is a valid tag (letters, digits and `_.:-`, up to 40 characters, so it
    reads in a table cell and in `--where tag=NAME`), else a UserError naming it."""
    if not isinstance(tag, str) or not _TAG.fullmatch(tag):
        raise UserError(f"tag {tag!r}: use letters, digits and _ . : - (up to 40 characters), "
                        "starting with a letter or digit")
    return tag


def is_finite_number(value) -> bool:
    """Whether a value read from a run's JSON is a usable number: not a boolean, a string,
    NaN or infinity, nor an integer too large for a float (math.isfinite raises on one)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def is_new_best(validation_accuracy: float, best_so_far: float) -> bool:
    """The best-epoch rule, the book's: the epoch of highest validation accuracy, ties going
    to the later epoch. The training loop keeps that epoch's checkpoint and test accuracy."""
    return validation_accuracy >= best_so_far


def best_record(metrics: list[dict]) -> dict | None:
    """The record of the best-validation epoch by `is_new_best`, for readers of runs that
    have no summary (yet)."""
    best = None
    for record in metrics:
        acc = record.get("validation_accuracy")
        if is_finite_number(acc) and (best is None or is_new_best(acc, best["validation_accuracy"])):
            best = record
    return best


def is_sweep_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / MANIFEST).is_file()
