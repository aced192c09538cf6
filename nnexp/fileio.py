"""Writing files so that readers see the old version or the new one, never a part; and the
strict JSON every file nnexp writes is in."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np

# `.<name>.<pid>.<8 hex digits>.tmp`: hidden, beside its target, unique per process and write
_TEMP_NAME = re.compile(r"\.(.+)\.[0-9]+\.[0-9a-f]{8}\.tmp")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `path` for the block to write; when the block succeeds it is
    flushed to disk and renamed onto `path`, when it fails (disk full, Ctrl-C, a bad
    download) it is removed. Only a SIGKILL or a power cut leaves it behind: see
    `temporary_target`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())  # the data, not just the name, must survive a power cut
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def temporary_target(name: str) -> str | None:
    """The name of the file a temporary of `atomic_path` called `name` was to become, or None
    if `name` is not one: how cleanup finds the temporaries a killed process left."""
    match = _TEMP_NAME.fullmatch(name)
    return match.group(1) if match else None


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
