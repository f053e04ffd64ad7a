"""Random-weight ONNX models for tests and benchmarks: the public entry point.

This module owns the public API of slmctl's synthetic ONNX models and re-exports it from the modules
that build them:

* :mod:`slmctl.testing.tiny_onnx_decoder`: onnxruntime-genai decoder folders of plain ops
  (:func:`write_tiny_onnx_genai`, :func:`write_bench_onnx_genai`, :class:`TinyOnnxSpec`);
* :mod:`slmctl.testing.tiny_onnx_gqa`: the same decoders on GroupQueryAttention with a shared KV buffer,
  which onnxruntime-genai's Engine can batch (:func:`write_tiny_onnx_gqa`, :func:`write_bench_onnx_gqa`);
* :mod:`slmctl.testing.tiny_onnx_encoder`: a sentence-transformers-style embedding model folder
  (:func:`write_tiny_onnx_encoder`);
* :mod:`slmctl.testing.tiny_onnx_common`: the tokenizer and graph helpers they share.
"""

from __future__ import annotations

from slmctl.testing.tiny_onnx_common import SPECIAL_TOKENS, build_tokenizer
from slmctl.testing.tiny_onnx_decoder import (
    BENCH_ONNX_SPEC,
    TinyOnnxSpec,
    write_bench_onnx_genai,
    write_tiny_onnx_genai,
)
from slmctl.testing.tiny_onnx_encoder import ENCODER_HIDDEN, write_tiny_onnx_encoder
from slmctl.testing.tiny_onnx_gqa import (
    BENCH_ONNX_GQA_SPEC,
    write_bench_onnx_gqa,
    write_tiny_onnx_gqa,
)

__all__ = [
    "BENCH_ONNX_GQA_SPEC",
    "BENCH_ONNX_SPEC",
    "ENCODER_HIDDEN",
    "SPECIAL_TOKENS",
    "TinyOnnxSpec",
    "build_tokenizer",
    "write_bench_onnx_genai",
    "write_bench_onnx_gqa",
    "write_tiny_onnx_encoder",
    "write_tiny_onnx_genai",
    "write_tiny_onnx_gqa",
]
