"""Pieces shared by the synthetic ONNX models of :mod:`slmctl.testing.tiny_onnx`.

This module owns the deterministic byte-level BPE tokenizer that every synthetic ONNX model ships
(:func:`build_tokenizer`, :func:`write_tokenizer_files`) and :class:`GraphBuilder`, the small helper
that assembles opset-17 graphs from plain ONNX ops with seeded random weights.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

__all__ = [
    "OPSET",
    "SPECIAL_TOKENS",
    "GraphBuilder",
    "build_tokenizer",
    "printable_token_ids",
    "tensor_info",
    "write_json",
    "write_tokenizer_files",
]

#: ``<|endoftext|>`` (id 0), ``<|im_start|>`` (1) and ``<|im_end|>`` (2).
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
OPSET = 17
_IR_VERSION = 8  # opset 17's IR version, loadable by every recent onnxruntime
_SENTENCES = (
    "hello world, the small model writes a test token.",
    "The quick brown fox jumps over the lazy dog; 0123456789 times!",
    "A chat with slmctl: you ask, it answers with random text (but fast).",
    "Tokens, merges and bytes make a tokenizer; a model reads them and writes more.",
)
_SENTENCE_REPEAT = 64  # the sentences outweigh the pseudo-words, so the first merges are English
_BASE_VOCAB = 320  # vocabularies up to this size are trained on the sentences alone
_WEIGHT_STD = 0.02
_RMS_EPS = 1e-5


def _corpus(vocab_size: int) -> list[str]:
    """The training text: the built-in sentences, plus seeded pseudo-words when a large vocabulary needs them."""
    rng = np.random.default_rng(0)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    lengths = rng.integers(3, 11, size=3 * max(0, vocab_size - _BASE_VOCAB))
    words = ["".join(rng.choice(letters, size=int(n))) for n in lengths]
    return list(_SENTENCES) * _SENTENCE_REPEAT + [" ".join(words[i : i + 16]) for i in range(0, len(words), 16)]


def build_tokenizer(vocab_size: int = _BASE_VOCAB) -> Tokenizer:
    """Train the GPT-2-style byte-level BPE tokenizer with ``vocab_size`` tokens (same result every time).

    Ids 0-2 are :data:`SPECIAL_TOKENS`, then the 256 byte symbols, then the merges.
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(vocab_size), trainer)
    if tokenizer.get_vocab_size() != vocab_size:
        raise ValueError(f"vocab_size must be at least {len(SPECIAL_TOKENS) + 256}, got {vocab_size}")
    return tokenizer


def printable_token_ids(tokenizer: Tokenizer) -> list[int]:
    """Ids of the non-special tokens that decode to printable ASCII on their own."""
    ids = []
    for i in range(len(SPECIAL_TOKENS), tokenizer.get_vocab_size()):
        text = tokenizer.decode([i])
        if text and all(" " <= c <= "~" for c in text):
            ids.append(i)
    return ids


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON with a final newline."""
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def write_tokenizer_files(directory: Path, tokenizer: Tokenizer, config: dict[str, Any]) -> None:
    """Write ``tokenizer.json`` and ``tokenizer_config.json`` (the special tokens' entries, then ``config``)."""
    (directory / "tokenizer.json").write_text(tokenizer.to_str(), encoding="utf-8")
    flags = {"lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True}
    added = {str(i): {"content": token, **flags} for i, token in enumerate(SPECIAL_TOKENS)}
    write_json(directory / "tokenizer_config.json", {"added_tokens_decoder": added, **config})


class GraphBuilder:
    """Collects the nodes and initializers of an ONNX graph; node outputs are named in call order."""

    def __init__(self, seed: int) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: dict[str, TensorProto] = {}
        self.rng = np.random.default_rng(seed)

    def const(self, name: str, value: np.ndarray | Sequence[int] | float) -> str:
        """Add an initializer (ints become int64, floats float32) unless ``name`` exists; return the name."""
        if name not in self.initializers:
            array = np.asarray(value)
            array = array.astype(np.int64 if array.dtype.kind in "iu" else np.float32, copy=False)
            self.initializers[name] = numpy_helper.from_array(array, name)
        return name

    def random(self, shape: tuple[int, ...], std: float = _WEIGHT_STD) -> np.ndarray:
        """Draw N(0, std) float32 values from the builder's generator."""
        values = self.rng.standard_normal(shape, dtype=np.float32)
        values *= np.float32(std)
        return values

    def weight(self, name: str, shape: tuple[int, ...], std: float = _WEIGHT_STD) -> str:
        """Add a random N(0, std) float32 initializer and return its name."""
        return self.const(name, self.random(shape, std))

    def op(self, op_type: str, *inputs: str, output: str | None = None, **attributes: Any) -> str:
        """Add a node with one output (named ``output`` or generated) and return the output's name."""
        index = len(self.nodes)
        name = output or f"{op_type.lower()}_{index}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [name], f"node_{index}", **attributes))
        return name

    def rms_norm(self, x: str, hidden: int, name: str, output: str | None = None) -> str:
        """RMSNorm from basic ops: ``x / sqrt(mean(x^2) + eps) * weight`` (the weight is ones)."""
        mean = self.op("ReduceMean", self.op("Mul", x, x), axes=[-1], keepdims=1)
        denominator = self.op("Sqrt", self.op("Add", mean, self.const("rms_eps", _RMS_EPS)))
        weight = self.const(f"{name}.weight", np.ones(hidden))
        return self.op("Mul", self.op("Div", x, denominator), weight, output=output)

    def split_heads(self, x: str, weight: str, n_heads: int, head_size: int) -> str:
        """Project [B, S, H] by ``weight`` and split the result into [B, n_heads, S, head_size]."""
        shape = self.const(f"split_{n_heads}_heads", [0, 0, n_heads, head_size])
        return self.op("Transpose", self.op("Reshape", self.op("MatMul", x, weight), shape), perm=[0, 2, 1, 3])

    def attention(self, q: str, k: str, v: str, bias: str, head_size: int) -> str:
        """``softmax(q k^T / sqrt(head_size) + bias) v`` on [B, heads, S|T, head_size], merged into [B, S, H]."""
        scores = self.op("MatMul", q, self.op("Transpose", k, perm=[0, 1, 3, 2]))
        scale = self.const(f"attention_scale_{head_size}", np.float32(1 / np.sqrt(head_size)))
        weights = self.op("Softmax", self.op("Add", self.op("Mul", scores, scale), bias), axis=-1)
        context = self.op("Transpose", self.op("MatMul", weights, v), perm=[0, 2, 1, 3])
        return self.op("Reshape", context, self.const("merge_heads", [0, 0, -1]))

    def silu_mlp(self, x: str, hidden: int, ff: int, name: str) -> str:
        """``down(silu(up(x)))`` with random ``{name}.up`` and ``{name}.down`` weights."""
        up = self.op("MatMul", x, self.weight(f"{name}.up", (hidden, ff)))
        return self.op("MatMul", self.op("Mul", up, self.op("Sigmoid", up)), self.weight(f"{name}.down", (ff, hidden)))

    def model(
        self, name: str, inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto]
    ) -> onnx.ModelProto:
        """The graph as an opset-17 model."""
        graph = helper.make_graph(self.nodes, name, inputs, outputs, list(self.initializers.values()))
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="slmctl")
        model.ir_version = _IR_VERSION
        return model


def tensor_info(name: str, dtype: int, *dims: str | int) -> onnx.ValueInfoProto:
    """A graph input or output declaration; string dims are symbolic."""
    return helper.make_tensor_value_info(name, dtype, list(dims))
