"""The official ``ollama`` Python client against a real ``slmctl serve`` (GGUF and ONNX models)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import ollama
import pytest

from serve_fixtures import Served

if TYPE_CHECKING:
    from hub_fixtures import HubServer

SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name", "age"]}


@pytest.fixture(scope="module")
def client(server: Served) -> ollama.Client:
    return ollama.Client(host=server.url)


def test_list_shows_every_model_with_details(client: ollama.Client) -> None:
    models = {m.model: m for m in client.list().models}
    assert {"phi4:mini", "qwen2.5:3b", "nomic-embed-text:latest"} <= set(models)
    assert models["phi4:mini"].details.format == "gguf" and models["qwen2.5:3b"].details.format == "onnx"
    assert len(models["phi4:mini"].digest) == 64 and models["phi4:mini"].size > 0


def test_show_reports_capabilities_and_template(client: ollama.Client) -> None:
    gguf = client.show("phi4:mini")
    assert set(gguf.capabilities) >= {"completion", "embedding"} and "im_start" in gguf.template
    assert gguf.details.format == "gguf" and "FROM phi4:mini" in gguf.modelfile
    assert client.show("nomic-embed-text").capabilities == ["embedding"]
    with pytest.raises(ollama.ResponseError) as err:
        client.show("no-such-model")
    assert err.value.status_code == 404


@pytest.mark.parametrize("model", ["phi4:mini", "qwen2.5:3b"])
def test_generate_plain_and_streamed(client: ollama.Client, model: str) -> None:
    options = {"num_predict": 8, "seed": 7, "temperature": 0}
    answer = client.generate(model=model, prompt="Explain quantum computing", options=options)
    assert answer.done and answer.done_reason == "length" and answer.eval_count == 8
    assert answer.prompt_eval_count > 0 and answer.total_duration >= answer.eval_duration > 0
    parts = list(client.generate(model=model, prompt="Explain quantum computing", options=options, stream=True))
    assert parts[-1].done and not any(p.done for p in parts[:-1]) and parts[-1].eval_count == 8
    assert "".join(p.response for p in parts) == answer.response  # same seed, same text, streamed


@pytest.mark.parametrize("model", ["phi4:mini", "qwen2.5:3b"])
def test_chat_plain_streamed_and_schema(client: ollama.Client, model: str) -> None:
    messages = [{"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "What is edge computing?"}]
    answer = client.chat(model=model, messages=messages, options={"num_predict": 6, "seed": 1})
    assert answer.message.role == "assistant" and answer.eval_count == 6 and answer.done
    streamed = list(client.chat(model=model, messages=messages, options={"num_predict": 6, "seed": 1}, stream=True))
    assert "".join(c.message.content for c in streamed) == answer.message.content
    shaped = client.chat(model=model, messages=[{"role": "user", "content": "Who is Ada?"}], format=SCHEMA,
                         options={"num_predict": 450, "seed": 3})
    assert shaped.done_reason == "stop"
    data = json.loads(shaped.message.content)
    assert isinstance(data["name"], str) and isinstance(data["age"], int)


def test_raw_empty_prompt_with_a_suffix_is_a_400_where_nothing_is_left_to_read(client: ollama.Client) -> None:
    """raw skips the template, so the suffix is unused: the GGUF model still reads its BOS token; the ONNX
    one would read nothing, which crashed onnxruntime-genai into a 500 (found by the fuzzer)."""
    answer = client.generate(model="phi4:mini", prompt="", suffix="0", raw=True, options={"num_predict": 2})
    assert answer.done and answer.prompt_eval_count == 1
    with pytest.raises(ollama.ResponseError) as err:
        client.generate(model="qwen2.5:3b", prompt="", suffix="0", raw=True, options={"num_predict": 2})
    assert err.value.status_code == 400 and "prompt is empty" in err.value.error


def test_generate_format_json(client: ollama.Client) -> None:
    answer = client.generate(model="phi4:mini", prompt="List three colours", format="json",
                             options={"num_predict": 200, "seed": 2})
    json.loads(answer.response)


def test_embed_and_legacy_embeddings(client: ollama.Client) -> None:
    for model in ("nomic-embed-text", "phi4:mini"):
        result = client.embed(model=model, input=["Edge AI", "a second text"])
        assert len(result.embeddings) == 2 and len(result.embeddings[0]) > 8
        assert abs(sum(x * x for x in result.embeddings[0]) - 1) < 1e-3
    legacy = client.embeddings(model="nomic-embed-text", prompt="Edge AI represents a paradigm shift")
    assert len(legacy.embedding) > 8
    shortened = client.embed(model="nomic-embed-text", input="Edge AI", dimensions=4)
    assert len(shortened.embeddings[0]) == 4
    with pytest.raises(ollama.ResponseError) as err:
        client.embed(model="qwen2.5:3b", input="x")
    assert err.value.status_code == 400 and "does not support embeddings" in str(err.value)


def test_ps_load_and_keep_alive_zero_unloads(client: ollama.Client) -> None:
    client.generate(model="phi4:mini", prompt="", keep_alive="10m")
    loaded = {m.model: m for m in client.ps().models}
    assert "phi4:mini" in loaded and loaded["phi4:mini"].context_length > 0
    unloaded = client.generate(model="phi4:mini", prompt="", keep_alive=0)
    assert unloaded.done_reason == "unload"
    assert "phi4:mini" not in {m.model for m in client.ps().models}
    client.generate(model="qwen2.5:3b", prompt="hi", options={"num_predict": 2}, keep_alive=0)
    assert "qwen2.5:3b" not in {m.model for m in client.ps().models}


def test_a_keep_alive_past_any_date_lists_as_forever(client: ollama.Client) -> None:
    """The fuzzer found /api/ps failing (500) after a keep_alive of 10^15 s: no date can say when that ends."""
    client.generate(model="phi4:mini", prompt="", keep_alive=10**15)
    shown = {m.model: m for m in client.ps().models}
    assert shown["phi4:mini"].expires_at.year == 2318  # Ollama's "never"
    client.generate(model="phi4:mini", prompt="", keep_alive="5m")  # as before, for the next tests


def test_copy_and_delete(private_home: Path) -> None:
    served = Served(private_home)
    try:
        client = ollama.Client(host=served.url)
        client.copy("phi4:mini", "team/assistant:v1")
        assert "team/assistant:v1" in {m.model for m in client.list().models}
        client.delete("team/assistant:v1")
        assert "team/assistant:v1" not in {m.model for m in client.list().models}
        with pytest.raises(ollama.ResponseError) as err:
            client.delete("team/assistant:v1")
        assert err.value.status_code == 404
    finally:
        assert served.stop() == 0


def test_create_from_modelfile_fields_and_uploaded_blob(private_home: Path, tiny_gguf: Path) -> None:
    served = Served(private_home)
    try:
        client = ollama.Client(host=served.url)
        progress = list(client.create(model="pirate", from_="phi4:mini", system="You are a pirate.",
                                      parameters={"temperature": 0.1, "stop": ["###"]}, stream=True))
        assert progress[-1].status == "success"
        shown = client.show("pirate")
        assert "You are a pirate." in shown.modelfile and "temperature" in shown.parameters
        digest = client.create_blob(tiny_gguf)
        assert httpx.head(f"{served.url}/api/blobs/{digest}").status_code == 200
        client.create(model="uploaded", files={"tiny.gguf": digest})
        answer = client.generate(model="uploaded", prompt="hi", options={"num_predict": 3})
        assert answer.eval_count == 3
        bad = httpx.post(f"{served.url}/api/blobs/sha256:{'0' * 64}", content=b"not that")
        assert bad.status_code == 400 and "digest" in bad.json()["error"]
    finally:
        assert served.stop() == 0


def test_pull_streams_the_pull_services_events(tmp_path: Path, hub: "HubServer") -> None:
    from hub_fixtures import hub_env

    home = tmp_path / "empty-home"
    home.mkdir()
    served = Served(home, env=hub_env(hub))
    try:
        client = ollama.Client(host=served.url)
        with pytest.raises(ollama.ResponseError) as err:  # corrupted in transit (its bytes are not stored yet)
            list(client.pull("hf.co/test/bad-GGUF", stream=True))
        assert "digest mismatch" in str(err.value)
        events = list(client.pull("hf.co/test/tiny-GGUF", stream=True))
        statuses = [e.status for e in events]
        assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
        assert "verifying sha256 digest" in statuses and "writing manifest" in statuses
        progress = [e for e in events if e.completed is not None]
        assert progress and progress[-1].completed == progress[-1].total
        assert client.generate(model="hf.co/test/tiny-GGUF", prompt="hi", options={"num_predict": 2}).eval_count == 2
        assert client.pull("hf.co/test/tiny-GGUF").status == "success"  # not streamed: the last event
    finally:
        assert served.stop() == 0
