"""Benchmark: slmctl's cost over raw llama-cpp-python, and the CLI's start-up time.

What it measures, on a realistic-size random-weight model (``write_bench_gguf``: Qwen2.5-0.5B-like
shapes, ~300 MB at Q4_K_M, EOS never sampled so every run yields exactly ``--tokens`` tokens):

* A = ``slmctl run bench PROMPT --json --max-tokens N --seed 1 --param num_thread=T``: decode tok/s
  = eval_count / eval_duration and load = load_duration (the ``Llama(...)`` constructor), as slmctl
  reports them;
* B = raw llama-cpp-python with the same file, load arguments and sampling: ``Llama(...)`` timed for
  load, then a streamed ``create_chat_completion``; decode tok/s = N / (time from the first streamed
  content token to the end of the stream), i.e. the same definition as A's;
* the wall time of ``slmctl --help`` and ``slmctl list`` (fresh processes, median and min).

Each A and B run is a fresh subprocess, so both pay the same costs; rounds alternate the order
(A B, B A, ...) to spread the machine's drift over both sides. The model is built once into
``--cache-dir`` and imported into a temporary SLMCTL_HOME with the real CLI.

Some llama.cpp builds crash (SIGILL in ggml's AMX kernels) on machines that advertise AMX; when a
probe run dies that way (or with --no-extra-bufts), A and B alike run with llama.cpp's extra buffer
types (AMX, repack) off, via a ``sitecustomize`` on their PYTHONPATH that patches
``llama_model_default_params``; the timed code is untouched and both sides get the same kernels.

Run:  .venv/bin/python benchmarks/bench_core.py [--tokens 128] [--rounds 5] [--output res.json]
Not part of the test suite; about a minute with the defaults here (2 cores), ~2.5 min with --rounds 16.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import (
    PROMPT,
    base_parser,
    bench_rounds,
    build_once,
    child_env,
    import_model,
    parse_json,
    print_summary,
    remove_home_on_sigterm,
    run_script,
    run_slmctl,
    slmctl,
    summarize,
    write_output,
)

RAW_SCRIPT = r"""
import json, os, sys, time
cfg = json.loads(sys.argv[1])
import llama_cpp
threads = cfg["threads"]
start = time.perf_counter_ns()
llm = llama_cpp.Llama(model_path=cfg["model"], n_ctx=cfg["n_ctx"], n_batch=512, n_threads=threads,
                      n_threads_batch=max(threads, os.cpu_count() or 1), verbose=False)
load_ns = time.perf_counter_ns() - start
stream = llm.create_chat_completion(
    messages=[{"role": "user", "content": cfg["prompt"]}], stream=True, max_tokens=cfg["tokens"],
    temperature=0.8, top_k=40, top_p=0.9, min_p=0.0, repeat_penalty=1.0, seed=1)
first, parts, reason = None, [], None
for chunk in stream:
    choice = chunk["choices"][0]
    if choice["delta"].get("content"):
        if first is None:
            first = time.perf_counter_ns()
        parts.append(choice["delta"]["content"])
    reason = choice.get("finish_reason") or reason
end = time.perf_counter_ns()
print(json.dumps({"load_duration": load_ns, "eval_duration": end - first if first else 0,
                  "eval_count": cfg["tokens"] if reason == "length" else None,
                  "done_reason": reason, "response": "".join(parts)}))
"""

NO_EXTRA_BUFTS = """\
import llama_cpp.llama_cpp as _lc
_default = _lc.llama_model_default_params
def _params():
    params = _default()
    params.use_extra_bufts = False
    return params
_lc.llama_model_default_params = _params
"""


def parse_args() -> argparse.Namespace:
    import psutil

    p = base_parser(__doc__.split("\n\n")[0], rounds=5)
    p.add_argument("--threads", type=int, default=psutil.cpu_count(logical=False) or os.cpu_count(),
                   help="num_thread / n_threads (default: physical cores)")
    p.add_argument("--quant", default="Q4_K_M", help="quantization of the bench model")
    p.add_argument("--no-extra-bufts", action="store_true",
                   help="turn llama.cpp's extra buffer types (AMX, repack) off without probing")
    return p.parse_args()


def build_model(cache_dir: Path, quant: str) -> Path:
    """The bench model in the cache dir, written (atomically) only when missing."""

    def write(target: Path) -> Path:
        from slmctl.testing.tiny_gguf import write_bench_gguf

        return write_bench_gguf(target, quant)

    return build_once(cache_dir / f"bench-{quant}.gguf", write)


def raw_proc(env: dict[str, str], blob: Path, n_ctx: int, tokens: int,
             threads: int) -> subprocess.CompletedProcess[str]:
    """B: RAW_SCRIPT in a fresh interpreter (its JSON figures on stdout)."""
    cfg = {"model": str(blob), "n_ctx": n_ctx, "tokens": tokens, "threads": threads, "prompt": PROMPT}
    return run_script(env, RAW_SCRIPT, cfg)


def time_cli(env: dict[str, str], args: list[str], runs: int = 10) -> dict:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        proc = slmctl(env, *args)
        times.append(time.perf_counter() - start)
        if proc.returncode != 0:
            sys.exit(f"slmctl {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return {"median_s": statistics.median(times), "min_s": min(times)}


def setup_home(tmp: Path, model: Path) -> tuple[dict[str, str], Path, int]:
    """Import the model into a fresh SLMCTL_HOME with the CLI; return its env, stored blob and n_ctx."""
    env, info = import_model(tmp, model, "bench")
    blob = tmp / "home" / "models" / "blobs" / info["files"][0]["digest"].replace(":", "-")
    return env, blob, min(4096, info.get("context_length") or 4096)  # slmctl: num_ctx 4096, capped


def extra_bufts_crash(env: dict[str, str], blob: Path, n_ctx: int, threads: int) -> bool:
    """Probe run (it also warms the page cache): True when llama.cpp dies of SIGILL (AMX kernels)."""
    probe = raw_proc(env, blob, n_ctx, 4, threads)
    if probe.returncode not in (0, -signal.SIGILL):
        sys.exit(f"probe run failed (rc {probe.returncode}):\n{probe.stderr[-2000:]}")
    return probe.returncode == -signal.SIGILL


def main() -> None:
    args = parse_args()
    remove_home_on_sigterm()
    model = build_model(args.cache_dir, args.quant)
    with tempfile.TemporaryDirectory(prefix="slmctl-bench-") as tmp_name:
        tmp = Path(tmp_name)
        env, blob, n_ctx = setup_home(tmp, model)
        bufts_off = args.no_extra_bufts or extra_bufts_crash(env, blob, n_ctx, args.threads)
        run_env = env
        if bufts_off:
            (tmp / "shim").mkdir()
            (tmp / "shim" / "sitecustomize.py").write_text(NO_EXTRA_BUFTS)
            run_env = child_env(tmp / "home", tmp / "shim")
        why = "--no-extra-bufts" if args.no_extra_bufts else "they crash with SIGILL here"
        note = f" (llama.cpp extra buffer types OFF in A and B: {why})" if bufts_off else ""
        print(f"model {model.name} {blob.stat().st_size / 1e6:.0f} MB, {args.tokens} tokens, "
              f"{args.threads} threads, n_ctx {n_ctx}{note}")
        print("A = slmctl run --json, B = raw llama-cpp-python (each a fresh process)", flush=True)
        rounds = bench_rounds(
            args.rounds,
            lambda: run_slmctl(run_env, "bench", args.tokens, "--param", f"num_thread={args.threads}"),
            lambda: parse_json(raw_proc(run_env, blob, n_ctx, args.tokens, args.threads), "raw run"))
        summary = summarize(rounds)
        print_summary(summary)
        cli = {"--help": time_cli(env, ["--help"]), "list": time_cli(env, ["list"])}
    for name, t in cli.items():
        goal = f"  (goal < 0.2 s: {'ok' if t['median_s'] < 0.2 else 'MISSED'})" if name == "--help" else ""
        print(f"slmctl {name:<7} median {t['median_s']:.3f} s  min {t['min_s']:.3f} s{goal}")
    write_output(args.output, {"model": model.name, "quant": args.quant, "tokens": args.tokens,
                               "threads": args.threads, "n_ctx": n_ctx, "extra_bufts_off": bufts_off,
                               "rounds": rounds, **summary, "cli": cli})


if __name__ == "__main__":
    main()
