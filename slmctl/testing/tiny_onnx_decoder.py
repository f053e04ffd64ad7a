"""Builders of random-weight ONNX Runtime GenAI decoder models for tests and benchmarks.

This module owns the synthetic onnxruntime-genai model folders: a tiny Llama-like decoder that the
real onnxruntime-genai loads and runs (:func:`write_tiny_onnx_genai`) and a larger one for benchmarks
(:func:`write_bench_onnx_genai`). Every file is byte-identical across runs for a given
:class:`TinyOnnxSpec`.

The decoder is made of plain opset-17 ops: token and learned position embeddings, pre-RMSNorm blocks
of multi-head attention (GQA when ``kv_heads < heads``; the KV cache is ``Concat(past, new, axis=2)``,
hence ``past_present_share_buffer: false``) and a SiLU MLP, then an lm_head MatMul. The lm_head
columns of the special tokens and of the tokens that do not decode to printable ASCII are zero, so
their logits are 0 while the others are about N(0, 8): generated text is printable ASCII and, unless
``eos_reachable`` keeps the EOS columns, a run yields exactly the requested number of tokens.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto

from slmctl.testing.tiny_gguf import CHATML_TEMPLATE
from slmctl.testing.tiny_onnx_common import (
    SPECIAL_TOKENS,
    GraphBuilder,
    build_tokenizer,
    printable_token_ids,
    tensor_info,
    write_json,
    write_tokenizer_files,
)

__all__ = ["BENCH_ONNX_SPEC", "TinyOnnxSpec", "genai_config", "write_bench_onnx_genai", "write_decoder_folder",
           "write_tiny_onnx_genai"]

_BOS_ID, _EOS_IDS, _PAD_ID = 0, (2, 0), 0  # <|endoftext|> starts and pads; <|im_end|> or it ends
_LOGIT_STD = 8.0
_EMBEDDING_STD = 1.0
_PROTOBUF_LIMIT = 2_000_000_000  # larger models keep their weights in model.onnx.data


@dataclass(frozen=True)
class TinyOnnxSpec:
    """Shape and content of a synthetic decoder (defaults: 140K parameters, ~0.57 MB, ~30 ms to write)."""

    n_layers: int = 2
    hidden: int = 64
    heads: int = 4
    kv_heads: int = 4
    ff: int = 128
    #: At least 259 (3 special tokens and 256 bytes); up to 320 the tokenizer is trained on English only.
    vocab_size: int = 320
    context_length: int = 512
    seed: int = 0
    #: True keeps the logits of the EOS tokens (<|im_end|>, <|endoftext|>): generation may stop early.
    eos_reachable: bool = False
    #: True writes the chat template to ``chat_template.jinja`` instead of ``tokenizer_config.json``.
    template_file: bool = False
    #: ``model.type`` in genai_config.json: any decoder-only type genai knows (llama, qwen2, phi3, ...).
    model_type: str = "llama"
    chat_template: str = CHATML_TEMPLATE


#: The benchmark model: 12 layers of 768, 16000-token vocabulary: 83M fp32 parameters, ~331 MB in one file.
BENCH_ONNX_SPEC = TinyOnnxSpec(
    n_layers=12, hidden=768, heads=12, kv_heads=4, ff=2048, vocab_size=16000, context_length=2048
)


def _attention_bias(g: GraphBuilder) -> str:
    """[B, 1, S, T] float: 0 where query s may see key t (causal, not padding), else -1e9."""
    total = g.op("Shape", "attention_mask", start=1, end=2)
    past = g.op("Sub", total, g.op("Shape", "input_ids", start=1, end=2))
    total_s, past_s = g.op("Squeeze", total), g.op("Squeeze", past)
    zero, one = g.const("int_0", np.array(0)), g.const("int_1", np.array(1))
    queries = g.op("Unsqueeze", g.op("Range", past_s, total_s, one), g.const("axes_1", [1]))
    keys = g.op("Unsqueeze", g.op("Range", zero, total_s, one), g.const("axes_0", [0]))
    padding = g.op("Cast", g.op("Unsqueeze", "attention_mask", g.const("axes_1_2", [1, 2])), to=TensorProto.BOOL)
    allowed = g.op("And", g.op("LessOrEqual", keys, queries), padding)
    return g.op("Where", allowed, g.const("bias_open", np.float32(0)), g.const("bias_closed", np.float32(-1e9)))


def _repeat_kv(g: GraphBuilder, x: str, spec: TinyOnnxSpec) -> str:
    """[B, kv_heads, T, D] -> [B, heads, T, D], each KV head serving ``heads // kv_heads`` query heads."""
    if spec.kv_heads == spec.heads:
        return x
    repeats = g.const("kv_repeats", [1, 1, spec.heads // spec.kv_heads, 1, 1])
    expanded = g.op("Expand", g.op("Unsqueeze", x, g.const("axes_2", [2])), repeats)
    return g.op("Reshape", expanded, g.const("kv_merged", [0, spec.heads, -1, spec.hidden // spec.heads]))


def _decoder_block(g: GraphBuilder, x: str, spec: TinyOnnxSpec, layer: int, bias: str) -> str:
    """One pre-norm transformer block; its KV cache is ``present.{layer}.key`` and ``.value``."""
    head_size, name = spec.hidden // spec.heads, f"layers.{layer}"
    h = g.rms_norm(x, spec.hidden, f"{name}.attn_norm")
    q = g.split_heads(h, g.weight(f"{name}.q", (spec.hidden, spec.hidden)), spec.heads, head_size)
    cache: dict[str, str] = {}
    for kind in ("key", "value"):
        weight = g.weight(f"{name}.{kind}", (spec.hidden, spec.kv_heads * head_size))
        new = g.split_heads(h, weight, spec.kv_heads, head_size)
        present = g.op("Concat", f"past_key_values.{layer}.{kind}", new, axis=2, output=f"present.{layer}.{kind}")
        cache[kind] = _repeat_kv(g, present, spec)
    context = g.attention(q, cache["key"], cache["value"], bias, head_size)
    x = g.op("Add", x, g.op("MatMul", context, g.weight(f"{name}.o", (spec.hidden, spec.hidden))))
    mlp_in = g.rms_norm(x, spec.hidden, f"{name}.mlp_norm")
    return g.op("Add", x, g.silu_mlp(mlp_in, spec.hidden, spec.ff, f"{name}.mlp"))


def _decoder_model(spec: TinyOnnxSpec, live_ids: list[int]) -> onnx.ModelProto:
    """The decoder graph; lm_head columns outside ``live_ids`` are zero."""
    if spec.hidden % spec.heads or spec.heads % spec.kv_heads:
        raise ValueError("hidden must be a multiple of heads, and heads a multiple of kv_heads")
    g = GraphBuilder(spec.seed)
    embed_tokens = g.weight("embed_tokens", (spec.vocab_size, spec.hidden), _EMBEDDING_STD)
    embed_positions = g.weight("embed_positions", (spec.context_length, spec.hidden), _EMBEDDING_STD)
    x = g.op("Add", g.op("Gather", embed_tokens, "input_ids"), g.op("Gather", embed_positions, "position_ids"))
    bias = _attention_bias(g)
    for layer in range(spec.n_layers):
        x = _decoder_block(g, x, spec, layer, bias)
    lm_head = g.random((spec.hidden, spec.vocab_size), _LOGIT_STD / np.sqrt(spec.hidden))
    lm_head[:, np.setdiff1d(np.arange(spec.vocab_size), live_ids)] = 0.0
    g.op("MatMul", g.rms_norm(x, spec.hidden, "final_norm"), g.const("lm_head", lm_head), output="logits")
    inputs, outputs = _decoder_io(spec)
    return g.model("tiny_decoder", inputs, outputs)


def _decoder_io(spec: TinyOnnxSpec) -> tuple[list[onnx.ValueInfoProto], list[onnx.ValueInfoProto]]:
    """The graph inputs and outputs, named and shaped as onnxruntime-genai expects by default."""
    int64, float32 = TensorProto.INT64, TensorProto.FLOAT
    batch, new, past, total = "batch_size", "sequence_length", "past_sequence_length", "total_sequence_length"
    inputs = [tensor_info("input_ids", int64, batch, new), tensor_info("attention_mask", int64, batch, total)]
    inputs.append(tensor_info("position_ids", int64, batch, new))
    outputs = [tensor_info("logits", float32, batch, new, spec.vocab_size)]
    heads, head_size = spec.kv_heads, spec.hidden // spec.heads
    for layer in range(spec.n_layers):
        for kind in ("key", "value"):
            inputs.append(tensor_info(f"past_key_values.{layer}.{kind}", float32, batch, heads, past, head_size))
            outputs.append(tensor_info(f"present.{layer}.{kind}", float32, batch, heads, total, head_size))
    return inputs, outputs


def genai_config(spec: TinyOnnxSpec, *, share_buffer: bool = False) -> dict[str, Any]:
    """``genai_config.json`` of a decoder of ``spec``; ``share_buffer``: its past and present KV tensors
    are one buffer of the maximum length (a GroupQueryAttention graph), not grown by Concat."""
    decoder = {
        "filename": "model.onnx",
        "session_options": {"provider_options": []},
        "hidden_size": spec.hidden,
        "num_attention_heads": spec.heads,
        "num_key_value_heads": spec.kv_heads,
        "head_size": spec.hidden // spec.heads,
        "num_hidden_layers": spec.n_layers,
    }
    model = {
        "type": spec.model_type,
        "vocab_size": spec.vocab_size,
        "context_length": spec.context_length,
        "bos_token_id": _BOS_ID,
        "eos_token_id": list(_EOS_IDS),
        "pad_token_id": _PAD_ID,
        "decoder": decoder,
    }
    search = {"max_length": spec.context_length, "do_sample": False, "past_present_share_buffer": share_buffer}
    return {"model": model, "search": search}


def _save(model: onnx.ModelProto, path: Path) -> None:
    """Save ``model`` as one file, or with its weights in ``<name>.data`` when protobuf cannot hold them."""
    size = sum(len(t.raw_data) for t in model.graph.initializer)
    external = size > _PROTOBUF_LIMIT
    onnx.save(model, path, save_as_external_data=external, all_tensors_to_one_file=True, location=f"{path.name}.data")


def write_tiny_onnx_genai(directory: str | os.PathLike[str], spec: TinyOnnxSpec = TinyOnnxSpec()) -> Path:
    """Write a random-weight onnxruntime-genai model folder described by ``spec``; return the folder.

    Files: ``genai_config.json``, ``model.onnx`` (plus ``model.onnx.data`` past 2 GB),
    ``tokenizer.json``, ``tokenizer_config.json`` and, with ``spec.template_file``, ``chat_template.jinja``.
    """
    return write_decoder_folder(directory, spec, _decoder_model, share_buffer=False)


def write_decoder_folder(directory: str | os.PathLike[str], spec: TinyOnnxSpec,
                         build: Callable[[TinyOnnxSpec, list[int]], onnx.ModelProto], *, share_buffer: bool) -> Path:
    """Write the folder of a decoder whose graph ``build(spec, live_ids)`` makes (``live_ids``: the tokens
    the lm_head may produce), with the shared tokenizer, chat template and ``genai_config.json``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(spec.vocab_size)
    tokenizer_config: dict[str, Any] = {
        "tokenizer_class": "GPT2Tokenizer",
        "bos_token": SPECIAL_TOKENS[_BOS_ID],
        "eos_token": SPECIAL_TOKENS[_EOS_IDS[0]],
        "pad_token": SPECIAL_TOKENS[_PAD_ID],
        "unk_token": None,
        "add_bos_token": False,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": spec.context_length,
    }
    if spec.template_file:
        (directory / "chat_template.jinja").write_text(spec.chat_template, encoding="utf-8")
    else:
        tokenizer_config["chat_template"] = spec.chat_template
    write_tokenizer_files(directory, tokenizer, tokenizer_config)
    write_json(directory / "genai_config.json", genai_config(spec, share_buffer=share_buffer))
    live_ids = printable_token_ids(tokenizer) + (list(_EOS_IDS) if spec.eos_reachable else [])
    _save(build(spec, live_ids), directory / "model.onnx")
    return directory


def write_bench_onnx_genai(directory: str | os.PathLike[str], spec: TinyOnnxSpec = BENCH_ONNX_SPEC) -> Path:
    """Write the benchmark model folder into ``directory`` and return it.

    ``spec`` defaults to :data:`BENCH_ONNX_SPEC` (~5 s and ~1 GB of memory to write; onnxruntime-genai
    decodes it at ~45 tokens/s on 2 CPU cores); tests may pass a tiny one.
    """
    return write_tiny_onnx_genai(directory, spec)
