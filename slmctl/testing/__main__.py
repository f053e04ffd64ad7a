"""``python -m slmctl.testing OUT``: write a tiny random-weight model to try slmctl offline.

``OUT`` gets a GGUF file; ``--onnx`` writes an ONNX Runtime GenAI folder (``--gqa``: one built on
GroupQueryAttention, which ``slmctl serve --parallel N`` batches), ``--encoder`` an ONNX
sentence-embedding folder, ``--bench`` the realistic-size benchmark GGUF (with ``--gqa``: the
benchmark-size GQA ONNX folder). ``--ctx`` sets the context
length of a GGUF or ONNX GenAI model (512 by default: the README's Modelfile and benchmark examples
need 4096) and ``--eos`` lets it sample end-of-sequence, so an answer may stop before ``--max-tokens``
(by default it never does: a run yields exactly ``--max-tokens`` tokens). The answers of these models
are random text: they exist to exercise the whole path (import, run, REPL, JSON output, serve,
bench) without downloading anything. The README's contract test (``tests/test_readme_contract.py``)
writes every model its examples need through :func:`main`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

DESCRIPTION = "Write a tiny random-weight model (GGUF by default) to try slmctl offline; its answers are random text."
EXAMPLES = """\
examples:
  python -m slmctl.testing tiny.gguf                      # 125K parameters, 512-token context
  python -m slmctl.testing phi3.gguf --ctx 4096           # room for a Modelfile FILE or --prompt-tokens 512
  python -m slmctl.testing chatty.gguf --eos              # answers may end before --max-tokens
  python -m slmctl.testing --onnx tiny-onnx --ctx 2048    # an ONNX Runtime GenAI folder
  python -m slmctl.testing --gqa tiny-gqa                 # ONNX on GroupQueryAttention (batched by serve)
  python -m slmctl.testing --gqa --bench bench-gqa        # ~330 MB GQA ONNX folder (benchmarks)
  python -m slmctl.testing --encoder minilm               # an ONNX sentence-embedding folder (slmctl embed)
  python -m slmctl.testing --bench bench.gguf             # ~300 MB Qwen2.5-0.5B-shaped Q4_K_M (benchmarks)
then: slmctl import tiny.gguf --name tiny && slmctl run tiny "Hello" --max-tokens 32
"""


def _positive(text: str) -> int:
    value = int(text)
    if value < 16:
        raise argparse.ArgumentTypeError(f"must be at least 16, not {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m slmctl.testing", description=DESCRIPTION,
                                     epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path, help="where to write the .gguf file or the model folder")
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--onnx", action="store_true", help="a tiny ONNX Runtime GenAI model folder")
    kind.add_argument("--encoder", action="store_true", help="a tiny ONNX sentence-embedding folder")
    kind.add_argument("--bench", action="store_true", help="a ~300 MB Qwen2.5-0.5B-shaped GGUF (Q4_K_M); with --gqa, a "
                      "~330 MB GQA ONNX folder")
    parser.add_argument("--gqa", action="store_true",
                        help="an ONNX Runtime GenAI folder on GroupQueryAttention (implies --onnx; with --bench: "
                        "the benchmark-size one)")
    parser.add_argument("--ctx", type=_positive, metavar="N",
                        help="context length in tokens (default: 512; --bench: 4096; not with --encoder)")
    parser.add_argument("--eos", action="store_true",
                        help="let the model sample end-of-sequence (default: it never does)")
    return parser


def main(argv: Sequence[str] | None = None) -> Path:
    """Parse ``argv`` (default: the command line), write the model, print and return its path."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.encoder and (args.ctx or args.eos):
        parser.error("--ctx and --eos apply to text generators, not to --encoder (its context is 128 tokens)")
    if args.gqa and args.encoder:
        parser.error("--gqa writes a text generator, not an --encoder")
    shape = {"eos_reachable": args.eos} | ({"context_length": args.ctx} if args.ctx else {})
    if args.gqa:
        from slmctl.testing.tiny_onnx import BENCH_ONNX_GQA_SPEC, TinyOnnxSpec, write_tiny_onnx_gqa

        path = write_tiny_onnx_gqa(args.output, replace(BENCH_ONNX_GQA_SPEC, **shape) if args.bench
                                   else TinyOnnxSpec(**shape))
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    elif args.onnx or args.encoder:
        from slmctl.testing.tiny_onnx import TinyOnnxSpec, write_tiny_onnx_encoder, write_tiny_onnx_genai

        if args.encoder:
            path = write_tiny_onnx_encoder(args.output)
        else:
            path = write_tiny_onnx_genai(args.output, TinyOnnxSpec(**shape))
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    else:
        from slmctl.testing.tiny_gguf import BENCH_SPEC, TinyGGUFSpec, write_bench_gguf, write_tiny_gguf

        if args.bench:
            path = write_bench_gguf(args.output, spec=replace(BENCH_SPEC, **shape))
        else:
            path = write_tiny_gguf(args.output, TinyGGUFSpec(**shape))
        size = path.stat().st_size
    print(f"wrote {path} ({size} bytes)")
    return path


if __name__ == "__main__":
    main()
