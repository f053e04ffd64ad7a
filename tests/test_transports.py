"""The hf / ollama / url transports against loopback servers (a Hub-style API and an Ollama-style registry)."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx
import pytest

from slmctl.errors import InvalidModelFile, ModelNotFound, NetworkError, UsageError
from slmctl.refs import parse_source
from slmctl.sources.hf import HfTransport, quant_of
from slmctl.sources.ollama import OllamaTransport
from slmctl.sources.transports import transport_for
from slmctl.sources.url import UrlTransport
from slmctl.testing.tiny_gguf import write_tiny_gguf
from slmctl.testing.tiny_onnx import write_tiny_onnx_genai
from tests.http_fixtures import LoopbackServer, ServedBy

Route = tuple[int, dict[str, str], bytes]


class RouteServer(ServedBy):
    """Serves fixed responses by path on 127.0.0.1; records (method, path, headers) of every request."""

    def __init__(self) -> None:
        self.routes: dict[str, Route | Callable[[BaseHTTPRequestHandler], Route]] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.required_token: str | None = None
        self.head_allowed = True
        self._lock = threading.Lock()
        self._server = LoopbackServer(self._handler()).start()

    @property
    def base(self) -> str:
        return self._server.base

    @property
    def hostport(self) -> str:
        return self.base.removeprefix("http://")

    def paths(self, method: str = "GET") -> list[str]:
        return [p for m, p, _ in self.requests if m == method]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def _answer(self, with_body: bool) -> None:
                with owner._lock:
                    owner.requests.append((self.command, self.path, dict(self.headers.items())))
                path = urlsplit(self.path).path
                if owner.required_token and self.headers.get("Authorization") != f"Bearer {owner.required_token}":
                    status, headers, body = 401, {}, b'{"error":"unauthorized"}'
                elif self.command == "HEAD" and not owner.head_allowed:
                    status, headers, body = 405, {}, b""
                else:
                    route = owner.routes.get(unquote(path), (404, {}, b'{"error":"not found"}'))
                    status, headers, body = route(self) if callable(route) else route
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                if "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if with_body:
                    self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802
                self._answer(True)

            def do_HEAD(self) -> None:  # noqa: N802
                self._answer(False)

        return Handler


def client_factory() -> httpx.Client:
    return httpx.Client(trust_env=False, timeout=5)


@pytest.fixture
def server() -> Iterator[RouteServer]:
    srv = RouteServer()
    yield srv
    srv.close()


# -- a Hub-style repository -------------------------------------------------------------------------


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def publish_repo(srv: RouteServer, owner: str, repo: str, files: dict[str, bytes], *, revision: str = "main",
                 lfs_min: int = 1024) -> None:
    """Tree listings (root and every folder) and resolve URLs for ``files``; big files get ``lfs``."""
    entries = []
    folders = {""}
    for path, data in sorted(files.items()):
        entry: dict = {"type": "file", "path": path, "size": len(data), "oid": "gitsha"}
        if len(data) >= lfs_min:
            entry["lfs"] = {"oid": sha(data), "size": len(data), "pointerSize": 130}
        entries.append(entry)
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            folders.add("/".join(parts[:i]))
        srv.routes[f"/{owner}/{repo}/resolve/{revision}/{path}"] = (200, {}, data)
    dirs = [{"type": "directory", "path": f, "oid": "x", "size": 0} for f in sorted(folders) if f]
    for folder in folders:
        prefix = f"{folder}/" if folder else ""
        listing = [e for e in dirs + entries if e["path"].startswith(prefix) and e["path"] != folder]
        suffix = f"/{folder}" if folder else ""
        srv.routes[f"/api/models/{owner}/{repo}/tree/{revision}{suffix}"] = (
            200, {"Content-Type": "application/json"}, json.dumps(listing).encode())


@pytest.fixture(scope="module")
def tiny_gguf_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf").read_bytes()


@pytest.fixture(scope="module")
def tiny_onnx_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = write_tiny_onnx_genai(tmp_path_factory.mktemp("onnx") / "m")
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def hf(srv: RouteServer, **kwargs: object) -> HfTransport:
    return HfTransport(client_factory, endpoint=srv.base, **kwargs)  # type: ignore[arg-type]


def ref(text: str) -> object:
    return parse_source(text, allow_http=True)


# -- Hugging Face -----------------------------------------------------------------------------------


def test_quant_default_and_explicit(server: RouteServer, tiny_gguf_bytes: bytes) -> None:
    small = b"tiny"
    publish_repo(server, "acme", "m-GGUF", {
        "README.md": b"hi",
        "m-Q4_K_M.gguf": tiny_gguf_bytes,
        "m-Q4_K_S.gguf": small * 300,
        "m-Q8_0.gguf": small * 400,
        "mmproj-m-Q4_K_M.gguf": small,
    })
    model = hf(server).resolve(ref("hf.co/acme/m-GGUF"))
    assert model.format == "gguf" and model.source_type == "hf"
    assert model.source == "hf.co/acme/m-GGUF:Q4_K_M"
    assert [f.path for f in model.files] == ["m-Q4_K_M.gguf"]
    only = model.files[0]
    assert only.size == len(tiny_gguf_bytes)
    assert only.sha256 == "sha256:" + sha(tiny_gguf_bytes)
    assert only.url == f"{server.base}/acme/m-GGUF/resolve/main/m-Q4_K_M.gguf"
    assert client_factory().get(only.url).content == tiny_gguf_bytes

    assert hf(server).resolve(ref("hf.co/acme/m-GGUF:q8_0")).files[0].path == "m-Q8_0.gguf"
    # Q4_K names Q4_K_S and Q4_K_M: not a boundary match, and ambiguous as a substring.
    with pytest.raises(ModelNotFound):
        hf(server).resolve(ref("hf.co/acme/m-GGUF:Q4_K"))
    # The quant keyword overrides the reference's tag.
    assert hf(server).resolve(ref("hf.co/acme/m-GGUF:Q8_0"), quant="Q4_K_S").files[0].path == "m-Q4_K_S.gguf"


def test_missing_quant_lists_available(server: RouteServer) -> None:
    publish_repo(server, "acme", "m-GGUF", {
        "m.Q8_0.gguf": b"x", "m.IQ4_XS.gguf": b"y",
        "m-F16-00001-of-00002.gguf": b"a", "m-F16-00002-of-00002.gguf": b"b",
    })
    with pytest.raises(ModelNotFound) as info:
        hf(server).resolve(ref("hf.co/acme/m-GGUF"))
    assert "Q4_K_M" in info.value.message
    assert "available quants: F16, IQ4_XS, Q8_0" in info.value.message
    assert info.value.exit_code == 3


def test_no_gguf_at_all(server: RouteServer) -> None:
    publish_repo(server, "acme", "empty", {"README.md": b"x"})
    with pytest.raises(ModelNotFound, match="no GGUF files"):
        hf(server).resolve(ref("hf.co/acme/empty"))


def test_split_gguf_parts_in_order(server: RouteServer) -> None:
    parts = {f"sub/big-Q4_K_M-0000{i}-of-00003.gguf": bytes([i]) * 2048 for i in (3, 1, 2)}
    publish_repo(server, "acme", "big", {**parts, "sub/other-Q8_0.gguf": b"z"})
    expected = [f"big-Q4_K_M-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    by_path = hf(server).resolve(ref("hf://acme/big/sub/big-Q4_K_M-00001-of-00003.gguf"))
    assert [f.path for f in by_path.files] == expected
    assert [f.sha256 for f in by_path.files] == ["sha256:" + sha(bytes([i]) * 2048) for i in (1, 2, 3)]
    assert by_path.total_size == 3 * 2048
    assert by_path.source == "hf://acme/big/sub/big-Q4_K_M-00001-of-00003.gguf"
    by_quant = hf(server).resolve(ref("hf.co/acme/big"))
    assert [f.path for f in by_quant.files] == expected
    assert by_quant.files[0].url.endswith("/acme/big/resolve/main/sub/big-Q4_K_M-00001-of-00003.gguf")


def test_split_gguf_missing_part(server: RouteServer) -> None:
    publish_repo(server, "acme", "big", {"big-00001-of-00002.gguf": b"a"})
    with pytest.raises(ModelNotFound, match="missing"):
        hf(server).resolve(ref("hf://acme/big/big-00001-of-00002.gguf"))


def test_single_gguf_by_path_and_missing_file(server: RouteServer) -> None:
    publish_repo(server, "acme", "m", {"a/x.gguf": b"small"})
    model = hf(server).resolve(ref("hf://acme/m/a/x.gguf"))
    assert [(f.path, f.size, f.sha256) for f in model.files] == [("x.gguf", 5, None)]  # not LFS: no digest
    with pytest.raises(ModelNotFound):
        hf(server).resolve(ref("hf://acme/m/a/y.gguf"))


def test_onnx_folder_listing(server: RouteServer, tiny_onnx_files: dict[str, bytes]) -> None:
    files = {f"cpu/int4/{p}": d for p, d in tiny_onnx_files.items()}
    files.update({"README.md": b"readme", "cpu/int4/.gitattributes": b"x", "gpu/genai_config.json": b"{}"})
    publish_repo(server, "acme", "onnx", files)
    model = hf(server).resolve(ref("hf://acme/onnx/cpu/int4"))
    assert model.format == "onnx"
    assert sorted(f.path for f in model.files) == sorted(tiny_onnx_files)
    assert "genai_config.json" in [f.path for f in model.files]
    onnx = next(f for f in model.files if f.path == "model.onnx")
    assert onnx.url == f"{server.base}/acme/onnx/resolve/main/cpu/int4/model.onnx"
    assert onnx.size == len(tiny_onnx_files["model.onnx"])
    # The repo root has no genai_config.json and no GGUF.
    with pytest.raises(ModelNotFound, match="genai_config.json"):
        hf(server).resolve(ref("hf://acme/onnx"))
    with pytest.raises(ModelNotFound):
        hf(server).resolve(ref("hf://acme/onnx/nope"))


def test_onnx_repo_root(server: RouteServer, tiny_onnx_files: dict[str, bytes]) -> None:
    publish_repo(server, "acme", "onnx-root", {**tiny_onnx_files, "variant/genai_config.json": b"{}"})
    model = hf(server).resolve(ref("hf://acme/onnx-root"))
    assert model.format == "onnx"
    assert sorted(f.path for f in model.files) == sorted(tiny_onnx_files)  # nested model folder left out


def test_revision_in_urls(server: RouteServer) -> None:
    publish_repo(server, "acme", "m", {"m-Q4_K_M.gguf": b"q"}, revision="v1.0")
    model = hf(server, revision="v1.0").resolve(ref("hf.co/acme/m"))
    assert model.revision == "v1.0"
    assert model.files[0].url == f"{server.base}/acme/m/resolve/v1.0/m-Q4_K_M.gguf"
    assert server.paths() == ["/api/models/acme/m/tree/v1.0?recursive=true"]
    assert hf(server).resolve(ref("hf.co/acme/m"), revision="v1.0").revision == "v1.0"
    with pytest.raises(ModelNotFound):  # no "main" published
        hf(server).resolve(ref("hf.co/acme/m"))


def test_token_header(server: RouteServer) -> None:
    publish_repo(server, "acme", "gated", {"g-Q4_K_M.gguf": b"g"})
    server.required_token = "s3cret"
    model = hf(server, token="s3cret").resolve(ref("hf.co/acme/gated"))
    assert model.headers == {"Authorization": "Bearer s3cret"}
    assert all(h.get("Authorization") == "Bearer s3cret" for _, _, h in server.requests)
    assert client_factory().get(model.files[0].url, headers=dict(model.headers)).content == b"g"


def test_401_without_token_mentions_hf_token(server: RouteServer) -> None:
    publish_repo(server, "acme", "gated", {"g-Q4_K_M.gguf": b"g"})
    server.required_token = "s3cret"
    with pytest.raises(NetworkError) as info:
        hf(server).resolve(ref("hf.co/acme/gated"))
    assert "HF_TOKEN" in (info.value.hint or "")
    assert info.value.exit_code == 5
    assert "Authorization" not in server.requests[0][2]


def test_404_repo(server: RouteServer) -> None:
    with pytest.raises(ModelNotFound) as info:
        hf(server).resolve(ref("hf.co/acme/nothing"))
    assert info.value.exit_code == 3


def test_paginated_tree(server: RouteServer) -> None:
    page2 = [{"type": "file", "path": "m-Q4_K_M.gguf", "size": 1}]
    server.routes["/api/models/acme/paged/tree/main"] = (
        200, {"Link": f'<{server.base}/page2>; rel="next"'}, json.dumps([{"type": "file", "path": "README.md", "size": 1}]).encode())
    server.routes["/page2"] = (200, {}, json.dumps(page2).encode())
    assert hf(server).resolve(ref("hf.co/acme/paged")).files[0].path == "m-Q4_K_M.gguf"


def test_quant_of() -> None:
    assert quant_of("Qwen2.5-3B-Instruct-Q4_K_M.gguf") == "Q4_K_M"
    assert quant_of("llama-2-7b.q5_k_s.gguf") == "Q5_K_S"
    assert quant_of("m-IQ4_XS-00001-of-00002.gguf") == "IQ4_XS"
    assert quant_of("model-bf16.gguf") == "BF16"
    assert quant_of("model.gguf") is None


# -- Ollama registry --------------------------------------------------------------------------------


def publish_ollama(srv: RouteServer, namespace: str, model: str, tag: str, blobs: dict[str, bytes]) -> dict[str, str]:
    """A manifest whose layers are ``blobs`` (kind -> bytes); returns kind -> digest."""
    layers, digests = [], {}
    for kind, data in blobs.items():
        digest = "sha256:" + sha(data)
        digests[kind] = digest
        layers.append({"mediaType": f"application/vnd.ollama.image.{kind}", "digest": digest, "size": len(data)})
        srv.routes[f"/v2/{namespace}/{model}/blobs/{digest}"] = (200, {}, data)
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                           "digest": "sha256:" + "0" * 64, "size": 2},
                "layers": layers}
    srv.routes[f"/v2/{namespace}/{model}/manifests/{tag}"] = (
        200, {"Content-Type": "application/vnd.docker.distribution.manifest.v2+json"}, json.dumps(manifest).encode())
    return digests


def test_ollama_manifest_to_files_and_layers(server: RouteServer, tiny_gguf_bytes: bytes) -> None:
    params = json.dumps({"stop": ["<|end|>"], "temperature": 0.2}).encode()
    digests = publish_ollama(server, "library", "tiny", "1b", {
        "model": tiny_gguf_bytes, "template": b"{{ .Prompt }}", "system": b"Be brief.",
        "params": params, "license": b"MIT", "projector": b"ignored",
    })
    transport = OllamaTransport(client_factory, insecure=True)
    model = transport.resolve(parse_source(f"ollama://{server.hostport}/tiny:1b"))
    assert model.source_type == "ollama" and model.format == "gguf"
    assert model.source == f"ollama://{server.hostport}/library/tiny:1b"
    (file,) = model.files
    assert file.path == "model.gguf"
    assert file.url == f"{server.base}/v2/library/tiny/blobs/{digests['model']}"
    assert (file.size, file.sha256) == (len(tiny_gguf_bytes), digests["model"])
    assert model.layers == {"template": ["{{ .Prompt }}"], "system": ["Be brief."], "params": [params.decode()],
                            "license": ["MIT"]}
    assert model.revision and model.revision.startswith("sha256:")
    manifest_requests = [h for _, p, h in server.requests if "/manifests/" in p]
    assert manifest_requests[0]["Accept"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert not any("blobs/" + digests["model"] in p for p in server.paths())  # the model blob is not fetched here


def test_ollama_default_registry_from_env(server: RouteServer) -> None:
    publish_ollama(server, "acme", "tiny", "latest", {"model": b"gguf"})
    parsed = parse_source("ollama://acme/tiny")
    transport = transport_for(parsed, env={"SLMCTL_OLLAMA_REGISTRY": server.base}, client_factory=client_factory,
                              insecure=True)
    model = transport.resolve(parsed)
    assert model.files[0].url.startswith(server.base + "/v2/acme/tiny/blobs/sha256:")
    assert model.layers == {}


def test_ollama_http_refused_without_insecure(server: RouteServer) -> None:
    publish_ollama(server, "library", "tiny", "latest", {"model": b"gguf"})
    parsed = parse_source("ollama://tiny")
    with pytest.raises(UsageError, match="http"):
        transport_for(parsed, env={"SLMCTL_OLLAMA_REGISTRY": server.base}, client_factory=client_factory).resolve(parsed)
    assert server.requests == []
    # A bare host is https-only without insecure: the plain-http server cannot answer it.
    with pytest.raises(NetworkError) as info:
        OllamaTransport(client_factory).resolve(parse_source(f"ollama://{server.hostport}/tiny"))
    assert "--insecure" in (info.value.hint or "")


def test_ollama_404_and_bad_manifest(server: RouteServer) -> None:
    transport = OllamaTransport(client_factory, insecure=True)
    with pytest.raises(ModelNotFound):
        transport.resolve(parse_source(f"ollama://{server.hostport}/missing:1b"))
    server.routes["/v2/library/nomodel/manifests/latest"] = (200, {}, json.dumps({"layers": []}).encode())
    with pytest.raises(InvalidModelFile, match="no model layer"):
        transport.resolve(parse_source(f"ollama://{server.hostport}/nomodel"))


# -- plain URL --------------------------------------------------------------------------------------


def test_url_transport(server: RouteServer, tiny_gguf_bytes: bytes) -> None:
    server.routes["/files/tiny-Q4_K_M.gguf"] = (200, {}, tiny_gguf_bytes)
    parsed = parse_source(f"{server.base}/files/tiny-Q4_K_M.gguf", allow_http=True)
    transport = transport_for(parsed, env={}, client_factory=client_factory, insecure=True)
    model = transport.resolve(parsed)
    assert (model.source_type, model.format, model.source) == ("url", "gguf", parsed.url)  # type: ignore[union-attr]
    (file,) = model.files
    assert (file.path, file.url, file.size, file.sha256) == ("tiny-Q4_K_M.gguf", parsed.url, len(tiny_gguf_bytes), None)  # type: ignore[union-attr]
    assert server.paths("HEAD") == ["/files/tiny-Q4_K_M.gguf"]
    digest = sha(tiny_gguf_bytes)
    assert UrlTransport(client_factory, insecure=True).resolve(parsed, expected_sha256=digest.upper()).files[0].sha256 \
        == "sha256:" + digest
    with pytest.raises(UsageError):
        UrlTransport(client_factory, insecure=True).resolve(parsed, expected_sha256="abc")
    with pytest.raises(UsageError, match="http"):
        UrlTransport(client_factory).resolve(parsed)


def test_url_range_probe_when_head_refused(server: RouteServer) -> None:
    data = b"G" * 5000

    def ranged(handler: BaseHTTPRequestHandler) -> Route:
        if handler.headers.get("Range") == "bytes=0-0":
            return 206, {"Content-Range": f"bytes 0-0/{len(data)}"}, data[:1]
        return 200, {}, data

    server.head_allowed = False
    server.routes["/m.gguf"] = ranged
    parsed = parse_source(f"{server.base}/m.gguf", allow_http=True)
    assert UrlTransport(client_factory, insecure=True).resolve(parsed).files[0].size == 5000
    with pytest.raises(ModelNotFound):
        UrlTransport(client_factory, insecure=True).resolve(parse_source(f"{server.base}/gone.gguf", allow_http=True))


def test_transport_for_reads_env(tmp_path: Path) -> None:
    hf_ref = parse_source("hf.co/acme/m")
    transport = transport_for(hf_ref, env={"HF_ENDPOINT": "https://mirror.example/", "HF_TOKEN": "t"})
    assert isinstance(transport, HfTransport)
    assert (transport.endpoint, transport.token, transport.revision) == ("https://mirror.example", "t", "main")
    default = transport_for(parse_source("hf://acme/m"), env={}, revision="abc123")
    assert isinstance(default, HfTransport)
    assert (default.endpoint, default.token, default.revision) == ("https://huggingface.co", None, "abc123")
    assert isinstance(transport_for(parse_source("ollama://tiny"), env={}), OllamaTransport)
    assert isinstance(transport_for(parse_source("https://x.example/a.gguf"), env={}), UrlTransport)
    with pytest.raises(UsageError):
        transport_for("not a ref", env={})
