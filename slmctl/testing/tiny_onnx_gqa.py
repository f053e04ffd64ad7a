"""Random-weight onnxruntime-genai decoders built on ``com.microsoft.GroupQueryAttention``.

This module owns the synthetic decoder shaped as onnxruntime-genai's own model builder makes them for
CPU: one GroupQueryAttention node per layer with rotary embeddings inside it (``do_rotary`` with
``cos_cache``/``sin_cache``, no ``position_ids`` input), ``seqlens_k``/``total_sequence_length``
derived from ``attention_mask``, and past and present KV tensors sharing one buffer of the maximum
length (``past_present_share_buffer: true``). Unlike the plain-op decoder of
:mod:`slmctl.testing.tiny_onnx_decoder`, the runtime's Engine can batch requests of different
lengths on it, each row ending on its own. The tokenizer, chat template, printable-ASCII lm_head and
folder layout are the plain-op decoder's (:func:`write_decoder_folder`); files are byte-identical
across runs for a given :class:`TinyOnnxSpec`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from slmctl.testing.tiny_onnx_common import GraphBuilder, tensor_info
from slmctl.testing.tiny_onnx_decoder import (
    BENCH_ONNX_SPEC,
    TinyOnnxSpec,
    write_decoder_folder,
)

__all__ = ["BENCH_ONNX_GQA_SPEC", "write_bench_onnx_gqa", "write_tiny_onnx_gqa"]

_LOGIT_STD = 8.0
_EMBEDDING_STD = 1.0
_ROPE_THETA = 10000.0
_CONTRIB = "com.microsoft"

#: The benchmark GQA model: the plain-op benchmark's shapes (12 layers of 768, 12 heads / 4 KV heads,
#: FF 2048, 16000-token vocabulary, 2048-token context): ~83M fp32 parameters, ~330 MB.
BENCH_ONNX_GQA_SPEC = BENCH_ONNX_SPEC
_TINY_SPEC = TinyOnnxSpec()


def _mask_inputs(g: GraphBuilder) -> tuple[str, str]:
    """``seqlens_k`` (int32 [B]: each row's attended tokens minus one) and ``total_sequence_length``
    (int32 scalar: the mask's width), as the builder derives them from ``attention_mask``."""
    summed = g.op("ReduceSum", "attention_mask", g.const("axes_1", [1]), keepdims=0)
    seqlens = g.op("Cast", g.op("Sub", summed, g.const("int_1", np.array(1))), to=TensorProto.INT32)
    width = g.op("Gather", g.op("Shape", "attention_mask"), g.const("int_1", np.array(1)), axis=0)
    return seqlens, g.op("Cast", width, to=TensorProto.INT32)


def _rotary_caches(g: GraphBuilder, spec: TinyOnnxSpec) -> tuple[str, str]:
    """``cos_cache`` and ``sin_cache`` ([context, head_size / 2]) of the standard RoPE frequencies."""
    head_size = spec.hidden // spec.heads
    inverse = 1.0 / _ROPE_THETA ** (np.arange(0, head_size, 2, dtype=np.float64) / head_size)
    angles = np.outer(np.arange(spec.context_length, dtype=np.float64), inverse)
    return g.const("cos_cache", np.cos(angles)), g.const("sin_cache", np.sin(angles))


def _attention(g: GraphBuilder, h: str, spec: TinyOnnxSpec, layer: int, masks: tuple[str, str],
               rotary: tuple[str, str]) -> str:
    """Q/K/V projections and one GroupQueryAttention node (its present KV: ``present.{layer}.*``)."""
    head_size, name = spec.hidden // spec.heads, f"layers.{layer}"
    q = g.op("MatMul", h, g.weight(f"{name}.q", (spec.hidden, spec.hidden)))
    k = g.op("MatMul", h, g.weight(f"{name}.key", (spec.hidden, spec.kv_heads * head_size)))
    v = g.op("MatMul", h, g.weight(f"{name}.value", (spec.hidden, spec.kv_heads * head_size)))
    output = f"{name}.attention"
    inputs = [q, k, v, f"past_key_values.{layer}.key", f"past_key_values.{layer}.value", *masks, *rotary]
    g.nodes.append(helper.make_node(
        "GroupQueryAttention", inputs, [output, f"present.{layer}.key", f"present.{layer}.value"],
        f"node_{len(g.nodes)}_gqa", domain=_CONTRIB, num_heads=spec.heads, kv_num_heads=spec.kv_heads,
        do_rotary=1, rotary_interleaved=0, scale=float(1 / np.sqrt(head_size))))
    return g.op("MatMul", output, g.weight(f"{name}.o", (spec.hidden, spec.hidden)))


def _gqa_model(spec: TinyOnnxSpec, live_ids: list[int]) -> onnx.ModelProto:
    """The decoder graph; lm_head columns outside ``live_ids`` are zero."""
    if spec.hidden % spec.heads or spec.heads % spec.kv_heads or (spec.hidden // spec.heads) % 2:
        raise ValueError("hidden must be a multiple of heads, heads of kv_heads, and the head size even")
    g = GraphBuilder(spec.seed)
    x = g.op("Gather", g.weight("embed_tokens", (spec.vocab_size, spec.hidden), _EMBEDDING_STD), "input_ids")
    masks, rotary = _mask_inputs(g), _rotary_caches(g, spec)
    for layer in range(spec.n_layers):
        h = g.rms_norm(x, spec.hidden, f"layers.{layer}.attn_norm")
        x = g.op("Add", x, _attention(g, h, spec, layer, masks, rotary))
        mlp_in = g.rms_norm(x, spec.hidden, f"layers.{layer}.mlp_norm")
        x = g.op("Add", x, g.silu_mlp(mlp_in, spec.hidden, spec.ff, f"layers.{layer}.mlp"))
    lm_head = g.random((spec.hidden, spec.vocab_size), _LOGIT_STD / np.sqrt(spec.hidden))
    lm_head[:, np.setdiff1d(np.arange(spec.vocab_size), live_ids)] = 0.0
    g.op("MatMul", g.rms_norm(x, spec.hidden, "final_norm"), g.const("lm_head", lm_head), output="logits")
    model = g.model("tiny_gqa_decoder", *_gqa_io(spec))
    model.opset_import.append(helper.make_opsetid(_CONTRIB, 1))
    return model


def _gqa_io(spec: TinyOnnxSpec) -> tuple[list[onnx.ValueInfoProto], list[onnx.ValueInfoProto]]:
    """Inputs and outputs as the builder names them (no ``position_ids``: GQA applies the rotary)."""
    int64, float32 = TensorProto.INT64, TensorProto.FLOAT
    batch, new, total = "batch_size", "sequence_length", "total_sequence_length"
    inputs = [tensor_info("input_ids", int64, batch, new), tensor_info("attention_mask", int64, batch, total)]
    outputs = [tensor_info("logits", float32, batch, new, spec.vocab_size)]
    heads, head_size = spec.kv_heads, spec.hidden // spec.heads
    for layer in range(spec.n_layers):
        for kind in ("key", "value"):
            inputs.append(tensor_info(f"past_key_values.{layer}.{kind}", float32, batch, heads,
                                      "past_sequence_length", head_size))
            outputs.append(tensor_info(f"present.{layer}.{kind}", float32, batch, heads, total, head_size))
    return inputs, outputs


def write_tiny_onnx_gqa(directory: str | os.PathLike[str], spec: TinyOnnxSpec = _TINY_SPEC) -> Path:
    """Write a random-weight GroupQueryAttention decoder folder described by ``spec``; return the folder
    (the same files as :func:`~slmctl.testing.tiny_onnx_decoder.write_tiny_onnx_genai`)."""
    return write_decoder_folder(directory, spec, _gqa_model, share_buffer=True)


def write_bench_onnx_gqa(directory: str | os.PathLike[str], spec: TinyOnnxSpec = BENCH_ONNX_GQA_SPEC) -> Path:
    """Write the benchmark GQA model folder (:data:`BENCH_ONNX_GQA_SPEC` by default) and return it."""
    return write_tiny_onnx_gqa(directory, spec)
