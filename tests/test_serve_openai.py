"""OpenAI's API on a real ``slmctl serve``, driven by the official ``openai`` SDK (and Node's ``openai``).

Tiny random-weight models on both runtimes, each with a Qwen-style chat template that renders tools:
answers are random text, so the tests check shapes, counts and guarantees (schemas that validate, calls
that parse), never wording. The SDK runs with ``max_retries=0`` so an error is seen as the server sent it.
"""

from __future__ import annotations

import base64
import json
import math
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import numpy as np
import openai
import pytest

from node_packages import node_modules_for
from serve_fixtures import Served
from slmctl.services.importer import import_path
from slmctl.store import ModelStore
from slmctl.testing.tiny_gguf import TOOLS_CHATML_TEMPLATE, TinyGGUFSpec, write_tiny_gguf
from slmctl.testing.tiny_onnx_decoder import TinyOnnxSpec, write_tiny_onnx_genai

GGUF, ONNX = "tools-gguf", "tools-onnx"
RUNTIMES = pytest.mark.parametrize("model", [GGUF, ONNX])
#: ``npm view openai version`` when this test was written.
NODE_OPENAI = "7.60.0"

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 8},
                                                    "unit": {"enum": ["c", "f"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {"utc": {"type": "boolean"}},
                                       "required": ["utc"], "additionalProperties": False}}}
ANSWER_SCHEMA = {"type": "object", "additionalProperties": False, "required": ["ok", "mood", "word"],
                 "properties": {"ok": {"type": "boolean"}, "mood": {"enum": ["happy", "sad"]},
                                "word": {"type": "string", "maxLength": 6}}}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_gguf: Path, tiny_onnx_encoder: Path) -> Iterator[Served]:
    models = tmp_path_factory.mktemp("openai-models")
    home = tmp_path_factory.mktemp("openai-home")
    store = ModelStore(home / "models")
    spec = TinyGGUFSpec(eos_reachable=True, context_length=4096, chat_template=TOOLS_CHATML_TEMPLATE)
    import_path(store, write_tiny_gguf(models / "tools.gguf", spec), GGUF)
    onnx = TinyOnnxSpec(eos_reachable=True, context_length=4096, chat_template=TOOLS_CHATML_TEMPLATE)
    import_path(store, write_tiny_onnx_genai(models / "tools-onnx", onnx), ONNX)
    import_path(store, tiny_gguf, "chatml")  # a 512-token context and a template without tools
    import_path(store, tiny_onnx_encoder, "embed")
    server = Served(home, "--max-body", "100000", log_dir=tmp_path_factory.mktemp("openai-logs"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(served: Served) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def ask(client: openai.OpenAI, model: str, text: str = "hello", **kwargs: Any) -> Any:
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}], **kwargs)


# -- models and errors ---------------------------------------------------------------------------------
def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    listed = {m.id: m for m in client.models.list().data}
    assert {f"{GGUF}:latest", f"{ONNX}:latest", "chatml:latest", "embed:latest"} <= set(listed)
    one = client.models.retrieve(GGUF)
    assert one.id == f"{GGUF}:latest" and one.object == "model" and one.owned_by == "library"
    assert one.created == listed[one.id].created and one.created > 1_700_000_000


def test_unknown_model_is_404_model_not_found(client: openai.OpenAI) -> None:
    for call in (lambda: client.models.retrieve("nosuch"), lambda: ask(client, "nosuch")):
        with pytest.raises(openai.NotFoundError) as caught:
            call()
        assert caught.value.body["code"] == "model_not_found" and "nosuch" in caught.value.body["message"]


def test_wrong_field_type_is_400_naming_the_field(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        ask(client, GGUF, temperature="hot")
    assert caught.value.body["param"] == "temperature" and caught.value.body["type"] == "invalid_request_error"


def test_body_over_the_limit_is_413_in_openai_shape(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        ask(client, GGUF, "x" * 200_000)
    assert caught.value.status_code == 413 and caught.value.body["code"] == "request_too_large"


def test_over_long_prompt_is_context_length_exceeded_with_both_sizes(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        ask(client, "chatml", "hello " * 600)
    body = caught.value.body
    assert body["code"] == "context_length_exceeded"
    assert "but the context holds 512" in body["message"] and "the prompt is " in body["message"]


def test_unsupported_schema_keyword_is_refused_by_name(client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer", "multipleOf": 3}}}
    with pytest.raises(openai.BadRequestError) as caught:
        ask(client, GGUF, response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": schema}})
    assert "multipleOf" in caught.value.body["message"]


# -- chat ---------------------------------------------------------------------------------------------
@RUNTIMES
def test_chat_answers_with_usage(client: openai.OpenAI, model: str) -> None:
    answer = ask(client, model, max_tokens=6, seed=1)
    choice = answer.choices[0]
    assert answer.object == "chat.completion" and answer.model == f"{model}:latest"
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length") and answer.usage.completion_tokens <= 6
    assert answer.usage.prompt_tokens > 0
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
    again = ask(client, model, max_tokens=6, seed=1)
    assert again.choices[0].message.content == choice.message.content


@RUNTIMES
def test_chat_streams_deltas_then_usage(client: openai.OpenAI, model: str) -> None:
    chunks = list(ask(client, model, max_tokens=8, seed=2, stream=True, stream_options={"include_usage": True}))
    plain = ask(client, model, max_tokens=8, seed=2)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [plain.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_n_choices(client: openai.OpenAI) -> None:
    answer = ask(client, GGUF, max_tokens=6, n=2, seed=5)
    assert [c.index for c in answer.choices] == [0, 1]
    single = ask(client, GGUF, max_tokens=6, seed=5)
    assert answer.choices[0].message.content == single.choices[0].message.content
    assert answer.usage.completion_tokens >= single.usage.completion_tokens
    assert answer.usage.prompt_tokens == single.usage.prompt_tokens  # the prompt is counted once
    streamed = list(ask(client, GGUF, max_tokens=6, n=2, seed=5, stream=True))
    for index, choice in enumerate(answer.choices):
        text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices[0].index == index)
        assert text == choice.message.content


@RUNTIMES
def test_logprobs_with_alternatives(client: openai.OpenAI, model: str) -> None:
    answer = ask(client, model, max_tokens=6, seed=3, logprobs=True, top_logprobs=3)
    entries = answer.choices[0].logprobs.content
    assert len(entries) == answer.usage.completion_tokens
    for entry in entries:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
        tops = [t.logprob for t in entry.top_logprobs]
        assert tops == sorted(tops, reverse=True) and entry.logprob <= tops[0] + 1e-6
        assert bytes(entry.bytes).decode("utf-8", "replace") == entry.token
        assert sum(math.exp(t) for t in tops) <= 1 + 1e-6
    streamed = list(ask(client, model, max_tokens=6, seed=3, logprobs=True, stream=True))
    tokens = [e.token for c in streamed if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert tokens == [e.token for e in entries]


# -- structured output --------------------------------------------------------------------------------
@RUNTIMES
def test_json_schema_answers_validate(client: openai.OpenAI, model: str) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "strict": True, "schema": ANSWER_SCHEMA}}
    finished = 0
    for seed in range(4):
        answer = ask(client, model, "Answer in JSON", max_tokens=200, seed=seed, response_format=fmt)
        if answer.choices[0].finish_reason == "stop":
            jsonschema.validate(json.loads(answer.choices[0].message.content), ANSWER_SCHEMA)
            finished += 1
    assert finished >= 2


@RUNTIMES
def test_json_object_is_json(client: openai.OpenAI, model: str) -> None:
    answer = ask(client, model, max_tokens=120, seed=1, response_format={"type": "json_object"})
    if answer.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(answer.choices[0].message.content), dict)


# -- tools ---------------------------------------------------------------------------------------------
def check_call(call: Any, names: set[str]) -> dict[str, Any]:
    assert call.type == "function" and call.id.startswith("call_") and call.function.name in names
    arguments = json.loads(call.function.arguments)
    tool = next(t for t in (WEATHER, TIME) if t["function"]["name"] == call.function.name)
    jsonschema.validate(arguments, tool["function"]["parameters"])
    return arguments


@RUNTIMES
@pytest.mark.parametrize("choice", ["required", "named"])
def test_forced_tool_calls_parse_and_validate(client: openai.OpenAI, model: str, choice: str) -> None:
    tool_choice: Any = "required" if choice == "required" else {"type": "function", "function": {"name": "get_time"}}
    for seed in range(2):
        answer = ask(client, model, "What is the weather?", tools=[WEATHER, TIME], tool_choice=tool_choice,
                     max_tokens=300, seed=seed)
        choice_ = answer.choices[0]
        assert choice_.finish_reason == "tool_calls", choice_.message.content
        assert choice_.message.content is None and len(choice_.message.tool_calls) == 1
        check_call(choice_.message.tool_calls[0], {"get_time"} if choice == "named" else {"get_time", "get_weather"})


@RUNTIMES
def test_streamed_tool_call_deltas_assemble(client: openai.OpenAI, model: str) -> None:
    chunks = list(ask(client, model, tools=[WEATHER], tool_choice="required", max_tokens=300, seed=1, stream=True))
    deltas = [d for c in chunks for d in (c.choices[0].delta.tool_calls or [])]
    assert deltas and deltas[0].id and deltas[0].function.name == "get_weather"
    arguments = "".join(d.function.arguments or "" for d in deltas)
    jsonschema.validate(json.loads(arguments), WEATHER["function"]["parameters"])
    assert not any(c.choices[0].delta.content for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


@RUNTIMES
def test_tool_round_trip(client: openai.OpenAI, model: str) -> None:
    messages: list[Any] = [{"role": "system", "content": "You help."},
                           {"role": "user", "content": "Weather in Paris?"}]
    first = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER],
                                           tool_choice="required", max_tokens=300, seed=4)
    call = first.choices[0].message.tool_calls[0]
    check_call(call, {"get_weather"})
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"celsius": 21})}]
    second = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER], max_tokens=8, seed=4)
    assert second.choices[0].finish_reason in ("stop", "length", "tool_calls")
    assert second.usage.prompt_tokens > first.usage.prompt_tokens  # the call and its result were read
    if model == GGUF:  # the shared beginning came from the prefix cache (GGUF models are batched)
        assert second.usage.prompt_tokens_details.cached_tokens > 0
    none = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER], tool_choice="none",
                                          max_tokens=8, seed=4)
    assert none.choices[0].message.tool_calls is None and none.choices[0].finish_reason in ("stop", "length")


def test_tools_need_a_template_that_renders_them_unless_forced(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        ask(client, "chatml", tools=[TIME], max_tokens=4)
    assert "does not support tools" in caught.value.body["message"]
    forced = ask(client, "chatml", tools=[TIME], tool_choice="required", max_tokens=200, seed=1)
    if forced.choices[0].finish_reason != "length":
        check_call(forced.choices[0].message.tool_calls[0], {"get_time"})
    with pytest.raises(openai.BadRequestError) as caught:
        ask(client, GGUF, tools=[TIME], tool_choice={"type": "function", "function": {"name": "nosuch"}})
    assert "nosuch" in caught.value.body["message"]


# -- legacy completions and embeddings ------------------------------------------------------------------
def test_legacy_completions(client: openai.OpenAI) -> None:
    plain = client.completions.create(model=GGUF, prompt="Once upon", max_tokens=5, seed=2)
    assert plain.object == "text_completion" and plain.usage.completion_tokens <= 5
    echoed = client.completions.create(model=GGUF, prompt="Once upon", max_tokens=5, seed=2, echo=True, logprobs=2)
    choice = echoed.choices[0]
    assert choice.text == "Once upon" + plain.choices[0].text
    assert len(choice.logprobs.tokens) == len(choice.logprobs.token_logprobs) == len(choice.logprobs.top_logprobs)
    assert choice.logprobs.text_offset[0] == len("Once upon")
    streamed = list(client.completions.create(model=GGUF, prompt="Once upon", max_tokens=5, seed=2, stream=True))
    assert "".join(c.choices[0].text for c in streamed) == plain.choices[0].text
    several = client.completions.create(model=GGUF, prompt=["a", "b"], max_tokens=3, n=2, seed=1)
    assert [c.index for c in several.choices] == [0, 1, 2, 3]
    tokens = client.completions.create(model=GGUF, prompt=[104, 105], max_tokens=3, seed=1)
    assert tokens.usage.prompt_tokens == 2


def test_embeddings_float_base64_dimensions_and_tokens(client: openai.OpenAI, served: Served) -> None:
    floats = client.embeddings.create(model="embed", input=["hello world", "bye"], encoding_format="float")
    assert [d.index for d in floats.data] == [0, 1] and floats.usage.prompt_tokens > 0
    vector = floats.data[0].embedding
    raw = httpx.post(served.url + "/v1/embeddings", json={"model": "embed", "input": "hello world",
                                                          "encoding_format": "base64"}).json()
    decoded = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, vector, atol=1e-6)
    short = client.embeddings.create(model="embed", input="hello world", dimensions=4, encoding_format="float")
    assert len(short.data[0].embedding) == 4
    assert math.isclose(sum(x * x for x in short.data[0].embedding), 1.0, rel_tol=1e-5)
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="embed", input="x", dimensions=len(vector) + 1)


@pytest.mark.parametrize("ids", [[0, -1], [2**31 + 5]])
def test_token_ids_outside_the_vocabulary_are_a_400_on_every_runtime(client: openai.OpenAI, ids: list[int]) -> None:
    """The fuzzer found a negative id overflowing the encoder's tokenizer into a 500."""
    with pytest.raises(openai.BadRequestError, match="outside the model's vocabulary"):
        client.embeddings.create(model="embed", input=ids)
    for model in (GGUF, ONNX):
        with pytest.raises(openai.BadRequestError, match="outside the model's vocabulary"):
            client.completions.create(model=model, prompt=ids, max_tokens=2)


# -- other clients ----------------------------------------------------------------------------------------
def test_ollama_chat_format_schema_and_tools(served: Served) -> None:
    for model in (GGUF, ONNX):
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": False,
                "format": ANSWER_SCHEMA, "options": {"seed": 1, "num_predict": 200}}
        answer = httpx.post(served.url + "/api/chat", json=body, timeout=120).json()
        if answer["done_reason"] == "stop":
            jsonschema.validate(json.loads(answer["message"]["content"]), ANSWER_SCHEMA)
    chat = {"model": "chatml", "messages": [{"role": "user", "content": "hi"}], "tools": [TIME], "stream": False}
    refused = httpx.post(served.url + "/api/chat", json=chat, timeout=60)
    assert refused.status_code == 400 and "does not support tools" in refused.json()["error"]
    accepted = httpx.post(served.url + "/api/chat", json={**chat, "model": GGUF, "options": {"num_predict": 4}},
                          timeout=60)
    assert accepted.status_code == 200 and accepted.json()["message"]["role"] == "assistant"


def test_curl_streams_server_sent_events(served: Served) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is needed")
    body = json.dumps({"model": GGUF, "stream": True, "max_tokens": 4,
                       "messages": [{"role": "user", "content": "hi"}]})
    done = subprocess.run(["curl", "-sN", served.url + "/v1/chat/completions", "-H",
                           "Content-Type: application/json", "-d", body],
                          capture_output=True, text=True, timeout=60)
    events = [line for line in done.stdout.splitlines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[0][6:])["object"] == "chat.completion.chunk"


@pytest.fixture(scope="module")
def node_openai(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return node_modules_for(request, tmp_path_factory, {"openai": NODE_OPENAI})


def test_node_openai_streams_a_chat(served: Served, node_openai: Path, tmp_path: Path) -> None:
    script = tmp_path / "chat.mjs"
    script.write_text(
        "import OpenAI from 'openai';\n"
        f"const client = new OpenAI({{ baseURL: '{served.url}/v1', apiKey: 'unused', maxRetries: 0 }});\n"
        "const stream = await client.chat.completions.create({ model: '" + GGUF + "', stream: true, max_tokens: 6,\n"
        "  messages: [{ role: 'user', content: 'hi' }], stream_options: { include_usage: true } });\n"
        "let text = ''; let usage = null; let finish = null;\n"
        "for await (const chunk of stream) {\n"
        "  if (chunk.choices.length) { text += chunk.choices[0].delta.content ?? '';\n"
        "    finish = chunk.choices[0].finish_reason ?? finish; }\n"
        "  if (chunk.usage) usage = chunk.usage; }\n"
        "console.log(JSON.stringify({ text, usage, finish }));\n")
    (tmp_path / "node_modules").symlink_to(node_openai)
    done = subprocess.run(["node", str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["finish"] in ("stop", "length") and 0 < result["usage"]["completion_tokens"] <= 6


def test_sixteen_concurrent_streams_on_four_slots_all_finish(client: openai.OpenAI) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def stream(seed: int) -> tuple[str, str | None, int]:
        chunks = list(ask(client, GGUF, f"story {seed}", max_tokens=12, seed=seed, stream=True,
                          stream_options={"include_usage": True}))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = next((c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason), None)
        return text, finish, chunks[-1].usage.completion_tokens

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(stream, range(16)))
    assert all(finish in ("stop", "length") and 0 < tokens <= 12 for _, finish, tokens in results)
    assert results[3][0] == stream(3)[0]  # the same seed gives the same answer, batched or not
