"""Quantizing GGUF models with llama.cpp's own quantizer (``slmctl create --quantize``).

llama.cpp reports its progress only in its log (``[  12/ 219] blk.1.ffn_up.weight ...``): the
quantization runs in a worker thread while this module follows that log and reports tensors done.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path

from slmctl.backends import llama_log
from slmctl.errors import OperationFailed, UsageError

#: ``--quantize`` values -> llama.cpp file types.
QUANT_TYPES = {"q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
               "q4_k_s": "LLAMA_FTYPE_MOSTLY_Q4_K_S", "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
               "q5_k_s": "LLAMA_FTYPE_MOSTLY_Q5_K_S", "q6_k": "LLAMA_FTYPE_MOSTLY_Q6_K",
               "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0", "q5_0": "LLAMA_FTYPE_MOSTLY_Q5_0"}
#: Source types the quantizer accepts (quantizing a quantized model only loses quality).
QUANTIZABLE = ("F32", "F16", "BF16")
_PROGRESS = re.compile(r"\[\s*(\d+)/\s*(\d+)\]")


def quant_name(value: str) -> str:
    """Validate a ``--quantize`` value; returns its canonical lower-case form."""
    key = value.strip().lower()
    if key not in QUANT_TYPES:
        raise UsageError(f"unknown quantization {value!r}", f"choose one of: {', '.join(QUANT_TYPES)}")
    return key


def quantize_gguf(src: Path, dst: Path, quant: str, *, threads: int = 0,
                  on_progress: Callable[[int, int], None] | None = None) -> None:
    """Write ``src`` quantized to ``quant`` at ``dst``, reporting (tensors done, total)."""
    from slmctl.backends.gguf import _import_llama_cpp

    llama_cpp = _import_llama_cpp()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANT_TYPES[quant_name(quant)])
    params.nthread = threads
    position = llama_log.mark()
    outcome: list[int | BaseException] = []

    def work() -> None:
        try:
            outcome.append(llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params))
        except BaseException as exc:  # reported in the caller's thread
            outcome.append(exc)

    worker = threading.Thread(target=work, name="slmctl-quantize", daemon=True)
    worker.start()
    last = (0, 0)
    while worker.is_alive():
        worker.join(0.2)
        progress = _latest_progress(llama_log.since(position))
        if on_progress is not None and progress != last and progress[1]:
            on_progress(*progress)
            last = progress
    result = outcome[0] if outcome else -1
    if isinstance(result, BaseException) or result != 0:
        errors = llama_log.errors_in(llama_log.since(position))
        dst.unlink(missing_ok=True)
        reason = "; ".join(errors[-2:]) if errors else f"status {result}"
        raise OperationFailed(f"llama.cpp could not quantize {src.name} to {quant}: {reason}")


def _latest_progress(entries: list[tuple[int, str]]) -> tuple[int, int]:
    for _, text in reversed(entries):
        match = _PROGRESS.search(text)
        if match:
            return int(match.group(1)), int(match.group(2))
    return 0, 0
