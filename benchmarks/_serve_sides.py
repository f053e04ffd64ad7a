"""The sides of ``bench_serve.py``: each one a server (or process) started fresh and a function that makes one
timed request with a prompt, run one side after the other or interleaved request by request.

Every side has its own server process, also the sides that could share one (``/api/chat`` and ``/v1`` of
``slmctl serve``, schema on and off): a server that has just evaluated a prompt reuses it from its cache,
which would make the second side's TTFT (and text) not comparable with the first's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, TextIO

from _serve_client import (
    cpu_s,
    free_port,
    parse_ollama,
    parse_ollama_chat,
    parse_openai,
    parse_sse,
    rss_mb,
    sample,
    server_process,
    stream,
    tail,
)
from _serve_report import SIDES

BATCH = 512
SEED = 1
CHAT_MODEL = "bench-chat"  # the GGUF with PARAMETER num_thread/num_ctx/num_batch: /v1 cannot send them
ONNX_MODEL = "bench-onnx-chat"  # the ONNX bench model with PARAMETER num_thread


def schema_for(tokens: int) -> dict:
    """An object holding an array of at least ``tokens`` strings (each one takes a token or more): a grammar
    that cannot end before ``max_tokens``, so schema on and off generate the same number of tokens."""
    return {"type": "object", "properties": {"items": {"type": "array", "items": {"type": "string"},
                                                       "minItems": min(tokens, 1000)}}, "required": ["items"]}


SERVE_NO_RUNNER = r"""
import json, os, sys
cfg = json.loads(sys.argv[1])
from slmctl.server.app import serve
from slmctl.server.config import ServeConfig
from slmctl.settings import Settings
serve(ServeConfig(host="127.0.0.1", port=cfg["port"], isolate=False), Settings.from_env(), os.environ,
      log_level="info")
"""

IN_PROCESS = r"""
import json, sys, time
cfg = json.loads(sys.argv[1])
from slmctl.backends.base import GenerateRequest
from slmctl.chat import in_process_scheduler
from slmctl.engine import Engine
from slmctl.options import build_options
from slmctl.settings import Settings
from slmctl.store import ModelStore
engine = Engine(ModelStore(Settings.from_env().models_dir), runtime_here=True)
manifest = engine.manifest(cfg["model"])
load, sampling = build_options(engine.defaults(manifest).params, cfg["options"])
plan = engine.plan(manifest, load)
scheduler = in_process_scheduler()  # what `slmctl run` uses: the model in this process, a ThreadRunner
for line in sys.stdin:  # one JSON prompt per line, sent when the parent wants the request made
    prompt = json.loads(line)
    start = time.perf_counter_ns()
    generation = scheduler.generate(plan, GenerateRequest(sampling, prompt=prompt))
    stamps, parts = [], []
    for chunk in generation:
        if chunk:
            stamps.append(time.perf_counter_ns())
            parts.append(chunk)
    end = time.perf_counter_ns()
    s = generation.stats
    print("RESULT", json.dumps({"start": start, "stamps": stamps, "end": end, "text": "".join(parts),
                      "server_tok_s": (s.eval_count - 1) / (s.eval_duration / 1e9) if s.eval_duration else None,
                      "eval_count": s.eval_count, "prompt_n": s.prompt_eval_count,
                      "prompt_ms": s.prompt_eval_duration / 1e6}), flush=True)
scheduler.close()
"""


class Side:
    """One running side: ``one(prompt)`` makes one request; ``pid``: the slmctl serve process, if that."""

    def __init__(self, one: Callable[[str], dict], pid: int | None = None) -> None:
        self.one, self.pid = one, pid


class Bench:
    def __init__(self, args: argparse.Namespace, env: dict[str, str], blob: Path, binary: Path, tmp: Path,
                 progress: TextIO) -> None:
        self.args, self.env, self.blob, self.binary, self.tmp, self.out = args, env, blob, binary, tmp, progress
        self.options = {"temperature": 0, "seed": SEED, "num_predict": args.tokens, "num_thread": args.threads,
                        "num_ctx": args.ctx, "num_batch": BATCH}
        self.idle_rss: list[float] = []
        self.loaded_rss: list[dict] = []
        #: CPU time of the slmctl serve process itself (not its runner) over the measured requests.
        self.server_cpu: list[dict] = []

    def log(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def request(self, side: str, running: Side, prompt: str, label: str) -> dict:
        before = cpu_s(running.pid) if running.pid else None
        row = running.one(prompt)
        if before is not None:  # the slmctl serve process (runner excluded) during this request alone
            row["server_cpu_ms"] = (cpu_s(running.pid) - before) * 1e3
        row["warmup"] = label == "warm-up"
        server = f"{row['server_tok_s']:6.2f}" if row.get("server_tok_s") else "   n/a"
        client = f"{row['client_tok_s']:6.2f}" if row.get("client_tok_s") else "   n/a"
        self.log(f"    {SIDES[side]:<23} {label:<8} TTFT {row['ttft_ms']:7.1f} ms   decode {server} tok/s "
                 f"(client {client})   {row['eval_count']} tokens   prompt {row['prompt_n']}"
                 f"   request {row['request_ms']:6.0f} ms")
        return row

    # -- a round -------------------------------------------------------------------------------
    def sequential(self, order: list[str], prompts: list[str]) -> dict[str, list[dict]]:
        """Each side in turn: start it, warm-up + measured requests, stop it."""
        rows: dict[str, list[dict]] = {}
        warm = self.args.warmup
        for side in order:
            with self.open(side) as running:
                rows[side] = [self.request(side, running, p, "warm-up") for p in prompts[:warm]]
                cpu = self.cpu_start(running)
                rows[side] += [self.request(side, running, p, f"req {i + 1}") for i, p in enumerate(prompts[warm:])]
                self.cpu_stop(side, running, cpu, rows[side][warm:])
        return rows

    def interleaved(self, order: list[str], prompts: list[str]) -> dict[str, list[dict]]:
        """All sides started and warmed up (one at a time), then request i goes to every side in turn
        (the order rotating), one request in flight at any moment, with a pause between requests."""
        rows: dict[str, list[dict]] = {side: [] for side in order}
        warm = self.args.warmup
        with ExitStack() as stack:
            running = {}
            for side in order:
                running[side] = stack.enter_context(self.open(side))
                rows[side] += [self.request(side, running[side], p, "warm-up") for p in prompts[:warm]]
            cpu = {side: self.cpu_start(r) for side, r in running.items()}
            for i, prompt in enumerate(prompts[warm:]):
                turn = order[i % len(order):] + order[:i % len(order)]
                for side in turn:
                    time.sleep(self.args.pause)  # llama.cpp's threads stop polling; the machine settles
                    rows[side].append(self.request(side, running[side], prompt, f"req {i + 1}"))
            for side, r in running.items():
                self.cpu_stop(side, r, cpu[side], rows[side][warm:])
        return rows

    def cpu_start(self, running: Side) -> float | None:
        return cpu_s(running.pid) if running.pid else None

    def cpu_stop(self, side: str, running: Side, before: float | None, measured: list[dict]) -> None:
        if side == "serve" and before is not None:  # HTTP and the relay: the model is in the runner
            self.server_cpu.append({"cpu_s": cpu_s(running.pid) - before, "requests": len(measured),
                                    "tokens": sum(r["chunks"] for r in measured)})
            self.loaded_rss.append({"server_mb": rss_mb(running.pid),
                                    "runner_mb": rss_mb(running.pid, children=True)})

    # -- servers -------------------------------------------------------------------------------
    @contextmanager
    def llama_server(self, side: str, *extra: str) -> Iterator[tuple[str, None]]:
        """llama-server as slmctl loads the model."""
        port, a = free_port(), self.args
        cmd = [str(self.binary), "-m", str(self.blob), "--host", "127.0.0.1", "--port", str(port),
               "-t", str(a.threads), "-tb", str(max(a.threads, os.cpu_count() or 1)), "-c", str(a.ctx),
               "-b", str(BATCH), "-ub", str(BATCH), "-np", "1", "-fa", "off", "--no-webui", *extra]
        url = f"http://127.0.0.1:{port}"
        with server_process(cmd, self.env, f"{url}/health", self.tmp / f"{side}.log"):
            yield url, None

    @contextmanager
    def slmctl_server(self, name: str) -> Iterator[tuple[str, int]]:
        """``slmctl serve``, the real CLI (a server process, a runner process per model)."""
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "slmctl", "serve", "--host", f"127.0.0.1:{port}"]
        with server_process(cmd, self.env, f"{url}/api/health", self.tmp / f"{name}.log") as proc:
            yield url, proc.pid

    # -- the sides -----------------------------------------------------------------------------
    def open(self, side: str) -> Any:
        if side in ("llama", "serve", "noproc", "inproc"):
            return {"llama": self.llama, "serve": self.serve, "noproc": self.noproc, "inproc": self.inproc}[side]()
        return self.chat_side(side)

    def v1_body(self, model: str, prompt: str, schema: dict | None) -> dict:
        """The same OpenAI request for every server: greedy, ``max_tokens`` (the model never samples EOS)."""
        body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": self.args.tokens,
                "temperature": 0, "seed": SEED, "stream": True, "stream_options": {"include_usage": True}}
        if schema is not None:
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "items", "schema": schema}}
        return body

    @contextmanager
    def chat_side(self, side: str) -> Iterator[Side]:
        """``chat``: slmctl /api/chat; ``v1``, ``v1-json``: slmctl /v1 (without, with the schema);
        ``llama-v1``, ``llama-v1-json``: llama-server's /v1; ``onnx-v1``, ``onnx-v1-json``: slmctl /v1, ONNX."""
        schema = schema_for(self.args.tokens) if side.endswith("-json") else None
        model = ONNX_MODEL if side.startswith("onnx") else CHAT_MODEL
        # llama-server --no-jinja: its built-in ChatML template (its jinja path, a generic chat handler here,
        # fails to build the response_format grammar: "Failed to initialize samplers")
        server = self.llama_server(side, "--no-jinja") if side.startswith("llama") else self.slmctl_server(side)
        with server as (url, pid):
            if side == "chat":  # only what /v1 sends too: the load options come from the model's PARAMETERs
                options = {"temperature": 0, "seed": SEED, "num_predict": self.args.tokens}
                yield Side(lambda p: stream(f"{url}/api/chat", {
                    "model": model, "messages": [{"role": "user", "content": p}], "stream": True,
                    "options": options}, parse_ollama_chat), pid)
            else:
                yield Side(lambda p: stream(f"{url}/v1/chat/completions", self.v1_body(model, p, schema),
                                            parse_openai), pid)

    @contextmanager
    def llama(self) -> Iterator[Side]:
        a = self.args
        with self.llama_server("llama") as (url, _):
            yield Side(lambda p: stream(f"{url}/completion", {
                "prompt": p, "n_predict": a.tokens, "ignore_eos": True, "temperature": 0, "seed": SEED,
                "stream": True}, parse_sse))

    @contextmanager
    def _ollama(self, side: str, cmd: list[str], port: int) -> Iterator[Side]:
        url = f"http://127.0.0.1:{port}"
        body = {"model": "bench", "raw": True, "stream": True, "options": self.options}
        with server_process(cmd, self.env, f"{url}/api/health", self.tmp / f"{side}.log") as proc:
            if side == "serve":
                time.sleep(1.0)  # let start-up settle
                self.idle_rss.append(rss_mb(proc.pid))
            yield Side(lambda p: stream(f"{url}/api/generate", {**body, "prompt": p}, parse_ollama),
                       proc.pid if side == "serve" else None)

    def serve(self) -> Any:
        port = free_port()
        return self._ollama("serve", [sys.executable, "-m", "slmctl", "serve", "--host", f"127.0.0.1:{port}"], port)

    def noproc(self) -> Any:
        port = free_port()
        return self._ollama("noproc", [sys.executable, "-c", SERVE_NO_RUNNER, json.dumps({"port": port})], port)

    @contextmanager
    def inproc(self) -> Iterator[Side]:
        """A child process that loads the model with slmctl.engine and answers one prompt per line on its
        stdin (the same prompts, as JSON), timing each request itself."""
        cfg = {"model": "bench", "options": self.options}
        log_path = self.tmp / "inproc.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen([sys.executable, "-c", IN_PROCESS, json.dumps(cfg)], env=self.env,
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True)
        assert proc.stdin is not None and proc.stdout is not None

        def one(prompt: str) -> dict:
            proc.stdin.write(json.dumps(prompt) + "\n")
            proc.stdin.flush()
            line = proc.stdout.readline()
            while line and not line.startswith("RESULT "):  # anything else a library printed
                line = proc.stdout.readline()
            if not line:
                proc.wait()
                sys.exit(f"the in-process run failed (rc {proc.returncode}):\n{tail(log_path)}")
            r = json.loads(line[len("RESULT "):])
            return sample(r["start"], r["stamps"], r["end"], r["text"], server_tok_s=r["server_tok_s"],
                          eval_count=r["eval_count"], prompt_n=r["prompt_n"], prompt_ms=r["prompt_ms"])

        try:
            yield Side(one)
        finally:
            proc.stdin.close()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
