"""Processes and requests of ``bench_serve.py``: starting a server and waiting for it, its CPU and memory,
prompts of an exact token count, and one streaming request timed chunk by chunk: Ollama's NDJSON
(``/api/generate``, ``/api/chat``), llama-server's ``/completion`` SSE and OpenAI's ``/v1/chat/completions``
SSE (plain ``data: `` lines, parsed here: the project has no SSE client dependency)."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


#: One token each in the bench model's vocabulary (``▁hello``, ...): N-1 of them + BOS = N prompt tokens.
WORDS = ("hello", "world", "the", "and", "model", "small", "test", "token", "llama", "chat")
START_TIMEOUT = 300.0


# -- processes -----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def server_process(cmd: list[str], env: dict[str, str], health_url: str, log_path: Path) -> Iterator[subprocess.Popen]:
    """Start a server, wait until ``health_url`` answers 200, stop it (SIGTERM, then SIGKILL) afterwards."""
    import httpx

    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                sys.exit(f"{cmd[0]} exited with {proc.returncode} before it was ready:\n{tail(log_path)}")
            try:
                if httpx.get(health_url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                sys.exit(f"{cmd[0]} did not become ready in {START_TIMEOUT:.0f} s:\n{tail(log_path)}")
            time.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def tail(path: Path, lines: int = 30) -> str:
    return "".join(path.read_text(errors="replace").splitlines(keepends=True)[-lines:])


def cpu_s(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def rss_mb(pid: int, children: bool = False) -> float:
    import psutil

    process = psutil.Process(pid)
    procs = process.children(recursive=True) if children else [process]
    return sum(p.memory_info().rss for p in procs) / 2**20


# -- requests ------------------------------------------------------------------------------------
def make_prompts(tokens: int, count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(max(1, tokens - 1))) for _ in range(count)]


def sample(start: int, stamps: list[int], end: int, text: str, tokens: int | None = None, **extra: Any) -> dict:
    """One request's figures from its timestamps (ns): TTFT, client-side decode tok/s, request time.
    Decode tok/s is (n - 1) / (last content chunk - first), n = ``tokens`` when the server counted them
    (OpenAI's usage, Ollama's eval_count), else the number of content chunks (one token each)."""
    n = tokens or len(stamps)
    client = (n - 1) / ((stamps[-1] - stamps[0]) / 1e9) if n > 1 and len(stamps) > 1 else None
    return {"ttft_ms": (stamps[0] - start) / 1e6 if stamps else None, "client_tok_s": client,
            "request_ms": (end - start) / 1e6, "chunks": len(stamps), "text": text, **extra}


def stream(url: str, body: dict, parse: Callable[[str], tuple[str, dict | None]]) -> dict:
    """POST ``body`` on a fresh connection; ``parse(line)`` -> (content, final figures or None)."""
    import httpx

    with httpx.Client(timeout=httpx.Timeout(600.0)) as client:
        stamps, parts, final = [], [], None
        cpu = time.thread_time()
        start = time.perf_counter_ns()
        with client.stream("POST", url, json=body) as response:
            if response.status_code != 200:
                response.read()
                sys.exit(f"{url} answered {response.status_code}: {response.text[:500]}")
            for line in response.iter_lines():
                if not line:
                    continue
                content, done = parse(line)
                if content:
                    stamps.append(time.perf_counter_ns())
                    parts.append(content)
                if done is not None:
                    final = done
        end = time.perf_counter_ns()
        cpu = time.thread_time() - cpu
    if final is None:
        sys.exit(f"{url}: the stream ended without its final figures")
    return sample(start, stamps, end, "".join(parts), client_cpu_ms=cpu * 1e3, **final)


def steps_per_s(eval_count: int | None, eval_duration_ns: int | None) -> float | None:
    """Ollama's eval_count / eval_duration counts the first token, which the prompt's evaluation made, but
    eval_duration runs from that token to the last: (eval_count - 1) / eval_duration is decode steps per
    second, the definition of llama-server's predicted_per_second (and of the client-side figure)."""
    return (eval_count - 1) / (eval_duration_ns / 1e9) if eval_count and eval_duration_ns else None


def parse_ollama(line: str) -> tuple[str, dict | None]:
    obj = json.loads(line)
    if "error" in obj:
        sys.exit(f"slmctl serve: {obj['error']}")
    if not obj.get("done"):
        return obj.get("response", ""), None
    return obj.get("response", ""), {
        "server_tok_s": steps_per_s(obj.get("eval_count"), obj.get("eval_duration")),
        "eval_count": obj.get("eval_count"), "prompt_n": obj.get("prompt_eval_count"),
        "prompt_ms": obj.get("prompt_eval_duration", 0) / 1e6}


def parse_sse(line: str) -> tuple[str, dict | None]:
    if not line.startswith("data: "):
        return "", None
    obj = json.loads(line[6:])
    if "error" in obj:
        sys.exit(f"llama-server: {obj['error']}")
    if not obj.get("stop"):
        return obj.get("content", ""), None
    t = obj.get("timings", {})
    return obj.get("content", ""), {"server_tok_s": t.get("predicted_per_second"), "eval_count": t.get("predicted_n"),
                                    "prompt_n": t.get("prompt_n"), "prompt_ms": t.get("prompt_ms")}


def parse_ollama_chat(line: str) -> tuple[str, dict | None]:
    """``/api/chat``: as ``/api/generate``, the text in ``message.content``; decode counted from eval_count."""
    obj = json.loads(line)
    if "error" in obj:
        sys.exit(f"slmctl serve /api/chat: {obj['error']}")
    content = (obj.get("message") or {}).get("content") or ""
    if not obj.get("done"):
        return content, None
    return content, {"server_tok_s": steps_per_s(obj.get("eval_count"), obj.get("eval_duration")),
                     "eval_count": obj.get("eval_count"), "tokens": obj.get("eval_count"),
                     "prompt_n": obj.get("prompt_eval_count"), "prompt_ms": obj.get("prompt_eval_duration", 0) / 1e6}


def parse_openai(line: str) -> tuple[str, dict | None]:
    """``/v1/chat/completions`` SSE: content deltas; the final ``usage`` chunk (``stream_options.include_usage``)
    gives the tokens generated, llama-server adds its ``timings`` there (slmctl has none: server decode n/a)."""
    if not line.startswith("data: ") or line == "data: [DONE]":
        return "", None
    obj = json.loads(line[6:])
    if "error" in obj:
        sys.exit(f"/v1/chat/completions: {obj['error']}")
    content = "".join((c.get("delta") or {}).get("content") or "" for c in obj.get("choices") or [])
    if not (usage := obj.get("usage")):
        return content, None
    t = obj.get("timings") or {}
    return content, {"server_tok_s": t.get("predicted_per_second"), "eval_count": usage["completion_tokens"],
                     "tokens": usage["completion_tokens"], "prompt_n": usage.get("prompt_tokens"),
                     "prompt_ms": t.get("prompt_ms"),
                     "cached": (usage.get("prompt_tokens_details") or {}).get("cached_tokens")}
