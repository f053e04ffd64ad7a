"""A runner whose model lives in a child process (``serve``): a native crash takes down one model only.

The child (:mod:`slmctl.engine.runner_process`) is started with ``python -m`` and one end of a Unix
socket pair; both ends speak :mod:`multiprocessing.connection` messages (pickled tuples). The parent
sends ``("load", plan, slots)``, then ``("generate", id, request)``, ``("cancel", id)``, ``("call", id, method,
args)`` and ``("close",)``; the child answers ``("loaded", info)`` or ``("failed", error)``, then
``("chunk", id, text)``, ``("done", id, stats)``, ``("error", id, error)`` and ``("result", id, value)``;
``("batch", [message, ...])`` carries what one step of a batch produced, in order.
A reader thread (or, in ``serve``, the event loop itself) dispatches the child's messages to each
request's sink (a :class:`~slmctl.engine.runner.Channel`, or the server's relay).
When the child dies (segfault, ``kill -9``, out of memory), every request in flight fails with
:class:`~slmctl.errors.RunnerCrashed` and the runner reports itself dead, so the scheduler starts a
fresh one for the next request. Only this module and the child know the message vocabulary.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import replace
from multiprocessing.connection import Connection
from typing import Any

from slmctl import errors
from slmctl.backends.base import GenerateRequest, Generation
from slmctl.engine.loader import LoadPlan
from slmctl.engine.runner import CALLS, Channel, Runner, Sink, next_id
from slmctl.errors import OperationFailed, RunnerCrashed, SlmctlError


def encode_error(error: BaseException) -> tuple[str, str, str | None, str | None]:
    """An exception as plain data: (class name, message, hint, details)."""
    if isinstance(error, SlmctlError):
        return type(error).__name__, error.message, error.hint, error.details
    return "OperationFailed", f"{type(error).__name__}: {error}", None, None


def decode_error(data: tuple[str, str, str | None, str | None]) -> SlmctlError:
    """The exception :func:`encode_error` described (an :class:`OperationFailed` for unknown kinds)."""
    name, message, hint, details = data
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, SlmctlError)) or name in {"ServerBusy", "Interrupted"}:
        cls = OperationFailed
    error = cls.__new__(cls)
    SlmctlError.__init__(error, message, hint, details=details)
    return error


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "it stopped answering"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class ProcessRunner(Runner):
    """A model loaded in a child process, driven through a socket pair."""

    def __init__(self, plan: LoadPlan, *, env: Mapping[str, str] | None = None, load_timeout: float = 600.0,
                 loop: asyncio.AbstractEventLoop | None = None, slots: int | None = None) -> None:
        super().__init__()
        self.plan = plan
        #: Generations the child decodes together (None: one at a time; models that cannot batch ignore it).
        self.slots = slots
        parent_sock, child_sock = socket.socketpair()
        self._conn = Connection(os.dup(parent_sock.fileno()))
        parent_sock.close()
        start = time.perf_counter_ns()
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "slmctl.engine.runner_process", str(child_sock.fileno())],
                pass_fds=(child_sock.fileno(),), env=dict(env) if env is not None else None,
                stdin=subprocess.DEVNULL)
        finally:
            child_sock.close()
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()
        self._channels: dict[int, Sink] = {}
        self._calls: dict[int, Future[Any]] = {}
        self._dead: str | None = None
        self._closing = False
        self.info = self._handshake(plan, load_timeout)
        self.info = replace(self.info, load_duration=time.perf_counter_ns() - start)
        self._loop = loop
        self._fd = self._conn.fileno()
        self._reader: threading.Thread | None = None
        if loop is None:
            self._reader = threading.Thread(target=self._read, name=f"runner-reader:{plan.model}", daemon=True)
            self._reader.start()
        else:  # the event loop reads the socket itself: no thread hop per chunk
            loop.call_soon_threadsafe(loop.add_reader, self._fd, self._readable)

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def alive(self) -> bool:
        return self._dead is None and not self._closing

    # -- start -----------------------------------------------------------------------------------
    def _handshake(self, plan: LoadPlan, timeout: float) -> Any:
        try:
            self._conn.send(("load", plan, self.slots))
            if not self._conn.poll(timeout):
                raise OperationFailed(f"loading '{plan.model}' took longer than {timeout:.0f} s",
                                      "raise the load timeout, or free memory")
            message = self._conn.recv()
        except (EOFError, OSError) as exc:
            code = self._process.wait(timeout=10)
            self._conn.close()
            raise RunnerCrashed(f"the runner process for '{plan.model}' died while loading it "
                                f"({_describe_exit(code)})", "run 'slmctl run' on the model to see the runtime's "
                                "error; check free memory") from exc
        except BaseException:
            self._kill()
            raise
        if message[0] == "failed":
            self._kill()
            raise decode_error(message[1])
        return message[1]

    def _kill(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        self._conn.close()

    # -- messages ---------------------------------------------------------------------------------
    def _send(self, message: tuple[Any, ...]) -> bool:
        try:
            with self._send_lock:
                self._conn.send(message)
            return True
        except (OSError, ValueError):
            return False

    def _read(self) -> None:
        """The reader thread (no event loop given): one message at a time until the child is gone."""
        while True:
            try:
                message = self._conn.recv()
            except (EOFError, OSError):
                break
            self._dispatch(message)
        self._died()

    def _readable(self) -> None:
        """On the event loop, when the socket has data: one message (the loop calls again while more are
        waiting; asking the connection whether more are there cost more than the message itself)."""
        try:
            self._dispatch(self._conn.recv())
        except (EOFError, OSError, ValueError):
            assert self._loop is not None
            self._loop.remove_reader(self._fd)
            threading.Thread(target=self._died, name="runner-died", daemon=True).start()

    def _dispatch(self, message: tuple[Any, ...]) -> None:
        kind, ident = message[0], message[1]
        if kind == "batch":  # what one step of a batch produced: ident is the list of its messages
            for each in ident:
                self._dispatch(each)
        elif kind == "chunk":
            channel = self._channels.get(ident)
            if channel is not None:
                channel.chunk(message[2])
        elif kind in ("done", "error"):
            with self._lock:
                channel = self._channels.pop(ident, None)
            if channel is not None:
                self.release()  # first: a keep_alive 0 unload is under way before the client hears "done"
                channel.done(message[2]) if kind == "done" else channel.fail(decode_error(message[2]))
        elif kind in ("result", "call_error"):
            with self._lock:
                future = self._calls.pop(ident, None)
            if future is not None:
                future.set_result(message[2]) if kind == "result" else future.set_exception(decode_error(message[2]))
                self.release()

    def _died(self) -> None:
        """The child is gone: fail everything in flight, once."""
        try:
            code = self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            code = self._process.wait()
        with self._lock:
            self._dead = _describe_exit(code)
            channels, self._channels = self._channels, {}
            calls, self._calls = self._calls, {}
        if self._closing and not channels and not calls:
            return
        error = RunnerCrashed(f"the runner for '{self.plan.model}' stopped unexpectedly ({self._dead})",
                              "the next request starts it again; if it keeps crashing, run 'slmctl run' on the "
                              "model with --debug to see the runtime's error")
        for channel in channels.values():
            channel.fail(error)
            self.release()
        for future in calls.values():
            future.set_exception(error)
            self.release()

    def _crashed_error(self) -> RunnerCrashed:
        return RunnerCrashed(f"the runner for '{self.plan.model}' is not running ({self._dead or 'closed'})",
                             "try again: the next request starts it again")

    # -- interface --------------------------------------------------------------------------------
    def stream(self, request: GenerateRequest, sink: Sink) -> Callable[[], None]:
        ident = next_id()
        with self._lock:
            if not self.alive:
                raise self._crashed_error()
            self._channels[ident] = sink
            self.hold()
        self._send(("generate", ident, request))
        return lambda: self._send(("cancel", ident))

    def submit(self, request: GenerateRequest) -> Generation:
        channel, submitted = Channel(), time.perf_counter_ns()
        cancel = self.stream(request, channel)
        generation = Generation(channel.relay, submitted_ns=submitted)
        generation.on_cancel.append(cancel)
        return generation

    def call(self, method: str, *args: Any) -> Any:
        if method not in CALLS:
            raise ValueError(f"not a runner call: {method}")
        ident, future = next_id(), Future()
        with self._lock:
            if not self.alive:
                raise self._crashed_error()
            self._calls[ident] = future
            self.hold()
        self._send(("call", ident, method, args))
        return future.result()

    def close(self, timeout: float = 10.0) -> None:
        """Ask the child to exit (it finishes nothing: callers drain first); kill it if it will not."""
        if self._closing:
            return
        self._closing = True
        self._send(("close",))
        try:
            self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._reader is not None and threading.current_thread() is not self._reader:
            self._reader.join(timeout=5)
        if self._loop is not None:
            self._detach_from_loop()
        self._conn.close()

    def _detach_from_loop(self) -> None:
        """Stop the event loop watching the socket before it closes (its number may be reused at once)."""
        assert self._loop is not None
        detached = threading.Event()

        def detach() -> None:
            self._loop.remove_reader(self._fd)  # type: ignore[union-attr]
            detached.set()

        try:
            self._loop.call_soon_threadsafe(detach)
        except RuntimeError:
            return  # the loop is closed: nothing watches the socket any more
        detached.wait(timeout=5)
