"""The run directory: the only code that reads or writes one.

    runs/<name>-<YYYYmmdd-HHMMSS>[-N]/
      config.yaml          the resolved config (every default filled in)
      env.json             versions, git commit + dirty flag, command line, host, data checksums
      metrics.jsonl        one JSON object per completed epoch
      summary.json         status, best epoch, accuracies, timings (rewritten every epoch)
      train.log            the plain per-epoch lines the command printed
      checkpoints/best.npz parameters at the best-validation epoch
      checkpoints/last.npz parameters + optimiser/RNG/loop state after the last epoch
      .lock                held (flock) by the process training the run

Directories are created with one atomic mkdir, so two runs started at the same moment never
share one. Every JSON and checkpoint file is written to a temporary file and renamed, so a
crash leaves the previous version, never half of a new one. Checkpoints are plain arrays
(``param/<name>``) plus JSON metadata: any backend can load them.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import math
import os
import platform
import socket
import subprocess
import sys
import time
import zipfile
from datetime import datetime
from importlib import metadata
from pathlib import Path

import numpy as np

from nnexp.errors import RunDirError
from nnexp.fileio import atomic_path

CHECKPOINT_FORMAT = 1


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _plain(value):
    """`value` with NumPy types made Python ones and NaN/inf made None: strict JSON that jq
    and every other parser reads (a diverged epoch's cost is NaN)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def to_json(value, indent: int | None = 2) -> str:
    return json.dumps(_plain(value), indent=indent, allow_nan=False)


def make_unique_dir(parent: str | os.PathLike, name: str) -> Path:
    """A new directory ``parent/<name>-<YYYYmmdd-HHMMSS>[-N]`` (runs and sweeps). One atomic
    mkdir each, so two started at the same moment never share one."""
    parent = Path(parent)
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"cannot create the runs directory {parent}: {exc.strerror}") from None
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
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

    def clear(self) -> None:
        """Remove everything a run wrote (to start a failed run over), keeping the directory."""
        import shutil

        for child in self.path.iterdir():
            if child.name == ".lock":
                continue
            shutil.rmtree(child) if child.is_dir() else child.unlink()
        (self.path / "checkpoints").mkdir()

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

    @contextlib.contextmanager
    def lock(self):
        """Hold the run for one training process. The OS drops the lock when the process
        dies, even by SIGKILL, so a stale "running" status never blocks a resume."""
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

    def is_locked(self) -> bool:
        """True while some process trains this run."""
        try:
            with open(self.path / ".lock", "a+") as f:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(f, fcntl.LOCK_UN)
                return False
        except BlockingIOError:
            return True
        except OSError:
            return False

    # --- config, environment, summary ---------------------------------------------------------

    def write_config(self, cfg: dict) -> None:
        from nnexp.config import dump

        atomic_write_text(self.path / "config.yaml", dump(cfg))

    def read_config(self) -> dict:
        from nnexp.config import read_yaml_file

        return read_yaml_file(self.path / "config.yaml", error=RunDirError)

    def write_env(self, env: dict) -> None:
        atomic_write_text(self.path / "env.json", to_json(env))

    def add_resume_to_env(self, env: dict) -> None:
        """Record a resume beside the original environment, which stays as it was."""
        path = self.path / "env.json"
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            record = {}
        record.setdefault("resumes", []).append(env)
        self.write_env(record)

    def write_summary(self, summary: dict) -> None:
        atomic_write_text(self.path / "summary.json", to_json(summary))

    def read_summary(self) -> dict | None:
        """The summary, or None if the run never got far enough to write one."""
        path = self.path / "summary.json"
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RunDirError(f"{path} is damaged: {exc}") from None

    # --- metrics and log ----------------------------------------------------------------------

    def append_metrics(self, record: dict) -> None:
        with open(self.path / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(to_json(record, indent=None) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read_metrics(self) -> list[dict]:
        """Per-epoch records. A torn last line (a crash mid-write) is ignored."""
        path = self.path / "metrics.jsonl"
        if not path.exists():
            return []
        records = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                break
        return records

    def truncate_metrics(self, epochs: int) -> None:
        """Keep the records of the first `epochs` epochs only (used when resuming)."""
        kept = [r for r in self.read_metrics() if r["epoch"] <= epochs]
        atomic_write_text(self.path / "metrics.jsonl",
                          "".join(to_json(r, indent=None) + "\n" for r in kept))

    def log(self, line: str) -> None:
        with open(self.path / "train.log", "a", encoding="utf-8") as f:
            f.write(line.rstrip("\n") + "\n")

    # --- checkpoints --------------------------------------------------------------------------

    def checkpoint_path(self, which: str) -> Path:
        return self.path / "checkpoints" / f"{which}.npz"

    def save_checkpoint(self, which: str, params: dict[str, np.ndarray], meta: dict,
                        state_arrays: dict[str, np.ndarray] | None = None) -> None:
        arrays = {f"param/{name}": np.asarray(value) for name, value in params.items()}
        for name, value in (state_arrays or {}).items():
            arrays[f"state/{name}"] = np.asarray(value)
        meta = {"format": CHECKPOINT_FORMAT, "params": list(params), **meta}
        arrays["meta"] = np.array(to_json(meta))
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write_bytes(self.checkpoint_path(which), buf.getvalue())

    def promote_checkpoint(self, src: str, dst: str) -> None:
        os.replace(self.checkpoint_path(src), self.checkpoint_path(dst))

    def load_checkpoint(self, which: str) -> tuple[dict[str, np.ndarray], dict, dict[str, np.ndarray]]:
        """(params, meta, state arrays); a missing or damaged file is a RunDirError."""
        path = self.checkpoint_path(which)
        if not path.exists():
            raise RunDirError(f"{self.path} has no {which} checkpoint ({path.name})")
        try:
            with np.load(path, allow_pickle=False) as npz:
                meta = json.loads(str(npz["meta"]))
                if meta.get("format") != CHECKPOINT_FORMAT:
                    raise ValueError(f"checkpoint format {meta.get('format')!r}, "
                                     f"this nnexp reads {CHECKPOINT_FORMAT}")
                params = {n: npz[f"param/{n}"] for n in meta["params"]}
                state = {k[len("state/"):]: npz[k] for k in npz.files if k.startswith("state/")}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise RunDirError(f"checkpoint {path} is damaged and was not loaded ({exc})") from None
        return params, meta, state


def best_record(metrics: list[dict]) -> dict | None:
    """The record of the best-validation epoch, ties going to the later epoch: the training
    loop's rule, for readers of runs that have no summary (yet)."""
    best = None
    for record in metrics:
        acc = record.get("validation_accuracy")
        if isinstance(acc, (int, float)) and math.isfinite(acc) and (
                best is None or acc >= best["validation_accuracy"]):
            best = record
    return best


# --- environment ------------------------------------------------------------------------------


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)  # reads metadata only: never imports torch
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    source = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(source), *args], capture_output=True, text=True,
                             timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def environment() -> dict:
    """What produced a run: versions, the source's git commit, the command line, the host."""
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {
        "nnexp": _version("nnexp"),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": _version("torch"),
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "cpu_count": os.cpu_count(),
        "git_commit": commit,
        "git_dirty": bool(status) if commit else None,
        "command": sys.argv,
        "cwd": os.getcwd(),
        "started": datetime.now().astimezone().isoformat(timespec="seconds"),
        "unix_time": time.time(),
    }
