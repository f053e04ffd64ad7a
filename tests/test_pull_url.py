"""``slmctl pull http(s)://.../<file>.gguf`` end to end, against :class:`tests.http_fixtures.FileServer`.

The server is plain http on 127.0.0.1, so every pull needs ``--insecure`` (https needs none). A URL
publishes no digest: the file is checked against ``--sha256`` when given, else only its size.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli_runner import Result, run_cli
from tests.http_fixtures import Fault, FileServer
from tests.pull_support import blob_name, loopback_env, stored, tmp_leftovers

FILE = "/models/tiny-F16.gguf"
LOCAL = "tiny-f16:latest"


@pytest.fixture(scope="module")
def data(tiny_gguf: Path) -> bytes:
    return tiny_gguf.read_bytes()


@pytest.fixture
def server(data: bytes) -> Iterator[FileServer]:
    with FileServer(data, path=FILE) as srv:
        yield srv


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _pull(home: Path, url: str, *args: str) -> Result:
    return run_cli(home, "pull", url, *args, env=loopback_env())


def test_pull_url_then_run(slmctl_home: Path, server: FileServer, data: bytes) -> None:
    refused = _pull(slmctl_home, server.url)
    assert refused.code == 2, refused.stderr
    assert "plain http is not allowed" in refused.stderr and "--insecure" in refused.stderr
    assert server.range_headers == []  # refused before any download request

    pulled = _pull(slmctl_home, server.url, "--insecure")
    assert pulled.code == 0, pulled.stderr
    assert f"pulled {LOCAL} (gguf" in pulled.stdout
    assert stored(slmctl_home) == ([LOCAL], [blob_name("sha256:" + _sha(data))])
    shown = json.loads(run_cli(slmctl_home, "show", LOCAL, "--json").stdout)
    assert shown["source"] == {"type": "url", "ref": server.url, "revision": None}
    assert shown["files"] == [{"path": "tiny-F16.gguf", "digest": "sha256:" + _sha(data), "size": len(data)}]

    ran = run_cli(slmctl_home, "run", LOCAL, "hi", "--max-tokens", "2")
    assert ran.code == 0 and ran.stdout.strip(), ran.stderr


def test_pull_url_with_sha256(slmctl_home: Path, server: FileServer, data: bytes) -> None:
    server.head_allowed = False  # the size then comes from a range probe
    pulled = _pull(slmctl_home, server.url, "--insecure", "--sha256", _sha(data).upper())
    assert pulled.code == 0, pulled.stderr
    assert stored(slmctl_home) == ([LOCAL], [blob_name("sha256:" + _sha(data))])
    # Digest and size known: the stored blob is reused, nothing is downloaded again.
    server.reset_counters()
    again = _pull(slmctl_home, server.url, "--insecure", "--sha256", "sha256:" + _sha(data))
    assert again.code == 0, again.stderr
    assert server.bytes_served == 1  # the byte of the size probe only


def test_wrong_sha256_exits_6_and_stores_nothing(slmctl_home: Path, server: FileServer, data: bytes) -> None:
    wrong = _pull(slmctl_home, server.url, "--insecure", "--sha256", _sha(data + b"x"))
    assert wrong.code == 6, wrong.stderr
    assert f"digest mismatch for {server.url}: expected sha256:{_sha(data + b'x')}" in wrong.stderr
    assert stored(slmctl_home) == ([], []) and tmp_leftovers(slmctl_home) == []
    malformed = _pull(slmctl_home, server.url, "--insecure", "--sha256", "abc123")
    assert malformed.code == 2 and "bad sha256 digest 'abc123'" in malformed.stderr, malformed.stderr
    not_a_url = _pull(slmctl_home, "hf.co/test/tiny-GGUF", "--sha256", _sha(data))
    assert not_a_url.code == 2 and "--sha256 applies to URL sources" in not_a_url.stderr, not_a_url.stderr


def test_server_without_ranges_restarts_a_dropped_download(slmctl_home: Path, data: bytes) -> None:
    with FileServer(data, ranges=False, path=FILE) as srv:
        srv.faults.append(Fault(drop_after=100_000))
        pulled = _pull(slmctl_home, srv.url, "--insecure", "--sha256", _sha(data))
        assert pulled.code == 0, pulled.stderr
        assert srv.bytes_served == 100_000 + len(data)  # cut, then the whole file again from byte 0
    assert stored(slmctl_home) == ([LOCAL], [blob_name("sha256:" + _sha(data))])


def test_missing_or_refused_file(slmctl_home: Path, server: FileServer) -> None:
    missing = _pull(slmctl_home, server.url.replace("tiny-F16", "missing"), "--insecure")
    assert missing.code == 3 and "not found (HTTP 404" in missing.stderr, missing.stderr
    server.status_override = 401
    refused = _pull(slmctl_home, server.url, "--insecure")
    assert refused.code == 5 and "access denied (HTTP 401)" in refused.stderr, refused.stderr
    assert "plain URLs are fetched without credentials" in refused.stderr  # HF_TOKEN would not help here
    assert stored(slmctl_home) == ([], []) and tmp_leftovers(slmctl_home) == []


def test_run_and_create_pull_a_plain_http_url_with_insecure(slmctl_home: Path, server: FileServer,
                                                            tmp_path: Path) -> None:
    refused = run_cli(slmctl_home, "run", server.url, "hi", "--max-tokens", "2", env=loopback_env())
    assert refused.code == 2 and "--insecure" in refused.stderr, refused.stderr
    ran = run_cli(slmctl_home, "run", server.url, "hi", "--max-tokens", "2", "--insecure", env=loopback_env())
    assert ran.code == 0 and ran.stdout.strip(), ran.stderr
    # Once stored, the URL names the model: no --insecure needed, nothing downloaded again.
    server.reset_counters()
    again = run_cli(slmctl_home, "run", server.url, "hi", "--max-tokens", "2", env=loopback_env())
    assert again.code == 0, again.stderr
    assert server.bytes_served == 0
    run_cli(slmctl_home, "rm", LOCAL)
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text(f"FROM {server.url}\nSYSTEM Be brief.\n")
    created = run_cli(slmctl_home, "create", "brief", "-f", str(modelfile), "--insecure", env=loopback_env())
    assert created.code == 0, created.stderr
    assert sorted(stored(slmctl_home)[0]) == ["brief:latest", LOCAL]
