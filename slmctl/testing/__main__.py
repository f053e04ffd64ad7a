"""``python -m slmctl.testing OUT``: write a tiny random-weight model to try slmctl offline.

``OUT.gguf`` gets a GGUF file; ``--onnx`` writes an ONNX Runtime GenAI folder, ``--encoder`` an ONNX
sentence-embedding folder, ``--bench`` the realistic-size benchmark GGUF. The answers of these models
are random text: they exist to exercise the whole path (import, run, REPL, JSON output) without
downloading anything.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m slmctl.testing", description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="where to write the .gguf file or the model folder")
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--onnx", action="store_true", help="a tiny ONNX Runtime GenAI model folder")
    kind.add_argument("--encoder", action="store_true", help="a tiny ONNX sentence-embedding folder")
    kind.add_argument("--bench", action="store_true", help="a ~300 MB Qwen2.5-0.5B-shaped GGUF (Q4_K_M)")
    args = parser.parse_args()
    if args.onnx or args.encoder:
        from slmctl.testing.tiny_onnx import write_tiny_onnx_encoder, write_tiny_onnx_genai

        path = (write_tiny_onnx_encoder if args.encoder else write_tiny_onnx_genai)(args.output)
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    else:
        from slmctl.testing.tiny_gguf import write_bench_gguf, write_tiny_gguf

        path = write_bench_gguf(args.output) if args.bench else write_tiny_gguf(args.output)
        size = path.stat().st_size
    print(f"wrote {path} ({size} bytes)")


if __name__ == "__main__":
    main()
