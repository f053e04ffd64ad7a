"""The child side of a runner process: ``python -m slmctl.engine.runner_process FD``.

It loads one :class:`~slmctl.engine.loader.LoadPlan`, then serves the parent's messages (the
vocabulary is documented in :mod:`slmctl.engine.process_runner`) with a
:class:`~slmctl.engine.runner.ThreadRunner` (batching ``slots`` generations where the model can): the
main thread reads messages and sets cancel events, the runner's worker generates (what a batch step
produced goes to the parent as one message, see :class:`Outbox`), and other calls (embed, tokenize) run
on a small thread pool. It exits when the parent says ``close`` or goes away (the socket closes), so a
runner never outlives its server.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

from slmctl.backends.base import Stats
from slmctl.engine.loader import load_plan
from slmctl.engine.process_runner import encode_error
from slmctl.engine.runner import ThreadRunner

#: Threads running model calls (embed, tokenize, ...) side by side.
CALL_THREADS = 16


class Outbox:
    """A batch step's messages to the parent, sent as one: the worker tells each sequence's sink its chunk
    (and the ends) during a step and calls :meth:`flush` after it, so the parent gets one message, one
    write and one wake-up per step however many sequences decode (each costs the server's event loop
    more than its content does)."""

    def __init__(self, send: Callable[[tuple[Any, ...]], None]) -> None:
        self._send = send
        self._held: list[tuple[Any, ...]] = []

    def hold(self, message: tuple[Any, ...]) -> None:
        """Keep ``message`` for the next flush (the worker's thread only)."""
        self._held.append(message)

    def flush(self) -> None:
        held, self._held = self._held, []
        if len(held) == 1:
            self._send(held[0])
        elif held:
            self._send(("batch", held))


class PipeSink:
    """Delivers one job's results to the parent."""

    def __init__(self, send: Any, ident: int, cancels: dict[int, threading.Event]) -> None:
        self._send, self._id, self._cancels = send, ident, cancels

    def chunk(self, text: str) -> None:
        self._send(("chunk", self._id, text))

    def done(self, stats: Stats) -> None:
        self._cancels.pop(self._id, None)
        self._send(("done", self._id, stats))

    def fail(self, error: BaseException) -> None:
        self._cancels.pop(self._id, None)
        self._send(("error", self._id, encode_error(error)))


def serve(conn: Connection) -> None:
    lock = threading.Lock()

    def send(message: tuple[Any, ...]) -> None:
        with lock:
            conn.send(message)

    _, plan, slots = conn.recv()
    try:
        model = load_plan(plan, slots=slots)
    except BaseException as error:  # noqa: BLE001 - reported to the parent, which raises it
        send(("failed", encode_error(error)))
        return
    send(("loaded", model.info))
    outbox = Outbox(send)
    runner = ThreadRunner(model, name=plan.model, slots=slots, on_step=outbox.flush)
    post = outbox.hold if runner.batch is not None else send  # one job at a time: each chunk at once
    cancels: dict[int, threading.Event] = {}
    # Enough threads that concurrent embed calls meet in the runner's EmbedCoalescer.
    pool = ThreadPoolExecutor(max_workers=CALL_THREADS, thread_name_prefix="runner-call")

    def call(ident: int, method: str, args: tuple[Any, ...]) -> None:
        try:
            send(("result", ident, runner.call(method, *args)))
        except BaseException as error:  # noqa: BLE001
            send(("call_error", ident, encode_error(error)))

    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            break
        kind = message[0]
        if kind == "generate":
            ident, request = message[1], message[2]
            cancels[ident] = event = threading.Event()
            runner.start(request, PipeSink(post, ident, cancels), event)
        elif kind == "cancel":
            event = cancels.get(message[1])
            if event is not None:
                event.set()
        elif kind == "call":
            pool.submit(call, message[1], message[2], message[3])
        elif kind == "close":
            break
    for event in list(cancels.values()):
        event.set()
    runner.close()
    pool.shutdown(wait=False)


def main(argv: list[str]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the server, which stops its runners
    conn = Connection(int(argv[0]))
    try:
        serve(conn)
    finally:
        conn.close()
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown: native runtimes sometimes crash in their destructors


if __name__ == "__main__":
    main(sys.argv[1:])
