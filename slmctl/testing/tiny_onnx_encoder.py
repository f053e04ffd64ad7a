"""Builder of a random-weight sentence-embedding model, laid out as sentence-transformers exports it.

This module owns :func:`write_tiny_onnx_encoder`: a folder with a BERT-like ONNX encoder (token,
position and token-type embeddings, one block of bidirectional attention and a SiLU MLP, each with
RMSNorm) that plain onnxruntime runs, the byte-level BPE tokenizer of
:mod:`slmctl.testing.tiny_onnx_common`, and the sentence-transformers metadata that asks for mean
pooling and L2 normalization. Every file is byte-identical across runs for a given seed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto

from slmctl.testing.tiny_onnx_common import (
    SPECIAL_TOKENS,
    GraphBuilder,
    build_tokenizer,
    tensor_info,
    write_json,
    write_tokenizer_files,
)

__all__ = ["ENCODER_HIDDEN", "write_tiny_onnx_encoder"]

#: Width of the embeddings the tiny encoder produces.
ENCODER_HIDDEN = 32
_HEADS, _FF, _MAX_POSITIONS, _TOKEN_TYPES = 4, 64, 128, 2
_ST_MODULES = [
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
]


def _encoder_model(seed: int, vocab_size: int) -> onnx.ModelProto:
    """Inputs ``input_ids``, ``attention_mask``, ``token_type_ids`` [B, S] -> ``last_hidden_state`` [B, S, H]."""
    g, hidden = GraphBuilder(seed), ENCODER_HIDDEN
    length = g.op("Squeeze", g.op("Shape", "input_ids", start=1, end=2))
    positions = g.op("Range", g.const("int_0", np.array(0)), length, g.const("int_1", np.array(1)))
    x = g.op("Gather", g.weight("embed_tokens", (vocab_size, hidden), 1.0), "input_ids")
    x = g.op("Add", x, g.op("Gather", g.weight("embed_positions", (_MAX_POSITIONS, hidden), 1.0), positions))
    x = g.op("Add", x, g.op("Gather", g.weight("embed_token_types", (_TOKEN_TYPES, hidden), 1.0), "token_type_ids"))
    x = g.rms_norm(x, hidden, "embed_norm")
    # Padding keys get -1e9: [B, 1, 1, S] = (mask - 1) * 1e9.
    mask = g.op("Cast", g.op("Unsqueeze", "attention_mask", g.const("axes_1_2", [1, 2])), to=TensorProto.FLOAT)
    bias = g.op("Mul", g.op("Sub", mask, g.const("one", np.float32(1))), g.const("big", np.float32(1e9)))
    head_size, std = hidden // _HEADS, hidden**-0.5
    q, k, v = (g.split_heads(x, g.weight(f"layer.{n}", (hidden, hidden), std), _HEADS, head_size) for n in "qkv")
    context = g.attention(q, k, v, bias, head_size)
    x = g.rms_norm(g.op("Add", x, g.op("MatMul", context, g.weight("layer.o", (hidden, hidden), std))), hidden, "norm1")
    x = g.op("Add", x, g.silu_mlp(x, hidden, _FF, "layer.mlp"))
    g.rms_norm(x, hidden, "norm2", output="last_hidden_state")
    inputs = [tensor_info(name, TensorProto.INT64, "batch_size", "sequence_length")
              for name in ("input_ids", "attention_mask", "token_type_ids")]
    outputs = [tensor_info("last_hidden_state", TensorProto.FLOAT, "batch_size", "sequence_length", hidden)]
    return g.model("tiny_encoder", inputs, outputs)


def write_tiny_onnx_encoder(directory: str | os.PathLike[str], seed: int = 0) -> Path:
    """Write a random-weight sentence-embedding model folder into ``directory``; return the folder.

    Files: ``model.onnx``, ``tokenizer.json``, ``tokenizer_config.json``, ``config.json``,
    ``modules.json``, ``sentence_bert_config.json`` and ``1_Pooling/config.json`` (mean pooling of
    :data:`ENCODER_HIDDEN`-wide token vectors; ``modules.json`` then asks for L2 normalization).
    """
    directory = Path(directory)
    (directory / "1_Pooling").mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    vocab_size = tokenizer.get_vocab_size()
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "pad_token": SPECIAL_TOKENS[0],
        "unk_token": None,
        "model_max_length": _MAX_POSITIONS,
    }
    write_tokenizer_files(directory, tokenizer, tokenizer_config)
    config = {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "hidden_size": ENCODER_HIDDEN,
        "num_hidden_layers": 1,
        "num_attention_heads": _HEADS,
        "intermediate_size": _FF,
        "max_position_embeddings": _MAX_POSITIONS,
        "type_vocab_size": _TOKEN_TYPES,
        "vocab_size": vocab_size,
        "pad_token_id": 0,
    }
    write_json(directory / "config.json", config)
    write_json(directory / "modules.json", _ST_MODULES)
    write_json(directory / "sentence_bert_config.json", {"max_seq_length": _MAX_POSITIONS, "do_lower_case": False})
    pooling = {
        "word_embedding_dimension": ENCODER_HIDDEN,
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": False,
        "include_prompt": True,
    }
    write_json(directory / "1_Pooling" / "config.json", pooling)
    onnx.save(_encoder_model(seed, vocab_size), directory / "model.onnx")
    return directory
