"""The one exception hierarchy of slmctl.

Every error a user can meet is a :class:`SlmctlError` carrying a one-line message, an optional hint
(what to do about it), the process exit code and the HTTP status the server answers with: the one
table of both is the class attributes below. The CLI maps errors to ``error:``/``hint:`` lines and exit
codes in exactly one place, the server to its APIs' error shapes in one place; lower layers only raise.
This module imports nothing of ours.
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
    #: ``slmctl bench --baseline``: no configuration of the run is in the baseline, so nothing was compared
    #: (the baseline was recorded with other models or settings); not a regression (1), not a bad file (4).
    NOTHING_COMPARED = 8
    #: ``run --format``: the answer was printed but is not complete JSON (cut off, or it does not parse).
    INCOMPLETE = 9
    INTERRUPTED = 130


class SlmctlError(Exception):
    """Base class: a user-facing message, a hint, and the exit code to leave with."""

    exit_code: ExitCode = ExitCode.FAILURE
    #: The HTTP status the server answers with (500 only for real faults).
    http_status: int = 500

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
    http_status = 500


class UsageError(SlmctlError):
    """Bad argument value or flag combination."""

    exit_code = ExitCode.USAGE
    http_status = 400


class CommandLineError(UsageError):
    """A command line that could not be parsed (unknown command or option, missing argument, bad value):
    the CLI prints the command's usage line between the error and the hint."""

    def __init__(self, message: str, hint: str | None = None, *, usage: str | None = None) -> None:
        super().__init__(message, hint)
        #: ``slmctl run [OPTIONS] NAME [PROMPT]...``
        self.usage = usage


class ModelNotFound(SlmctlError):
    """The model is not in the store (nor in the catalog, nor at the source)."""

    exit_code = ExitCode.NOT_FOUND
    http_status = 404


class InvalidModelFile(SlmctlError):
    """A model file, folder or Modelfile is corrupt, truncated or unsupported."""

    exit_code = ExitCode.INVALID_INPUT
    http_status = 400


class NetworkError(SlmctlError):
    """A network operation or a download failed."""

    exit_code = ExitCode.NETWORK
    http_status = 502


class IntegrityError(SlmctlError):
    """A digest does not match the expected one."""

    exit_code = ExitCode.INTEGRITY
    http_status = 500


class DeviceUnavailable(SlmctlError):
    """The requested backend, device or execution provider is not usable on this machine."""

    exit_code = ExitCode.UNAVAILABLE
    http_status = 400


class Interrupted(SlmctlError):
    """The user pressed Ctrl-C; partial work was cleaned up."""

    exit_code = ExitCode.INTERRUPTED
    http_status = 499

    def __init__(self, message: str = "interrupted", hint: str | None = None) -> None:
        super().__init__(message, hint)


class NothingCompared(SlmctlError):
    """``bench --baseline`` matched no configuration of the run: the gate compared nothing."""

    exit_code = ExitCode.NOTHING_COMPARED
    http_status = 409


class ContextOverflow(OperationFailed):
    """A prompt does not fit in the loaded context (a client's mistake on the API: 400)."""

    http_status = 400


class RunnerCrashed(OperationFailed):
    """A runner process died while it served a request (a native crash, or killed)."""

    http_status = 500


class ServerBusy(SlmctlError):
    """Too many requests queued for a model, or the server is shutting down: try again later."""

    exit_code = ExitCode.UNAVAILABLE
    http_status = 503

    def __init__(self, message: str, hint: str | None = None, *, retry_after: int = 1) -> None:
        super().__init__(message, hint)
        #: Seconds a client should wait before trying again (the ``Retry-After`` header).
        self.retry_after = retry_after


class ServerNotRunning(NetworkError):
    """A command that talks to ``slmctl serve`` found no server at the address."""

    http_status = 502


class AuthenticationFailed(SlmctlError):
    """No API key, or one that is unknown, revoked or expired (``slmctl serve`` with auth on)."""

    exit_code = ExitCode.FAILURE
    http_status = 401


class PermissionDenied(SlmctlError):
    """A valid API key whose role does not allow the operation (a ``user`` key on an admin route)."""

    exit_code = ExitCode.FAILURE
    http_status = 403


class InsecureFile(OperationFailed):
    """A file of secrets (the API keys) that other users could read or that another user owns: refused."""


class InvalidConfig(UsageError):
    """A serve setting (a ``--config`` file key, an ``SLMCTL_*`` variable, a flag) that is unknown or has a bad
    value: the message names the key path (``deployment.optimization.max_context``) and the closest valid key."""

    exit_code = ExitCode.INVALID_INPUT


class StoreReadOnly(PermissionDenied):
    """A change to a model store opened read-only (``slmctl serve --read-only-store``): refused, nothing written."""
