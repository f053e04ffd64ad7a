"""What the benchmarks share: the cached model, a temporary SLMCTL_HOME filled by the real CLI, fresh
child processes with JSON figures on stdout, interleaved A/B rounds, and their medians and ratios.

A is always ``slmctl run NAME PROMPT --json ...`` and B a script driving the raw runtime the same way;
both report ``load_duration``, ``eval_count``, ``eval_duration`` (ns) and ``response``, and decode
tok/s = eval_count / eval_duration on both sides.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROMPT = "Write a short story about a llama who learns to program computers."
DEFAULT_CACHE = REPO / "benchmarks" / ".cache"
DECODE_GOAL = 0.98


def base_parser(description: str, rounds: int) -> argparse.ArgumentParser:
    """The options every benchmark has: --tokens, --rounds, --cache-dir, --output."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--tokens", type=int, default=128, help="tokens generated per run")
    p.add_argument("--rounds", type=int, default=rounds, help="interleaved A/B rounds")
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="where the model is kept")
    p.add_argument("--output", type=Path, help="also write the results as JSON here")
    return p


def remove_home_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so that the temporary SLMCTL_HOME is removed."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def build_once(path: Path, write: Callable[[Path], Path]) -> Path:
    """``path`` (a file or a folder), built only when missing: ``write(target)`` builds it in a
    temporary folder beside it and returns what it wrote, which is then renamed into place."""
    if path.exists():
        return path
    sys.path.insert(0, str(REPO))
    path.parent.mkdir(parents=True, exist_ok=True)
    print(f"building {path.name} ...", flush=True)
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.part-", dir=path.parent) as tmp:
        built = write(Path(tmp) / path.name)
        try:
            os.replace(built, path)
        except OSError:
            if not path.exists():  # else another run built it meanwhile
                raise
    return path


def child_env(home: Path, shim: Path | None = None) -> dict[str, str]:
    """Environment of every child: our SLMCTL_HOME, the repo (and the shim) on PYTHONPATH."""
    paths = ([str(shim)] if shim else []) + [str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p]
    return {**os.environ, "SLMCTL_HOME": str(home), "PYTHONPATH": os.pathsep.join(paths)}


def slmctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "slmctl", *args], env=env, capture_output=True, text=True)


def parse_json(proc: subprocess.CompletedProcess[str], what: str) -> dict:
    if proc.returncode != 0:
        sys.exit(f"{what} failed (rc {proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def import_model(tmp: Path, model: Path, name: str) -> tuple[dict[str, str], dict]:
    """Import ``model`` as ``name`` into ``tmp/home`` with the CLI; return the env and ``show --json``."""
    env = child_env(tmp / "home")
    imported = slmctl(env, "import", str(model), "--name", name)
    if imported.returncode != 0:
        sys.exit(f"slmctl import failed:\n{imported.stderr}")
    return env, parse_json(slmctl(env, "show", name, "--json"), "slmctl show")


def run_slmctl(env: dict[str, str], name: str, tokens: int, *extra: str) -> dict:
    """A: ``slmctl run NAME PROMPT --json --max-tokens N --seed 1 [extra]`` in a fresh interpreter."""
    proc = slmctl(env, "run", name, PROMPT, "--json", "--max-tokens", str(tokens), "--seed", "1", *extra)
    return parse_json(proc, "slmctl run")


def run_script(env: dict[str, str], script: str, cfg: dict) -> subprocess.CompletedProcess[str]:
    """B: ``script`` in a fresh interpreter, ``cfg`` as JSON in argv[1] (its JSON figures on stdout)."""
    return subprocess.run([sys.executable, "-c", script, json.dumps(cfg)], env=env, capture_output=True, text=True)


def figures(result: dict) -> dict:
    """Decode tok/s and load ms, the same way for both sides."""
    if not result.get("eval_count") or not result.get("eval_duration"):
        sys.exit(f"a run did not produce the expected tokens: {json.dumps(result)[:500]}")
    return {"tok_s": result["eval_count"] / (result["eval_duration"] / 1e9),
            "load_ms": result["load_duration"] / 1e6, "eval_count": result["eval_count"],
            "response": result["response"]}


def bench_rounds(rounds: int, run_a: Callable[[], dict], run_b: Callable[[], dict]) -> list[dict]:
    """``rounds`` rounds alternating A B, B A, ...; each run's result dict comes from ``run_a``/``run_b``."""
    rows = []
    for i in range(rounds):
        order = "AB" if i % 2 == 0 else "BA"
        row: dict = {"order": order}
        for side in order:
            row[side] = figures(run_a() if side == "A" else run_b())
        row["same_text"] = row["A"].pop("response") == row["B"].pop("response")
        rows.append(row)
        a, b = row["A"], row["B"]
        print(f"  round {i + 1:>2} ({order})  A {a['tok_s']:7.2f} tok/s {a['load_ms']:7.1f} ms   "
              f"B {b['tok_s']:7.2f} tok/s {b['load_ms']:7.1f} ms   A/B {a['tok_s'] / b['tok_s']:.3f}"
              f"   same text: {'yes' if row['same_text'] else 'NO'}", flush=True)
    return rows


def summarize(rounds: list[dict]) -> dict:
    med = {side: {k: statistics.median(r[side][k] for r in rounds) for k in ("tok_s", "load_ms")} for side in "AB"}
    return {
        "median": med,
        "decode_ratio": med["A"]["tok_s"] / med["B"]["tok_s"],
        "decode_ratio_paired": statistics.median(r["A"]["tok_s"] / r["B"]["tok_s"] for r in rounds),
        "load_ratio": med["A"]["load_ms"] / med["B"]["load_ms"],
    }


def print_summary(summary: dict) -> None:
    med, ratio = summary["median"], summary["decode_ratio"]
    print(f"  median           A {med['A']['tok_s']:7.2f} tok/s {med['A']['load_ms']:7.1f} ms   "
          f"B {med['B']['tok_s']:7.2f} tok/s {med['B']['load_ms']:7.1f} ms")
    print(f"decode tok/s slmctl/raw: {ratio:.3f} (median of per-round ratios {summary['decode_ratio_paired']:.3f}; "
          f"goal >= {DECODE_GOAL}: {'ok' if ratio >= DECODE_GOAL else 'MISSED'})")
    print(f"load time    slmctl/raw: {summary['load_ratio']:.3f}", flush=True)


def median_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """A distribution-free confidence interval for the median of ``values`` (order statistics): the widest
    k-th smallest to k-th largest whose chance of holding the true median, k ~ Binomial(n, 1/2), is still
    at least ``confidence``. None when there are too few values for it (fewer than 6 at 95 %)."""
    ordered, n = sorted(values), len(values)
    best = None
    for k in range(1, n // 2 + 1):  # [ordered[k-1], ordered[n-k]] misses the median with chance 2 P(B < k)
        if 1 - 2 * sum(math.comb(n, i) for i in range(k)) / 2 ** n >= confidence:
            best = (ordered[k - 1], ordered[n - k])
        else:
            break
    return best


def write_output(path: Path | None, result: dict) -> None:
    if path:
        path.write_text(json.dumps(result, indent=2) + "\n")
