"""API keys, the audit log and the security settings without a server: the key format and file, the
checks (constant-time, expiry, revocation, unsafe permissions), the route table and what a body asks
for, the audit file's rotation, and ``slmctl keys`` through the real entry point."""

from __future__ import annotations

import hmac
import json
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
import trustme

from cli_runner import run_cli
from slmctl.cli.serve import resolve
from slmctl.errors import InsecureFile, UsageError
from slmctl.security import keys as keys_module
from slmctl.security.audit import AuditLog
from slmctl.security.config import is_loopback, parse_size
from slmctl.security.keyring import KeyRing
from slmctl.security.keys import TOKEN_PATTERN, KeyStore, Role, token_id, utc_now
from slmctl.server.access import Need, Policy, answer_text, operation


# -- keys ------------------------------------------------------------------------------------------------
def test_a_key_is_prefixed_checksummed_and_stored_only_as_a_salted_hash(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    entry, token = store.create("alice", Role.USER)
    assert TOKEN_PATTERN.match(token) and len(token) == 61 and token_id(token) == entry.key_id
    assert token_id(token[:-1] + ("A" if token[-1] != "A" else "B")) is None  # checksum catches a typo
    text = store.path.read_text()
    assert token not in text and token[len("slmctl_") + 8:] not in text
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    stored = json.loads(text)["keys"][0]
    assert stored["hash"].startswith("scrypt:16384:8:1:") and stored["name"] == "alice"
    second, other = store.create("bob", Role.USER)
    assert second.salt != entry.salt and other != token


def test_keys_are_compared_in_constant_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = KeyStore(tmp_path)
    _, token = store.create("alice", Role.ADMIN)
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: object, b: object) -> bool:
        calls.append((a, b))  # type: ignore[arg-type]
        return real(a, b)  # type: ignore[arg-type]

    monkeypatch.setattr(keys_module.hmac, "compare_digest", spy)
    ring = KeyRing(store)
    wrong = token[:20] + ("x" if token[20] != "x" else "y") + token[21:-6]
    wrong += keys_module._checksum(wrong)  # well formed, right id, wrong secret
    assert ring.check(wrong).reason == "unknown"
    digests = [(a, b) for a, b in calls if isinstance(a, bytes) and len(a) == 32]
    assert digests and all(len(a) == len(b) for a, b in digests)  # the scrypt digests went through it
    calls.clear()
    verdict = ring.check(token)
    assert verdict.ok and verdict.key is not None and verdict.key.name == "alice"
    assert any(isinstance(a, bytes) and len(a) == 32 for a, _ in calls)
    assert ring.quick(token) is not None and ring.quick(token).ok  # remembered: no second scrypt


def test_expired_and_revoked_keys_are_refused_and_a_reload_sees_changes(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    _, expired = store.create("old", Role.USER, timedelta(days=1), now=utc_now() - timedelta(days=2))
    _, live = store.create("live", Role.USER, timedelta(days=30))
    ring = KeyRing(store)
    ring.refresh(strict=True)
    assert ring.check(expired).reason == "expired" and ring.check(live).ok
    store.revoke("live")
    assert ring.check(live).reason == "revoked"  # the file changed: reloaded on the next check
    assert {k.name for k in ring.active()} == set()
    with pytest.raises(UsageError, match="already revoked"):
        store.revoke("live")
    _, again = store.create("live", Role.ADMIN)  # a revoked name may be reused: a new key, a new id
    assert ring.check(again).ok and ring.check(live).reason == "unknown"
    assert ring.check("slmctl_nope").reason == "malformed" and ring.check("").reason == "malformed"


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    _, token = store.create("alice", Role.USER)
    ring = KeyRing(store)
    assert ring.check(token).ok
    store.path.chmod(0o644)
    with pytest.raises(InsecureFile, match="chmod 600|other users") as err:
        store.load()
    assert "chmod 600" in (err.value.hint or "")
    with pytest.raises(InsecureFile):
        KeyRing(store).refresh(strict=True)
    store.path.chmod(0o640)
    assert ring.check(token).reason == "keyfile"  # a running server refuses every key until it is fixed
    store.path.chmod(0o600)
    assert ring.check(token).ok


def test_names_are_checked_and_unique_among_active_keys(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    store.create("ci-bot@team.example", Role.USER)
    with pytest.raises(UsageError, match="already exists"):
        store.create("ci-bot@team.example", Role.ADMIN)
    for bad in ("", "../x", "a b", "-x", "x" * 65):
        with pytest.raises(UsageError, match="invalid key name"):
            store.create(bad, Role.USER)


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    def create(i: int) -> str:
        return KeyStore(tmp_path).create(f"k{i}", Role.USER)[1]

    with ThreadPoolExecutor(8) as pool:
        tokens = list(pool.map(create, range(8)))
    ring = KeyRing(KeyStore(tmp_path))
    ring.refresh(strict=True)
    assert sorted(k.name for k in ring.keys()) == sorted(f"k{i}" for i in range(8))
    assert all(ring.check(t).ok for t in tokens)


def test_last_use_is_written_back(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    _, token = store.create("alice", Role.USER)
    ring = KeyRing(store, flush_every=0)
    assert ring.check(token).ok and ring.flush_due()
    ring.flush()
    assert store.load()[0].last_used_at is not None and not ring.flush_due()


# -- the route table and request bodies -------------------------------------------------------------------
def test_every_route_of_the_app_is_classified(tmp_path: Path) -> None:
    import re

    from slmctl.server.app import create_app
    from slmctl.server.config import ServeConfig
    from slmctl.settings import Settings

    import warnings

    app = create_app(ServeConfig(), Settings(home=tmp_path), {})
    policy = Policy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FastAPI's duplicate operation ids of GET+HEAD routes
        paths = set(app.openapi()["paths"]) | {app.openapi_url}
    assert {"/api/generate", "/v1/chat/completions", "/api/audit", "/api/blobs/{digest}"} <= paths
    unclassified = [p for p in paths if policy.rule(re.sub(r"\{[^}]+\}", "x", p)) is None]
    assert not unclassified, f"routes missing from slmctl.server.access.ROUTES: {unclassified}"
    assert policy.need("GET", "/some/new/route") is Need.ADMIN  # closed until classified
    assert policy.need("OPTIONS", "/api/pull") is Need.PUBLIC  # CORS preflights carry no key
    assert policy.need("GET", "/v1/models/team/assistant:v1") is Need.USER
    assert Policy(metrics_auth=True).need("GET", "/metrics") is Need.USER
    assert Policy().need("GET", "/metrics") is Need.PUBLIC


@pytest.mark.parametrize(("path", "body", "event", "admin"), [
    ("/api/generate", {"model": "m"}, "load", True),
    ("/api/generate", {"model": "m", "prompt": "", "keep_alive": 0}, "unload", True),
    ("/api/generate", {"model": "m", "prompt": "hi", "keep_alive": "0s"}, "unload", True),
    ("/api/generate", {"model": "m", "prompt": "hi", "keep_alive": "5m"}, "generate", False),
    ("/api/generate", {"model": "m", "suffix": "x"}, "generate", False),
    ("/api/chat", {"model": "m", "messages": []}, "load", True),
    ("/api/chat", {"name": "m", "messages": [{"role": "user", "content": "hi"}]}, "generate", False),
    ("/api/embed", {"model": "m", "input": ""}, "load", True),
    ("/api/embed", {"model": "m", "input": [""]}, "load", True),
    ("/api/embeddings", {"model": "m", "prompt": "x", "keep_alive": 0}, "unload", True),
    ("/api/pull", {"model": "m"}, "pull", False),
    ("/api/copy", {"source": "m", "destination": "n"}, "copy", False),
    ("/api/delete", {"model": "m"}, "delete", False),
    ("/v1/chat/completions", {"model": "m", "messages": []}, "generate", False),
])
def test_what_a_body_asks_for(path: str, body: dict, event: str, admin: bool) -> None:
    op = operation("DELETE" if path == "/api/delete" else "POST", path, body)
    assert (op.event, op.admin) == (event, admin)
    assert op.model == "m"


def test_answers_are_read_back_from_json_ndjson_and_sse() -> None:
    assert answer_text("application/json", b'{"response": "hi"}') == "hi"
    ndjson = b'{"message": {"content": "a"}}\n{"message": {"content": "b"}}\n{"done": true}\n'
    assert answer_text("application/x-ndjson", ndjson) == "ab"
    sse = (b'data: {"choices": [{"index": 0, "delta": {"content": "x"}}]}\n\n'
           b'data: {"choices": [{"index": 0, "delta": {"content": "y"}}]}\n\ndata: [DONE]\n\n')
    assert answer_text("text/event-stream; charset=utf-8", sse) == "xy"
    two = b'{"choices": [{"index": 0, "text": "a"}, {"index": 1, "text": "b"}]}'
    assert answer_text("application/json", two) == ["a", "b"]


# -- the audit log ----------------------------------------------------------------------------------------
def test_the_audit_file_rotates_by_size_and_stays_private(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(path, max_bytes=600, keep=3)
    threads = [threading.Thread(target=lambda i=i: [audit.write("copy", model=f"m{i}-{j}", key="k")
                                                    for j in range(10)]) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    files = sorted(p.name for p in tmp_path.glob("audit.jsonl*") if not p.name.endswith(".lock"))
    assert files == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2", "audit.jsonl.3"]
    for name in files:
        assert (tmp_path / name).stat().st_size <= 600
        lines = (tmp_path / name).read_text().splitlines()
        assert lines and all(json.loads(line)["event"] == "copy" for line in lines)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = json.loads(path.read_text().splitlines()[0])
    assert list(first)[:8] == ["time", "event", "key", "role", "client", "route", "model", "outcome"]
    assert len(audit.read(limit=2)) == 2


def test_a_torn_audit_line_does_not_swallow_the_next(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text('{"event": "cut')
    AuditLog(path).write("delete", model="m")
    assert [r["event"] for r in AuditLog(path).read()] == ["delete"]


# -- settings ---------------------------------------------------------------------------------------------
def test_security_settings_from_flags_environment_and_file(tmp_path: Path) -> None:
    config = tmp_path / "serve.json"
    config.write_text(json.dumps({"auth": True, "audit_log": "/var/log/a.jsonl", "audit_max_size": "5MB"}))
    resolved = resolve({"log_prompts": True}, {"SLMCTL_AUDIT_MAX_SIZE": "1MiB"}, config).security
    assert resolved.auth is True and resolved.audit_log == "/var/log/a.jsonl"
    assert resolved.audit_max_size == 2**20 and resolved.log_prompts is True
    assert resolve({}, {"SLMCTL_AUTH": "0"}, None).security.auth is False
    default = resolve({}, {}, None)
    assert default.security.auth is None and not default.security.auth_on(default.host)
    assert resolve({}, {"SLMCTL_HOST": "0.0.0.0:80"}, None).security.auth_on("0.0.0.0")
    with pytest.raises(UsageError, match="auth"):
        resolve({}, {"SLMCTL_AUTH": "maybe"}, None)
    with pytest.raises(UsageError, match="size"):
        resolve({"audit_max_size": "lots"}, {}, None)


def test_loopback_addresses_and_sizes() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.9.9.9", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.5", "myhost", "192.168.1.2"))
    assert parse_size("10MB") == 10**7 and parse_size("512KiB") == 512 * 1024 and parse_size(0) == 0


def test_tls_files_are_checked_before_serving(tmp_path: Path) -> None:
    ca = trustme.CA()
    one, two = ca.issue_cert("127.0.0.1"), ca.issue_cert("localhost")
    cert, key, other_key = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "other.pem"
    one.cert_chain_pems[0].write_to_path(str(cert))
    one.private_key_pem.write_to_path(str(key))
    two.private_key_pem.write_to_path(str(other_key))
    assert resolve({"tls_cert": cert, "tls_key": key}, {}, None).security.tls
    with pytest.raises(UsageError, match="go together"):
        resolve({"tls_cert": cert}, {}, None)
    with pytest.raises(UsageError, match="cannot use the certificate"):
        resolve({"tls_cert": cert, "tls_key": other_key}, {}, None)
    with pytest.raises(UsageError, match="no such file"):
        resolve({"tls_cert": cert, "tls_key": tmp_path / "missing.pem"}, {}, None)


# -- slmctl keys ------------------------------------------------------------------------------------------
def test_keys_create_list_revoke_through_the_cli(tmp_path: Path) -> None:
    home = tmp_path / "home"
    created = run_cli(home, "keys", "create", "alice", "--role", "user", "--expires", "90d")
    assert created.code == 0 and TOKEN_PATTERN.match(created.stdout.strip()), created
    assert "cannot be shown again" in created.stderr
    admin = run_cli(home, "keys", "create", "ops", "--role", "admin", "--json")
    shown = json.loads(admin.stdout)
    assert shown["role"] == "admin" and TOKEN_PATTERN.match(shown["key"]) and shown["expires_at"] is None
    listed = run_cli(home, "keys", "list", "--json")
    entries = {k["name"]: k for k in json.loads(listed.stdout)}
    assert set(entries) == {"alice", "ops"} and entries["alice"]["expires_at"]
    assert created.stdout.strip() not in listed.stdout and shown["key"] not in listed.stdout
    assert "hash" not in listed.stdout
    table = run_cli(home, "keys", "list").stdout
    assert table.splitlines()[0].split() == ["NAME", "ROLE", "CREATED", "LAST", "USED", "EXPIRES", "STATUS"]
    assert run_cli(home, "keys", "revoke", "alice").code == 0
    assert "alice" not in run_cli(home, "keys", "list").stdout
    assert "revoked" in run_cli(home, "keys", "list", "--all").stdout
    missing = run_cli(home, "keys", "revoke", "nobody")
    assert missing.code == 2 and "no key named 'nobody'" in missing.stderr
    bad = run_cli(home, "keys", "create", "x", "--expires", "soon")
    assert bad.code == 2 and "--expires" in bad.stderr
    events = [json.loads(line) for line in (home / "audit.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events] == ["key_created", "key_created", "key_revoked"]
    audit_text = (home / "audit.jsonl").read_text()
    assert created.stdout.strip() not in audit_text and shown["key"] not in audit_text
    (home / "keys.json").chmod(0o644)
    refused = run_cli(home, "keys", "list")
    assert refused.code == 1 and "chmod 600" in refused.stderr


def test_keys_help_has_examples(tmp_path: Path) -> None:
    for args in (("keys", "--help"), ("keys", "create", "--help")):
        result = run_cli(tmp_path, *args)
        assert result.code == 0 and "Examples:" in result.stdout
        assert "slmctl keys create alice --role user --expires 90d" in result.stdout
