"""Embedding calls that arrive together are computed together.

Concurrent ``embed`` calls on one model (several ``/api/embed`` or ``/v1/embeddings`` requests at
once) would otherwise queue on the model's lock and run one after another, each a short batch. The
:class:`EmbedCoalescer` gathers them instead: the first caller to find the model free becomes the
leader, takes every call waiting at that moment (up to ``max_texts`` inputs), embeds all their texts
in one backend call, hands each caller its own vectors, and repeats while calls keep arriving. Both
runtimes batch the inputs of one call (llama.cpp decodes several sequences per ``llama_decode``; the
ONNX encoder runs one padded batch), so N small requests cost about one larger one.

A failure of a gathered call is not blamed on everybody: the gathered calls are retried one by one, so
only the caller whose input was at fault (an input over the context, say) gets the error.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

Vectors = list[list[float]]

#: At most this many inputs go into one backend call (a bound on the padded batch and on latency).
MAX_TEXTS = 64


@dataclass(eq=False)
class _Call:
    texts: list[str]
    #: Set when this call ended (``vectors`` or ``error`` is set) or was made the leader.
    wake: threading.Event = field(default_factory=threading.Event)
    done: bool = False
    leads: bool = False
    vectors: Vectors | None = None
    error: BaseException | None = None

    def settle(self, embed: Callable[[list[str]], Vectors]) -> None:
        try:
            self.finish(embed(self.texts))
        except BaseException as error:  # noqa: BLE001 - handed to the caller, who raises it
            self.error = error
            self.done = True
            self.wake.set()

    def finish(self, vectors: Vectors) -> None:
        self.vectors, self.done = vectors, True
        self.wake.set()


class EmbedCoalescer:
    """Runs ``embed`` for concurrent callers, several callers' inputs per backend call.

    One caller at a time leads: it runs the oldest waiting calls (its own among them) as one backend
    call, and once its own call is answered hands the lead to the oldest caller still waiting, so no
    caller keeps working for others after its answer came."""

    def __init__(self, embed: Callable[[list[str]], Vectors], *, max_texts: int = MAX_TEXTS) -> None:
        self._embed = embed
        self._max_texts = max_texts
        self._lock = threading.Lock()
        self._waiting: list[_Call] = []
        self._leading = False
        #: Backend calls made and callers served (for tests and statistics).
        self.batches = 0
        self.calls = 0

    def embed(self, texts: list[str]) -> Vectors:
        call = _Call(list(texts))
        with self._lock:
            self._waiting.append(call)
            if not self._leading:
                self._leading = call.leads = True
        while not call.done:
            if call.leads:
                self._run(self._take())
                if call.done:
                    self._hand_off()
            else:
                call.wake.wait()
                call.wake.clear()
        if call.error is not None:
            raise call.error
        assert call.vectors is not None
        return call.vectors

    def _take(self) -> list[_Call]:
        """The oldest waiting calls, as many as fit in ``max_texts`` inputs (at least one)."""
        with self._lock:
            group: list[_Call] = []
            count = 0
            while self._waiting and (not group or count + len(self._waiting[0].texts) <= self._max_texts):
                call = self._waiting.pop(0)
                group.append(call)
                count += len(call.texts)
            return group

    def _hand_off(self) -> None:
        with self._lock:
            if not self._waiting:
                self._leading = False
                return
            successor = self._waiting[0]
            successor.leads = True
        successor.wake.set()

    def _run(self, group: list[_Call]) -> None:
        self.batches += 1
        self.calls += len(group)
        if len(group) == 1:
            group[0].settle(self._embed)
            return
        texts = [text for call in group for text in call.texts]
        try:
            vectors = self._embed(texts)
        except BaseException:  # noqa: BLE001 - whose input failed is found by running each alone
            for call in group:
                call.settle(self._embed)
            return
        start = 0
        for call in group:
            call.finish(vectors[start:start + len(call.texts)])
            start += len(call.texts)
