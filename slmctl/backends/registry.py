"""Which backend runs which model format. Backends are created lazily and imported on demand."""

from __future__ import annotations

from slmctl.backends.base import Backend
from slmctl.errors import DeviceUnavailable

FORMATS = ("gguf", "onnx")


class BackendRegistry:
    """Creates one backend object per format, on first use."""

    def __init__(self) -> None:
        self._backends: dict[str, Backend] = {}

    def get(self, fmt: str) -> Backend:
        if fmt not in self._backends:
            self._backends[fmt] = self._create(fmt)
        return self._backends[fmt]

    @staticmethod
    def _create(fmt: str) -> Backend:
        if fmt == "gguf":
            from slmctl.backends.gguf import LlamaCppBackend

            return LlamaCppBackend()
        if fmt == "onnx":
            from slmctl.backends.onnx import OnnxGenaiBackend

            return OnnxGenaiBackend()
        raise DeviceUnavailable(f"no backend for {fmt!r} models", f"supported formats: {', '.join(FORMATS)}")
