"""A loopback Ollama-registry-style server with injectable faults, for end-to-end ``slmctl pull`` tests.

:class:`RegistryServer` answers the two endpoints of the registry protocol that a pull uses, from a
``ThreadingHTTPServer`` bound to ``127.0.0.1:0``:

* ``GET /v2/<namespace>/<model>/manifests/<tag>``: the Docker v2 manifest of a model published with
  :meth:`RegistryServer.publish` (a ``config`` blob and one ``application/vnd.ollama.image.<kind>``
  layer per published blob), else ``404`` with a registry-style ``MANIFEST_UNKNOWN`` error;
* ``GET``/``HEAD /v2/<namespace>/<model>/blobs/<digest>``: a blob of that model, ``Range`` honoured
  (``206``/``416``), else ``404 BLOB_UNKNOWN``. With :attr:`RegistryServer.redirect_blobs` it answers
  ``307`` to ``/cdn/<namespace>/<model>/<digest>?sig=...`` instead, which serves the bytes, as
  registry.ollama.ai sends clients to its storage CDN.

Faults: digests in :attr:`RegistryServer.corrupt` are served with one byte flipped (a wrong digest);
:attr:`RegistryServer.token` makes every request without ``Authorization: Bearer <token>`` a ``401``;
:meth:`RegistryServer.fail_next` queues a :class:`~tests.http_fixtures.Fault` (a status, or a
connection dropped after N body bytes) for the next manifest or blob request (optionally of one
digest). Range probes (``bytes=0-0``) never take a fault, as in :class:`~tests.http_fixtures.FileServer`.
Every request is recorded in :attr:`RegistryServer.requests`, and the body bytes sent per blob in
:attr:`RegistryServer.served`.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Literal

from tests.http_fixtures import PROBE_RANGE, Fault, LoopbackServer, ServedBy

MANIFEST_MEDIA = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_MEDIA = "application/vnd.docker.container.image.v1+json"
LAYER_MEDIA = "application/vnd.ollama.image."
Kind = Literal["manifest", "blob"]
_ROUTE = re.compile(r"^/v2/([^/]+)/([^/]+)/(manifests|blobs)/([^/]+)$")
_CDN = re.compile(r"^/cdn/([^/]+)/([^/]+)/([^/]+)$")


def digest_of(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``, as the registry names blobs."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Request:
    """One request the registry saw (``kind`` is ``manifest``, ``blob`` or ``other``)."""

    method: str
    kind: str
    path: str
    range: str | None


@dataclass(frozen=True)
class _Route:
    """What a registry path names: a manifest (``name`` is a tag) or a blob (a digest), maybe via the CDN."""

    kind: Kind
    namespace: str
    model: str
    name: str
    cdn: bool = False


def _route(path: str) -> _Route | None:
    if match := _ROUTE.match(path):
        namespace, model, section, name = match.groups()
        return _Route("manifest" if section == "manifests" else "blob", namespace, model, name)
    if match := _CDN.match(path):
        namespace, model, digest = match.groups()
        return _Route("blob", namespace, model, digest, cdn=True)
    return None


class RegistryServer(ServedBy):
    """An Ollama-style registry on 127.0.0.1; use as a context manager."""

    def __init__(self, *, chunk: int = 16 * 1024) -> None:
        self.chunk = chunk
        self.token: str | None = None
        self.corrupt: set[str] = set()
        self.redirect_blobs = False
        self.requests: list[Request] = []
        self.served: dict[str, int] = {}
        self._manifests: dict[tuple[str, str, str], bytes] = {}
        self._blobs: dict[tuple[str, str], dict[str, bytes]] = {}
        self._faults: list[tuple[Kind, str | None, Fault]] = []
        self._lock = threading.Lock()
        self._server = LoopbackServer(_make_handler(self))

    @property
    def host(self) -> str:
        """``127.0.0.1:<port>``."""
        return f"127.0.0.1:{self._server.port}"

    @property
    def base(self) -> str:
        """``http://127.0.0.1:<port>`` (a value for ``SLMCTL_OLLAMA_REGISTRY``)."""
        return f"http://{self.host}"

    def publish(self, model: str, tag: str, layers: Sequence[tuple[str, bytes]], *,
                namespace: str = "library") -> dict[str, str]:
        """Publish ``layers`` (``(kind, bytes)``: model, template, system, params, license...) as
        ``<namespace>/<model>:<tag>``; returns kind -> digest (the manifest's own digest under ``manifest``)."""
        config = json.dumps({"model_format": "gguf", "model_family": "llama", "file_type": "F16"}).encode()
        blobs = {digest_of(config): config}
        entries, digests = [], {}
        for kind, data in layers:
            digest = digest_of(data)
            blobs[digest] = data
            digests[kind] = digest
            entries.append({"mediaType": LAYER_MEDIA + kind, "digest": digest, "size": len(data)})
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": MANIFEST_MEDIA,
            "config": {"mediaType": CONFIG_MEDIA, "digest": digest_of(config), "size": len(config)},
            "layers": entries,
        }).encode()
        with self._lock:
            self._manifests[(namespace, model, tag)] = manifest
            self._blobs.setdefault((namespace, model), {}).update(blobs)
        digests["manifest"] = digest_of(manifest)
        return digests

    def fail_next(self, kind: Kind, fault: Fault, *, digest: str | None = None) -> None:
        """Apply ``fault`` to the next ``kind`` request (of blob ``digest`` when given), once."""
        with self._lock:
            self._faults.append((kind, digest, fault))

    @property
    def pending_faults(self) -> int:
        """How many queued faults no request has taken yet."""
        with self._lock:
            return len(self._faults)

    def _take_fault(self, kind: Kind, name: str, range_header: str | None) -> Fault | None:
        if range_header == PROBE_RANGE:
            return None
        with self._lock:
            for i, (wanted, only, fault) in enumerate(self._faults):
                if wanted == kind and (only is None or only == name):
                    return self._faults.pop(i)[2]
        return None

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def _count(self, digest: str, n: int) -> None:
        with self._lock:
            self.served[digest] = self.served.get(digest, 0) + n

    def _lookup(self, route: _Route) -> bytes | None:
        name = route.name
        with self._lock:
            if route.kind == "manifest":
                return self._manifests.get((route.namespace, route.model, name))
            data = self._blobs.get((route.namespace, route.model), {}).get(name)
        if data and name in self.corrupt:
            i = min(100, len(data) - 1)
            data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]
        return data


def _error_body(code: str, message: str) -> bytes:
    return json.dumps({"errors": [{"code": code, "message": message}]}).encode()


def _make_handler(owner: RegistryServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
            pass

        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            self._answer(body=True)

        def do_HEAD(self) -> None:  # noqa: N802 - stdlib name
            self._answer(body=False)

        def _send(self, status: int, data: bytes, headers: dict[str, str], body: bool) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)

        def _answer(self, body: bool) -> None:
            path = self.path.split("?", 1)[0]
            route = _route(path)
            range_header = self.headers.get("Range")
            owner._record(Request(self.command, route.kind if route else "other", path, range_header))
            json_type = {"Content-Type": "application/json"}
            authorized = self.headers.get("Authorization") == f"Bearer {owner.token}"
            if owner.token is not None and not (route and route.cdn) and not authorized:  # CDN URLs are signed
                challenge = f'Bearer realm="http://{owner.host}/token",service="{owner.host}"'
                self._send(401, _error_body("UNAUTHORIZED", "authentication required"),
                           {**json_type, "WWW-Authenticate": challenge}, body)
                return
            if route is None:
                self._send(404, _error_body("NAME_UNKNOWN", "not a registry path"), json_type, body)
                return
            if route.kind == "blob" and not route.cdn and owner.redirect_blobs:
                location = f"/cdn/{route.namespace}/{route.model}/{route.name}?sig=loopback"
                self._send(307, b"", {"Location": location}, body)
                return
            fault = owner._take_fault(route.kind, route.name, range_header) if body else None
            if fault is not None and fault.status is not None:
                self._send(fault.status, b"error", {"Content-Type": "text/plain", **fault.headers}, body)
                return
            data = owner._lookup(route)
            if data is None:
                code = "MANIFEST_UNKNOWN" if route.kind == "manifest" else "BLOB_UNKNOWN"
                self._send(404, _error_body(code, f"{route.kind} unknown"), json_type, body)
                return
            if route.kind == "manifest":
                headers = {"Content-Type": MANIFEST_MEDIA, "Docker-Content-Digest": digest_of(data)}
                self._send(200, data, headers, body)
                return
            self._blob(route.name, data, range_header, fault, body)

        def _blob(self, digest: str, data: bytes, range_header: str | None, fault: Fault | None, body: bool) -> None:
            start, end = 0, len(data)
            match = re.match(r"bytes=(\d+)-(\d*)$", range_header or "")
            if match:
                start = int(match.group(1))
                end = min(int(match.group(2)) + 1 if match.group(2) else len(data), len(data))
                if start >= len(data):
                    self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"}, body)
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
            else:
                self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(end - start))
            self.end_headers()
            if body:
                self._body(digest, data, start, end, fault)

        def _body(self, digest: str, data: bytes, start: int, end: int, fault: Fault | None) -> None:
            drop_after = fault.drop_after if fault is not None else None
            position = start
            try:
                while position < end:
                    if drop_after is not None and position - start >= drop_after:
                        self.wfile.flush()
                        self.connection.shutdown(socket.SHUT_RDWR)
                        self.close_connection = True
                        return
                    step = owner.chunk if drop_after is None else min(owner.chunk, drop_after - (position - start))
                    block = data[position:min(position + max(step, 1), end)]
                    self.wfile.write(block)
                    owner._count(digest, len(block))
                    position += len(block)
            except OSError:
                self.close_connection = True

    return Handler
