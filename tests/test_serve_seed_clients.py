"""The seed document's own Ollama examples, unchanged, against a real ``slmctl serve``.

The snippets live verbatim in ``tests/seed_clients/`` (``ollama_requests.py``, ``curl_examples.sh``,
``express_axios_app.js``). At test time each is copied to a temporary folder with exactly these edits:

* every ``11434`` (Ollama's port) becomes the test server's free port, by a plain string replace;
* in the Express app, every ``3000`` (the app's own port) becomes another free port;
* in the Python snippet, ``# stream_response()  # Uncomment to run streaming example`` is uncommented,
  as its comment tells the reader to do.

Nothing else changes: the clients still say ``localhost`` (the server listens on 127.0.0.1), and the
Python and Node.js snippets still ask for ``num_predict: 1024`` from ``phi4:mini``, a tiny GGUF model
with a 512-token context. The prompt plus 1024 tokens does not fit, so the server must stop when the
context is full (``done_reason: "length"``) and still answer 200, which these tests check.

The curl tests need ``curl``; the Express test needs ``node`` and ``npm`` and the npm registry (once:
``node_modules`` is cached under pytest's cache folder, keyed by the pinned versions).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from node_packages import node_modules_for
from serve_fixtures import Served, free_port

SEED = Path(__file__).parent / "seed_clients"
OLLAMA_PORT = "11434"
UNCOMMENT = ("# stream_response()  # Uncomment to run streaming example",
             "stream_response()  # Uncomment to run streaming example")

#: Exact versions of the Express example's dependencies (``npm view axios version`` /
#: ``npm view express version`` when these tests were written).
AXIOS = "1.21.1"
EXPRESS = "5.3.0"


def seed_text(name: str, server: Served, *replacements: tuple[str, str, int]) -> str:
    """The seed file ``name`` with Ollama's port replaced by ``server``'s and the other ``(old, new,
    expected count)`` replacements; each must occur exactly as often as expected."""
    text = (SEED / name).read_text()
    for old, new, count in ((OLLAMA_PORT, str(server.port), text.count(OLLAMA_PORT)), *replacements):
        assert count > 0 and text.count(old) == count, f"{name}: expected {count} x {old!r}"
        text = text.replace(old, new)
    return text


def client_env() -> dict[str, str]:
    """The environment for the clients: the developer's, without proxies (they would catch localhost)."""
    proxies = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
    env = {k: v for k, v in os.environ.items() if k.lower() not in proxies}
    env["NO_PROXY"] = env["no_proxy"] = "*"
    return env


def context_of(server: Served, model: str) -> int:
    """The context length ``model``'s loaded runner has (from ``/api/ps``)."""
    loaded = {m["name"]: m for m in httpx.get(server.url + "/api/ps").json()["models"]}
    assert model in loaded, f"{model} is not loaded: {list(loaded)}"
    return loaded[model]["context_length"]


def check_durations(answer: dict[str, Any]) -> None:
    assert answer["done"] is True, answer
    assert answer["total_duration"] >= answer["eval_duration"] > 0, answer
    assert answer["load_duration"] >= 0 and answer["prompt_eval_duration"] >= 0, answer
    assert answer["prompt_eval_count"] > 0 and answer["eval_count"] > 0, answer
    datetime.fromisoformat(answer["created_at"].replace("Z", "+00:00"))


# --- Python ``requests`` --------------------------------------------------------------------------

#: Runs the snippet file (``argv[1]``) as ``__main__`` and writes each response the snippet reads (its
#: ``.json()`` result, or each line of ``.iter_lines()``) with its status to ``argv[2]`` as JSON lines.
RECORDER = """\
import json, runpy, sys
import requests

record = open(sys.argv[2], "w")
read_json, read_lines = requests.Response.json, requests.Response.iter_lines

def json_(self, **kwargs):
    data = read_json(self, **kwargs)
    record.write(json.dumps({"status": self.status_code, "json": data}) + "\\n")
    record.flush()
    return data

def iter_lines(self, *args, **kwargs):
    for line in read_lines(self, *args, **kwargs):
        record.write(json.dumps({"status": self.status_code, "line": line.decode()}) + "\\n")
        record.flush()
        yield line

requests.Response.json, requests.Response.iter_lines = json_, iter_lines
sys.argv = sys.argv[1:2]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run_python(server: Served, tmp_path: Path, *, record: Path | None = None) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "ollama_requests.py"
    script.write_text(seed_text("ollama_requests.py", server, (*UNCOMMENT, 1)))
    if record is None:
        command = [sys.executable, str(script)]
    else:
        recorder = tmp_path / "recorder.py"
        recorder.write_text(RECORDER)
        command = [sys.executable, str(recorder), str(script), str(record)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=client_env(), cwd=tmp_path)
    assert done.returncode == 0 and "Traceback" not in done.stderr, f"{done}\n--- server log:\n{server.log()}"
    return done


def test_requests_snippet_runs_unchanged(server: Served, tmp_path: Path) -> None:
    """The script as a user runs it: it prints the answer, then the streamed answer and a newline."""
    out = run_python(server, tmp_path).stdout
    assert out.endswith("\n") and out.count("\n") >= 2 and out.strip(), repr(out)


def test_requests_snippet_prints_the_answers_and_hits_the_context(server: Served, tmp_path: Path) -> None:
    """The same script with its responses recorded: what it prints is exactly the answer, then the
    streamed chunks and a newline; both generations stop at the full context, with status 200."""
    record = tmp_path / "responses.jsonl"
    out = run_python(server, tmp_path, record=record).stdout
    seen = [json.loads(line) for line in record.read_text().splitlines()]
    assert all(r["status"] == 200 for r in seen), seen
    answer = seen[0]["json"]
    chunks = [json.loads(r["line"]) for r in seen[1:] if r["line"]]
    assert "json" not in seen[-1] and len(chunks) > 1, seen

    streamed = "".join(c["response"] for c in chunks)
    assert out == answer["response"] + "\n" + streamed + "\n"
    assert answer["response"] and streamed

    context = context_of(server, "phi4:mini")
    final = chunks[-1]
    assert final["done"] is True and not any(c["done"] for c in chunks[:-1])
    for result in (answer, final):
        check_durations(result)
        assert result["model"] == "phi4:mini" and result["done_reason"] == "length", result
        assert result["prompt_eval_count"] + 1024 > context, "the test no longer overflows the context"
        assert result["prompt_eval_count"] + result["eval_count"] == context, (result, context)


# --- curl -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def curl_answers(server: Served, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The three JSON bodies the seed's curl calls print (one after the other, no separator)."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    script = tmp_path_factory.mktemp("curl") / "curl_examples.sh"
    script.write_text(seed_text("curl_examples.sh", server))
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=300, env=client_env())
    assert done.returncode == 0, f"{done}\n--- server log:\n{server.log()}"
    decoder, answers, at = json.JSONDecoder(), [], 0
    while at < len(done.stdout):
        answer, at = decoder.raw_decode(done.stdout, at)
        answers.append(answer)
        while at < len(done.stdout) and done.stdout[at].isspace():
            at += 1
    assert len(answers) == 3, f"{done.stdout!r}\n--- server log:\n{server.log()}"
    return answers


def test_curl_generate(curl_answers: list[dict[str, Any]], server: Served) -> None:
    answer = curl_answers[0]
    assert "error" not in answer, f"{answer}\n--- server log:\n{server.log()}"
    assert answer["model"] == "phi4:mini" and isinstance(answer["response"], str) and answer["response"]
    check_durations(answer)
    # No num_predict: the tiny model never ends its answer, so it runs until the context is full.
    assert answer["done_reason"] == "length"
    assert answer["prompt_eval_count"] + answer["eval_count"] == context_of(server, "phi4:mini")


def test_curl_chat(curl_answers: list[dict[str, Any]], server: Served) -> None:
    answer = curl_answers[1]
    assert "error" not in answer, f"{answer}\n--- server log:\n{server.log()}"
    assert answer["model"] == "qwen2.5:3b"
    assert answer["message"]["role"] == "assistant"
    assert isinstance(answer["message"]["content"], str) and answer["message"]["content"]
    check_durations(answer)
    assert answer["done_reason"] in ("stop", "length")


def test_curl_embeddings(curl_answers: list[dict[str, Any]], server: Served) -> None:
    answer = curl_answers[2]
    assert "error" not in answer, f"{answer}\n--- server log:\n{server.log()}"
    embedding = answer["embedding"]
    assert isinstance(embedding, list) and len(embedding) > 8
    assert all(isinstance(x, float) and math.isfinite(x) for x in embedding)
    assert any(x != 0 for x in embedding)


# --- Node.js Express + axios ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def node_modules(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``node_modules`` with the pinned axios and express."""
    return node_modules_for(request, tmp_path_factory, {"axios": AXIOS, "express": EXPRESS})


def test_express_axios_app(server: Served, node_modules: Path, tmp_path: Path) -> None:
    """The seed's Express app relays a chat message to ``/api/generate`` through axios."""
    app_port = free_port()
    app = tmp_path / "app.js"
    app.write_text(seed_text("express_axios_app.js", server, ("3000", str(app_port), 2)))
    out, err = tmp_path / "app.out", tmp_path / "app.err"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        proc = subprocess.Popen(["node", str(app)], cwd=tmp_path, stdout=stdout, stderr=stderr,
                                env={**client_env(), "NODE_PATH": str(node_modules)})
    try:
        deadline = time.monotonic() + 60
        while f"API server running on port {app_port}" not in out.read_text():
            assert proc.poll() is None, f"the app exited with {proc.returncode}:\n{err.read_text()}"
            assert time.monotonic() < deadline, f"the app did not start:\n{out.read_text()}\n{err.read_text()}"
            time.sleep(0.05)
        reply = httpx.post(f"http://127.0.0.1:{app_port}/api/chat", timeout=300,
                           json={"message": "Explain the difference between a process and a thread"})
        report = f"{reply.status_code} {reply.text}\n--- app:\n{err.read_text()}\n--- server log:\n{server.log()}"
        assert reply.status_code == 200, report
        body = reply.json()
        assert set(body) == {"response"} and isinstance(body["response"], str) and body["response"], report
        assert "Error generating text" not in err.read_text(), report
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
