"""Benchmark: slmctl's cost over raw onnxruntime-genai (the ONNX backend).

What it measures, on a realistic-size random-weight model (``write_bench_onnx_genai``: 12 layers of
768, 83M fp32 parameters, ~331 MB; EOS never sampled so every run yields exactly ``--tokens`` tokens):

* A = ``slmctl run bench-onnx PROMPT --json --max-tokens N --seed 1``: decode tok/s
  = eval_count / eval_duration and load = load_duration, as slmctl reports them;
* B = raw onnxruntime-genai doing what ``slmctl.backends.onnx`` does: ``og.Config`` +
  ``clear_providers()`` + ``og.Model`` + ``og.Tokenizer`` timed for load; the chat template applied by
  the tokenizer, the same search options (max_length = prompt + N, do_sample, temperature 0.8, top_k
  40, top_p 0.9, random_seed 1, repetition_penalty 1.0), ``append_tokens``, then
  ``generate_next_token`` / ``get_next_tokens`` / ``stream.decode`` until N tokens; decode tok/s =
  N / (time from the first generated token to the end of the last), i.e. the same definition as A's.

B loads the folder slmctl itself loads: the store's materialized folder (symlinks to the stored blobs,
``$SLMCTL_HOME/models/materialized/<manifest digest hex[:16]>``), so both read the same bytes through
the same paths. Each A and B run is a fresh subprocess; rounds alternate the order (A B, B A, ...).
The model is built once into ``--cache-dir`` and imported into a temporary SLMCTL_HOME with the CLI.

Run:  .venv/bin/python benchmarks/bench_onnx.py [--tokens 128] [--rounds 8] [--output res.json]
Not part of the test suite; about 2 minutes with the defaults here (2 cores).
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

from _common import (
    PROMPT,
    base_parser,
    bench_rounds,
    build_once,
    import_model,
    parse_json,
    print_summary,
    remove_home_on_sigterm,
    run_script,
    run_slmctl,
    summarize,
    write_output,
)

NAME = "bench-onnx"

RAW_SCRIPT = r"""
import json, sys, time
cfg = json.loads(sys.argv[1])
import onnxruntime_genai as og
start = time.perf_counter_ns()
config = og.Config(cfg["model"])
config.clear_providers()
if cfg["threads"]:
    config.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": cfg["threads"]}}}}))
model = og.Model(config)
tokenizer = og.Tokenizer(model)
load_ns = time.perf_counter_ns() - start
prompt = tokenizer.apply_chat_template(json.dumps([{"role": "user", "content": cfg["prompt"]}]),
                                       add_generation_prompt=True)
tokens = [int(t) for t in tokenizer.encode(prompt)]
n = cfg["tokens"]
params = og.GeneratorParams(model)
params.set_search_options(max_length=len(tokens) + n, do_sample=True, temperature=0.8, top_k=40, top_p=0.9,
                          random_seed=1, repetition_penalty=1.0)
generator = og.Generator(model, params)
stream = tokenizer.create_stream()
parts, count = [], 0
start = time.perf_counter_ns()
first = start
generator.append_tokens(tokens)
while not generator.is_done():
    generator.generate_next_token()
    token = int(generator.get_next_tokens()[0])
    if count == 0:
        first = time.perf_counter_ns()
    count += 1
    parts.append(stream.decode(token))
    if count >= n:
        break
end = time.perf_counter_ns()
print(json.dumps({"load_duration": load_ns, "eval_duration": end - first if count else 0,
                  "eval_count": count if count == n else None, "prompt_eval_count": len(tokens),
                  "prompt_eval_duration": first - start, "response": "".join(parts)}))
"""


def parse_args() -> argparse.Namespace:
    p = base_parser(__doc__.split("\n\n")[0], rounds=8)
    p.add_argument("--threads", type=int, default=0,
                   help="intra-op threads for both sides (A: --param num_thread=T); "
                        "default 0: neither sets it, onnxruntime's default (what slmctl run does)")
    return p.parse_args()


def build_model(cache_dir: Path) -> Path:
    """The bench model folder in the cache dir, written (atomically) only when missing."""

    def write(target: Path) -> Path:
        from slmctl.testing.tiny_onnx import write_bench_onnx_genai

        return write_bench_onnx_genai(target)

    return build_once(cache_dir / NAME, write)


def raw_proc(env: dict[str, str], folder: Path, tokens: int, threads: int) -> subprocess.CompletedProcess[str]:
    """B: RAW_SCRIPT in a fresh interpreter (its JSON figures on stdout)."""
    return run_script(env, RAW_SCRIPT, {"model": str(folder), "tokens": tokens, "threads": threads,
                                        "prompt": PROMPT})


def materialized_folder(tmp: Path, info: dict) -> Path:
    """The folder slmctl loads: ``materialized/<manifest digest hex[:16]>`` (made by the import)."""
    folder = tmp / "home" / "models" / "materialized" / info["digest"].partition(":")[2][:16]
    if not (folder / "genai_config.json").is_file():
        raise SystemExit(f"no materialized model folder at {folder}")
    return folder


def main() -> None:
    args = parse_args()
    remove_home_on_sigterm()
    model = build_model(args.cache_dir)
    with tempfile.TemporaryDirectory(prefix="slmctl-bench-") as tmp_name:
        tmp = Path(tmp_name)
        env, info = import_model(tmp, model, NAME)
        folder = materialized_folder(tmp, info)
        parse_json(raw_proc(env, folder, 4, args.threads), "probe run")  # checks B, warms the page cache
        threads = f"{args.threads} threads" if args.threads else "onnxruntime's default threads"
        print(f"model {model.name} ({info['parameter_size']} {info['quantization']}, {info['size'] / 1e6:.0f} MB), "
              f"{args.tokens} tokens, {threads}, CPU provider")
        print(f"B loads slmctl's materialized folder models/materialized/{folder.name} (symlinks to the blobs)")
        print("A = slmctl run --json, B = raw onnxruntime-genai (each a fresh process)", flush=True)
        extra = ["--param", f"num_thread={args.threads}"] if args.threads else []
        rounds = bench_rounds(args.rounds, lambda: run_slmctl(env, NAME, args.tokens, *extra),
                              lambda: parse_json(raw_proc(env, folder, args.tokens, args.threads), "raw run"))
        summary = summarize(rounds)
        print_summary(summary)
    write_output(args.output, {"model": model.name, "tokens": args.tokens, "threads": args.threads or None,
                               "raw_folder": "materialized", "rounds": rounds, **summary})


if __name__ == "__main__":
    main()
