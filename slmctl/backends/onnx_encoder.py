"""Sentence-embedding encoders in ONNX form, run with plain onnxruntime.

A sentence-transformers export (``model.onnx`` + ``tokenizer.json`` [+ ``1_Pooling/config.json``])
is tokenized with the ``tokenizers`` library, run through an ``onnxruntime.InferenceSession``, pooled
(mean over the attention mask by default; CLS or max when the pooling config says so) and
L2-normalised, behind the same ``embed`` call the GGUF backend offers.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from slmctl.backends.base import GenerateRequest, Generation, LoadedInfo, LoadedModel, known_token_ids
from slmctl.errors import InvalidModelFile, OperationFailed, UsageError
from slmctl.formats.onnx_folder import ENCODER_MODEL_PATHS
from slmctl.options import LoadOptions

#: Our provider names -> onnxruntime execution provider names.
ORT_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "dml": "DmlExecutionProvider",
                 "qnn": "QNNExecutionProvider", "openvino": "OpenVINOExecutionProvider",
                 "webgpu": "WebGpuExecutionProvider"}


def _pooling_mode(path: Path) -> str:
    config = path / "1_Pooling" / "config.json"
    if not config.is_file():
        return "mean"
    data = json.loads(config.read_text(encoding="utf-8"))
    for mode in ("cls_token", "max_tokens", "mean_tokens"):
        if data.get(f"pooling_mode_{mode}"):
            return mode.split("_")[0]
    return "mean"


class OnnxEncoderModel(LoadedModel):
    """An encoder session plus its tokenizer; ``embed`` only."""

    def __init__(self, session: Any, tokenizer: Any, pooling: str, info: LoadedInfo) -> None:
        self._session = session
        self._tokenizer = tokenizer
        self._pooling = pooling
        self._inputs = {i.name for i in session.get_inputs()}
        self.info = info

    @classmethod
    def load(cls, path: Path, options: LoadOptions, *, device: str = "cpu",
             provider_options: Mapping[str, str] | None = None) -> OnnxEncoderModel:
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise OperationFailed(f"embedding models need onnxruntime and tokenizers: {exc}") from exc
        model_file = next((path / p for p in ENCODER_MODEL_PATHS if (path / p).is_file()), None)
        if model_file is None:
            raise InvalidModelFile(f"{path} has no model.onnx")
        start = time.perf_counter_ns()
        session_options = ort.SessionOptions()
        if options.num_thread:
            session_options.intra_op_num_threads = options.num_thread
        provider = ORT_PROVIDERS.get(device, device)
        providers: list[Any] = [(provider, dict(provider_options or {}))] if device != "cpu" else []
        try:
            session = ort.InferenceSession(str(model_file), session_options,
                                           providers=[*providers, "CPUExecutionProvider"])
            tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        except Exception as exc:  # onnxruntime raises its own exception types
            raise InvalidModelFile(f"the encoder in {path.name} cannot be loaded: {exc}") from exc
        limit = options.num_ctx or 512
        tokenizer.enable_truncation(max_length=limit)
        tokenizer.enable_padding()
        used = "cpu" if session.get_providers()[0] == "CPUExecutionProvider" else device
        info = LoadedInfo("onnx", used, limit, time.perf_counter_ns() - start, None)
        return cls(session, tokenizer, _pooling_mode(path), info)

    def embed(self, texts: list[str]) -> list[list[float]]:
        import numpy as np

        if not texts:
            return []
        batch = self._tokenizer.encode_batch(texts)
        ids = np.asarray([e.ids for e in batch], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in batch], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        try:
            hidden = self._session.run(None, {k: v for k, v in feeds.items() if k in self._inputs})[0]
        except Exception as exc:  # onnxruntime's own exception types
            raise OperationFailed(f"the encoder failed: {exc}") from exc
        vectors = self._pool(np.asarray(hidden, dtype=np.float32), mask)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return (vectors / np.maximum(norms, 1e-12)).tolist()

    def _pool(self, hidden: Any, mask: Any) -> Any:
        import numpy as np

        if hidden.ndim == 2:  # the graph pools already
            return hidden
        if self._pooling == "cls":
            return hidden[:, 0]
        weights = mask[..., None].astype(np.float32)
        if self._pooling == "max":
            return np.where(weights > 0, hidden, -np.inf).max(axis=1)
        return (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1.0)

    def generate(self, request: GenerateRequest, cancel: threading.Event | None = None) -> Generation:
        raise UsageError("this is an embedding model: it cannot generate text", "use 'slmctl embed' with it")

    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=special).ids)

    def detokenize(self, tokens: list[int]) -> str:
        return self._tokenizer.decode(known_token_ids(tokens, self._tokenizer.get_vocab_size()))

    def close(self) -> None:
        self._session = None
