"""The Modelfile layer vocabulary: layer kinds, their media types, their order, their bytes and their values.

A model's Modelfile layers (``template``, ``system``, ``params``, ``messages``, ``license``, ``file``,
``adapter``) are blobs listed in its manifest. This module is the one place that knows:

* the kinds (:data:`LayerKind`) and the order they take in a manifest (:data:`LAYER_ORDER`, fixed, so
  equal Modelfiles give equal digests);
* their media types (:data:`MEDIA_TYPES`, ``application/vnd.slmctl.<kind>``; Ollama's registry names
  for them are the Ollama transport's: :mod:`slmctl.sources.ollama_layers`);
* the bytes written for each kind: plain UTF-8 text for ``template``, ``system`` and ``license``
  (:func:`encode_text`), canonical JSON (sorted keys, compact separators, UTF-8 unescaped;
  :func:`canonical_json`) for ``params``, ``messages`` and ``file`` (:func:`encode_params`,
  :func:`encode_messages`, :func:`encode_file`). These bytes decide layer and model digests: they
  must never change;
* how layer texts decode back into typed values (:func:`decode_layers`), a damaged layer being an
  :class:`~slmctl.errors.InvalidModelFile`.

Pure data and functions: no I/O, no import of the rest of the store (the manifest schema imports
:data:`LayerKind` from here).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from slmctl.errors import InvalidModelFile

#: A Modelfile layer's kind (the order here is the schema's; :data:`LAYER_ORDER` is the manifest's).
LayerKind = Literal["system", "template", "params", "messages", "license", "adapter", "file"]
#: Layer order in a manifest (fixed, so equal Modelfiles give equal digests).
LAYER_ORDER: tuple[LayerKind, ...] = ("template", "system", "params", "messages", "license", "file", "adapter")
#: The kinds whose blob is UTF-8 text (an adapter is a binary GGUF LoRA file).
TEXT_KINDS: tuple[LayerKind, ...] = tuple(kind for kind in LAYER_ORDER if kind != "adapter")
#: slmctl's media type of each kind, recorded in the manifest's layers.
MEDIA_TYPES: dict[str, str] = {kind: f"application/vnd.slmctl.{kind}" for kind in LAYER_ORDER}

_DAMAGED_HINT = "run 'slmctl verify' or create the model again"


# -- encoding: the bytes of a layer ---------------------------------------------------------------------


def canonical_json(value: Any) -> bytes:
    """``value`` as canonical JSON: sorted keys, no spaces, non-ASCII kept as UTF-8 (never ``\\u`` escapes)."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def encode_text(text: str) -> bytes:
    """A ``template``, ``system`` or ``license`` layer: the text as UTF-8."""
    return text.encode("utf-8")


def encode_params(params: Mapping[str, Any]) -> bytes:
    """A ``params`` layer: the parameters (name -> value) as one canonical JSON object."""
    return canonical_json(dict(params))


def encode_params_text(text: str) -> bytes:
    """A ``params`` layer from JSON text a source ships, re-encoded canonically (ValueError: not JSON)."""
    return canonical_json(json.loads(text))


def encode_messages(messages: Iterable[tuple[str, str]]) -> bytes:
    """A ``messages`` layer: ``(role, content)`` pairs as a canonical JSON list of ``{"role", "content"}``."""
    return canonical_json([{"role": role, "content": content} for role, content in messages])


def encode_file(name: str, text: str) -> bytes:
    """A ``file`` layer (a FILE knowledge document): ``{"name", "text"}`` as canonical JSON."""
    return canonical_json({"name": name, "text": text})


# -- decoding: the values of a model's layers --------------------------------------------------------------


@dataclass(frozen=True)
class LayerValues:
    """What a model's Modelfile layers hold, decoded (the engine turns it into its ModelDefaults)."""

    #: All ``params`` layers merged in order (a later layer's value wins).
    params: dict[str, Any] = field(default_factory=dict)
    #: The last ``system`` / ``template`` layer (a later one replaces an earlier one).
    system: str | None = None
    template: str | None = None
    #: ``(role, content)`` of every ``messages`` layer, in order.
    messages: tuple[tuple[str, str], ...] = ()
    licenses: tuple[str, ...] = ()
    #: ``(name, text)`` of every ``file`` layer (FILE knowledge documents), in order.
    documents: tuple[tuple[str, str], ...] = ()


def damaged_layer(model: str, exc: BaseException) -> InvalidModelFile:
    """The error for a layer of ``model`` that cannot be read or decoded."""
    return InvalidModelFile(f"model '{model}' has a damaged layer: {exc}", _DAMAGED_HINT)


def decode_params(text: str) -> dict[str, Any]:
    """The parameters of one ``params`` layer (ValueError: not JSON; TypeError: not a JSON object)."""
    params = json.loads(text)
    if not isinstance(params, dict):
        raise TypeError("the params layer is not a JSON object")
    return params


def decode_messages(text: str) -> list[tuple[str, str]]:
    """The ``(role, content)`` pairs of one ``messages`` layer (ValueError, KeyError, TypeError: damaged)."""
    return [(m["role"], m["content"]) for m in json.loads(text)]


def decode_file(text: str) -> tuple[str, str]:
    """The ``(name, text)`` of one ``file`` layer (ValueError, KeyError, TypeError: damaged)."""
    document = json.loads(text)
    return document["name"], document["text"]


def decode_layers(texts_by_kind: Mapping[str, Sequence[str]], *, model: str) -> LayerValues:
    """The values of a model's layers from their texts (kind -> texts in manifest order).

    Kinds that are absent count as empty. A layer that does not decode raises
    :class:`~slmctl.errors.InvalidModelFile` naming ``model``.
    """
    def texts(kind: str) -> Sequence[str]:
        return texts_by_kind.get(kind, ())

    try:
        params = {key: value for text in texts("params") for key, value in decode_params(text).items()}
        messages = tuple(message for text in texts("messages") for message in decode_messages(text))
        documents = tuple(decode_file(text) for text in texts("file"))
    except (ValueError, KeyError, TypeError) as exc:
        raise damaged_layer(model, exc) from exc
    systems, templates = texts("system"), texts("template")
    return LayerValues(params=params, system=systems[-1] if systems else None,
                       template=templates[-1] if templates else None, messages=messages,
                       licenses=tuple(texts("license")), documents=documents)


__all__ = [
    "LAYER_ORDER",
    "MEDIA_TYPES",
    "TEXT_KINDS",
    "LayerKind",
    "LayerValues",
    "canonical_json",
    "damaged_layer",
    "decode_file",
    "decode_layers",
    "decode_messages",
    "decode_params",
    "encode_file",
    "encode_messages",
    "encode_params",
    "encode_params_text",
    "encode_text",
]
