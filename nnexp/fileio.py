"""Writing files so that readers see the old version or the new one, never a part."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `path` for the block to write; when the block succeeds it is
    flushed to disk and renamed onto `path`, when it fails (disk full, Ctrl-C, a bad
    download) it is removed."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())  # the data, not just the name, must survive a power cut
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
