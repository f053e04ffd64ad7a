"""Prefix reuse: time to first token of a follow-up chat turn, against a cold prompt of the same length.

A chat client sends the whole conversation every turn. With prefix reuse, ``slmctl serve`` finds the
previous turn's tokens still in a KV slot and evaluates only what is new (the last answer and the new
message), so a follow-up's TTFT should not grow with the history. Each round, on the benchmark GGUF
(``bench-Q4_K_M.gguf``, Qwen2.5-0.5B-shaped; created as ``bench-chat`` with ``num_ctx`` to hold the
history), through the real ``slmctl serve`` and ``/v1/chat/completions`` (streamed, ``include_usage``):

1. **turn 1**: a fresh ~``--history``-token conversation (system prompt and turns of random words) plus
   a question: nothing cached;
2. **follow-up**: the same conversation, turn 1's answer, and a new question: the prefix is cached;
3. **cold**: another fresh conversation of the same shape, answer and question: as long as the
   follow-up's prompt, with nothing to reuse.

Printed per round: prompt tokens, cached tokens (``usage.prompt_tokens_details.cached_tokens``) and
TTFT of each; then the median follow-up/cold TTFT ratio (goal <= 0.3 at a 2,000-token history) and the
median cache hit rate of the follow-ups.

    .venv/bin/python benchmarks/bench_prefix.py                     # 3 rounds, 2,000-token history
    .venv/bin/python benchmarks/bench_prefix.py --history 1000 --rounds 5 --output prefix.json
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import base_parser, import_model, remove_home_on_sigterm, slmctl, write_output  # noqa: E402
from _serve_client import WORDS, free_port, parse_openai, server_process, stream  # noqa: E402
from bench_core import build_model  # noqa: E402

GOAL = 0.3
MODEL = "bench-chat"
TURN_WORDS = 90  # words per message of the history (one token each, plus the template's few)


def conversation(rng: random.Random, history: int) -> list[dict]:
    """A system prompt and user/assistant turns of random one-token words, about ``history`` tokens."""
    def words(n: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(n))

    messages = [{"role": "system", "content": f"session {rng.randrange(10**9)}: " + words(TURN_WORDS)}]
    while sum(len(m["content"].split()) + 5 for m in messages) < history:
        messages += [{"role": "user", "content": words(TURN_WORDS)},
                     {"role": "assistant", "content": words(TURN_WORDS)}]
    return messages + [{"role": "user", "content": "and then? " + words(8)}]


def ask(url: str, messages: list[dict], tokens: int) -> dict:
    body = {"model": MODEL, "messages": messages, "stream": True, "max_tokens": tokens, "temperature": 0,
            "seed": 1, "stream_options": {"include_usage": True}}
    return stream(f"{url}/v1/chat/completions", body, parse_openai)


def main() -> None:
    p = base_parser(__doc__.split("\n\n")[0], rounds=3)
    p.set_defaults(tokens=8)
    p.add_argument("--history", type=int, default=2000, help="tokens of conversation before the follow-up")
    p.add_argument("--threads", type=int, default=2, help="num_thread of the model")
    args = p.parse_args()
    remove_home_on_sigterm()
    model = build_model(args.cache_dir, "Q4_K_M")
    ctx = 1 << max(args.history * 2, 2048).bit_length()  # room for the history, twice over
    rounds = []
    with tempfile.TemporaryDirectory(prefix="slmctl-bench-prefix-") as tmp:
        env, _ = import_model(Path(tmp), model, "bench")
        (Path(tmp) / "Modelfile").write_text(f"FROM bench\nPARAMETER num_ctx {ctx}\n"
                                             f"PARAMETER num_thread {args.threads}\n")
        created = slmctl(env, "create", MODEL, "-f", str(Path(tmp) / "Modelfile"))
        if created.returncode != 0:
            sys.exit(f"slmctl create failed:\n{created.stderr}")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "slmctl", "serve", "--host", f"127.0.0.1:{port}", "--preload", MODEL]
        with server_process(cmd, env, f"{url}/readyz", Path(tmp) / "serve.log"):
            rng = random.Random(7)
            ask(url, [{"role": "user", "content": "warm up"}], 2)
            for r in range(args.rounds):
                history = conversation(rng, args.history)
                first = ask(url, history, args.tokens)
                follow = history + [{"role": "assistant", "content": first["text"]},
                                    {"role": "user", "content": "and after that? " + " ".join(WORDS[:6])}]
                warm = ask(url, follow, args.tokens)
                other = conversation(rng, args.history)
                cold = ask(url, other + follow[len(history):], args.tokens)
                row = {"round": r + 1, "turn1": first, "follow_up": warm, "cold": cold,
                       "ratio": warm["ttft_ms"] / cold["ttft_ms"],
                       "hit_rate": (warm.get("cached") or 0) / warm["prompt_n"]}
                rounds.append(row)
                print(f"round {r + 1}: turn 1 {first['prompt_n']} tokens TTFT {first['ttft_ms']:.0f} ms | follow-up "
                      f"{warm['prompt_n']} tokens ({warm.get('cached') or 0} cached) TTFT {warm['ttft_ms']:.0f} ms | "
                      f"cold {cold['prompt_n']} tokens ({cold.get('cached') or 0} cached) TTFT {cold['ttft_ms']:.0f} ms"
                      f" | follow-up/cold {row['ratio']:.3f}", flush=True)
    ratio = statistics.median(r["ratio"] for r in rounds)
    hits = statistics.median(r["hit_rate"] for r in rounds)
    verdict = "ok" if ratio <= GOAL else "MISSED"
    print(f"follow-up TTFT / cold TTFT (median of {len(rounds)}): {ratio:.3f}  (goal <= {GOAL}: {verdict})")
    print(f"prefix cache hit rate of the follow-ups (median): {hits:.1%}")
    for row in rounds:
        for turn in ("turn1", "follow_up", "cold"):
            row[turn].pop("text", None)
    write_output(args.output, {"history": args.history, "rounds": rounds, "ratio": ratio, "hit_rate": hits})


if __name__ == "__main__":
    main()
