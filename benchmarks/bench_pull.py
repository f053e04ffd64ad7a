"""Benchmark: ``slmctl pull`` throughput (sha256 verified, stored) against ``curl`` on the same file.

A local Hugging Face-style server on 127.0.0.1 (tree API with the LFS sha256, ``resolve`` downloads with
HTTP Range support, bodies sent with ``sendfile`` like a production server) serves a ~440 MB GGUF (the
benchmark model in Q8_0). Two links are measured, each with interleaved rounds (A B C, C B A, ...):

* ``loopback``: no limit, so the run is bound by the CPU of this machine (server and client share it);
* ``link``: the server sends at most ``--link-mbs`` MB/s over all its connections together (default 250,
  i.e. 2 Gbit/s, faster than most internet links), so neither client gains from opening several;
* ``per-connection``: each connection gets at most ``--conn-mbs`` MB/s (default 60), as CDN edges often
  allow one stream: the case parallel Range parts are made for.

Sides: A = ``slmctl pull hf://bench/big/big.gguf --json`` into a fresh SLMCTL_HOME (parallel Range parts,
sha256 computed while bytes arrive, fsynced, validated as GGUF, committed to the store); B = ``curl -s -o
FILE URL`` (one stream, no verification, no fsync); C = ``curl`` then ``sha256sum`` (what a careful user
types to get a verified file). It prints MB/s per round, the medians, the ratio slmctl/curl (goal >= 0.9)
and slmctl/(curl + sha256sum), and where the time of the median slmctl run went (from its NDJSON events).

Run:  .venv/bin/python benchmarks/bench_pull.py [--rounds 5] [--link-mbs 250] [--conn-mbs 60] [--quant Q8_0]
"""

from __future__ import annotations

import hashlib
import http.server
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import base_parser, child_env, remove_home_on_sigterm  # noqa: E402
from bench_core import build_model  # noqa: E402

GOAL = 0.9
CHUNK = 256 * 1024


class Pacer:
    """A send budget: ``rate`` bytes/s (None: unlimited) for whoever shares this pacer."""

    def __init__(self, rate: float | None = None) -> None:
        self.rate = rate
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self, nbytes: int) -> None:
        if self.rate is None:
            return
        with self._lock:
            now = time.perf_counter()
            start = max(now, self._next)
            self._next = start + nbytes / self.rate
        if start > now:
            time.sleep(start - now)


@dataclass
class Limits:
    """The server's sending limits, changed between scenarios: in total and per connection (bytes/s)."""

    total: Pacer = field(default_factory=Pacer)
    per_connection: float | None = None


def serve(model: Path, digest: str, limits: Limits) -> http.server.ThreadingHTTPServer:
    size = model.stat().st_size
    tree = json.dumps([{"type": "file", "path": "big.gguf", "size": size,
                        "lfs": {"oid": digest, "size": size}}]).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path.startswith("/api/models/bench/big/tree/"):
                self._send(200, tree, {"Content-Type": "application/json"})
            elif self.path == "/bench/big/resolve/main/big.gguf":
                try:
                    self._file()
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True
            else:
                self._send(404, b"not found", {})

        def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for key, value in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def _file(self) -> None:
            start, end = 0, size - 1
            ranged = self.headers.get("Range", "").startswith("bytes=")
            if ranged:
                first, _, last = self.headers["Range"][6:].partition("-")
                start, end = int(first), min(int(last) if last else size - 1, size - 1)
            self.send_response(206 if ranged else 200)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(end - start + 1))
            if ranged:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            pacers = [limits.total, Pacer(limits.per_connection)]
            paced = any(p.rate for p in pacers)
            with open(model, "rb") as handle:
                offset, left = start, end - start + 1
                while left > 0:
                    count = min(CHUNK, left) if paced else left
                    for pacer in pacers:
                        pacer.wait(count)
                    sent = self.connection.sendfile(handle, offset, count)
                    offset, left = offset + sent, left - sent

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: object, client_address: object) -> None:
            pass  # a client closing its connection early (curl, slmctl's range probe) is not news

    server = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def run_slmctl(env: dict[str, str]) -> tuple[float, dict[str, float]]:
    """Seconds of one ``slmctl pull --json`` and when (s from the start) its phases began."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "slmctl", "pull", "hf://bench/big/big.gguf", "--json"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    marks: dict[str, float] = {}
    assert proc.stdout is not None
    for line in proc.stdout:
        at, event = time.perf_counter() - start, json.loads(line)
        status = event.get("status", "")
        if status.startswith("pulling ") and "completed" in event:
            marks.setdefault("transfer", at)
            if event.get("total") and event["completed"] >= event["total"]:
                marks.setdefault("transferred", at)
        else:
            marks.setdefault(status, at)
    stderr = proc.stderr.read() if proc.stderr else ""
    if proc.wait() != 0:
        sys.exit(f"slmctl pull failed ({proc.returncode}): {stderr[-1500:]}")
    return time.perf_counter() - start, marks


def run_curl(env: dict[str, str], out: Path, url: str, verify: bool) -> float:
    start = time.perf_counter()
    commands = [["curl", "-s", "--fail", "--noproxy", "*", "-o", str(out), url]]
    if verify:
        commands.append(["sha256sum", str(out)])
    for args in commands:
        proc = subprocess.run(args, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"{args[0]} failed ({proc.returncode}): {proc.stderr[-1500:]}")
    elapsed = time.perf_counter() - start
    out.unlink()
    return elapsed


def phases(marks: dict[str, float], total: float) -> str:
    """Startup (to the first event), transfer, finishing (fsync tail, GGUF check, commit, exit)."""
    first = marks.get("pulling manifest", 0.0)
    transfer, done = marks.get("transfer", first), marks.get("transferred", total)
    return (f"start-up {first:.2f} s, resolve {transfer - first:.2f} s, transfer {done - transfer:.2f} s, "
            f"finish {total - done:.2f} s")


def scenario(name: str, rounds: int, url: str, size_mb: float, tmp: Path) -> tuple[float, float]:
    print(f"\n[{name}]", flush=True)
    rows = []
    for i in range(rounds):
        order = "ABC" if i % 2 == 0 else "CBA"
        row: dict[str, float] = {}
        for side in order:
            home = tmp / f"home-{name}-{i}"
            env = {**child_env(home), "HF_ENDPOINT": url, "NO_PROXY": "127.0.0.1"}
            if side == "A":
                seconds, marks = run_slmctl(env)
                row["A"], row["marks"] = size_mb / seconds, marks  # type: ignore[assignment]
                row["A_s"] = seconds
                shutil.rmtree(home)
            else:
                seconds = run_curl(env, tmp / "curl.gguf", f"{url}/bench/big/resolve/main/big.gguf", side == "C")
                row[side] = size_mb / seconds
        rows.append(row)
        print(f"  round {i + 1:>2} ({order})  A {row['A']:7.1f} MB/s   B {row['B']:7.1f} MB/s   "
              f"C {row['C']:7.1f} MB/s   A/B {row['A'] / row['B']:.3f}   A/C {row['A'] / row['C']:.3f}", flush=True)
    a, b, c = (statistics.median(r[s] for r in rows) for s in "ABC")
    middle = sorted(rows, key=lambda r: r["A"])[len(rows) // 2]
    print(f"  median           A {a:7.1f} MB/s   B {b:7.1f} MB/s   C {c:7.1f} MB/s")
    print(f"  median slmctl run: {phases(middle['marks'], middle['A_s'])}")  # type: ignore[arg-type]
    print(f"  {name}: slmctl/curl {a / b:.3f} (goal >= {GOAL}: {'ok' if a / b >= GOAL else 'MISSED'}),"
          f" slmctl/(curl + sha256sum) {a / c:.3f}", flush=True)
    return a / b, a / c


def main() -> None:
    parser = base_parser(__doc__.split("\n\n")[0], rounds=5)
    parser.add_argument("--link-mbs", type=float, default=250.0, help="the link scenario's limit in MB/s")
    parser.add_argument("--conn-mbs", type=float, default=60.0, help="the per-connection scenario's limit in MB/s")
    parser.add_argument("--quant", default="Q8_0", help="which benchmark model to serve (Q8_0: ~440 MB)")
    args = parser.parse_args()
    remove_home_on_sigterm()
    model = build_model(args.cache_dir, args.quant)
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    size_mb = model.stat().st_size / 1e6
    limits = Limits()
    server = serve(model, digest, limits)
    url = f"http://127.0.0.1:{server.server_port}"
    print(f"file {model.name} {size_mb:.0f} MB served on {url}")
    print("A = slmctl pull (parallel ranges, sha256 verified, fsynced, stored), B = curl -o (one stream), "
          "C = curl -o + sha256sum", flush=True)
    results = {}
    with tempfile.TemporaryDirectory(prefix="slmctl-bench-pull-") as tmp_name:
        results["loopback"] = scenario("loopback", args.rounds, url, size_mb, Path(tmp_name))
        limits.total = Pacer(args.link_mbs * 1e6)
        results["link"] = scenario(f"link {args.link_mbs:g} MB/s", args.rounds, url, size_mb, Path(tmp_name))
        limits.total, limits.per_connection = Pacer(), args.conn_mbs * 1e6
        results["per-connection"] = scenario(f"per-connection {args.conn_mbs:g} MB/s", args.rounds, url, size_mb,
                                             Path(tmp_name))
    server.shutdown()
    print("\nsummary: " + "; ".join(f"{k}: slmctl/curl {ab:.3f}, slmctl/(curl+sha256sum) {ac:.3f}"
                                    for k, (ab, ac) in results.items()))
    if args.output:
        args.output.write_text(json.dumps({k: {"slmctl_over_curl": ab, "slmctl_over_curl_sha256sum": ac}
                                           for k, (ab, ac) in results.items()}, indent=2))


if __name__ == "__main__":
    main()
