"""Concurrent embed calls share backend calls (slmctl.engine.embed_batch), on a fake and on both runtimes."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from slmctl.backends.gguf import LlamaCppBackend
from slmctl.backends.onnx import OnnxGenaiBackend
from slmctl.engine.embed_batch import EmbedCoalescer
from slmctl.engine.runner import ThreadRunner
from slmctl.options import LoadOptions


def vector_of(text: str) -> list[float]:
    return [float(len(text)), float(sum(map(ord, text)))]


class GatedEmbed:
    """A backend embed whose first call waits until ``expected`` more callers queue behind it."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.coalescer: EmbedCoalescer | None = None
        self.batches: list[list[str]] = []
        self.release_second = threading.Event()
        self.release_second.set()

    def __call__(self, texts: list[str]) -> list[list[float]]:
        assert self.coalescer is not None
        self.batches.append(list(texts))
        if len(self.batches) == 1:
            while len(self.coalescer._waiting) < self.expected:
                threading.Event().wait(0.001)
        elif len(self.batches) == 2:
            assert self.release_second.wait(10)
        if any(text.startswith("bad") for text in texts):
            raise ValueError("bad input")
        return [vector_of(text) for text in texts]


def coalesce(expected: int, **kwargs: int) -> tuple[GatedEmbed, EmbedCoalescer]:
    backend = GatedEmbed(expected)
    backend.coalescer = EmbedCoalescer(backend, **kwargs)
    return backend, backend.coalescer


def test_calls_waiting_together_share_one_backend_call() -> None:
    backend, coalescer = coalesce(expected=7)
    inputs = [[f"first {i}"] if i == 0 else [f"text {i}", f"more {i}"] for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(coalescer.embed, inputs[0])
        while not backend.batches:
            threading.Event().wait(0.001)
        rest = [pool.submit(coalescer.embed, texts) for texts in inputs[1:]]
        results = [first.result(10)] + [future.result(10) for future in rest]
    assert results == [[vector_of(text) for text in texts] for texts in inputs]
    assert len(backend.batches) == 2 and len(backend.batches[1]) == 14
    assert (coalescer.batches, coalescer.calls) == (2, 8)


def test_a_failing_input_fails_only_its_own_call() -> None:
    backend, coalescer = coalesce(expected=3)
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(coalescer.embed, ["a"])
        while not backend.batches:
            threading.Event().wait(0.001)
        good = [pool.submit(coalescer.embed, [f"good {i}"]) for i in range(2)]
        bad = pool.submit(coalescer.embed, ["bad one"])
        assert first.result(10) == [vector_of("a")]
        assert [future.result(10) for future in good] == [[vector_of(f"good {i}")] for i in range(2)]
        with pytest.raises(ValueError, match="bad input"):
            bad.result(10)


def test_backend_calls_hold_at_most_max_texts_inputs() -> None:
    backend, coalescer = coalesce(expected=5, max_texts=4)
    with ThreadPoolExecutor(6) as pool:
        first = pool.submit(coalescer.embed, ["x"])
        while not backend.batches:
            threading.Event().wait(0.001)
        rest = [pool.submit(coalescer.embed, [f"{i}a", f"{i}b"]) for i in range(5)]
        first.result(10)
        assert [future.result(10) for future in rest] == [[vector_of(f"{i}a"), vector_of(f"{i}b")] for i in range(5)]
    assert [len(batch) for batch in backend.batches] == [1, 4, 4, 2]


def test_a_caller_answered_hands_the_lead_on_instead_of_working_for_others() -> None:
    backend, coalescer = coalesce(expected=1)
    backend.release_second.clear()
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(coalescer.embed, ["leader"])
        while not backend.batches:
            threading.Event().wait(0.001)
        second = pool.submit(coalescer.embed, ["follower"])
        # The first caller returns while the second's backend call is still running (on its own thread).
        assert first.result(10) == [vector_of("leader")]
        assert not second.done()
        backend.release_second.set()
        assert second.result(10) == [vector_of("follower")]


TEXTS = [["the cat sat"], ["on the mat", "a dog barked"], ["hello"], ["why is the sky blue", "ok"], ["x y z"]]


def concurrent_embeds(runner: ThreadRunner) -> list[list[list[float]]]:
    with ThreadPoolExecutor(len(TEXTS)) as pool:
        return list(pool.map(runner.embed, TEXTS))


@pytest.mark.parametrize("kind", ["gguf", "onnx"])
def test_concurrent_embeds_on_the_runtimes_equal_separate_ones(kind: str, tiny_gguf: Path,
                                                              tiny_onnx_encoder: Path) -> None:
    if kind == "gguf":
        model = LlamaCppBackend().load(tiny_gguf, LoadOptions(num_ctx=256, num_thread=1), embedding=True)
    else:
        model = OnnxGenaiBackend().load(tiny_onnx_encoder, LoadOptions(), embedding=True)
    runner = ThreadRunner(model, name=kind)
    try:
        alone = [model.embed(texts) for texts in TEXTS]
        together = concurrent_embeds(runner)
        calls = runner.embedder.calls
        assert calls == len(TEXTS)
        for one, other in zip(alone, together):
            np.testing.assert_allclose(np.asarray(other), np.asarray(one), atol=2e-4)
    finally:
        runner.close()
