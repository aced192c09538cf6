"""The project's exceptions, and the exit code each one maps to.

Everything a user can get wrong raises a subclass of `UserError`; the CLI turns it into one
line on stderr and exit code 2. A run that started but could not finish well (it diverged)
raises `RunFailed`, exit code 1. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class NnexpError(Exception):
    """Base class: a failure the CLI reports as one line, without a traceback."""

    exit_code = 1


class UserError(NnexpError):
    """Bad input: a config, a command-line value, a file or a directory the user pointed at."""

    exit_code = 2


class ConfigError(UserError):
    """A config value is wrong. `path` is the dotted key path, e.g. ``model.layers.2.units``."""

    def __init__(self, path: str, message: str):
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)


class DataError(UserError):
    """A data file is missing, truncated, corrupt or has the wrong checksum."""


class RunDirError(UserError):
    """A path given as a run directory is not one, or is damaged."""


class BackendError(UserError):
    """An unknown or unavailable backend or device was asked for."""


class RunFailed(NnexpError):
    """Training started but failed (e.g. the cost became NaN)."""

    exit_code = 1
