"""Benchmark: ``slmctl pull`` throughput (with sha256 verification) against ``curl`` on the same file.

A local Hugging Face-style server on 127.0.0.1 (tree API with the LFS sha256, ``resolve`` downloads with
HTTP Range support) serves the ~300 MB benchmark GGUF. Rounds alternate (A B, B A, ...):

* A = ``slmctl pull hf://bench/big/big.gguf --quiet`` into a fresh SLMCTL_HOME (parallel Range parts,
  sha256 verified, blob committed to the store);
* B = ``curl -s -o FILE URL`` (one stream, no verification).

It prints MB/s for both, the medians and the throughput ratio slmctl/curl (goal: >= 0.9).

Run:  .venv/bin/python benchmarks/bench_pull.py [--rounds 6]
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import base_parser, child_env, remove_home_on_sigterm  # noqa: E402
from bench_core import build_model  # noqa: E402

GOAL = 0.9
CHUNK = 1 << 20


def serve(model: Path, digest: str) -> http.server.ThreadingHTTPServer:
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
                self._file()
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
            with open(model, "rb") as handle:
                handle.seek(start)
                left = end - start + 1
                while left > 0:
                    data = handle.read(min(CHUNK, left))
                    self.wfile.write(data)
                    left -= len(data)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def timed(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(args, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{args[0]} failed ({proc.returncode}): {proc.stderr[-1500:]}")
    return time.perf_counter() - start


def main() -> None:
    args = base_parser(__doc__.split("\n\n")[0], rounds=6).parse_args()
    remove_home_on_sigterm()
    model = build_model(args.cache_dir, "Q4_K_M")
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    size_mb = model.stat().st_size / 1e6
    server = serve(model, digest)
    url = f"http://127.0.0.1:{server.server_port}"
    print(f"file {model.name} {size_mb:.0f} MB served on {url}")
    print("A = slmctl pull (parallel ranges, sha256 verified, stored), B = curl -o (one stream)", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="slmctl-bench-pull-") as tmp_name:
        tmp = Path(tmp_name)
        for i in range(args.rounds):
            order = "AB" if i % 2 == 0 else "BA"
            row = {}
            for side in order:
                home = tmp / f"home-{i}"
                env = {**child_env(home), "HF_ENDPOINT": url, "NO_PROXY": "127.0.0.1"}
                if side == "A":
                    row["A"] = size_mb / timed([sys.executable, "-m", "slmctl", "pull", "hf://bench/big/big.gguf",
                                                "--quiet"], env)
                    shutil.rmtree(home)
                else:
                    out = tmp / "curl.gguf"
                    row["B"] = size_mb / timed(["curl", "-s", "--noproxy", "*", "-o", str(out),
                                                f"{url}/bench/big/resolve/main/big.gguf"], env)
                    out.unlink()
            rows.append(row)
            print(f"  round {i + 1:>2} ({order})  A {row['A']:8.1f} MB/s   B {row['B']:8.1f} MB/s   "
                  f"A/B {row['A'] / row['B']:.3f}", flush=True)
    server.shutdown()
    a, b = (statistics.median(r[s] for r in rows) for s in "AB")
    print(f"  median           A {a:8.1f} MB/s   B {b:8.1f} MB/s")
    print(f"pull throughput slmctl/curl: {a / b:.3f} (goal >= {GOAL}: {'ok' if a / b >= GOAL else 'MISSED'})")


if __name__ == "__main__":
    main()
