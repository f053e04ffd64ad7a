"""The one exception hierarchy of slmctl.

Every error a user can meet is a :class:`SlmctlError` carrying a one-line message, an optional hint
(what to do about it) and the process exit code. The CLI maps them to ``error:``/``hint:`` lines and
exit codes in exactly one place; lower layers only raise. This module imports nothing of ours.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes (the contract documented in README.md)."""

    OK = 0
    FAILURE = 1
    USAGE = 2
    NOT_FOUND = 3
    INVALID_INPUT = 4
    NETWORK = 5
    INTEGRITY = 6
    UNAVAILABLE = 7
    INTERRUPTED = 130


class SlmctlError(Exception):
    """Base class: a user-facing message, a hint, and the exit code to leave with."""

    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(self, message: str, hint: str | None = None, *, details: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        #: Extra diagnostic text (a runtime log, for instance) shown with --debug.
        self.details = details

    def __str__(self) -> str:
        return self.message


class OperationFailed(SlmctlError):
    """The operation failed: runtime error, load failure, disk full, ..."""

    exit_code = ExitCode.FAILURE


class UsageError(SlmctlError):
    """Bad argument value or flag combination."""

    exit_code = ExitCode.USAGE


class ModelNotFound(SlmctlError):
    """The model is not in the store (nor in the catalog, nor at the source)."""

    exit_code = ExitCode.NOT_FOUND


class InvalidModelFile(SlmctlError):
    """A model file, folder or Modelfile is corrupt, truncated or unsupported."""

    exit_code = ExitCode.INVALID_INPUT


class NetworkError(SlmctlError):
    """A network operation or a download failed."""

    exit_code = ExitCode.NETWORK


class IntegrityError(SlmctlError):
    """A digest does not match the expected one."""

    exit_code = ExitCode.INTEGRITY


class DeviceUnavailable(SlmctlError):
    """The requested backend, device or execution provider is not usable on this machine."""

    exit_code = ExitCode.UNAVAILABLE


class Interrupted(SlmctlError):
    """The user pressed Ctrl-C; partial work was cleaned up."""

    exit_code = ExitCode.INTERRUPTED

    def __init__(self, message: str = "interrupted", hint: str | None = None) -> None:
        super().__init__(message, hint)
