"""What produced a run: versions, the source's git commit, the command line, the host.

Written into a run's env.json when it starts, and appended there at every resume.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import time
from datetime import datetime
from importlib import metadata
from pathlib import Path

import numpy as np


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
