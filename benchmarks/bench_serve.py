"""Benchmark: ``slmctl serve`` against llama.cpp's own ``llama-server``, one streaming client.

On the realistic-size random GGUF (``write_bench_gguf``: Qwen2.5-0.5B-like shapes, ~300 MB at Q4_K_M,
built once into ``--cache-dir``; its end-of-sequence token is never sampled, so every request yields
exactly ``--tokens`` tokens), the sides answer the same requests, one request at a time (never two
at once: the machine's cores are shared), with the same thread count, context (``--ctx``) and batch size
(512), flash attention off, temperature 0 and seed 1. Four send the raw prompt:

* ``llama-server``: llama.cpp's HTTP server, ``POST /completion`` with ``stream``, ``n_predict`` and
  ``ignore_eos`` (``-t T -tb max(T, cores) -c CTX -b 512 -ub 512 -np 1 -fa off --no-jinja``);
* ``slmctl serve``: the real CLI (a server process plus one runner process per model),
  ``POST /api/generate`` with ``raw: true`` and ``options`` num_predict, num_thread, num_ctx, num_batch;
* ``serve, no runner``: the same FastAPI app and uvicorn with ``ServeConfig(isolate=False)`` (the model in
  the server process), to split the runner process's cost from HTTP's;
* ``in process``: ``slmctl.engine`` in one process, the path ``slmctl run`` takes (in-process scheduler,
  ``ThreadRunner``), on the same raw prompts; no HTTP, no runner process.

Seven send it as the user message of a streamed chat (``_serve_sides.py``, ``_serve_chat.py``), to the
model ``bench-chat`` (``slmctl create``: the bench GGUF with PARAMETER num_thread, num_ctx, num_batch,
the load options a /v1 request cannot carry; the chat sides send only what /v1 sends too):

* ``chat``: ``slmctl serve``, ``POST /api/chat`` (``options``: temperature, seed, num_predict);
* ``v1``: ``slmctl serve``, ``POST /v1/chat/completions`` (max_tokens, temperature 0, seed,
  ``stream_options.include_usage``); ``llama-v1``: llama-server's own, the same body (its ``--no-jinja``
  ChatML template: its jinja path fails to build a response_format grammar for this model);
* ``v1-json``, ``llama-v1-json``: those two with ``response_format`` json_schema (``schema_for``: an
  object holding an array of at least ``--tokens`` strings, so it cannot end before max_tokens);
  ``onnx-v1``, ``onnx-v1-json``: slmctl /v1 without and with it on the ONNX bench model
  (``write_bench_onnx_genai``, as ``bench_onnx.py``; onnxruntime-genai's guidance enforces the schema).

Every side has its own server process (a server reuses a prompt it has just evaluated from its cache)
and gets the same prompts.

There decode tok/s is client side on every side: (tokens - 1) / (last content chunk - first), the tokens
counted by the server (``usage.completion_tokens``, ``eval_count``): with a schema, the tokens actually
generated. Printed: slmctl /v1 / slmctl /api/chat (goal: within 3 %), slmctl /v1 / llama-server /v1,
and per runtime the decode ratio schema on / off (grammar-constrained decoding's cost) and its TTFT.

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
log beside that folder). ``--build-only`` builds (or finds) it and the models, then exits.

Run:  .venv/bin/python benchmarks/bench_serve.py [--repetitions 5] [--prompt-tokens 64] [--tokens 128]
      [--threads T] [--rounds 2] [--interleave] [--sides a,b] [--quick] [--llama-server PATH] [--json]
Not part of the test suite; ~7 minutes with the defaults here (2 cores, 11 sides) once llama-server is
built, about 2 with ``--quick`` (1 round, 3 requests of 64 tokens per side, interleaved).

Concurrent streams (the batching benchmark) are ``bench_streams.py``; ``--clients 1,4,8`` here runs it
with the options it takes (``--rounds``, ``--requests``, ``--tokens``, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import base_parser, import_model, remove_home_on_sigterm, slmctl, write_output  # noqa: E402
from bench_core import build_model  # noqa: E402

from _llama_server import (  # noqa: E402
    DEFAULT_SERVER_DIR,
    LLAMA_CPP_PYTHON_VERSION,
    build_llama_server,
    llama_server_version,
)
from _serve_chat import chat_report, chat_results  # noqa: E402
from _serve_client import make_prompts  # noqa: E402
from _serve_report import RAW_SIDES, SIDES, compare, goals, report, summarize_side  # noqa: E402
from _serve_sides import BATCH, CHAT_MODEL, ONNX_MODEL, SEED, Bench, schema_for  # noqa: E402

QUICK = {"rounds": 1, "repetitions": 3, "tokens": 64, "interleave": True}


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
    p.add_argument("--quick", action="store_true",
                   help="a couple of minutes: " + " ".join(f"--{k}" + ("" if v is True else f" {v}")
                                                            for k, v in QUICK.items()) + " (unless given)")
    p.add_argument("--llama-server", type=Path, help="an existing llama-server binary (else built once)")
    p.add_argument("--server-dir", type=Path, default=DEFAULT_SERVER_DIR,
                   help="where the built llama-server is kept [default: %(default)s]")
    p.add_argument("--build-only", action="store_true", help="build (or find) llama-server and the models, then exit")
    p.add_argument("--json", action="store_true", help="print the results as JSON (progress goes to stderr)")
    p.add_argument("--clients", metavar="N,N,...",
                   help="N concurrent streams instead of one client: runs bench_streams.py (slmctl serve --parallel N "
                        "against llama-server -np N) with the options it takes, e.g. --clients 1,4,8 --rounds 3")
    args = p.parse_args()
    if args.quick:  # other defaults; what the command line gives still wins
        p.set_defaults(**QUICK)
        args = p.parse_args()
    args.sides = [side.strip() for side in args.sides.split(",") if side.strip()]
    if unknown := set(args.sides) - set(SIDES):
        p.error(f"unknown side(s): {', '.join(sorted(unknown))}")
    if args.repetitions < 1 or args.tokens < 2 or args.prompt_tokens < 2:
        p.error("--repetitions must be >= 1, --tokens and --prompt-tokens >= 2")
    return args


def create(env: dict[str, str], tmp: Path, name: str, base: str, params: dict[str, int]) -> None:
    """``slmctl create NAME`` FROM ``base`` with PARAMETERs: the load options /v1 requests cannot carry."""
    modelfile = tmp / f"{name}.Modelfile"
    modelfile.write_text(f"FROM {base}\n" + "".join(f"PARAMETER {k} {v}\n" for k, v in params.items()))
    proc = slmctl(env, "create", name, "-f", str(modelfile), "--quiet")
    if proc.returncode != 0:
        sys.exit(f"slmctl create {name} failed:\n{proc.stderr[-2000:]}")


def main() -> None:
    if any(arg == "--clients" or arg.startswith("--clients=") for arg in sys.argv[1:]):
        import bench_streams  # N concurrent streams: the batching benchmark, with its own options

        bench_streams.main()
        return
    args = parse_args()
    remove_home_on_sigterm()
    progress = sys.stderr if args.json else sys.stdout
    model = build_model(args.cache_dir, "Q4_K_M")
    onnx = any(side.startswith("onnx") for side in args.sides)
    if onnx:
        from bench_onnx import build_model as build_onnx_model

        onnx_model = build_onnx_model(args.cache_dir)
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
        create(env, tmp, CHAT_MODEL, "bench", {"num_thread": args.threads, "num_ctx": args.ctx, "num_batch": BATCH})
        if onnx:
            import_model(tmp, onnx_model, "bench-onnx")
            create(env, tmp, ONNX_MODEL, "bench-onnx", {"num_thread": args.threads})
        os.sync()  # the import's writes are on disk before anything is timed,
        for path in (tmp / "home" / "models" / "blobs").iterdir():
            with open(path, "rb") as f:  # and the models are in the page cache for every side alike
                while f.read(1 << 24):
                    pass
        print(f"model {model.name} ({blob.stat().st_size / 1e6:.0f} MB, Q4_K_M), prompt {args.prompt_tokens} tokens, "
              f"{args.tokens} generated, {args.threads} threads, n_ctx {args.ctx}, n_batch {BATCH}, "
              f"temperature 0, seed {SEED}", file=progress)
        if onnx:
            print(f"ONNX model {onnx_model.name} (fp32), {args.threads} threads", file=progress)
        if any(side.endswith("-json") for side in args.sides):
            print(f"schema: {json.dumps(schema_for(args.tokens))}", file=progress)
        print(f"llama-server {binary} (version {version})", file=progress)
        print(f"{args.rounds} round(s) x ({args.warmup} warm-up + {args.repetitions} requests) per side, "
              f"{'interleaved request by request' if args.interleave else 'sides one at a time'}, "
              "one streaming client", file=progress, flush=True)
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
              "warmup": args.warmup, "rounds": args.rounds, "interleave": args.interleave, "llama_server": str(binary),
              "llama_server_version": version, "llama_cpp_python": LLAMA_CPP_PYTHON_VERSION,
              "schema": schema_for(args.tokens)}
    idle = statistics.median(bench.idle_rss) if bench.idle_rss else None
    result: dict[str, Any] = {"config": config, "samples": rows, "summary": summary,
                              "rss": {"idle_mb": idle, "idle_samples_mb": bench.idle_rss, "loaded": bench.loaded_rss}}
    if bench.server_cpu:
        cpu = sum(c["cpu_s"] for c in bench.server_cpu)
        result["serve_process_cpu"] = {
            "ms_per_request": cpu * 1e3 / sum(c["requests"] for c in bench.server_cpu),
            "us_per_token": cpu * 1e6 / sum(c["tokens"] for c in bench.server_cpu), "samples": bench.server_cpu}
    if set(RAW_SIDES) <= set(rows):
        raw = {side: summary[side] for side in RAW_SIDES}
        result["ratios"] = compare(summary, rows)
        result["goals"] = goals(result["ratios"], idle)
        texts = {side: [r["text"].strip() for r in rows[side]] for side in RAW_SIDES}
        result["checks"] = {
            "tokens": sorted({t for x in raw.values() for t in x["tokens"]}),
            "prompt_tokens": sorted({t for x in raw.values() for t in x["prompt_tokens"]}),
            "same_text": {SIDES[side]: f"{sum(a == b for a, b in zip(texts[side], texts['llama']))}/{len(texts[side])}"
                          for side in RAW_SIDES if side != "llama"}}
    result.update(chat_results(summary, rows))
    write_output(args.output, result)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print("\n".join(part for part in (report(result), chat_report(result)) if part))


if __name__ == "__main__":
    main()
