"""API keys, roles, the audit log and TLS on a real ``slmctl serve``, through the official clients.

One server with ``--auth`` on loopback over a private copy of the tiny-model store, keys of every kind
(user, admin, expired, revoked) made beforehand: the 401/403 matrix over every route and every kind
of caller (raw HTTP, so both APIs' error shapes are checked), the official ``openai`` SDK (``api_key=``)
and ``ollama`` client (``headers=``), the audit lines of each model operation and of refusals (never a
key, never a prompt). Then servers started as an operator would: on ``0.0.0.0`` without keys (refused),
with ``--no-auth`` (a warning), with keys (auth on by itself), with an unsafe key file (refused), and
over TLS with a ``trustme`` certificate and ``--log-prompts``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest
import trustme

from cli_runner import run_cli
from serve_fixtures import Served, clean_env, free_port
from slmctl.security.keys import KeyStore, Role, utc_now

MARKER = "PURPLE-ELEPHANT-7731"


@dataclass
class Team:
    server: Served
    home: Path
    keys: dict[str, str]

    def headers(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"} if who in self.keys else {}

    def audit(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in (self.home / "audit.jsonl").read_text().splitlines()]


def make_keys(home: Path) -> dict[str, str]:
    store = KeyStore(home)
    keys = {"user": store.create("alice", Role.USER, timedelta(days=90))[1],
            "admin": store.create("ops", Role.ADMIN)[1],
            "expired": store.create("old", Role.ADMIN, timedelta(hours=1), now=utc_now() - timedelta(days=1))[1],
            "revoked": store.create("gone", Role.ADMIN)[1]}
    store.revoke("gone")
    keys["unknown"] = KeyStore(home / "elsewhere").create("stranger", Role.ADMIN)[1]  # well formed, not here
    keys["malformed"] = "sk-not-a-slmctl-key"
    return keys


@pytest.fixture(scope="module")
def team(serve_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Team]:
    home = tmp_path_factory.mktemp("auth") / "home"
    shutil.copytree(serve_home, home)
    keys = make_keys(home)
    server = Served(home, "--auth", env={"SLMCTL_OFFLINE": "1"}, log_dir=home.parent)
    yield Team(server, home, keys)
    server.stop()


# -- the matrix -----------------------------------------------------------------------------------------
GEN = {"model": "phi4:mini", "prompt": "hi", "stream": False, "options": {"num_predict": 2}}
CHAT = {"model": "phi4:mini", "messages": [{"role": "user", "content": "hi"}], "stream": False,
        "options": {"num_predict": 2}}
V1_CHAT = {"model": "phi4:mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
BLOB = "/api/blobs/sha256:" + "0" * 64
#: (method, path, JSON body, who may call it: public, user or admin)
ROUTES: list[tuple[str, str, Any, str]] = [
    ("GET", "/", None, "public"),
    ("GET", "/api/health", None, "public"),
    ("GET", "/livez", None, "public"),
    ("GET", "/readyz", None, "public"),
    ("GET", "/openapi.json", None, "public"),
    ("GET", "/metrics", None, "public"),
    ("GET", "/api/metrics", None, "public"),
    ("GET", "/api/version", None, "user"),
    ("GET", "/api/tags", None, "user"),
    ("POST", "/api/show", {"model": "phi4:mini"}, "user"),
    ("GET", "/api/ps", None, "user"),
    ("POST", "/api/generate", GEN, "user"),
    ("POST", "/api/chat", CHAT, "user"),
    ("POST", "/api/embed", {"model": "nomic-embed-text", "input": "hi"}, "user"),
    ("POST", "/api/embeddings", {"model": "nomic-embed-text", "prompt": "hi"}, "user"),
    ("POST", "/v1/chat/completions", V1_CHAT, "user"),
    ("POST", "/v1/completions", {"model": "phi4:mini", "prompt": "hi", "max_tokens": 2}, "user"),
    ("POST", "/v1/embeddings", {"model": "nomic-embed-text", "input": "hi"}, "user"),
    ("GET", "/v1/models", None, "user"),
    ("GET", "/v1/models/phi4:mini", None, "user"),
    ("POST", "/api/pull", {"model": "no-such-model-anywhere", "stream": False}, "admin"),
    ("POST", "/api/create", {"model": "matrix-made", "from": "phi4:mini", "stream": False}, "admin"),
    ("POST", "/api/copy", {"source": "phi4:mini", "destination": "matrix-copy"}, "admin"),
    ("DELETE", "/api/delete", {"model": "matrix-copy"}, "admin"),
    ("HEAD", BLOB, None, "admin"),
    ("POST", BLOB, None, "admin"),
    ("GET", "/api/audit", None, "admin"),
    ("POST", "/api/generate", {"model": "phi4:mini"}, "admin"),  # an empty prompt loads the model
    ("POST", "/api/chat", {"model": "phi4:mini", "messages": [], "keep_alive": 0}, "admin"),  # unloads it
    ("POST", "/api/embed", {"model": "nomic-embed-text", "input": ""}, "admin"),  # loads it
    ("POST", "/api/generate", {**GEN, "keep_alive": 0}, "admin"),  # generates, then unloads
    ("GET", "/api/no-such-route", None, "admin"),  # unknown paths are closed to user keys
]
CALLERS = ["nobody", "malformed", "unknown", "expired", "revoked", "user", "admin"]


def expected(caller: str, need: str) -> int | None:
    """401 or 403 when refused; None when let through (the route then answers as it will)."""
    if need == "public":
        return None
    if caller not in ("user", "admin"):
        return 401
    return 403 if caller == "user" and need == "admin" else None


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize(("method", "path", "body", "need"), ROUTES,
                         ids=[f"{m} {p} {json.dumps(b)[:40] if b else ''}".strip() for m, p, b, _ in ROUTES])
def test_who_may_call_what(team: Team, caller: str, method: str, path: str, body: Any, need: str) -> None:
    response = httpx.request(method, team.server.url + path, headers=team.headers(caller), timeout=120,
                             json=body, content=b"x" if path == BLOB and method == "POST" else None)
    want = expected(caller, need)
    if want is None:
        assert response.status_code not in (401, 403), response.text
        return
    assert response.status_code == want, response.text
    if method == "HEAD":
        return
    error = response.json()["error"]
    if path.startswith("/v1/"):  # OpenAI's shape
        kind = {401: "authentication_error", 403: "permission_error"}[want]
        assert error["type"] == kind and error["message"], error
        assert error["code"] == ("invalid_api_key" if want == 401 else "insufficient_permissions")
    else:  # Ollama's
        assert isinstance(error, str) and error
    if want == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        reason = {"nobody": "no API key", "expired": "expired", "revoked": "revoked"}.get(caller, "invalid API key")
        assert reason in (error if isinstance(error, str) else error["message"])


def test_the_openapi_document_declares_the_keys(team: Team) -> None:
    doc = httpx.get(team.server.url + "/openapi.json").json()  # public: clients and fuzzers read it first
    assert set(doc["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    paths = doc["paths"]
    assert {"401", "403"} <= set(paths["/api/pull"]["post"]["responses"])
    assert {"401", "403"} <= set(paths["/api/generate"]["post"]["responses"])  # an empty prompt loads: admin
    assert "401" in paths["/v1/models"]["get"]["responses"] and "403" not in paths["/v1/models"]["get"]["responses"]
    assert paths["/api/tags"]["get"]["security"] == [{"bearer": []}, {"apiKey": []}]
    assert "security" not in paths["/livez"]["get"] and "401" not in paths["/livez"]["get"]["responses"]


def test_x_api_key_header_is_accepted(team: Team) -> None:
    assert httpx.get(team.server.url + "/api/tags", headers={"x-api-key": team.keys["user"]}).status_code == 200
    bad = httpx.get(team.server.url + "/api/tags", headers={"x-api-key": team.keys["unknown"]})
    assert bad.status_code == 401


# -- the official clients ------------------------------------------------------------------------------
def test_openai_sdk_with_api_keys(team: Team) -> None:
    base = team.server.url + "/v1"
    client = openai.OpenAI(base_url=base, api_key=team.keys["user"], max_retries=0, timeout=120)
    assert "phi4:mini" in {m.id for m in client.models.list().data}
    answer = client.chat.completions.create(model="phi4:mini", messages=[{"role": "user", "content": "hi"}],
                                            max_tokens=3)
    assert answer.usage.completion_tokens == 3
    assert client.embeddings.create(model="nomic-embed-text", input="hi").data[0].embedding
    for who in ("unknown", "revoked", "expired", "malformed"):
        refused = openai.OpenAI(base_url=base, api_key=team.keys[who], max_retries=0)
        with pytest.raises(openai.AuthenticationError) as err:
            refused.models.list()
        assert err.value.status_code == 401 and err.value.code == "invalid_api_key"


def test_ollama_client_with_api_keys(team: Team, monkeypatch: pytest.MonkeyPatch) -> None:
    url = team.server.url
    user = ollama.Client(host=url, headers=team.headers("user"))
    admin = ollama.Client(host=url, headers=team.headers("admin"))
    assert "phi4:mini" in {m.model for m in user.list().models}
    assert user.generate(model="phi4:mini", prompt="hi", options={"num_predict": 2}).eval_count == 2
    assert user.show("phi4:mini").details.format == "gguf"
    for call in (lambda c: c.copy("phi4:mini", "client-copy"), lambda c: c.delete("phi4:mini"),
                 lambda c: c.pull("nope", stream=False), lambda c: c.create(model="c2", from_="phi4:mini"),
                 lambda c: c.generate(model="phi4:mini", prompt="", keep_alive=0)):
        with pytest.raises(ollama.ResponseError) as err:
            call(user)
        assert err.value.status_code == 403 and "admin key" in err.value.error
    admin.copy("phi4:mini", "client-copy")
    admin.create(model="client-made", from_="client-copy", system="Be brief.")
    assert {"client-copy:latest", "client-made:latest"} <= {m.model for m in user.list().models}
    admin.delete("client-copy")
    admin.delete("client-made")
    with pytest.raises(ollama.ResponseError) as err:
        ollama.Client(host=url).list()
    assert err.value.status_code == 401
    monkeypatch.setenv("OLLAMA_API_KEY", team.keys["user"])  # the client's own variable: sent as a Bearer key
    assert ollama.Client(host=url).ps() is not None


# -- the audit log --------------------------------------------------------------------------------------
def test_model_operations_and_refusals_are_audited_without_keys_or_prompts(team: Team) -> None:
    url, admin, user = team.server.url, team.headers("admin"), team.headers("user")
    post = lambda path, body, who: httpx.post(url + path, json=body, headers=who, timeout=120)  # noqa: E731
    assert post("/api/copy", {"source": "phi4:mini", "destination": "audited"}, admin).status_code == 200
    assert post("/api/create", {"model": "audited-2", "from": "audited", "stream": False}, admin).status_code == 200
    assert httpx.request("DELETE", url + "/api/delete", json={"model": "audited-2"}, headers=admin).status_code == 200
    assert post("/api/pull", {"model": "audited-missing", "stream": False}, admin).status_code >= 400  # offline
    assert post("/api/generate", {"model": "audited"}, admin).json()["done_reason"] == "load"
    unload = {"model": "audited", "prompt": f"say {MARKER}", "keep_alive": 0, "stream": False,
              "options": {"num_predict": 2}}
    assert post("/api/generate", unload, admin).status_code == 200
    data = b"blob data"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert httpx.post(url + f"/api/blobs/{digest}", content=data, headers=admin).status_code in (200, 201)
    assert post("/api/generate", {**GEN, "prompt": f"tell me about {MARKER}"}, user).status_code == 200
    assert post("/v1/chat/completions", {**V1_CHAT, "messages": [{"role": "user", "content": MARKER}]},
                user).status_code == 200
    assert post("/api/pull", {"model": "x"}, user).status_code == 403
    for who in ("nobody", "malformed", "unknown", "expired", "revoked"):
        assert httpx.get(url + "/api/tags", headers=team.headers(who)).status_code == 401
    httpx.request("DELETE", url + "/api/delete", json={"model": "audited"}, headers=admin)

    events = team.audit()
    text = (team.home / "audit.jsonl").read_text()
    assert all(key not in text for key in team.keys.values() if key.startswith("slmctl_"))
    assert MARKER not in text  # no prompt without --log-prompts
    seen = {(e["event"], e["model"], e["outcome"]) for e in events}
    for wanted in [("copy", "phi4:mini", "ok"), ("create", "audited-2", "ok"), ("delete", "audited-2", "ok"),
                   ("pull", "audited-missing", "error"), ("load", "audited", "ok"), ("unload", "audited", "ok"),
                   ("delete", "audited", "ok"), ("forbidden", "x", "denied")]:
        assert wanted in seen, (wanted, [e for e in events if "audited" in json.dumps(e)])
    copy = next(e for e in events if e["event"] == "copy" and e.get("destination") == "audited")
    assert copy["key"] == "ops" and copy["role"] == "admin" and copy["client"] == "127.0.0.1"
    assert copy["route"] == "/api/copy" and copy["destination"] == "audited" and copy["time"].endswith("Z")
    assert any(e["event"] == "blob" and e["digest"] == digest and e["outcome"] == "ok" for e in events)
    failures = [e for e in events if e["event"] == "auth_failed"]
    assert {"missing", "unknown", "expired", "revoked", "malformed"} <= {e["reason"] for e in failures}
    assert any(e["reason"] == "expired" and e["key"] == "old" for e in failures)  # a known key is named
    assert not any(e["event"] == "generate" for e in events)
    # this server's own start (the home was copied from one other servers may have written to)
    start = next(e for e in events if e["event"] == "server_start" and e["pid"] == team.server.proc.pid)
    assert start["auth"] is True and start["tls"] is False and start["keys"]["admin_active"] == 1
    assert start["settings"]["security"]["log_prompts"] is False
    read_back = httpx.get(url + "/api/audit", params={"event": "copy", "limit": 5}, headers=admin).json()["events"]
    assert read_back and all(e["event"] == "copy" for e in read_back) and len(read_back) <= 5


def test_keys_created_and_revoked_while_serving_take_effect_at_once(team: Team) -> None:
    store = KeyStore(team.home)
    _, token = store.create("temp", Role.USER)
    url = team.server.url + "/api/tags"
    assert httpx.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    store.revoke("temp")
    refused = httpx.get(url, headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 401 and "revoked" in refused.json()["error"]


def test_ps_and_stop_send_slmctl_api_key(team: Team) -> None:
    env = {"SLMCTL_HOST": team.server.url}
    assert httpx.post(team.server.url + "/api/generate", json={"model": "phi4:mini"},
                      headers=team.headers("admin")).status_code == 200  # loaded
    refused = run_cli(team.home, "ps", env=env)
    assert refused.code == 1 and "no API key" in refused.stderr and "SLMCTL_API_KEY" in refused.stderr
    assert run_cli(team.home, "ps", env={**env, "SLMCTL_API_KEY": team.keys["user"]}).code == 0
    forbidden = run_cli(team.home, "stop", "phi4:mini", env={**env, "SLMCTL_API_KEY": team.keys["user"]})
    assert forbidden.code == 1 and "admin key" in forbidden.stderr, forbidden.stderr
    assert run_cli(team.home, "stop", "phi4:mini", env={**env, "SLMCTL_API_KEY": team.keys["admin"]}).code == 0


# -- starting a server as an operator does ----------------------------------------------------------
class Launched:
    """``slmctl serve --host HOST:PORT ARGS`` started in the background; ready once ``/api/health``
    answers on loopback (over https with ``ca`` when given)."""

    def __init__(self, home: Path, host: str, *args: str, ca: ssl.SSLContext | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"{'https' if ca else 'http'}://127.0.0.1:{self.port}"
        self.log_path = home.parent / f"launched-{self.port}.log"
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "slmctl", "serve", "--host", f"{host}:{self.port}",
                                          *args], env={**clean_env(home), **(env or {})}, stdout=out,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if httpx.get(self.url + "/api/health", verify=ca or True, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"serve did not start:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()


def serve_once(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "slmctl", "serve", *args], env=clean_env(home), text=True,
                          capture_output=True, timeout=60)


def test_all_interfaces_without_a_key_refuse_to_start(tmp_path: Path) -> None:
    refused = serve_once(tmp_path / "home", "--host", f"0.0.0.0:{free_port()}")
    assert refused.returncode == 2, refused.stderr
    assert "refusing to serve on 0.0.0.0 without API keys" in refused.stderr
    assert "slmctl keys create" in refused.stderr and "--no-auth" in refused.stderr
    loopback_forced = serve_once(tmp_path / "home", "--host", f"127.0.0.1:{free_port()}", "--auth")
    assert loopback_forced.returncode == 2 and "without API keys" in loopback_forced.stderr


def test_an_unsafe_key_file_stops_the_server_from_starting(tmp_path: Path) -> None:
    home = tmp_path / "home"
    KeyStore(home).create("ops", Role.ADMIN)
    (home / "keys.json").chmod(0o644)
    refused = serve_once(home, "--host", f"0.0.0.0:{free_port()}")
    assert refused.returncode == 1 and "chmod 600" in refused.stderr, refused.stderr


def test_no_auth_on_all_interfaces_starts_with_a_warning(tmp_path: Path) -> None:
    server = Launched(tmp_path / "home", "0.0.0.0", "--no-auth")
    try:
        assert httpx.get(server.url + "/api/tags").status_code == 200
        assert "WARNING" in server.log() and "authentication is OFF" in server.log()
    finally:
        assert server.stop() == 0


def test_all_interfaces_with_keys_turn_auth_on(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _, token = KeyStore(home).create("ops", Role.ADMIN)
    server = Launched(home, "0.0.0.0")
    try:
        assert httpx.get(server.url + "/api/tags").status_code == 401
        assert httpx.get(server.url + "/api/tags", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert httpx.get(server.url + "/livez").status_code == 200  # probes need no key
    finally:
        assert server.stop() == 0
    assert "authentication is OFF" not in server.log()
    assert KeyStore(home).load()[0].last_used_at is not None  # written back when the server stopped


def test_the_key_file_can_live_outside_the_home(tmp_path: Path) -> None:
    """SLMCTL_KEYS_FILE: a replica whose store is a read-only volume reads its keys from elsewhere."""
    home, keys = tmp_path / "home", tmp_path / "secret" / "keys.json"
    env = {"SLMCTL_KEYS_FILE": str(keys)}
    created = run_cli(home, "keys", "create", "ops", "--role", "admin", env=env)
    assert created.code == 0 and keys.exists() and not (home / "keys.json").exists()
    assert "ops" in run_cli(home, "keys", "list", env=env).stdout and "ops" not in run_cli(home, "keys", "list").stdout
    server = Launched(home, "0.0.0.0", env=env)
    try:
        token = created.stdout.strip()
        assert httpx.get(server.url + "/api/tags", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    finally:
        assert server.stop() == 0


def test_tls_with_the_official_clients_and_prompt_logging(serve_home: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    cert, key, ca_file = tmp_path / "server.pem", tmp_path / "server-key.pem", tmp_path / "ca.pem"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_file))
    home = tmp_path / "home"
    shutil.copytree(serve_home, home, ignore=shutil.ignore_patterns("audit.jsonl*"))  # another server's log
    _, token = KeyStore(home).create("alice", Role.USER)
    audit_file = tmp_path / "logs" / "audit.jsonl"
    trust = ssl.create_default_context(cafile=str(ca_file))
    server = Launched(home, "127.0.0.1", "--auth", "--tls-cert", str(cert), "--tls-key", str(key), "--log-prompts",
                      "--audit-log", str(audit_file), ca=trust)
    try:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key=token, max_retries=0,
                               http_client=httpx.Client(verify=trust, timeout=120))
        answer = client.chat.completions.create(model="phi4:mini", max_tokens=4,
                                                messages=[{"role": "user", "content": f"hello {MARKER}"}])
        assert answer.usage.completion_tokens == 4
        streamed = "".join(chunk.choices[0].delta.content or "" for chunk in client.chat.completions.create(
            model="phi4:mini", max_tokens=3, stream=True, messages=[{"role": "user", "content": "again"}])
            if chunk.choices)
        with pytest.raises(openai.APIConnectionError):  # the server's certificate is not trusted by default
            openai.OpenAI(base_url=server.url + "/v1", api_key=token, max_retries=0).models.list()
        with pytest.raises(httpx.HTTPError):  # and it speaks no plain http
            httpx.get(server.url.replace("https://", "http://") + "/api/health", timeout=5)
        monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))  # the usual way to trust a private CA
        assert "phi4:mini" in {m.id for m in openai.OpenAI(base_url=server.url + "/v1", api_key=token,
                                                           max_retries=0).models.list().data}
        headers = {"Authorization": f"Bearer {token}"}
        assert "phi4:mini" in {m.model for m in ollama.Client(host=server.url, headers=headers).list().models}
        ps = run_cli(home, "ps", env={"SLMCTL_HOST": server.url, "SLMCTL_API_KEY": token, "SSL_CERT_FILE": str(ca_file)})
        assert ps.code == 0, ps.stderr
    finally:
        began = time.monotonic()
        assert server.stop() == 0
    assert time.monotonic() - began < 10  # idle pooled TLS connections do not hold the drain
    events = [json.loads(line) for line in audit_file.read_text().splitlines()]
    generations = [e for e in events if e["event"] == "generate"]
    assert len(generations) == 2 and all(e["key"] == "alice" for e in generations)
    assert MARKER in json.dumps(generations[0]["prompt"])
    assert generations[0]["answer"] == answer.choices[0].message.content
    assert generations[1]["answer"] == streamed
    assert token not in audit_file.read_text()
    assert events[0]["event"] == "server_start" and events[0]["tls"] is True and events[-1]["event"] == "server_stop"
    assert not (home / "audit.jsonl").exists()  # --audit-log moved it
