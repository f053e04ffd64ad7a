"""Benchmark: does ``slmctl bench`` report the generation speed raw llama-cpp-python measures?

On the realistic-size random GGUF (``write_bench_gguf``, ~300 MB Q4_K_M), rounds alternate (A B, B A, ...):

* A = ``slmctl bench bench --prompt-tokens P --gen-tokens N --threads T --repetitions 1 --warmup 1 --json``
  in a fresh process: its median ``gen_tps``;
* B = raw llama-cpp-python in a fresh process, with the same load arguments: one warm-up generation,
  then one measured generation of exactly N tokens (end-of-sequence ignored) from a P-token prompt;
  tokens/s = N / (time from the first generated token to the end), the definition ``slmctl bench`` uses.

It prints both per round, the medians and the ratio (goal: within 3%).

Run:  .venv/bin/python benchmarks/bench_command.py [--rounds 8] [--tokens 128]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import base_parser, parse_json, remove_home_on_sigterm, run_script, slmctl  # noqa: E402
from bench_core import build_model, setup_home  # noqa: E402

GOAL = 0.03
PROMPT_TOKENS = 64

RAW_SCRIPT = r"""
import json, os, sys, time
cfg = json.loads(sys.argv[1])
import llama_cpp
t = cfg["threads"]
llm = llama_cpp.Llama(model_path=cfg["model"], n_ctx=cfg["n_ctx"], n_batch=512, n_ubatch=512, n_threads=t,
                      n_threads_batch=max(t, os.cpu_count() or 1), verbose=False)
text = "The quick brown fox jumps over the lazy dog. " * 64
prompt = llm.tokenize(text.encode(), add_bos=False)[: cfg["prompt_tokens"]]
def run():
    llm.set_seed(1)
    first, n = None, 0
    for token in llm.generate(prompt, reset=True, temp=0.8, top_k=40, top_p=0.9, min_p=0.0, repeat_penalty=1.0):
        if first is None:
            first = time.perf_counter_ns()
        n += 1
        if n == cfg["tokens"]:
            break
    return n / ((time.perf_counter_ns() - first) / 1e9)
run()  # warm-up, as slmctl bench --warmup 1
print(json.dumps({"gen_tps": run()}))
"""


def main() -> None:
    parser = base_parser(__doc__.split("\n\n")[0], rounds=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    remove_home_on_sigterm()
    model = build_model(args.cache_dir, "Q4_K_M")
    with tempfile.TemporaryDirectory(prefix="slmctl-bench-") as tmp_name:
        env, blob, n_ctx = setup_home(Path(tmp_name), model)
        print(f"model {model.name}, prompt {PROMPT_TOKENS} tokens, {args.tokens} generated, {args.threads} threads")
        print("A = slmctl bench (median gen tok/s), B = raw llama-cpp-python (each a fresh process)", flush=True)

        def run_a() -> float:
            proc = slmctl(env, "bench", "bench", "--prompt-tokens", str(PROMPT_TOKENS), "--gen-tokens",
                          str(args.tokens), "--threads", str(args.threads), "--repetitions", "1", "--warmup", "1",
                          "--json")
            return parse_json(proc, "slmctl bench")["summary"][0]["figures"]["gen_tps"]["median"]

        def run_b() -> float:
            cfg = {"model": str(blob), "n_ctx": n_ctx, "tokens": args.tokens, "threads": args.threads,
                   "prompt_tokens": PROMPT_TOKENS}
            return parse_json(run_script(env, RAW_SCRIPT, cfg), "raw run")["gen_tps"]

        rows = []
        for i in range(args.rounds):
            order = "AB" if i % 2 == 0 else "BA"
            row = {side: (run_a() if side == "A" else run_b()) for side in order}
            rows.append(row)
            print(f"  round {i + 1:>2} ({order})  A {row['A']:7.2f} tok/s   B {row['B']:7.2f} tok/s   "
                  f"A/B {row['A'] / row['B']:.3f}", flush=True)
    a, b = (statistics.median(r[s] for r in rows) for s in "AB")
    ratio = a / b
    print(f"  median           A {a:7.2f} tok/s   B {b:7.2f} tok/s")
    print(f"slmctl bench / raw gen tok/s: {ratio:.3f} (goal within {GOAL:.0%}: "
          f"{'ok' if abs(ratio - 1) <= GOAL else 'MISSED'})")


if __name__ == "__main__":
    main()
