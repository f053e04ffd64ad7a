"""The chat and JSON-schema part of ``bench_serve.py``'s summary: slmctl's ``/v1/chat/completions`` against its own
``/api/chat`` (goal: the same decode tok/s within 3 %) and against llama-server's ``/v1/chat/completions``, and
what a JSON schema (``response_format``) costs decode on each runtime: schema on / off, the same prompts.

Every decode figure here is client side, measured the same way on every side: tok/s = (tokens - 1) / (last
content chunk - first), the tokens as the server counts them (OpenAI's ``usage.completion_tokens``, Ollama's
``eval_count``), so a schema that ends a reply early is measured on the tokens it actually generated.
"""

from __future__ import annotations

from _serve_report import SIDES, figure, paired

CHAT_SIDES = ("chat", "v1", "llama-v1")
#: (label, schema off, schema on): the same kind of server both ways.
GRAMMAR_PAIRS = (("llama.cpp (GGUF): slmctl /v1", "v1", "v1-json"),
                 ("llama.cpp (GGUF): llama-server /v1", "llama-v1", "llama-v1-json"),
                 ("onnxruntime-genai (ONNX): slmctl /v1", "onnx-v1", "onnx-v1-json"))
SAME_API_GOAL = 0.03  # slmctl /v1 / slmctl /api/chat decode tok/s within 3 %


def _pair(summary: dict, rows: dict, a: str, b: str) -> dict:
    """a against b: ratio of the median client decode tok/s, median of paired per-request ratios, TTFT."""
    x, y = summary[a], summary[b]

    def ratio(key: str) -> float | None:
        return x[key] / y[key] if x.get(key) and y.get(key) else None

    return {"decode": ratio("client_tok_s"), "decode_paired": paired(rows, a, b, "client_tok_s"),
            "ttft": ratio("ttft_ms"), "ttft_ms": x["ttft_ms"] - y["ttft_ms"],
            "decode_tok_s": [x["client_tok_s"], y["client_tok_s"]], "tokens": [x["tokens"], y["tokens"]]}


def cpu_per_token(rows: list[dict], key: str) -> float | None:
    """CPU µs per generated token over the measured requests: ``server_cpu_ms`` (the slmctl serve process
    during each request, runner excluded) or ``client_cpu_ms`` (the benchmark's own client thread)."""
    measured = [r for r in rows if not r["warmup"] and r.get(key) is not None]
    tokens = sum(r["eval_count"] for r in measured)
    return sum(r[key] for r in measured) * 1e3 / tokens if tokens else None


def chat_results(summary: dict, rows: dict) -> dict:
    """What ran of: the three chat sides against each other, and each schema on / off pair."""
    out: dict = {}
    if all(side in summary for side in CHAT_SIDES):
        same = _pair(summary, rows, "v1", "chat")
        d = same["decode"]
        same["goal"] = {"value": d, "goal": f"within {SAME_API_GOAL:.0%}",
                        "met": None if d is None else abs(d - 1) <= SAME_API_GOAL}
        texts = {side: [r["text"] for r in rows[side]] for side in CHAT_SIDES}
        out["chat"] = {"v1_vs_ollama_chat": same, "v1_vs_llama_server": _pair(summary, rows, "v1", "llama-v1"),
                       "ollama_chat_vs_llama_server": _pair(summary, rows, "chat", "llama-v1"),
                       "checks": {"tokens": {SIDES[s]: summary[s]["tokens"] for s in CHAT_SIDES},
                                  "prompt_tokens": {SIDES[s]: summary[s]["prompt_tokens"] for s in CHAT_SIDES},
                                  "v1_text_equals_ollama_chat": f"{sum(a == b for a, b in zip(texts['v1'], texts['chat']))}"
                                                                f"/{len(texts['v1'])}"},
                       "cpu_us_per_token": {SIDES[s]: {"server": cpu_per_token(rows[s], "server_cpu_ms"),
                                                       "client": cpu_per_token(rows[s], "client_cpu_ms")}
                                            for s in CHAT_SIDES}}
    grammar = {off: {"label": label, **_pair(summary, rows, on, off)}
               for label, off, on in GRAMMAR_PAIRS if off in summary and on in summary}
    if grammar:
        out["schema"] = grammar
    return out


def chat_report(result: dict) -> str:
    lines: list[str] = []
    if chat := result.get("chat"):
        same, vs, ol = chat["v1_vs_ollama_chat"], chat["v1_vs_llama_server"], chat["ollama_chat_vs_llama_server"]
        ok = {True: "ok", False: "MISSED", None: "n/a"}[same["goal"]["met"]]
        lines += ["", "chat, streamed: slmctl /v1/chat/completions vs /api/chat vs llama-server's "
                      "/v1/chat/completions", "  (client side: (tokens - 1) / first to last content chunk; "
                      "paired: median of per-request ratios)",
                  f"  slmctl /v1 / slmctl /api/chat        decode {figure(same['decode'], '.3f')} "
                  f"(paired {figure(same['decode_paired'], '.3f')})   goal within {SAME_API_GOAL:.0%}: {ok}   "
                  f"TTFT {same['ttft_ms']:+.1f} ms",
                  f"  slmctl /v1 / llama-server /v1        decode {figure(vs['decode'], '.3f')} "
                  f"(paired {figure(vs['decode_paired'], '.3f')})   TTFT p50 {figure(vs['ttft'], '.3f')}x",
                  f"  slmctl /api/chat / llama-server /v1  decode {figure(ol['decode'], '.3f')} "
                  f"(paired {figure(ol['decode_paired'], '.3f')})   TTFT p50 {figure(ol['ttft'], '.3f')}x"]
        c = chat["checks"]
        lines += ["  checks: tokens per request " + ", ".join(f"{k} {v}" for k, v in c["tokens"].items())
                  + "; prompt tokens " + ", ".join(f"{k} {v}" for k, v in c["prompt_tokens"].items()),
                  f"          slmctl /v1 text equals /api/chat's: {c['v1_text_equals_ollama_chat']} "
                  "(llama-server adds a BOS to the templated prompt: other text)",
                  "  CPU per generated token, slmctl serve process (HTTP + relay, runner excluded) / benchmark client: "
                  + ", ".join(f"{k} {figure(v['server'], '.0f')} / {figure(v['client'], '.0f')} us"
                              for k, v in chat["cpu_us_per_token"].items())]
    if schema := result.get("schema"):
        lines += ["", "JSON schema on / off (response_format json_schema: an object holding an array of at least "
                      f"{result['config']['tokens']} strings; the same prompts):"]
        for g in schema.values():
            on, off = g["decode_tok_s"]
            lines.append(f"  {g['label']:<37} decode {figure(g['decode'], '.3f')} (paired "
                         f"{figure(g['decode_paired'], '.3f')})   {figure(off, '.2f')} -> {figure(on, '.2f')} tok/s   "
                         f"TTFT {g['ttft_ms']:+.1f} ms   tokens {g['tokens'][1]} -> {g['tokens'][0]}")
    return "\n".join(lines)
