"""Errors a user can act on.

Every error raised for bad input is a subclass of `LmshrinkError` whose message is one
sentence that names the file (and row, where there is one) and says how to fix it. The
CLI prints it as `error: ...` and exits with status 2, without a traceback.
"""

from __future__ import annotations


class LmshrinkError(Exception):
    """Base class of every error caused by the user's input or environment."""


class ConfigError(LmshrinkError):
    """An option or config file value is unknown, mistyped or inconsistent."""


class DataError(LmshrinkError):
    """A data file is missing, empty or malformed (wrong columns, unknown label...)."""


class ModelError(LmshrinkError):
    """A model folder is missing, unloadable, or does not fit the task."""


class TrainingError(LmshrinkError):
    """Training diverged (NaN or infinite loss)."""


class RunFolderError(LmshrinkError):
    """An output folder would overwrite another run."""


class MissingDependencyError(LmshrinkError):
    """An optional package needed for this feature is not installed."""


class Interrupted(LmshrinkError):
    """Training stopped on SIGTERM or SIGINT (after writing a checkpoint to resume from, when
    it could). The CLI prints the message as it is and exits with `exit_code` (128 + the
    signal's number: 143 for SIGTERM, 130 for SIGINT), as a process killed by it would."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum, self.exit_code = signum, 128 + signum
