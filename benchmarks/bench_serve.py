"""Benchmark: ``slmctl serve`` against llama.cpp's own ``llama-server``, one streaming client.

On the realistic-size random GGUF (``write_bench_gguf``: Qwen2.5-0.5B-like shapes, ~300 MB at Q4_K_M,
built once into ``--cache-dir``; its end-of-sequence token is never sampled, so every request yields
exactly ``--tokens`` tokens), four sides answer the same requests, one request at a time (never two
at once: the machine's cores are shared), with the same thread count, context (``--ctx``) and batch size
(512), flash attention off, temperature 0 and seed 1:

* ``llama-server``: llama.cpp's HTTP server, ``POST /completion`` with ``stream``, ``n_predict`` and
  ``ignore_eos`` (``-t T -tb max(T, cores) -c CTX -b 512 -ub 512 -np 1 -fa off``);
* ``slmctl serve``: the real CLI (a server process plus one runner process per model),
  ``POST /api/generate`` with ``raw: true`` and ``options`` num_predict, num_thread, num_ctx, num_batch;
* ``serve, no runner``: the same FastAPI app and uvicorn with ``ServeConfig(isolate=False)`` (the model in
  the server process), to split the runner process's cost from HTTP's;
* ``in process``: ``slmctl.engine`` in one process, the path ``slmctl run`` takes (in-process scheduler,
  ``ThreadRunner``), on the same raw prompts; no HTTP, no runner process.

Every side starts fresh, answers ``--warmup`` requests (the first one loads the model; not counted),
then ``--repetitions`` measured ones; ``--rounds`` repeats the whole, alternating the order of the
sides. With ``--interleave``, every side is started (and warmed up) first, then request i goes to each
side in turn, one request in flight at a time (``--pause`` seconds apart), so that the drift of a
shared machine hits every side alike. Each request has a prompt of exactly ``--prompt-tokens`` tokens
(BOS included; a different random sequence of one-token words each time, the same sequence on every
side, so no side reuses a cached prompt prefix). The HTTP sides share the client code: httpx, a fresh
connection per request.

Figures per side (medians): decode tok/s = decode steps per second (the first token comes from the
prompt's evaluation): as the server reports it (llama-server's ``timings.predicted_per_second``, which
is (n - 1) / time from the first token to the last; slmctl's ``(eval_count - 1) / eval_duration``, the
same thing; in process the same Stats) and as the client sees it ((content chunks - 1) / (last chunk -
first chunk); each chunk is one token on every side); TTFT = request sent -> first content chunk,
client side; prompt evaluation as the server reports it, and TTFT minus that (the request's own cost
outside the model); the whole request. Ratios are of medians, plus the median of paired per-request
ratios (request k of a round on one side against request k of the same round on the other).
Also the RSS of the ``slmctl serve`` process while idle with no model loaded (psutil), and the CPU
time that process (HTTP and the relay of chunks; the model is in its runner) spends per request and
per streamed token.

Goals: slmctl serve / llama-server decode tok/s >= 0.95, TTFT p50 <= 1.5x; slmctl serve against the
engine in process (what the runner process and HTTP cost): TTFT p50 at most +50 ms and decode tok/s
at least 0.97x (3 %); idle RSS < 150 MB. A figure whose spread is too wide to trust (CV > 10 % or a
range > 25 % of the median, as ``slmctl bench`` flags it) is marked with ``*``.

``llama-server`` is not shipped with llama-cpp-python: unless ``--llama-server PATH`` names one, the
script builds it once from the llama.cpp sources vendored in the llama-cpp-python sdist of the version
slmctl pins in pyproject.toml (``pip download --no-binary :all: --no-deps llama-cpp-python==0.3.36``):
CMake with ``-DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON -DGGML_NATIVE=ON`` (tests, examples, curl
and OpenSSL off, static libraries), target ``llama-server`` only. GGML_NATIVE is what pip's source
build of the wheel uses on this machine, so both sides run the same CPU kernels. It needs cmake and a
C++ compiler, and takes 10-15 min on 2 cores, once: the binary is kept outside the repository in
``--server-dir`` (default ``~/.cache/slmctl-bench/llama-server-<version>/bin/llama-server``, the build
log beside that folder). ``--build-only`` builds (or finds) it and the model, then exits.

Run:  .venv/bin/python benchmarks/bench_serve.py [--repetitions 5] [--prompt-tokens 64] [--tokens 128]
      [--threads T] [--rounds 2] [--interleave] [--llama-server PATH] [--json] [--output res.json]
Not part of the test suite; 2-3 minutes with the defaults here (2 cores) once llama-server is built.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, TextIO

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import base_parser, import_model, remove_home_on_sigterm, write_output  # noqa: E402
from bench_core import build_model  # noqa: E402

def _pinned_llama_cpp_python(default: str = "0.3.36") -> str:
    """The llama-cpp-python version pyproject.toml pins: llama-server is built from the same llama.cpp."""
    try:
        text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    except OSError:
        return default
    for line in text.splitlines():
        if (spec := line.strip().strip('",')).startswith("llama-cpp-python=="):
            return spec.split("==", 1)[1]
    return default


LLAMA_CPP_PYTHON_VERSION = _pinned_llama_cpp_python()
DEFAULT_SERVER_DIR = Path.home() / ".cache" / "slmctl-bench" / f"llama-server-{LLAMA_CPP_PYTHON_VERSION}"
CMAKE_FLAGS = ("-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_BUILD_TOOLS=ON",
               "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF",
               "-DBUILD_SHARED_LIBS=OFF", "-DGGML_NATIVE=ON")
BATCH = 512
SEED = 1
#: One token each in the bench model's vocabulary (``▁hello``, ...): N-1 of them + BOS = N prompt tokens.
WORDS = ("hello", "world", "the", "and", "model", "small", "test", "token", "llama", "chat")
GOALS = {"decode": 0.95, "ttft": 1.5, "overhead_ms": 50.0, "overhead_decode": 0.97, "idle_rss_mb": 150.0}
SIDES = {"llama": "llama-server", "serve": "slmctl serve", "noproc": "serve, no runner", "inproc": "in process"}
START_TIMEOUT = 300.0

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


# -- llama-server --------------------------------------------------------------------------------
def build_llama_server(dest: Path, version: str = LLAMA_CPP_PYTHON_VERSION) -> Path:
    """``dest/bin/llama-server``, built once from the llama.cpp vendored in the llama-cpp-python sdist."""
    binary = dest / "bin" / "llama-server"
    if binary.is_file() and os.access(binary, os.X_OK):
        return binary
    if not shutil.which("cmake"):
        sys.exit("building llama-server needs cmake and a C++ compiler (apt-get install cmake g++); "
                 "or pass --llama-server PATH")
    dest.parent.mkdir(parents=True, exist_ok=True)
    log_path = dest.parent / f"{dest.name}.build.log"
    print(f"building llama-server from llama-cpp-python {version}'s llama.cpp into {dest} "
          f"(several minutes, done once; log: {log_path}) ...", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="llama-server-build-") as work_name, open(log_path, "w") as log:
        work = Path(work_name)

        def step(*cmd: str) -> None:
            log.write(f"$ {' '.join(cmd)}\n")
            log.flush()
            if subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode != 0:
                log.close()
                tail = "".join(log_path.read_text(errors="replace").splitlines(keepends=True)[-30:])
                sys.exit(f"building llama-server failed at: {' '.join(cmd)}\n{tail}")

        step(sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
             f"llama-cpp-python=={version}", "-d", str(work))
        with tarfile.open(next(work.glob("llama_cpp_python-*.tar.gz"))) as tar:
            tar.extractall(work, filter="data")
        src = next(work.glob("llama_cpp_python-*/vendor/llama.cpp"))
        step("cmake", "-S", str(src), "-B", str(work / "build"), *CMAKE_FLAGS)
        step("cmake", "--build", str(work / "build"), "-j", str(os.cpu_count() or 1), "--target", "llama-server")
        staged = Path(tempfile.mkdtemp(prefix=f".{dest.name}.part-", dir=dest.parent))
        staged.chmod(0o755)
        (staged / "bin").mkdir()
        shutil.copy2(work / "build" / "bin" / "llama-server", staged / "bin" / "llama-server")
        (staged / "BUILD").write_text(f"llama-cpp-python {version} sdist: vendor/llama.cpp\n"
                                      f"cmake {' '.join(CMAKE_FLAGS)}\n")
        if dest.exists() and not binary.exists():
            shutil.rmtree(dest)  # a broken earlier attempt
        try:
            os.replace(staged, dest)
        except OSError:
            shutil.rmtree(staged, ignore_errors=True)
            if not binary.is_file():  # else another run built it meanwhile
                raise
    return binary


def llama_server_version(binary: Path) -> str:
    proc = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30)
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("version")]
    return lines[0].split(":", 1)[1].strip() if lines else "unknown"


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
                sys.exit(f"{cmd[0]} exited with {proc.returncode} before it was ready:\n{_tail(log_path)}")
            try:
                if httpx.get(health_url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                sys.exit(f"{cmd[0]} did not become ready in {START_TIMEOUT:.0f} s:\n{_tail(log_path)}")
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


def _tail(path: Path, lines: int = 30) -> str:
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


def sample(start: int, stamps: list[int], end: int, text: str, **extra: Any) -> dict:
    """One request's figures from its timestamps (ns): TTFT, client-side decode tok/s, request time."""
    client = (len(stamps) - 1) / ((stamps[-1] - stamps[0]) / 1e9) if len(stamps) > 1 else None
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


# -- the sides -----------------------------------------------------------------------------------
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
        row = running.one(prompt)
        row["warmup"] = label == "warm-up"
        server = f"{row['server_tok_s']:6.2f}" if row.get("server_tok_s") else "   n/a"
        self.log(f"    {SIDES[side]:<17} {label:<8} TTFT {row['ttft_ms']:7.1f} ms   decode {server} tok/s "
                 f"(client {row['client_tok_s']:6.2f})   {row['eval_count']} tokens   prompt {row['prompt_n']}"
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
                self.cpu_stop(running, cpu, rows[side][warm:])
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
                self.cpu_stop(r, cpu[side], rows[side][warm:])
        return rows

    def cpu_start(self, running: Side) -> float | None:
        return cpu_s(running.pid) if running.pid else None

    def cpu_stop(self, running: Side, before: float | None, measured: list[dict]) -> None:
        if running.pid and before is not None:  # slmctl serve alone: HTTP and the relay, the model is in the runner
            self.server_cpu.append({"cpu_s": cpu_s(running.pid) - before, "requests": len(measured),
                                    "tokens": sum(r["chunks"] for r in measured)})
            self.loaded_rss.append({"server_mb": rss_mb(running.pid),
                                    "runner_mb": rss_mb(running.pid, children=True)})

    # -- the sides -----------------------------------------------------------------------------
    def open(self, side: str) -> Any:
        return {"llama": self.llama, "serve": self.serve, "noproc": self.noproc, "inproc": self.inproc}[side]()

    @contextmanager
    def llama(self) -> Iterator[Side]:
        port, a = free_port(), self.args
        cmd = [str(self.binary), "-m", str(self.blob), "--host", "127.0.0.1", "--port", str(port),
               "-t", str(a.threads), "-tb", str(max(a.threads, os.cpu_count() or 1)), "-c", str(a.ctx),
               "-b", str(BATCH), "-ub", str(BATCH), "-np", "1", "-fa", "off", "--no-webui"]
        url = f"http://127.0.0.1:{port}"
        with server_process(cmd, self.env, f"{url}/health", self.tmp / "llama-server.log"):
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
                sys.exit(f"the in-process run failed (rc {proc.returncode}):\n{_tail(log_path)}")
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


# -- summary -------------------------------------------------------------------------------------
def median(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else None


def summarize_side(rows: list[dict]) -> dict:
    measured = [r for r in rows if not r["warmup"]]
    out = {key: median(measured, key) for key in ("server_tok_s", "client_tok_s", "ttft_ms", "request_ms",
                                                  "prompt_ms")}
    for r in measured:
        r["outside_ms"] = r["ttft_ms"] - r["prompt_ms"] if r.get("prompt_ms") is not None else None
        r["client_us_per_token"] = r["client_cpu_ms"] * 1e3 / r["chunks"] if r.get("client_cpu_ms") else None
    out["outside_ms"] = median(measured, "outside_ms")  # TTFT not spent evaluating the prompt
    out["client_us_per_token"] = median(measured, "client_us_per_token")
    ttfts = sorted(r["ttft_ms"] for r in measured)
    out.update(n=len(measured), ttft_min_ms=ttfts[0], ttft_max_ms=ttfts[-1],
               tokens=sorted({r["eval_count"] for r in measured}), chunks=sorted({r["chunks"] for r in measured}),
               prompt_tokens=sorted({r["prompt_n"] for r in measured}),
               client_tok_s_min=min(r["client_tok_s"] for r in measured),
               client_tok_s_max=max(r["client_tok_s"] for r in measured),
               noisy=[key for key in ("client_tok_s", "ttft_ms") if noisy([r[key] for r in measured])])
    return out


def noisy(values: list[float]) -> bool:
    """Too spread to trust (as ``slmctl bench`` flags it): CV over 10 %, or a range over 25 % of the median."""
    if len(values) < 2:
        return False
    mid = statistics.median(values)
    return statistics.stdev(values) / mid > 0.10 or (max(values) - min(values)) / mid > 0.25


def goal(value: float | None, target: float, higher_is_better: bool, strict: bool = False) -> dict:
    if value is None:
        met = None
    elif higher_is_better:
        met = value > target if strict else value >= target
    else:
        met = value < target if strict else value <= target
    sign = (">" if higher_is_better else "<") + ("" if strict else "=")
    return {"value": value, "goal": f"{sign} {target:g}", "met": met}


def paired(rows: dict[str, list[dict]], a: str, b: str, key: str) -> float | None:
    """Median over measured requests of a/b, request k of a round against request k of the same round
    (the same prompt; with --interleave, made one right after the other)."""
    def keyed(side: str) -> dict[tuple[int, int], float]:
        out, seen = {}, {}
        for r in rows[side]:
            if not r["warmup"]:
                k = seen[r["round"]] = seen.get(r["round"], -1) + 1
                out[(r["round"], k)] = r[key]
        return out

    xa, xb = keyed(a), keyed(b)
    ratios = [xa[k] / xb[k] for k in xa if k in xb and xa[k] and xb[k]]
    return statistics.median(ratios) if ratios else None


def compare(s: dict, rows: dict[str, list[dict]]) -> dict:
    llama, serve, noproc, inproc = s["llama"], s["serve"], s["noproc"], s["inproc"]

    def ratio(a: dict, b: dict, key: str) -> float | None:
        return a[key] / b[key] if a.get(key) and b.get(key) else None

    return {
        "serve_vs_llama": {"decode_server": ratio(serve, llama, "server_tok_s"),
                           "decode_client": ratio(serve, llama, "client_tok_s"),
                           "ttft": ratio(serve, llama, "ttft_ms"), "request": ratio(serve, llama, "request_ms"),
                           "decode_client_paired": paired(rows, "serve", "llama", "client_tok_s"),
                           "ttft_paired": paired(rows, "serve", "llama", "ttft_ms")},
        "inproc_vs_llama": {"decode_server": ratio(inproc, llama, "server_tok_s"),
                            "decode_client": ratio(inproc, llama, "client_tok_s"),
                            "ttft": ratio(inproc, llama, "ttft_ms")},
        "serve_vs_inproc": {"ttft_ms": serve["ttft_ms"] - inproc["ttft_ms"],
                            "outside_ms": serve["outside_ms"] - inproc["outside_ms"],
                            "request_ms": serve["request_ms"] - inproc["request_ms"],
                            "decode_server": ratio(serve, inproc, "server_tok_s"),
                            "decode_client": ratio(serve, inproc, "client_tok_s"),
                            "decode_client_paired": paired(rows, "serve", "inproc", "client_tok_s")},
        "runner_process": {"ttft_ms": serve["ttft_ms"] - noproc["ttft_ms"],
                           "decode_server": ratio(serve, noproc, "server_tok_s"),
                           "decode_client": ratio(serve, noproc, "client_tok_s")},
        "http_serving": {"ttft_ms": noproc["ttft_ms"] - inproc["ttft_ms"],
                         "decode_server": ratio(noproc, inproc, "server_tok_s"),
                         "decode_client": ratio(noproc, inproc, "client_tok_s")},
    }


def goals(ratios: dict, idle_rss: float | None) -> dict:
    vs, over = ratios["serve_vs_llama"], ratios["serve_vs_inproc"]
    return {
        "decode_vs_llama_server": goal(vs["decode_server"], GOALS["decode"], True),
        "decode_vs_llama_client": goal(vs["decode_client"], GOALS["decode"], True),
        "ttft_vs_llama": goal(vs["ttft"], GOALS["ttft"], False),
        "overhead_ttft_ms": goal(over["ttft_ms"], GOALS["overhead_ms"], False),
        "overhead_decode_server": goal(over["decode_server"], GOALS["overhead_decode"], True),
        "overhead_decode_client": goal(over["decode_client"], GOALS["overhead_decode"], True),
        "idle_rss_mb": goal(idle_rss, GOALS["idle_rss_mb"], False, strict=True),
    }


def _f(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def _ok(g: dict) -> str:
    return {True: "ok", False: "MISSED", None: "n/a"}[g["met"]]


def report(result: dict) -> str:
    c, s, r, g = result["config"], result["summary"], result["ratios"], result["goals"]
    lines = ["", f"medians of {c['repetitions'] * c['rounds']} requests per side "
             f"(prompt {c['prompt_tokens']} tokens, {c['tokens']} generated, {c['threads']} threads):",
             f"  {'':<17} {'decode tok/s':>13} {'decode tok/s':>13} {'TTFT p50':>9} {'TTFT min-max':>15} "
             f"{'prompt eval':>12} {'TTFT-prompt':>12} {'request':>9}",
             f"  {'':<17} {'(server)':>13} {'(client)':>13} {'ms':>9} {'ms':>15} {'ms':>12} {'ms':>12} {'ms':>9}"]
    for key, name in SIDES.items():
        x = s[key]
        mark = {k: "*" if k in x["noisy"] else " " for k in ("client_tok_s", "ttft_ms")}
        lines.append(f"  {name:<17} {_f(x['server_tok_s'], '.2f'):>13} {_f(x['client_tok_s'], '.2f'):>12}"
                     f"{mark['client_tok_s']} {_f(x['ttft_ms'], '.1f'):>8}{mark['ttft_ms']} "
                     f"{x['ttft_min_ms']:>7.1f}-{x['ttft_max_ms']:<7.1f} "
                     f"{_f(x['prompt_ms'], '.1f'):>12} {_f(x['outside_ms'], '.1f'):>12} "
                     f"{_f(x['request_ms'], '.0f'):>9}")
    lines.append("  (TTFT-prompt: p50 of TTFT minus the prompt evaluation the server reports: the request's own "
                 "cost outside the model)")
    if any(s[key]["noisy"] for key in SIDES):
        lines.append("  * spread too wide to trust (CV > 10 % or range > 25 % of the median): "
                     "more --repetitions / --rounds, or a quieter machine")
    vs, ip = r["serve_vs_llama"], r["inproc_vs_llama"]
    lines += ["", "slmctl serve / llama-server:",
              f"  decode tok/s (server timings) {_f(vs['decode_server'], '.3f')}   goal >= {GOALS['decode']}: "
              f"{_ok(g['decode_vs_llama_server'])}",
              f"  decode tok/s (client side)    {_f(vs['decode_client'], '.3f')}   goal >= {GOALS['decode']}: "
              f"{_ok(g['decode_vs_llama_client'])}",
              f"  TTFT p50                      {_f(vs['ttft'], '.3f')}   goal <= {GOALS['ttft']}: "
              f"{_ok(g['ttft_vs_llama'])}",
              f"  (median of paired per-request ratios: decode {_f(vs['decode_client_paired'], '.3f')} client, "
              f"TTFT {_f(vs['ttft_paired'], '.3f')})",
              f"  (in process / llama-server: decode {_f(ip['decode_server'], '.3f')} server, "
              f"{_f(ip['decode_client'], '.3f')} client; TTFT {_f(ip['ttft'], '.3f')})"]
    o, rp, hs = r["serve_vs_inproc"], r["runner_process"], r["http_serving"]
    lines += ["", "slmctl serve vs the same engine in process (what a request pays for HTTP + the runner process):",
              f"  TTFT p50        {o['ttft_ms']:+7.1f} ms   goal <= +{GOALS['overhead_ms']:g} ms: "
              f"{_ok(g['overhead_ttft_ms'])}   (TTFT-prompt: {o['outside_ms']:+.1f} ms)",
              f"  decode tok/s    {_f(o['decode_server'], '.3f')} (server timings)   "
              f"goal >= {GOALS['overhead_decode']}: {_ok(g['overhead_decode_server'])}",
              f"                  {_f(o['decode_client'], '.3f')} (client side)      "
              f"goal >= {GOALS['overhead_decode']}: {_ok(g['overhead_decode_client'])}",
              f"                  {_f(o['decode_client_paired'], '.3f')} "
              "(client side, median of paired per-request ratios)",
              f"  request p50     {o['request_ms']:+7.1f} ms",
              f"  of which HTTP + serving layer (serve, no runner - in process): TTFT {hs['ttft_ms']:+.1f} ms, "
              f"decode {_f(hs['decode_server'], '.3f')} server / {_f(hs['decode_client'], '.3f')} client",
              f"  of which the runner process (serve - serve, no runner):        TTFT {rp['ttft_ms']:+.1f} ms, "
              f"decode {_f(rp['decode_server'], '.3f')} server / {_f(rp['decode_client'], '.3f')} client"]
    rss = result["rss"]
    loaded = rss["loaded"][-1] if rss["loaded"] else None
    lines += ["", f"slmctl serve idle RSS, no model loaded: {_f(rss['idle_mb'], '.1f')} MB   "
                  f"goal < {GOALS['idle_rss_mb']:g} MB: {_ok(g['idle_rss_mb'])}"]
    if loaded:
        lines.append(f"  (after the requests: server process {loaded['server_mb']:.1f} MB, "
                     f"runner process {loaded['runner_mb']:.1f} MB)")
    if "serve_process_cpu" in result:
        cpu = result["serve_process_cpu"]
        lines.append(f"  slmctl serve process CPU (HTTP + relay, runner excluded): {cpu['ms_per_request']:.0f} ms per "
                     f"request, {cpu['us_per_token']:.0f} us per streamed token")
    clients = {name: s[key]["client_us_per_token"] for key, name in SIDES.items() if s[key]["client_us_per_token"]}
    if clients:
        lines.append("  benchmark client CPU per streamed token (httpx): "
                     + ", ".join(f"{name} {v:.0f} us" for name, v in clients.items()))
    checks = result["checks"]
    same = ", ".join(f"{name} {count}" for name, count in checks["same_text"].items())
    lines += ["", f"checks: tokens per request {checks['tokens']}; prompt tokens {checks['prompt_tokens']} "
                  "(llama-server counts the tokens it evaluated: it reuses the BOS cached from the previous request);",
              f"        requests whose text equals llama-server's: {same}"]
    return "\n".join(lines)


# -- main ----------------------------------------------------------------------------------------
def parse_args() -> argparse.Namespace:
    import psutil

    p = base_parser(__doc__.split("\n\n")[0], rounds=2)
    p.add_argument("--repetitions", type=int, default=5, help="measured requests per side and round")
    p.add_argument("--warmup", type=int, default=1, help="requests before those (the first loads the model)")
    p.add_argument("--prompt-tokens", type=int, default=64, help="prompt length in tokens, BOS included")
    p.add_argument("--threads", type=int, default=psutil.cpu_count(logical=False) or os.cpu_count(),
                   help="decode threads on every side (default: physical cores)")
    p.add_argument("--ctx", type=int, default=4096, help="context size on every side")
    p.add_argument("--sides", default=",".join(SIDES), help="comma-separated subset of: " + ", ".join(SIDES))
    p.add_argument("--interleave", action="store_true",
                   help="start every side first, then send request i to each side in turn (one request in flight "
                        "at a time): drift on a shared machine hits all sides alike")
    p.add_argument("--pause", type=float, default=0.3, help="seconds between two requests with --interleave")
    p.add_argument("--llama-server", type=Path, help="an existing llama-server binary (else built once)")
    p.add_argument("--server-dir", type=Path, default=DEFAULT_SERVER_DIR,
                   help="where the built llama-server is kept [default: %(default)s]")
    p.add_argument("--build-only", action="store_true", help="build (or find) llama-server and the model, then exit")
    p.add_argument("--json", action="store_true", help="print the results as JSON (progress goes to stderr)")
    args = p.parse_args()
    args.sides = [side.strip() for side in args.sides.split(",") if side.strip()]
    if unknown := set(args.sides) - set(SIDES):
        p.error(f"unknown side(s): {', '.join(sorted(unknown))}")
    if args.repetitions < 1 or args.tokens < 2 or args.prompt_tokens < 2:
        p.error("--repetitions must be >= 1, --tokens and --prompt-tokens >= 2")
    return args


def main() -> None:
    args = parse_args()
    remove_home_on_sigterm()
    progress = sys.stderr if args.json else sys.stdout
    model = build_model(args.cache_dir, "Q4_K_M")
    binary = args.llama_server.resolve() if args.llama_server else build_llama_server(args.server_dir)
    if not binary.is_file():
        sys.exit(f"no llama-server at {binary}")
    version = llama_server_version(binary)
    if args.build_only:
        print(f"model {model}\nllama-server {binary} (version {version})", file=progress)
        return
    with tempfile.TemporaryDirectory(prefix="slmctl-bench-serve-") as tmp_name:
        tmp = Path(tmp_name)
        env, info = import_model(tmp, model, "bench")
        blob = tmp / "home" / "models" / "blobs" / info["files"][0]["digest"].replace(":", "-")
        os.sync()  # the import's writes are on disk before anything is timed,
        with open(blob, "rb") as f:  # and the model is in the page cache for every side alike
            while f.read(1 << 24):
                pass
        print(f"model {model.name} ({blob.stat().st_size / 1e6:.0f} MB, Q4_K_M), prompt {args.prompt_tokens} tokens, "
              f"{args.tokens} generated, {args.threads} threads, n_ctx {args.ctx}, n_batch {BATCH}, "
              f"temperature 0, seed {SEED}", file=progress)
        print(f"llama-server {binary} (version {version})", file=progress)
        print(f"{args.rounds} round(s) x ({args.warmup} warm-up + {args.repetitions} requests) per side, "
              "sides one at a time, one streaming client", file=progress, flush=True)
        bench = Bench(args, env, blob, binary, tmp, progress)
        per_round = args.warmup + args.repetitions
        rows: dict[str, list[dict]] = {side: [] for side in args.sides}
        for rnd in range(args.rounds):
            prompts = make_prompts(args.prompt_tokens, per_round, seed=rnd)
            order = args.sides if rnd % 2 == 0 else args.sides[::-1]
            bench.log(f"  round {rnd + 1}{' (interleaved)' if args.interleave else ''}: "
                      f"{', '.join(SIDES[s] for s in order)}")
            got = (bench.interleaved if args.interleave else bench.sequential)(order, prompts)
            for side, side_rows in got.items():
                for row in side_rows:
                    row["round"] = rnd + 1
                rows[side] += side_rows
    summary = {side: summarize_side(r) for side, r in rows.items()}
    config = {"model": model.name, "quant": "Q4_K_M", "prompt_tokens": args.prompt_tokens, "tokens": args.tokens,
              "threads": args.threads, "ctx": args.ctx, "batch": BATCH, "repetitions": args.repetitions,
              "warmup": args.warmup, "rounds": args.rounds, "llama_server": str(binary),
              "llama_server_version": version, "llama_cpp_python": LLAMA_CPP_PYTHON_VERSION}
    idle = statistics.median(bench.idle_rss) if bench.idle_rss else None
    result: dict[str, Any] = {"config": config, "samples": rows, "summary": summary,
                              "rss": {"idle_mb": idle, "idle_samples_mb": bench.idle_rss, "loaded": bench.loaded_rss}}
    if bench.server_cpu:
        cpu = sum(c["cpu_s"] for c in bench.server_cpu)
        result["serve_process_cpu"] = {
            "ms_per_request": cpu * 1e3 / sum(c["requests"] for c in bench.server_cpu),
            "us_per_token": cpu * 1e6 / sum(c["tokens"] for c in bench.server_cpu), "samples": bench.server_cpu}
    if set(SIDES) <= set(rows):
        result["ratios"] = compare(summary, rows)
        result["goals"] = goals(result["ratios"], idle)
        texts = {side: [r["text"].strip() for r in rows[side]] for side in rows}
        result["checks"] = {
            "tokens": sorted({t for x in summary.values() for t in x["tokens"]}),
            "prompt_tokens": sorted({t for x in summary.values() for t in x["prompt_tokens"]}),
            "same_text": {SIDES[side]: f"{sum(a == b for a, b in zip(texts[side], texts['llama']))}/{len(texts[side])}"
                          for side in SIDES if side != "llama"}}
    write_output(args.output, result)
    if args.json:
        print(json.dumps(result, indent=2))
    elif "ratios" in result:
        print(report(result))
    else:
        for side, x in summary.items():
            print(f"{SIDES[side]:<17} decode {_f(x['server_tok_s'], '.2f')} tok/s "
                  f"(client {_f(x['client_tok_s'], '.2f')}) TTFT p50 {_f(x['ttft_ms'], '.1f')} ms")


if __name__ == "__main__":
    main()
