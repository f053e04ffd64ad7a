"""Schemathesis against a real ``slmctl serve`` through the server's own OpenAPI document (issue 14).

Two servers, both with ``--auth`` (an admin key sent as ``Authorization: Bearer``) and ``--max-predict
16`` (so any generation the fuzzer asks for stays short): one for the routes that only read the store
(generate, chat, embed, show, list...), one on its own copy of the store for the routes that change it
(copy, delete, create, pull, blobs). The environment is offline, so a pull fails fast: that must be a
4xx/502, never a 500. Every operation the document lists is fuzzed, positive and negative bodies alike;
the checks are "no 5xx (but a 502 from a download)" and "a response with a declared schema
conforms to it". Afterwards the servers are alive and their RSS (with their runner processes) is under
``RSS_BOUND``. CI runs 64 examples per operation (~1,300 requests, about a minute); a longer run:
``SLMCTL_FUZZ_EXAMPLES=1000 python -m pytest tests/test_serve_fuzz.py`` (~20,000 requests).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

schemathesis = pytest.importorskip("schemathesis")
psutil = pytest.importorskip("psutil")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis.specs.openapi.checks import response_schema_conformance  # noqa: E402
from serve_fixtures import Served, clean_env  # noqa: E402

#: Routes that change the store: fuzzed on a private copy of it.
MUTATING = {"/api/copy", "/api/delete", "/api/create", "/api/pull", "/api/blobs/{digest}"}
#: Routes that download (a pull, a create FROM a registry name): offline, a 502 is their right answer.
DOWNLOADING = {"/api/pull", "/api/create"}
#: Examples per operation (hypothesis may stop earlier for operations with little to vary).
EXAMPLES = int(os.environ.get("SLMCTL_FUZZ_EXAMPLES", "64"))
#: The store's models: generated bodies often name one of them, so requests get past the model lookup.
MODELS = ["phi4:mini", "qwen2.5:3b", "nomic-embed-text", "long"]
#: Requests the whole run must have sent.
MIN_REQUESTS = 1000
#: The server process with its runners after the fuzz (tiny models; a leak would show as growth).
RSS_BOUND = 768 * 2**20


def admin_key(home: Path) -> str:
    done = subprocess.run([sys.executable, "-m", "slmctl", "keys", "create", "fuzz", "--role", "admin"],
                          env=clean_env(home), capture_output=True, text=True, check=True)
    return next(word for word in done.stdout.split() if word.startswith("slmctl_"))


def tree_rss(pid: int) -> int:
    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])


class Fuzzed:
    def __init__(self, home: Path, log_dir: Path) -> None:
        self.key = admin_key(home)
        self.served = Served(home, "--auth", "--max-predict", "16", log_dir=log_dir)
        self.headers = {"Authorization": f"Bearer {self.key}"}
        self.doc = httpx.get(self.served.url + "/openapi.json", headers=self.headers, timeout=30).json()
        self.schema = schemathesis.openapi.from_dict(self.doc)


@pytest.fixture(scope="module")
def fuzz_servers(serve_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Fuzzed]]:
    servers = {}
    for name in ("read", "write"):
        home = tmp_path_factory.mktemp(f"fuzz-{name}") / "home"
        shutil.copytree(serve_home, home)
        servers[name] = Fuzzed(home, tmp_path_factory.mktemp(f"fuzz-{name}-logs"))
    yield servers
    for fuzzed in servers.values():
        fuzzed.served.stop()


def fuzz_operation(fuzzed: Fuzzed, operation: object, counts: Counter[str]) -> None:
    strategy = st.one_of(operation.as_strategy(schemathesis.GenerationMode.POSITIVE),  # type: ignore[attr-defined]
                         operation.as_strategy(schemathesis.GenerationMode.NEGATIVE))  # type: ignore[attr-defined]
    label = f"{operation.method.upper()} {operation.path}"  # type: ignore[attr-defined]

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True, print_blob=True,
              suppress_health_check=list(HealthCheck))
    @given(case=strategy, data=st.data())
    def run(case: schemathesis.Case, data: st.DataObject) -> None:
        known = st.sampled_from(MODELS)
        if isinstance(case.body, dict):
            for field in ("model", "name", "source", "from"):
                if field in case.body and data.draw(st.booleans()):
                    case.body[field] = data.draw(known)
        if "model" in (case.path_parameters or {}) and data.draw(st.booleans()):
            case.path_parameters["model"] = data.draw(known)
        keyed = counts["total"] % 10 != 9  # one request in ten goes without the key: a 401
        response = case.call(base_url=fuzzed.served.url, headers=fuzzed.headers if keyed else {}, timeout=60)
        counts[f"{label} {response.status_code}"] += 1
        counts["total"] += 1
        status = response.status_code
        assert status < 500 or (status == 502 and operation.path in DOWNLOADING), \
            f"{label}: {status} {response.text[:1000]}"  # type: ignore[attr-defined]
        case.validate_response(response, checks=[response_schema_conformance])

    run()


def test_fuzz_every_route_against_its_openapi_document(fuzz_servers: dict[str, Fuzzed]) -> None:
    counts: Counter[str] = Counter()
    seen = set()
    for name, fuzzed in fuzz_servers.items():
        for result in fuzzed.schema.get_all_operations():
            operation = result.ok()
            if (operation.path in MUTATING) != (name == "write"):
                continue
            seen.add((operation.method, operation.path))
            fuzz_operation(fuzzed, operation, counts)
    documented = {(m, p) for p, item in fuzz_servers["read"].doc["paths"].items() for m in item}
    assert seen == documented, documented - seen
    print("\n".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    assert counts["total"] >= MIN_REQUESTS, counts["total"]
    for fuzzed in fuzz_servers.values():
        assert fuzzed.served.proc.poll() is None, fuzzed.served.log()
        assert httpx.get(fuzzed.served.url + "/api/health", timeout=10).status_code == 200
        rss = tree_rss(fuzzed.served.proc.pid)
        print(f"{fuzzed.served.url}: RSS {rss / 2**20:.0f} MiB")
        assert rss < RSS_BOUND, rss
