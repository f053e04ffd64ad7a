"""Builders of random-weight GGUF models for tests and benchmarks.

This module owns the synthetic model files of slmctl's test suite: a tiny Llama-architecture model
that the real llama.cpp loads and runs (:func:`write_tiny_gguf`, or split in several files like
``gguf-split`` output: :func:`write_tiny_split_gguf`), a realistic-size one for benchmarks
(:func:`write_bench_gguf`) and a set of broken files (:func:`write_corrupt_files`). Every file is
byte-identical across runs for a given :class:`TinyGGUFSpec`.

The vocabulary is SentencePiece-style (``tokenizer.ggml.model = "llama"``): control tokens, the 256
byte-fallback tokens (so any text is encodable), ``▁`` and the printable ASCII characters, and short
words whose every prefix is also a piece. Unless ``eos_reachable`` is set, the ``output.weight`` rows
of control, unknown and non-printable byte tokens are zero, so their logits are 0 while the others
are about N(0, 8): generated text is printable ASCII and a run yields exactly ``max_tokens`` tokens.
"""

from __future__ import annotations

import itertools
import os
import string
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import gguf
import numpy as np
from gguf.constants import TokenType

__all__ = [
    "BENCH_SPEC",
    "CHATML_TEMPLATE",
    "TinyGGUFSpec",
    "write_bench_gguf",
    "write_corrupt_files",
    "write_tiny_gguf",
    "write_tiny_lora",
    "write_tiny_split_gguf",
]

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

#: ChatML with tools, as Qwen2.5 and Hermes models write it: the tools as JSON in the system turn, calls in
#: ``<tool_call>`` tags, results in ``tool`` turns wrapped in ``<tool_response>``.
TOOLS_CHATML_TEMPLATE = (
    "{%- if tools %}<|im_start|>system\n"
    "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}\n\n{% endif %}"
    "# Tools\n\nYou may call one or more functions. Function signatures in <tools></tools>:\n<tools>"
    "{% for tool in tools %}\n{{ tool | tojson }}{% endfor %}\n</tools>\n\nReturn each call as "
    "<tool_call>{\"name\": <function-name>, \"arguments\": <args-json-object>}</tool_call><|im_end|>\n"
    "{%- elif messages[0]['role'] == 'system' %}<|im_start|>system\n{{ messages[0]['content'] }}<|im_end|>\n"
    "{%- endif %}"
    "{% for message in messages %}{% if message['role'] != 'system' %}"
    "{% if message['role'] == 'tool' %}<|im_start|>user\n<tool_response>\n{{ message['content'] }}"
    "\n</tool_response><|im_end|>\n"
    "{% else %}<|im_start|>{{ message['role'] }}\n{{ message['content'] or '' }}"
    "{% if message['tool_calls'] %}{% for call in message['tool_calls'] %}\n<tool_call>\n"
    "{\"name\": \"{{ call['function']['name'] }}\", \"arguments\": {{ call['function']['arguments'] | tojson }}}"
    "\n</tool_call>{% endfor %}{% endif %}<|im_end|>\n{% endif %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CONTROL_TOKENS = ("<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>")
_UNK_ID, _BOS_ID, _EOS_ID = 0, 1, 2
_WORDS = ("hello", "world", "the", "and", "model", "small", "test", "token", "llama", "chat")
_PRINTABLE = range(0x20, 0x7F)  # bytes that decode to printable ASCII
_WEIGHT_STD = 0.02
_LOGIT_STD = 8.0


@dataclass(frozen=True)
class TinyGGUFSpec:
    """Shape and content of a synthetic Llama model (defaults: 125K parameters, ~0.26 MB, ~10 ms to write)."""

    n_layers: int = 2
    hidden: int = 64
    heads: int = 4
    kv_heads: int = 2
    ff: int = 128
    context_length: int = 512
    seed: int = 0
    #: False zeroes the output rows of control/unknown/non-printable tokens (EOS is never sampled).
    eos_reachable: bool = False
    chat_template: str | None = CHATML_TEMPLATE
    name: str = "tiny"
    dtype: Literal["F16", "F32"] = "F16"
    #: None: the base vocabulary (~400 pieces); larger: padded with generated prefix-closed pieces.
    vocab_size: int | None = None
    rope_freq_base: float = 10000.0
    rms_eps: float = 1e-5


#: The benchmark model: Qwen2.5-0.5B-like shapes, 32000-piece vocabulary: 415M parameters, ~298 MB at Q4_K_M.
BENCH_SPEC = TinyGGUFSpec(
    n_layers=24, hidden=896, heads=14, kv_heads=2, ff=4864, context_length=4096, vocab_size=32000, name="bench"
)


def _padding_pieces() -> Iterator[str]:
    """Extra pieces, shortest first, so every piece's prefixes come before it."""
    for length in itertools.count(1):
        for letters in itertools.product(string.ascii_lowercase, repeat=length):
            word = "".join(letters)
            yield "\u2581" + word
            yield word


def _vocabulary(vocab_size: int | None) -> tuple[list[str], list[float], list[int]]:
    """Return the pieces, scores and token types of the SentencePiece-style vocabulary."""
    pieces = list(_CONTROL_TOKENS) + [f"<0x{b:02X}>" for b in range(256)]
    types = [int(TokenType.UNKNOWN)] + [int(TokenType.CONTROL)] * (len(_CONTROL_TOKENS) - 1)
    types += [int(TokenType.BYTE)] * 256
    normal = ["\u2581"] + [chr(c) for c in range(0x21, 0x7F)]
    normal += ["\u2581" + word[:i] for word in _WORDS for i in range(1, len(word) + 1)]
    normal = list(dict.fromkeys(normal))  # drop repeated prefixes, keep the order
    if vocab_size is not None:
        if vocab_size < len(pieces) + len(normal):
            raise ValueError(f"vocab_size must be at least {len(pieces) + len(normal)}")
        known = set(normal)
        extra = (piece for piece in _padding_pieces() if piece not in known)
        normal += itertools.islice(extra, vocab_size - len(pieces) - len(normal))
    scores = [0.0] * len(pieces) + [float(-i) for i in range(len(normal))]
    pieces += normal
    types += [int(TokenType.NORMAL)] * len(normal)
    return pieces, scores, types


def _silent_token_ids(types: list[int]) -> np.ndarray:
    """Ids of the tokens whose logits the no-EOS trick pins to 0."""
    ids = [i for i, t in enumerate(types) if t in (TokenType.CONTROL, TokenType.UNKNOWN)]
    first_byte = types.index(int(TokenType.BYTE))
    ids += [first_byte + b for b in range(256) if b not in _PRINTABLE]
    return np.array(ids, dtype=np.int64)


def _tensor_shapes(spec: TinyGGUFSpec, n_vocab: int) -> list[tuple[str, tuple[int, ...]]]:
    """Tensor names and numpy shapes (out, in), in file order."""
    head_dim = spec.hidden // spec.heads
    e, q, kv, ff = spec.hidden, spec.heads * head_dim, spec.kv_heads * head_dim, spec.ff
    shapes: list[tuple[str, tuple[int, ...]]] = [("token_embd.weight", (n_vocab, e))]
    for n in range(spec.n_layers):
        shapes += [
            (f"blk.{n}.attn_norm.weight", (e,)),
            (f"blk.{n}.attn_q.weight", (q, e)),
            (f"blk.{n}.attn_k.weight", (kv, e)),
            (f"blk.{n}.attn_v.weight", (kv, e)),
            (f"blk.{n}.attn_output.weight", (e, q)),
            (f"blk.{n}.ffn_norm.weight", (e,)),
            (f"blk.{n}.ffn_gate.weight", (ff, e)),
            (f"blk.{n}.ffn_up.weight", (ff, e)),
            (f"blk.{n}.ffn_down.weight", (e, ff)),
        ]
    return shapes + [("output_norm.weight", (e,)), ("output.weight", (n_vocab, e))]


def _add_metadata(writer: gguf.GGUFWriter, spec: TinyGGUFSpec, vocab: tuple[list[str], list[float], list[int]]) -> None:
    pieces, scores, types = vocab
    writer.add_name(spec.name)
    file_type = gguf.LlamaFileType.MOSTLY_F16 if spec.dtype == "F16" else gguf.LlamaFileType.ALL_F32
    writer.add_file_type(int(file_type))
    writer.add_context_length(spec.context_length)
    writer.add_embedding_length(spec.hidden)
    writer.add_block_count(spec.n_layers)
    writer.add_feed_forward_length(spec.ff)
    writer.add_head_count(spec.heads)
    writer.add_head_count_kv(spec.kv_heads)
    writer.add_rope_dimension_count(spec.hidden // spec.heads)
    writer.add_rope_freq_base(spec.rope_freq_base)
    writer.add_layer_norm_rms_eps(spec.rms_eps)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(pieces)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(_UNK_ID)
    writer.add_bos_token_id(_BOS_ID)
    writer.add_eos_token_id(_EOS_ID)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    if spec.chat_template is not None:
        writer.add_chat_template(spec.chat_template)


def _tensor_dtype(shape: tuple[int, ...], spec: TinyGGUFSpec) -> np.dtype:
    """Norms (1-D) stay float32; matrices are stored in ``spec.dtype``."""
    return np.dtype(np.float16 if spec.dtype == "F16" and len(shape) > 1 else np.float32)


def _tensor_data(
    name: str, shape: tuple[int, ...], spec: TinyGGUFSpec, rng: np.random.Generator, silent: np.ndarray
) -> np.ndarray:
    """The values of one tensor: norms are ones, matrices random."""
    if len(shape) == 1:
        return np.ones(shape, dtype=np.float32)
    std = _LOGIT_STD / np.sqrt(spec.hidden) if name == "output.weight" else _WEIGHT_STD
    values = rng.standard_normal(shape, dtype=np.float32)
    values *= np.float32(std)
    if name == "output.weight" and not spec.eos_reachable:
        values[silent] = 0.0
    return values.astype(_tensor_dtype(shape, spec), copy=False)


def write_tiny_gguf(path: str | os.PathLike[str], spec: TinyGGUFSpec = TinyGGUFSpec()) -> Path:
    """Write a random-weight Llama GGUF model described by ``spec`` to ``path`` and return the path.

    Tensors are generated and written one at a time, so memory stays bounded by the largest tensor.
    """
    path = Path(path)
    _write_model(path, spec, split_max_tensors=0)
    return path


def write_tiny_split_gguf(
    path: str | os.PathLike[str], spec: TinyGGUFSpec = TinyGGUFSpec(), parts: int = 2
) -> list[Path]:
    """Write the model of ``spec`` split into ``parts`` files, as llama.cpp's ``gguf-split`` does.

    The files are named ``<stem>-00001-of-0000N.gguf`` after ``path`` (its stem, in its folder); the
    first holds the metadata, every file its share of the tensors and the ``split.*`` keys, and
    llama.cpp loads the whole set from the first. Returns the paths in order.
    """
    path = Path(path)
    count = len(_tensor_shapes(spec, len(_vocabulary(spec.vocab_size)[0])))
    per_file = -(-count // max(parts, 1))  # tensors per file, rounded up
    if parts < 2 or -(-count // per_file) != parts:
        raise ValueError(f"cannot split the model's {count} tensors into {parts} files")
    return _write_model(path, spec, split_max_tensors=per_file)


def _write_model(path: Path, spec: TinyGGUFSpec, *, split_max_tensors: int) -> list[Path]:
    """Write the model (split when ``split_max_tensors`` > 0); returns the files written."""
    vocab = _vocabulary(spec.vocab_size)
    shapes = _tensor_shapes(spec, len(vocab[0]))
    writer = gguf.GGUFWriter(path, arch="llama", split_max_tensors=split_max_tensors)
    try:
        _add_metadata(writer, spec, vocab)
        for name, shape in shapes:
            dtype = _tensor_dtype(shape, spec)
            writer.add_tensor_info(name, shape, dtype, int(np.prod(shape)) * dtype.itemsize)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        rng = np.random.default_rng(spec.seed)
        silent = _silent_token_ids(vocab[2])
        for name, shape in shapes:
            writer.write_tensor_data(_tensor_data(name, shape, spec, rng, silent))
        files = writer.format_shard_names(path)
    finally:
        writer.close()
    return files


def write_bench_gguf(
    path: str | os.PathLike[str], quant: str = "Q4_K_M", spec: TinyGGUFSpec = BENCH_SPEC
) -> Path:
    """Write a benchmark model quantized to ``quant`` ("Q4_K_M", "Q8_0", "F16", ...) and return its path.

    The model is written as F16 (next to ``path``, then deleted) and quantized by llama.cpp itself, which
    logs every tensor to stderr. ``spec`` defaults to :data:`BENCH_SPEC` (~15 s on 2 cores, memory bounded
    by the largest tensor); tests may pass a tiny one.
    """
    path = Path(path)
    spec = replace(spec, dtype="F16")
    if quant.upper() == "F16":
        return write_tiny_gguf(path, spec)
    import llama_cpp  # heavy; only this builder needs it

    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quant.upper()}", None)
    if ftype is None:
        raise ValueError(f"unknown quantization type: {quant!r}")
    source = path.with_name(path.name + ".f16.tmp")
    try:
        write_tiny_gguf(source, spec)
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = ftype
        status = llama_cpp.llama_model_quantize(str(source).encode(), str(path).encode(), params)
        if status != 0:
            path.unlink(missing_ok=True)
            raise RuntimeError(f"llama_model_quantize failed with status {status}")
    finally:
        source.unlink(missing_ok=True)
    return path


def write_corrupt_files(directory: str | os.PathLike[str]) -> dict[str, Path]:
    """Write broken model files into ``directory``.

    Keys: ``not_gguf`` (text named .gguf), ``truncated`` (a tiny model cut in the middle of its tensor
    data), ``bad_header`` (the GGUF magic and version 3, then garbage) and ``empty`` (0 bytes).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files = {name: directory / f"{name}.gguf" for name in ("not_gguf", "truncated", "bad_header", "empty")}
    files["not_gguf"].write_text("this is a text file, not a model\n" * 8, encoding="utf-8")
    valid_path = write_tiny_gguf(directory / "valid.gguf.tmp")
    data_start = gguf.GGUFReader(valid_path).data_offset
    valid = valid_path.read_bytes()
    valid_path.unlink()
    files["truncated"].write_bytes(valid[: (data_start + len(valid)) // 2])
    garbage = np.random.default_rng(1234).integers(0, 256, size=4096, dtype=np.uint8).tobytes()
    files["bad_header"].write_bytes(b"GGUF" + (3).to_bytes(4, "little") + garbage)
    files["empty"].write_bytes(b"")
    return files


def write_tiny_lora(path: str | os.PathLike[str], spec: TinyGGUFSpec = TinyGGUFSpec(), rank: int = 4,
                    seed: int = 0) -> Path:
    """Write a random LoRA adapter (GGUF, ``general.type = adapter``) for models of ``spec``'s shape.

    It adapts every layer's ``attn_q`` projection strongly enough to change what the model generates.
    """
    path = Path(path)
    head_dim = spec.hidden // spec.heads
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(path, arch="llama")
    try:
        writer.add_string("general.type", "adapter")
        writer.add_string("adapter.type", "lora")
        writer.add_float32("adapter.lora.alpha", float(2 * rank))
        for layer in range(spec.n_layers):
            name = f"blk.{layer}.attn_q.weight"
            writer.add_tensor(f"{name}.lora_a", rng.normal(0, 0.5, (rank, spec.hidden)).astype(np.float32))
            writer.add_tensor(f"{name}.lora_b", rng.normal(0, 0.5, (spec.heads * head_dim, rank)).astype(np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return path
