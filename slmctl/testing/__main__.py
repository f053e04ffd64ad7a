"""``python -m slmctl.testing OUT.gguf``: write a tiny random-weight GGUF model to try slmctl offline.

Its answers are random text: it exists to exercise the whole path (import, run, REPL, JSON output)
without downloading anything. ``--bench`` writes the realistic-size benchmark model instead.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from slmctl.testing.tiny_gguf import write_bench_gguf, write_tiny_gguf


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m slmctl.testing", description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="where to write the .gguf file")
    parser.add_argument("--bench", action="store_true", help="a ~300 MB Qwen2.5-0.5B-shaped model (Q4_K_M)")
    args = parser.parse_args()
    path = write_bench_gguf(args.output) if args.bench else write_tiny_gguf(args.output)
    print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
