"""Chat sessions on the engine: Modelfile layers, option layering, history and reloads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slmctl.chat import ChatSession
from slmctl.engine import Engine
from slmctl.errors import UsageError
from slmctl.names import ModelRef
from slmctl.services.importer import import_path
from slmctl.store import Layer, ModelStore


@pytest.fixture
def engine(tmp_path: Path, tiny_gguf: Path) -> Engine:
    store = ModelStore(tmp_path / "models")
    import_path(store, tiny_gguf, "tiny")
    return Engine(store)


def with_layers(engine: Engine, name: str, **layers: bytes) -> None:
    """Store a copy of ``tiny`` carrying Modelfile layers (what ``create`` will write)."""
    store = engine.store
    base = store.get(ModelRef("tiny"))
    staged = [store.stage_bytes(data) for data in layers.values()]
    extra = [Layer(kind=kind, digest=s.digest, size=s.size) for kind, s in zip(layers, staged)]
    manifest = base.renamed(ModelRef(name)).model_copy(update={"layers": extra})
    store.commit(manifest, staged)


def test_history_grows_and_clear_resets(engine: Engine) -> None:
    with ChatSession(engine, engine.manifest("tiny"), params={"num_predict": 4, "seed": 1}) as chat:
        first = chat.ask("hello")
        first.complete()
        assert first.stats.load_duration > 0 and len(chat.history) == 2
        second = chat.ask("again")
        second.complete()
        assert second.stats.load_duration == 0
        assert second.stats.prompt_eval_count > first.stats.prompt_eval_count
        chat.clear()
        assert chat.history == []


def test_closed_early_generation_is_not_remembered(engine: Engine) -> None:
    with ChatSession(engine, engine.manifest("tiny"), params={"num_predict": 50}) as chat:
        gen = chat.ask("hello")
        next(iter(gen))
        gen.close()
        assert gen.stats.done_reason == "cancel" and chat.history == []


def test_model_layers_give_defaults_and_session_overrides_win(engine: Engine) -> None:
    with_layers(engine, "custom", params=json.dumps({"num_predict": 3, "stop": ["###"]}).encode(),
                system=b"You are terse.", messages=json.dumps([{"role": "user", "content": "hi"},
                                                               {"role": "assistant", "content": "hello"}]).encode())
    manifest = engine.manifest("custom")
    with ChatSession(engine, manifest) as chat:
        assert chat.system == "You are terse." and len(chat.history) == 2
        gen = chat.ask("x")
        gen.complete()
        assert gen.stats.eval_count == 3
    with ChatSession(engine, manifest, params={"num_predict": 5}, system="Other.") as chat:
        gen = chat.ask("x")
        gen.complete()
        assert gen.stats.eval_count == 5 and chat.system == "Other."


def test_load_time_parameter_reloads_the_model(engine: Engine) -> None:
    with ChatSession(engine, engine.manifest("tiny"), params={"num_predict": 2}) as chat:
        first = chat.ensure_loaded()
        chat.set_parameter("temperature", "0.1")
        assert chat.ensure_loaded() is first
        chat.set_parameter("num_ctx", "256")
        assert chat.ensure_loaded() is not first and chat.model.info.context_length == 256


def test_bad_parameter_leaves_the_session_unchanged(engine: Engine) -> None:
    with ChatSession(engine, engine.manifest("tiny")) as chat:
        with pytest.raises(UsageError):
            chat.set_parameter("top_p", "3")
        assert chat.params == {}


def test_context_is_capped_at_the_models(engine: Engine) -> None:
    with ChatSession(engine, engine.manifest("tiny"), params={"num_ctx": 100000}) as chat:
        assert chat.ensure_loaded().info.context_length == 512


def test_a_chat_that_outgrows_the_context_drops_the_oldest_turns(engine: Engine) -> None:
    with_layers(engine, "replayed", system=b"Be brief.", messages=json.dumps(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]).encode())
    with ChatSession(engine, engine.manifest("replayed"), params={"num_ctx": 256, "num_predict": 40, "seed": 1}) as chat:
        for turn in range(12):
            gen = chat.ask(f"message {turn} " + "word " * 30)
            gen.complete()
            assert gen.error is None and gen.stats.prompt_eval_count < 256
        assert chat.dropped > 0 and len(chat.history) == 2 + 24  # the whole history is kept, only not sent
        request = chat.fitted_request("next")
        assert request.messages[0].content == "Be brief." and request.messages[1].content == "hi"
        assert request.messages[-1].content == "next"


def test_a_message_that_cannot_fit_alone_is_refused_and_not_remembered(engine: Engine) -> None:
    from slmctl.errors import ContextOverflow

    with ChatSession(engine, engine.manifest("tiny"), params={"num_ctx": 256, "num_predict": 4}) as chat:
        with pytest.raises(ContextOverflow, match="context holds 256"):
            chat.ask("word " * 400)
        assert chat.history == []
        chat.ask("short").complete()
        assert len(chat.history) == 2
