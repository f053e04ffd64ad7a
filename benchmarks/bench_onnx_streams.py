"""Concurrent ONNX streams: aggregate decode tok/s of 1 vs N streams batched on onnxruntime-genai's Engine.

The model is ``write_bench_onnx_gqa`` (the ONNX benchmark's shapes, 12 layers of 768, 16000-token
vocabulary, ~83M fp32 parameters, on GroupQueryAttention with a shared KV buffer so that the Engine can
batch it; EOS never sampled), built once into ``--cache-dir``. By default it runs in process, as a
runner process does: ``OnnxGenaiBackend().load(..., slots=N)`` with ``num_thread`` = ``--threads``
(default: physical cores) and a :class:`ThreadRunner` with ``slots=N``; ``--serve`` sends the same
requests through a real ``slmctl serve --parallel N`` instead (``/api/generate``, streamed, raw).

For each stream count of ``--clients`` (default 1,4), N client threads each send ``--requests``
requests one after the other (all clients start at once, after a warm-up round of one request each),
every request a fresh raw prompt of about
``--prompt-tokens`` tokens, ``--tokens`` generated, greedy. Reported per N: aggregate tok/s (all
streams' tokens / wall time from the first request to the last end), TTFT p50 and p95, per-stream
decode tok/s (median), broken streams. ``--rounds`` (3) repeats every N, alternating their order (this
machine is shared: its speed drifts), then prints each N's medians and the median of the rounds' ratios
of aggregate tok/s, largest N / one stream (goal: 4 streams >= 2x one stream), and whether every prompt
got the same text in every run (greedy: batched rows must decode as they do alone).

    .venv/bin/python benchmarks/bench_onnx_streams.py                     # 1 and 4 streams, in process
    .venv/bin/python benchmarks/bench_onnx_streams.py --serve --requests 2 --output onnx-streams.json
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, base_parser, build_once, import_model, remove_home_on_sigterm, slmctl, write_output  # noqa: E402
from _serve_client import free_port, parse_ollama, sample, server_process, stream  # noqa: E402
from bench_streams import figures, load  # noqa: E402

NAME = "bench-onnx-gqa"
GOAL = 2.0


def build_model(cache_dir: Path) -> Path:
    sys.path.insert(0, str(REPO))
    from slmctl.testing.tiny_onnx import write_bench_onnx_gqa

    return build_once(cache_dir / NAME, write_bench_onnx_gqa)


def make_prompts(folder: Path, tokens: int, count: int, seed: int) -> list[str]:
    """``count`` raw prompts of random ordinary tokens (about ``tokens`` tokens once re-tokenized)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    rng = random.Random(seed)
    return [tokenizer.decode([rng.randrange(259, tokenizer.get_vocab_size()) for _ in range(tokens)])
            for _ in range(count)]


def in_process(folder: Path, n: int, args: argparse.Namespace) -> tuple[Callable[[str], dict], Callable[[], None]]:
    """A sender through a ThreadRunner with ``n`` slots on the model loaded for ``n`` slots, and its closer."""
    from slmctl.backends.base import GenerateRequest
    from slmctl.backends.onnx import OnnxGenaiBackend
    from slmctl.engine.runner import ThreadRunner
    from slmctl.options import LoadOptions, SamplingOptions

    model = OnnxGenaiBackend().load(folder, LoadOptions(num_ctx=args.ctx, num_thread=args.threads), slots=n)
    runner = ThreadRunner(model, name=NAME, slots=n)
    options = SamplingOptions(temperature=0, num_predict=args.tokens)

    def send(prompt: str) -> dict:
        start, stamps, parts = time.perf_counter_ns(), [], []
        generation = runner.submit(GenerateRequest(options, prompt=prompt))
        for chunk in generation:
            stamps.append(time.perf_counter_ns())
            parts.append(chunk)
        stats = generation.stats
        return sample(start, stamps, time.perf_counter_ns(), "".join(parts), tokens=stats.eval_count,
                      eval_count=stats.eval_count)

    return send, runner.close


def labelled(send: Callable[[str], dict]) -> Callable[[str], dict]:
    """``send`` whose figures also name the prompt (to compare a prompt's answers across runs)."""
    return lambda prompt: {**send(prompt), "prompt": prompt}


def run_once(n: int, args: argparse.Namespace, folder: Path, env: dict[str, str], tmp: Path,
             per_client: list[list[str]], warm_up: list[str]) -> dict:
    """N clients' requests through a fresh runner (or server) with N slots, after a warm-up round (one
    request per client at once: the graphs are built for a batch of N, the Engine made)."""
    if not args.serve:
        send, close = in_process(folder, n, args)
        try:
            load(send, [[prompt] for prompt in warm_up[:n]])
            return load(labelled(send), per_client)
        finally:
            close()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "slmctl", "serve", "--host", f"127.0.0.1:{port}", "--parallel", str(n),
           "--preload", NAME]
    body = {"model": NAME, "raw": True, "stream": True, "options": {"num_predict": args.tokens, "temperature": 0}}

    def post(prompt: str) -> dict:
        return stream(f"{url}/api/generate", {**body, "prompt": prompt}, parse_ollama)

    with server_process(cmd, env, f"{url}/readyz", tmp / f"serve-{n}.log"):
        load(post, [[prompt] for prompt in warm_up[:n]])
        return load(labelled(post), per_client)


def show(label: str, got: dict) -> None:
    print(f"{label}: aggregate {got['aggregate_tok_s']:6.1f} tok/s, TTFT p50 {got['ttft_p50_ms'] or 0:6.0f} ms "
          f"p95 {got['ttft_p95_ms'] or 0:6.0f} ms, per stream {got['stream_tok_s'] or 0:5.1f} tok/s, broken "
          f"{got['broken']}, wall {got['wall_s']:.1f} s", flush=True)


def main() -> None:
    import psutil

    p = base_parser(__doc__.split("\n\n")[0], rounds=3)
    p.set_defaults(tokens=64)
    p.add_argument("--clients", default="1,4", help="comma-separated stream counts")
    p.add_argument("--requests", type=int, default=3, help="requests each client sends, one after the other")
    p.add_argument("--prompt-tokens", type=int, default=64, help="prompt length in tokens (about)")
    p.add_argument("--ctx", type=int, default=2048, help="num_ctx (each batch row's KV holds this many tokens)")
    p.add_argument("--threads", type=int, default=psutil.cpu_count(logical=False) or os.cpu_count())
    p.add_argument("--serve", action="store_true", help="through slmctl serve --parallel N, not in process")
    args = p.parse_args()
    remove_home_on_sigterm()
    counts = sorted({int(n) for n in args.clients.split(",")})
    one, top = counts[0], counts[-1]
    folder = build_model(args.cache_dir)
    prompts = make_prompts(folder, args.prompt_tokens, top * (args.requests + 1), seed=7)
    warm_up, prompts = prompts[: top], prompts[top:]
    runs: dict[int, list[dict]] = {n: [] for n in counts}
    texts: dict[str, set[str]] = {prompt: set() for prompt in prompts}  # each prompt's answers, all runs
    print(f"model {folder.name} ({'slmctl serve' if args.serve else 'in process, ThreadRunner'}), {args.threads} "
          f"threads, num_ctx {args.ctx}, ~{args.prompt_tokens}-token prompts, {args.tokens} tokens each, "
          f"{args.requests} requests per client, {args.rounds} rounds", flush=True)
    with tempfile.TemporaryDirectory(prefix="slmctl-bench-onnx-streams-") as tmp_name:
        tmp = Path(tmp_name)
        env: dict[str, str] = {}
        if args.serve:
            env, _ = import_model(tmp, folder, "bench-raw")
            (tmp / "Modelfile").write_text(f"FROM bench-raw\nPARAMETER num_ctx {args.ctx}\n"
                                           f"PARAMETER num_thread {args.threads}\n")
            if slmctl(env, "create", NAME, "-f", str(tmp / "Modelfile")).returncode != 0:
                sys.exit("slmctl create failed")
        for index in range(args.rounds):
            for n in counts if index % 2 == 0 else counts[::-1]:
                mine = prompts[: n * args.requests]
                run = run_once(n, args, folder, env, tmp, [mine[i::n] for i in range(n)], warm_up)
                for answer in run["requests"]:
                    if "prompt" in answer:
                        texts[answer["prompt"]].add(answer["text"])
                runs[n].append(figures(run, args.tokens))
                show(f"  round {index + 1}, {n} stream{'s' if n > 1 else ' '}", runs[n][-1])
    print("medians:")
    for n in counts:
        show(f"  {n} stream{'s' if n > 1 else ' '}", {key: statistics.median(r[key] or 0 for r in runs[n])
                                                       for key in runs[n][0]})
    ratios = [a["aggregate_tok_s"] / b["aggregate_tok_s"] for a, b in zip(runs[top], runs[one])]
    ratio = statistics.median(ratios)
    same = all(len(seen) == 1 for seen in texts.values() if seen)  # greedy: a prompt's text in every run
    print(f"aggregate {top} streams / {one}: {ratio:.2f}x (median of rounds {', '.join(f'{r:.2f}' for r in ratios)}; "
          f"goal >= {GOAL}: {'ok' if ratio >= GOAL else 'MISSED'}); same text for a prompt in every run: "
          f"{'yes' if same else 'NO'}")
    write_output(args.output, {"clients": counts, "runs": runs, "ratios": ratios, "ratio": ratio})


if __name__ == "__main__":
    main()
