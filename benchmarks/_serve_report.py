"""The summary of ``bench_serve.py``: medians per side, the raw sides' ratios and goals, and the printed
table and report (the chat and JSON-schema sections are in ``_serve_chat.py``)."""

from __future__ import annotations

import statistics


GOALS = {"decode": 0.95, "ttft": 1.5, "overhead_ms": 50.0, "overhead_decode": 0.97, "idle_rss_mb": 150.0}
SIDES = {"llama": "llama-server", "serve": "slmctl serve", "noproc": "serve, no runner", "inproc": "in process",
         "chat": "slmctl /api/chat", "v1": "slmctl /v1", "llama-v1": "llama-server /v1",
         "v1-json": "slmctl /v1 schema", "llama-v1-json": "llama-server /v1 schema",
         "onnx-v1": "ONNX slmctl /v1", "onnx-v1-json": "ONNX slmctl /v1 schema"}
#: The raw-prompt sides (``/completion``, ``/api/generate``, in process): the ratios and goals below need all four.
RAW_SIDES = ("llama", "serve", "noproc", "inproc")


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


def figure(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def _ok(g: dict) -> str:
    return {True: "ok", False: "MISSED", None: "n/a"}[g["met"]]


def table(result: dict) -> list[str]:
    """Medians per side, one line each, for the sides that ran."""
    c, s = result["config"], result["summary"]
    lines = ["", f"medians of {c['repetitions'] * c['rounds']} requests per side "
             f"(prompt {c['prompt_tokens']} tokens, {c['tokens']} generated, {c['threads']} threads):",
             f"  {'':<23} {'decode tok/s':>13} {'decode tok/s':>13} {'TTFT p50':>9} {'TTFT min-max':>15} "
             f"{'prompt eval':>12} {'TTFT-prompt':>12} {'request':>9}",
             f"  {'':<23} {'(server)':>13} {'(client)':>13} {'ms':>9} {'ms':>15} {'ms':>12} {'ms':>12} {'ms':>9}"]
    for key, x in s.items():
        mark = {k: "*" if k in x["noisy"] else " " for k in ("client_tok_s", "ttft_ms")}
        lines.append(f"  {SIDES[key]:<23} {figure(x['server_tok_s'], '.2f'):>13} {figure(x['client_tok_s'], '.2f'):>12}"
                     f"{mark['client_tok_s']} {figure(x['ttft_ms'], '.1f'):>8}{mark['ttft_ms']} "
                     f"{x['ttft_min_ms']:>7.1f}-{x['ttft_max_ms']:<7.1f} "
                     f"{figure(x['prompt_ms'], '.1f'):>12} {figure(x['outside_ms'], '.1f'):>12} "
                     f"{figure(x['request_ms'], '.0f'):>9}")
    lines.append("  (TTFT-prompt: p50 of TTFT minus the prompt evaluation the server reports: the request's own "
                 "cost outside the model; slmctl's /v1 reports no timings: n/a)")
    if any(x["noisy"] for x in s.values()):
        lines.append("  * spread too wide to trust (CV > 10 % or range > 25 % of the median): "
                     "more --repetitions / --rounds, or a quieter machine")
    return lines


def report(result: dict) -> str:
    """The table, then (when all four raw sides ran) their ratios, goals and checks."""
    lines = table(result)
    if "ratios" in result:
        lines += raw_report(result)
    return "\n".join(lines)


def raw_report(result: dict) -> list[str]:
    s, r, g = result["summary"], result["ratios"], result["goals"]
    vs, ip = r["serve_vs_llama"], r["inproc_vs_llama"]
    lines = ["", "slmctl serve / llama-server:",
              f"  decode tok/s (server timings) {figure(vs['decode_server'], '.3f')}   goal >= {GOALS['decode']}: "
              f"{_ok(g['decode_vs_llama_server'])}",
              f"  decode tok/s (client side)    {figure(vs['decode_client'], '.3f')}   goal >= {GOALS['decode']}: "
              f"{_ok(g['decode_vs_llama_client'])}",
              f"  TTFT p50                      {figure(vs['ttft'], '.3f')}   goal <= {GOALS['ttft']}: "
              f"{_ok(g['ttft_vs_llama'])}",
              f"  (median of paired per-request ratios: decode {figure(vs['decode_client_paired'], '.3f')} client, "
              f"TTFT {figure(vs['ttft_paired'], '.3f')})",
              f"  (in process / llama-server: decode {figure(ip['decode_server'], '.3f')} server, "
              f"{figure(ip['decode_client'], '.3f')} client; TTFT {figure(ip['ttft'], '.3f')})"]
    o, rp, hs = r["serve_vs_inproc"], r["runner_process"], r["http_serving"]
    lines += ["", "slmctl serve vs the same engine in process (what a request pays for HTTP + the runner process):",
              f"  TTFT p50        {o['ttft_ms']:+7.1f} ms   goal <= +{GOALS['overhead_ms']:g} ms: "
              f"{_ok(g['overhead_ttft_ms'])}   (TTFT-prompt: {o['outside_ms']:+.1f} ms)",
              f"  decode tok/s    {figure(o['decode_server'], '.3f')} (server timings)   "
              f"goal >= {GOALS['overhead_decode']}: {_ok(g['overhead_decode_server'])}",
              f"                  {figure(o['decode_client'], '.3f')} (client side)      "
              f"goal >= {GOALS['overhead_decode']}: {_ok(g['overhead_decode_client'])}",
              f"                  {figure(o['decode_client_paired'], '.3f')} "
              "(client side, median of paired per-request ratios)",
              f"  request p50     {o['request_ms']:+7.1f} ms",
              f"  of which HTTP + serving layer (serve, no runner - in process): TTFT {hs['ttft_ms']:+.1f} ms, "
              f"decode {figure(hs['decode_server'], '.3f')} server / {figure(hs['decode_client'], '.3f')} client",
              f"  of which the runner process (serve - serve, no runner):        TTFT {rp['ttft_ms']:+.1f} ms, "
              f"decode {figure(rp['decode_server'], '.3f')} server / {figure(rp['decode_client'], '.3f')} client"]
    rss = result["rss"]
    loaded = rss["loaded"][-1] if rss["loaded"] else None
    lines += ["", f"slmctl serve idle RSS, no model loaded: {figure(rss['idle_mb'], '.1f')} MB   "
                  f"goal < {GOALS['idle_rss_mb']:g} MB: {_ok(g['idle_rss_mb'])}"]
    if loaded:
        lines.append(f"  (after the requests: server process {loaded['server_mb']:.1f} MB, "
                     f"runner process {loaded['runner_mb']:.1f} MB)")
    if "serve_process_cpu" in result:
        cpu = result["serve_process_cpu"]
        lines.append(f"  slmctl serve process CPU (HTTP + relay, runner excluded): {cpu['ms_per_request']:.0f} ms per "
                     f"request, {cpu['us_per_token']:.0f} us per streamed token")
    clients = {SIDES[key]: s[key]["client_us_per_token"] for key in RAW_SIDES if s[key]["client_us_per_token"]}
    if clients:
        lines.append("  benchmark client CPU per streamed token (httpx): "
                     + ", ".join(f"{name} {v:.0f} us" for name, v in clients.items()))
    checks = result["checks"]
    same = ", ".join(f"{name} {count}" for name, count in checks["same_text"].items())
    lines += ["", f"checks: tokens per request {checks['tokens']}; prompt tokens {checks['prompt_tokens']} "
                  "(llama-server counts the tokens it evaluated: it reuses the BOS cached from the previous request);",
              f"        requests whose text equals llama-server's: {same}"]
    return lines
