"""The Modelfile layer vocabulary (:mod:`slmctl.store.layers`): kinds, media types, canonical bytes, decoding.

The bytes of a layer decide its digest and so the model's: the golden values here were taken from the
code before the vocabulary moved into one module, and must never change. Round trips are properties
(hypothesis); a damaged layer is an ``InvalidModelFile`` with the message the engine always gave.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any, get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slmctl.engine import Engine, ModelDefaults
from slmctl.errors import InvalidModelFile
from slmctl.sources.ollama_layers import OLLAMA_MEDIA_TYPES, OLLAMA_MODEL_MEDIA, OLLAMA_TEXT_KINDS, ollama_layer_kind
from slmctl.store import FileEntry, Layer, Manifest, ModelDetails, ModelStore, SourceInfo
from slmctl.store.layers import (
    LAYER_ORDER,
    MEDIA_TYPES,
    TEXT_KINDS,
    LayerKind,
    LayerValues,
    canonical_json,
    decode_layers,
    encode_file,
    encode_messages,
    encode_params,
    encode_params_text,
    encode_text,
)

# -- golden bytes and digests (taken before the refactor) ------------------------------------------------

GOLDEN_MODELFILE = '''FROM ./tiny.gguf
TEMPLATE """{{ if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}<|im_start|>user
{{ .Prompt }}<|im_end|>
<|im_start|>assistant
"""
SYSTEM """
Answer in French — «court».
"""
PARAMETER temperature 0.25
PARAMETER stop <|im_end|>
PARAMETER stop "User:"
PARAMETER num_ctx 1024
PARAMETER top_k 20
MESSAGE user Où est la porte ?
MESSAGE assistant """  Port 8080. """
LICENSE """MIT — Example"""
LICENSE Apache-2.0
FILE notes.md
'''
GOLDEN_NOTES = "# Ports\nThe gateway listens on 8080 — «défaut».\n"
GOLDEN_LAYERS = [
    ("template", "sha256:13584952422bdecb614b2071ce16c7e4fa90b37c89d7b99fec2c206d690c4292", 131),
    ("system", "sha256:c168afde9e5191faf497758eca0baf40feb39eb90b65b58e4b97524dece57635", 31),
    ("params", "sha256:516cd3d47e2bb6177e8fbfd6f5bc58eb16fec5d0c4d62265da42d66cafb0ac1e", 76),
    ("messages", "sha256:af2403096b0f0831f08e110074432a3bc11807cab682c635e1c880b9e0eea994", 92),
    ("license", "sha256:40871da7f31e37b93a5136a104bf04e996db85e15a0358de3c8928c2906a2776", 15),
    ("license", "sha256:2af71558e438db0b73a20beab92dc278a94e1bbe974c00c1a33e3ab62d53a608", 10),
    ("file", "sha256:4179f7a49a838d05e292a8d55647d35a534e27490be71df40dab791768ba0b68", 84),
]
#: A child (FROM the golden model, new temperature and system): params merged, the rest inherited.
GOLDEN_CHILD_LAYERS = [
    ("template", GOLDEN_LAYERS[0][1]),
    ("system", "sha256:ddc9e669194254cef019a29d3619a2c16592e5d52e1a81e98b01bd52319149a3"),
    ("params", "sha256:c5b2ae6dd816ce8eb765be0a76b472a78b5f87b4f328742e21c2c5df1eab6552"),
    *[(kind, digest) for kind, digest, _ in GOLDEN_LAYERS[3:]],
]


def test_encoders_write_the_golden_bytes() -> None:
    assert encode_params({"temperature": 0.25, "top_k": 20, "stop": ["<|im_end|>", "User:"], "num_ctx": 1024}) == (
        b'{"num_ctx":1024,"stop":["<|im_end|>","User:"],"temperature":0.25,"top_k":20}')
    assert encode_messages([("user", "Où est la porte ?"), ("assistant", "Port 8080.")]) == (
        '[{"content":"Où est la porte ?","role":"user"},{"content":"Port 8080.","role":"assistant"}]'.encode())
    assert encode_file("notes.md", GOLDEN_NOTES) == (
        '{"name":"notes.md","text":"# Ports\\nThe gateway listens on 8080 — «défaut».\\n"}'.encode())
    assert encode_text("MIT — Example") == "MIT — Example".encode()
    # an Ollama registry's params text, as a pull stores it
    assert encode_params_text('{"temperature": 0.2, "stop": ["<|end|>"]}') == b'{"stop":["<|end|>"],"temperature":0.2}'


def test_created_model_has_the_golden_layers(tmp_path: Path, tiny_gguf: Path) -> None:
    """The same Modelfile gives the same layer digests (and so the same model digest) as before."""
    from slmctl.services.create import create_model

    (tmp_path / "tiny.gguf").symlink_to(tiny_gguf)
    (tmp_path / "notes.md").write_text(GOLDEN_NOTES, encoding="utf-8")
    (tmp_path / "Modelfile").write_text(GOLDEN_MODELFILE, encoding="utf-8")
    engine = Engine(ModelStore(tmp_path / "store"))
    manifest = create_model(engine, "golden", tmp_path / "Modelfile")
    assert [(layer.kind, layer.digest, layer.size) for layer in manifest.layers] == GOLDEN_LAYERS
    assert all(layer.media_type == f"application/vnd.slmctl.{layer.kind}" for layer in manifest.layers)
    again = create_model(engine, "golden-again", tmp_path / "Modelfile")
    assert again.digest() == manifest.digest()

    (tmp_path / "child").mkdir()
    (tmp_path / "child" / "Modelfile").write_text("FROM golden\nPARAMETER temperature 0.5\nSYSTEM child\n")
    child = create_model(engine, "child", tmp_path / "child" / "Modelfile")
    assert [(layer.kind, layer.digest) for layer in child.layers] == GOLDEN_CHILD_LAYERS

    defaults = engine.defaults(child)
    assert defaults.params == {"num_ctx": 1024, "stop": ["<|im_end|>", "User:"], "temperature": 0.5, "top_k": 20}
    assert (defaults.system, defaults.license) == ("child", ("MIT — Example", "Apache-2.0"))
    assert [(m.role, m.content) for m in defaults.messages] == [("user", "Où est la porte ?"),
                                                                ("assistant", "Port 8080.")]
    assert defaults.documents == (("notes.md", GOLDEN_NOTES),)


# -- the vocabulary --------------------------------------------------------------------------------------


def test_kinds_order_and_media_types() -> None:
    assert set(get_args(LayerKind)) == set(LAYER_ORDER) and len(LAYER_ORDER) == 7
    assert LAYER_ORDER == ("template", "system", "params", "messages", "license", "file", "adapter")
    assert TEXT_KINDS == tuple(kind for kind in LAYER_ORDER if kind != "adapter")
    assert MEDIA_TYPES == {kind: f"application/vnd.slmctl.{kind}" for kind in LAYER_ORDER}
    assert "file" not in OLLAMA_MEDIA_TYPES and set(OLLAMA_TEXT_KINDS) <= set(OLLAMA_MEDIA_TYPES)
    assert set(OLLAMA_MEDIA_TYPES) == set(LAYER_ORDER) - {"file"}  # Ollama's names are slmctl's kinds


def test_ollama_media_types_map_to_kinds() -> None:
    for kind, media in OLLAMA_MEDIA_TYPES.items():
        assert media == f"application/vnd.ollama.image.{kind}" and ollama_layer_kind(media) == kind
    assert ollama_layer_kind(OLLAMA_MODEL_MEDIA) == "model"
    for other in ("application/vnd.ollama.image.projector", "application/vnd.ollama.image.file",
                  "application/vnd.slmctl.system", "application/vnd.ollama.image.", None, 3):
        assert ollama_layer_kind(other) is None, other


# -- round trips (hypothesis) ----------------------------------------------------------------------------

_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False,
                                                                                allow_infinity=False) | st.text()
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=10)
_params = st.dictionaries(st.text(max_size=12), _values, max_size=6)
_messages = st.lists(st.tuples(st.sampled_from(["system", "user", "assistant", "tool"]), st.text()), max_size=5)
_documents = st.lists(st.tuples(st.text(min_size=1, max_size=20), st.text()), max_size=3)


@given(_params)
def test_params_round_trip_and_bytes_are_canonical(params: dict[str, Any]) -> None:
    data = encode_params(params)
    decoded = decode_layers({"params": [data.decode("utf-8")]}, model="m:latest").params
    assert decoded == params
    assert encode_params(decoded) == data  # stable: decoding and encoding again gives the same bytes
    shuffled = list(params.items())
    random.Random(len(data)).shuffle(shuffled)
    assert encode_params(dict(shuffled)) == data  # the key order does not matter
    assert canonical_json(json.loads(data)) == data
    assert data == json.dumps(params, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


@given(_messages, _documents, st.lists(st.text(), max_size=3), st.lists(st.text(), max_size=2),
       st.lists(st.text(), max_size=2))
def test_layers_round_trip(messages: list[tuple[str, str]], documents: list[tuple[str, str]],
                           licenses: list[str], systems: list[str], templates: list[str]) -> None:
    texts = {
        "system": [encode_text(text).decode("utf-8") for text in systems],
        "template": [encode_text(text).decode("utf-8") for text in templates],
        "messages": [encode_messages(messages).decode("utf-8")] if messages else [],
        "license": [encode_text(text).decode("utf-8") for text in licenses],
        "file": [encode_file(name, text).decode("utf-8") for name, text in documents],
    }
    values = decode_layers(texts, model="m:latest")
    assert values == LayerValues(params={}, system=systems[-1] if systems else None,
                                 template=templates[-1] if templates else None, messages=tuple(messages),
                                 licenses=tuple(licenses), documents=tuple(documents))
    assert encode_messages(values.messages) == encode_messages(messages)
    assert [encode_file(*d) for d in values.documents] == [encode_file(*d) for d in documents]
    defaults = ModelDefaults.from_layers(values)
    assert [(m.role, m.content) for m in defaults.messages] == messages and defaults.license == tuple(licenses)


@given(st.lists(_params, min_size=1, max_size=3))
def test_later_params_layers_win(layers: list[dict[str, Any]]) -> None:
    merged: dict[str, Any] = {}
    for params in layers:
        merged.update(params)
    texts = {"params": [encode_params(params).decode("utf-8") for params in layers]}
    assert decode_layers(texts, model="m:latest").params == merged


# -- damaged layers --------------------------------------------------------------------------------------


def _reason(kind: str, text: str) -> str:
    """What the engine's decoding always said about a damaged layer of ``kind`` (the exception's text)."""
    try:
        value = json.loads(text)
        if kind == "messages":
            [(m["role"], m["content"]) for m in value]
        elif kind == "file":
            value["name"], value["text"]
    except (ValueError, KeyError, TypeError) as exc:
        return str(exc)
    raise AssertionError("not damaged")


@pytest.mark.parametrize("kind,text", [
    ("params", "{"), ("params", "not json"), ("messages", '[{"role": "user"}]'), ("messages", '["hi"]'),
    ("messages", "]"), ("file", '{"name": "a.md"}'), ("file", "[1]"),
])
def test_damaged_layer_message(kind: str, text: str) -> None:
    with pytest.raises(InvalidModelFile) as caught:
        decode_layers({kind: [text]}, model="team/bot:v1")
    assert caught.value.message == f"model 'team/bot:v1' has a damaged layer: {_reason(kind, text)}"
    assert caught.value.hint == "run 'slmctl verify' or create the model again"


def test_a_params_layer_that_is_no_object_is_damaged() -> None:
    with pytest.raises(InvalidModelFile, match="model 'm:latest' has a damaged layer: .*not a JSON object"):
        decode_layers({"params": ["[1, 2]"]}, model="m:latest")


def test_engine_defaults_report_a_damaged_stored_layer(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    engine = Engine(store)

    def commit(tag: str, kind: LayerKind, data: bytes) -> Manifest:
        weights, blob = store.stage_bytes(b"GGUF"), store.stage_bytes(data)
        layer = Layer(kind=kind, digest=blob.digest, size=blob.size, media_type=MEDIA_TYPES[kind])
        return store.commit(Manifest(name="broken", tag=tag, format="gguf",
                                     files=[FileEntry(path="model.gguf", digest=weights.digest, size=weights.size)],
                                     layers=[layer], source=SourceInfo(type="create", ref="Modelfile"),
                                     details=ModelDetails()), [weights, blob])

    damaged = '{"temperature": '
    with pytest.raises(InvalidModelFile) as caught:
        engine.defaults(commit("latest", "params", damaged.encode()))
    assert caught.value.message == f"model 'broken:latest' has a damaged layer: {_reason('params', damaged)}"
    with pytest.raises(InvalidModelFile, match="model 'broken:text' has a damaged layer: 'utf-8' codec"):
        engine.defaults(commit("text", "system", b"\xff\xfe not utf-8"))


# -- no import cycle between create and pull ---------------------------------------------------------------


@pytest.mark.parametrize("module,absent", [
    ("slmctl.services.pull", "slmctl.services.create"), ("slmctl.services.create", "slmctl.services.pull"),
    ("slmctl.sources.ollama", "slmctl.services.pull"), ("slmctl.store.layers", "slmctl.engine"),
])
def test_imports_do_not_reach_back(module: str, absent: str) -> None:
    code = f"import sys, {module}; sys.exit({absent!r} in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0, f"{module} imports {absent}"
