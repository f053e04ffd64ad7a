"""The Ollama registry transport: ``ollama://[<host>/][<namespace>/]<model>[:<tag>]``.

``GET <scheme>://<host>/v2/<namespace>/<model>/manifests/<tag>`` (Accept: Docker manifest v2) gives the
layers; the ``application/vnd.ollama.image.model`` layer becomes the one file ``model.gguf`` (downloaded
from ``/v2/<namespace>/<model>/blobs/<digest>``, verified against the digest); the small template, system,
license and params layers are fetched now, checked against their digests, and returned as text in
:attr:`RemoteModel.layers`. Of the params layer only the parameters slmctl knows are kept
(:func:`supported_params`): Ollama-only options such as ``mirostat`` or ``penalize_newline`` would make
the stored model fail to run or show. Which registry layer is which kind is
:func:`slmctl.sources.ollama_layers.ollama_layer_kind`'s business.

Scheme: https. ``default_host`` (the caller's ``SLMCTL_OLLAMA_REGISTRY``) replaces the default registry
host for references that name none; it may carry a scheme (``http://host:port``), and plain http is
refused (:class:`UsageError`) unless ``insecure``. With ``insecure``, a bare host is tried over https
first and over http when https cannot connect.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from slmctl.errors import IntegrityError, InvalidModelFile, NetworkError, UsageError
from slmctl.options import canonical_key, parse_value
from slmctl.refs import _HOST, OLLAMA_REGISTRY, OllamaRef
from slmctl.sources.base import ClientFactory, RemoteFile, RemoteModel
from slmctl.sources.hf import request
from slmctl.sources.ollama_layers import OLLAMA_MODEL_MEDIA, OLLAMA_TEXT_KINDS, ollama_layer_kind

MANIFEST_ACCEPT = "application/vnd.docker.distribution.manifest.v2+json"
MAX_TEXT_LAYER = 1024 * 1024
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_REGISTRY_HINT = "registries with plain http need --insecure"
REGISTRY_ACCESS_HINT = "the registry refused access to this model: check its name, and the registry's credentials"


def _split_registry(value: str) -> tuple[str | None, str]:
    """``(scheme or None, host[:port])`` of a registry setting (``host``, ``host:port`` or a URL)."""
    value = value.strip().rstrip("/")
    if "://" in value:
        parts = urlsplit(value)
        scheme, host = parts.scheme.lower(), parts.netloc
        if scheme not in ("http", "https") or parts.path not in ("", "/"):
            raise UsageError(f"bad Ollama registry {value!r}", "use <host>[:<port>] or https://<host>[:<port>]")
    else:
        scheme, host = None, value
    if not _HOST.match(host) or ".." in host:
        raise UsageError(f"bad Ollama registry host {host!r}", "use <host>[:<port>]")
    return scheme, host


class OllamaTransport:
    """Resolves Ollama registry references."""

    def __init__(self, client_factory: ClientFactory, *, insecure: bool = False, default_host: str | None = None) -> None:
        self.client_factory = client_factory
        self.insecure = insecure
        self.default_host = default_host or None

    def _base_urls(self, ref: OllamaRef) -> tuple[str, list[str]]:
        """``(host, candidate base URLs in order)``."""
        scheme: str | None = None
        host = ref.host
        if ref.host == OLLAMA_REGISTRY and self.default_host:
            scheme, host = _split_registry(self.default_host)
        if scheme == "http" and not self.insecure:
            raise UsageError(f"refusing plain http for the Ollama registry {host}", _REGISTRY_HINT)
        if scheme is not None:
            return host, [f"{scheme}://{host}"]
        return host, [f"https://{host}"] + ([f"http://{host}"] if self.insecure else [])

    def resolve(self, ref: object, *, quant: str | None = None) -> RemoteModel:
        """The remote model of ``ref`` (``quant`` does not apply: the tag names the variant)."""
        if not isinstance(ref, OllamaRef):
            raise UsageError(f"not an Ollama reference: {ref!r}")
        host, bases = self._base_urls(ref)
        path = f"/v2/{quote(ref.namespace)}/{quote(ref.model)}"
        effective = OllamaRef(ref.model, ref.tag, ref.namespace, host)
        what = f"ollama://{host}/{ref.namespace}/{ref.model}:{ref.tag}"
        with self.client_factory() as client:
            base, response = self._manifest(client, bases, f"{path}/manifests/{quote(ref.tag)}", what)
            raw = response.content
            try:
                manifest = json.loads(raw)
            except ValueError:
                raise InvalidModelFile(f"the registry's manifest for {what} is not JSON") from None
            layers = manifest.get("layers") if isinstance(manifest, dict) else None
            if not isinstance(layers, list):
                raise InvalidModelFile(f"the registry's manifest for {what} has no layers")
            model_file: RemoteFile | None = None
            texts: dict[str, list[str]] = {}
            notes: list[str] = []
            for layer in layers:
                if not isinstance(layer, dict):
                    continue
                kind = ollama_layer_kind(layer.get("mediaType"))
                digest = layer.get("digest")
                size = layer.get("size")
                if kind is None or (kind != "model" and kind not in OLLAMA_TEXT_KINDS):
                    continue  # projector, adapter, messages...: not supported here
                if not isinstance(digest, str) or not _DIGEST.match(digest):
                    raise InvalidModelFile(f"the manifest for {what} has a bad layer digest {digest!r}")
                blob_url = f"{base}{path}/blobs/{digest}"
                size = size if isinstance(size, int) and size >= 0 else None
                if kind == "model":
                    if model_file is None:
                        model_file = RemoteFile(path="model.gguf", url=blob_url, size=size, sha256=digest)
                    continue
                text = self._text_layer(client, blob_url, digest, size, kind, what, notes)
                if text is not None:
                    texts.setdefault(kind, []).append(text)
        if model_file is None:
            raise InvalidModelFile(f"the manifest for {what} has no model layer ({OLLAMA_MODEL_MEDIA})")
        return RemoteModel(
            source=str(effective),
            source_type="ollama",
            format="gguf",
            files=[model_file],
            revision="sha256:" + hashlib.sha256(raw).hexdigest(),
            layers=texts,
            auth_hint=REGISTRY_ACCESS_HINT,
            notes=notes,
        )

    def _manifest(self, client: httpx.Client, bases: list[str], path: str, what: str) -> tuple[str, httpx.Response]:
        headers = {"Accept": MANIFEST_ACCEPT}
        for i, base in enumerate(bases):
            try:
                return base, request(client, "GET", base + path, headers=headers, what=what,
                                     hint_401=REGISTRY_ACCESS_HINT)
            except NetworkError as exc:
                connect_failed = isinstance(exc.__cause__, httpx.TransportError)
                if i + 1 < len(bases) and connect_failed:
                    continue  # insecure: https could not connect, try plain http
                if connect_failed and not self.insecure and base.startswith("https://"):
                    exc.hint = f"{exc.hint}; {_REGISTRY_HINT}" if exc.hint else _REGISTRY_HINT
                raise
        raise AssertionError("unreachable")

    def _text_layer(
        self, client: httpx.Client, url: str, digest: str, size: int | None, kind: str, what: str, notes: list[str]
    ) -> str | None:
        """The text of one small layer (None: a params layer with no parameter slmctl knows); what is left
        out of a params layer is said in ``notes``."""
        if size is not None and size > MAX_TEXT_LAYER:
            raise InvalidModelFile(f"the {kind} layer of {what} is too large ({size} bytes)")
        body = request(client, "GET", url, what=f"{kind} layer of {what}",
                       hint_401=REGISTRY_ACCESS_HINT).content
        if len(body) > MAX_TEXT_LAYER:
            raise InvalidModelFile(f"the {kind} layer of {what} is too large ({len(body)} bytes)")
        if "sha256:" + hashlib.sha256(body).hexdigest() != digest:
            raise IntegrityError(f"the {kind} layer of {what} does not match its digest {digest}")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidModelFile(f"the {kind} layer of {what} is not UTF-8 text") from None
        if kind == "params":
            try:
                params = json.loads(text)
            except ValueError:
                raise InvalidModelFile(f"the params layer of {what} is not JSON") from None
            if not isinstance(params, dict):
                raise InvalidModelFile(f"the params layer of {what} is not a JSON object")
            kept = supported_params(params)
            dropped = sorted(str(key) for key in params if not _kept(str(key), kept))
            if dropped:
                notes.append(f"the registry's parameters {', '.join(dropped)} are not supported by slmctl and "
                             "were left out")
            return json.dumps(kept, ensure_ascii=False) if kept else None
        return text


def _kept(key: str, kept: dict[str, Any]) -> bool:
    try:
        return canonical_key(key) in kept
    except UsageError:
        return False


def supported_params(params: dict[str, Any]) -> dict[str, Any]:
    """The parameters of a registry's params layer that slmctl knows, validated, under their own names.

    The others are left out: Ollama-only options (``mirostat``, ``penalize_newline``, ``num_keep``...)
    and values slmctl refuses, which it could not honour anyway.
    """
    kept: dict[str, Any] = {}
    for key, value in params.items():
        try:
            name = canonical_key(str(key))
            kept[name] = parse_value(name, value)
        except UsageError:
            continue
    return kept
