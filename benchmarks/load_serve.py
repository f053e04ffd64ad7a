"""Load test of ``slmctl serve`` (issue 14): many concurrent clients against a bounded queue.

64 clients (``--clients``) send non-streaming ``/api/generate`` requests back to back for 30 s
(``--seconds``) to ``slmctl serve --queue 16`` over a tiny GGUF model. Every answer must be a 200, or a 503
with ``Retry-After`` (the queue is full); the server must stay up and its RSS (with its runner processes)
stay under ``--rss-bound-mib`` (default 512 MiB). Prints the counts by status, latency percentiles of the
200s and the peak RSS, and exits 1 if a rule was broken.

    python benchmarks/load_serve.py [--clients 64] [--seconds 30] [--queue 16] [--model PATH.gguf]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def tree_rss(pid: int) -> int:
    import psutil

    try:
        proc = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])
    except psutil.Error:
        return 0


async def load(url: str, pid: int, clients: int, seconds: float, predict: int) -> dict:
    import httpx

    statuses: Counter[str] = Counter()
    latencies: list[float] = []
    problems: list[str] = []
    peak = [tree_rss(pid)]
    processes = [1]
    stop_at = time.monotonic() + seconds
    body = {"model": "phi4:mini", "prompt": "Tell me a story.", "stream": False,
            "options": {"num_predict": predict}}

    async def client(http: httpx.AsyncClient) -> None:
        while time.monotonic() < stop_at:
            started = time.monotonic()
            try:
                response = await http.post(url + "/api/generate", json=body)
            except httpx.HTTPError as error:
                statuses["transport-error"] += 1
                problems.append(f"transport error: {error!r}")
                await asyncio.sleep(0.1)
                continue
            statuses[str(response.status_code)] += 1
            if response.status_code == 200:
                latencies.append(time.monotonic() - started)
            elif response.status_code == 503:
                retry = response.headers.get("retry-after")
                if not retry:
                    problems.append("503 without Retry-After")
                await asyncio.sleep(min(float(retry or 1), 0.25))  # a polite client, but keep the pressure on
            else:
                problems.append(f"{response.status_code}: {response.text[:200]}")

    async def watch() -> None:
        import psutil

        while time.monotonic() < stop_at:
            peak[0] = max(peak[0], tree_rss(pid))
            try:
                processes[0] = max(processes[0], 1 + len(psutil.Process(pid).children(recursive=True)))
            except psutil.Error:
                pass
            await asyncio.sleep(0.2)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        await asyncio.gather(watch(), *(client(http) for _ in range(clients)))
    return {"statuses": dict(statuses), "latencies": latencies, "problems": problems, "peak_rss": peak[0],
            "processes": processes[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--queue", type=int, default=16)
    parser.add_argument("--predict", type=int, default=16, help="num_predict of each request")
    parser.add_argument("--rss-bound-mib", type=int, default=512)
    parser.add_argument("--model", type=Path, help="a GGUF model (default: a tiny synthetic one)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    import httpx
    from serve_fixtures import Served

    from slmctl.services.importer import import_path
    from slmctl.store import ModelStore
    from slmctl.testing.tiny_gguf import write_tiny_gguf

    with tempfile.TemporaryDirectory(prefix="slmctl-load-") as tmp:
        home = Path(tmp) / "home"
        model = args.model or write_tiny_gguf(Path(tmp) / "tiny.gguf")
        import_path(ModelStore(home / "models"), model, "phi4:mini")
        served = Served(home, "--queue", str(args.queue), "--preload", "phi4:mini")
        try:
            idle_rss = tree_rss(served.proc.pid)
            started = time.monotonic()
            result = asyncio.run(load(served.url, served.proc.pid, args.clients, args.seconds, args.predict))
            elapsed = time.monotonic() - started
            alive = served.proc.poll() is None and httpx.get(served.url + "/api/health", timeout=10).status_code == 200
        finally:
            code = served.stop()
            log = served.log()

    lat = result["latencies"]
    total = sum(result["statuses"].values())
    report = {
        "clients": args.clients, "seconds": round(elapsed, 1), "queue": args.queue, "requests": total,
        "statuses": result["statuses"], "ok_per_s": round(len(lat) / elapsed, 1),
        "latency_s": {f"p{q}": round(percentile(lat, q), 3) for q in (50, 90, 99)} | {"max": round(max(lat, default=0), 3)},
        "idle_rss_mib": round(idle_rss / 2**20), "peak_rss_mib": round(result["peak_rss"] / 2**20),
        "processes": result["processes"],
        "rss_bound_mib": args.rss_bound_mib, "alive": alive, "exit_code": code,
        "problems": result["problems"][:10], "problem_count": len(result["problems"]),
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    broken = []
    if result["problems"]:
        broken.append(f"{len(result['problems'])} answers other than 200 / 503+Retry-After")
    if not alive:
        broken.append("the server died:\n" + log[-3000:])
    if result["peak_rss"] > args.rss_bound_mib * 2**20:
        broken.append(f"peak RSS {report['peak_rss_mib']} MiB over {args.rss_bound_mib} MiB")
    if not lat:
        broken.append("no request succeeded")
    for line in broken:
        print("FAIL:", line, file=sys.stderr)
    return 1 if broken else 0


if __name__ == "__main__":
    raise SystemExit(main())
