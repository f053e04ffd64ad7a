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
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, TextIO

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import base_parser, import_model, remove_home_on_sigterm, write_output  # noqa: E402
from bench_core import build_model  # noqa: E402

from _llama_server import (  # noqa: E402
    DEFAULT_SERVER_DIR,
    LLAMA_CPP_PYTHON_VERSION,
    build_llama_server,
    llama_server_version,
)
from _serve_client import (  # noqa: E402
    cpu_s,
    free_port,
    make_prompts,
    parse_ollama,
    parse_sse,
    rss_mb,
    sample,
    server_process,
    stream,
    tail,
)
from _serve_report import SIDES, figure, compare, goals, report, summarize_side  # noqa: E402


BATCH = 512
SEED = 1

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
            print(f"{SIDES[side]:<17} decode {figure(x['server_tok_s'], '.2f')} tok/s "
                  f"(client {figure(x['client_tok_s'], '.2f')}) TTFT p50 {figure(x['ttft_ms'], '.1f')} ms")


if __name__ == "__main__":
    main()
