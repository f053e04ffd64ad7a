"""The runtime probes as the rest of slmctl asks for them: isolated in a child process, and cached.

The two runtimes' native libraries must never share a process because of a probe. On an NVIDIA H200
with a CUDA build of llama.cpp, ``import onnxruntime`` after ``import llama_cpp`` (ggml's CUDA backend
loaded) segfaults, so ``slmctl doctor`` died. The default probes (:func:`isolated_gguf`,
:func:`isolated_onnx`) therefore run :mod:`slmctl.backends.providers`' probes in this process only when
this process has already imported that same runtime (free, and it adds nothing new); otherwise in a
short-lived child (:mod:`slmctl.backends.probe_worker`), which costs a Python start-up, so
:meth:`RuntimeProbe.prefetch` runs both children side by side. A child that crashes or hangs becomes a
build with ``installed`` False and ``error`` set (``"probe crashed with signal 11 (SIGSEGV)"``) instead
of killing slmctl. :class:`RuntimeProbe` takes its probes injected; nothing here raises.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

from slmctl.backends.probe_worker import probe_gguf_in_child, probe_onnx_in_child
from slmctl.backends.providers import (
    GgufBuild,
    OnnxBuild,
    ProviderStatus,
    probe_gguf,
    probe_onnx,
)

# -- isolation: probe in a child unless this process already has that runtime ----------------------
GGUF_MODULES = ("llama_cpp",)
ONNX_MODULES = ("onnxruntime", "onnxruntime_genai")


def loaded_here(kind: str, modules: Any = None) -> bool:
    """Whether this process already imported the ``kind`` runtime (then probing it here is free and safe)."""
    names = GGUF_MODULES if kind == "gguf" else ONNX_MODULES
    present = sys.modules if modules is None else modules
    return any(name in present for name in names)


def isolated_gguf(timeout: float | None = None) -> GgufBuild:
    """:func:`probe_gguf` here if ``llama_cpp`` is already imported, else in a child process."""
    if loaded_here("gguf"):
        return probe_gguf()
    return probe_gguf_in_child(timeout)


def isolated_onnx(timeout: float | None = None) -> OnnxBuild:
    """:func:`probe_onnx` here if ``onnxruntime(_genai)`` is already imported, else in a child process."""
    if loaded_here("onnx"):
        return probe_onnx()
    return probe_onnx_in_child(timeout)


# -- the cache ------------------------------------------------------------------------------------
class RuntimeProbe:
    """Runs each probe once and keeps the answer (thread-safe); ``clear()`` forgets it."""

    def __init__(self, *, gguf: Callable[[], GgufBuild] = isolated_gguf,
                 onnx: Callable[[], OnnxBuild] = isolated_onnx) -> None:
        self._probes: dict[str, Callable[[], Any]] = {"gguf": gguf, "onnx": onnx}
        self._cache: dict[str, Any] = {}
        self._locks = {key: threading.Lock() for key in self._probes}  # one per probe: they may run side by side

    def _get(self, key: str) -> Any:
        with self._locks[key]:
            if key not in self._cache:
                self._cache[key] = self._probes[key]()
            return self._cache[key]

    def clear(self) -> None:
        for key, lock in self._locks.items():
            with lock:
                self._cache.pop(key, None)

    def prefetch(self, *keys: str) -> None:
        """Run the probes not cached yet side by side (both child processes at once). Never raises:
        a probe that raised is not cached, so the next ask raises again where the caller guards it."""
        missing = [key for key in (keys or tuple(self._probes)) if key not in self._cache]

        def run(key: str) -> None:
            try:
                self._get(key)
            except Exception:  # noqa: BLE001 - reported by the caller's own, later ask
                pass

        threads = [threading.Thread(target=run, args=(key,), name=f"slmctl-probe-{key}", daemon=True)
                   for key in missing[1:]]
        for thread in threads:
            thread.start()
        if missing:
            run(missing[0])
        for thread in threads:
            thread.join()

    def gguf(self) -> GgufBuild:
        return self._get("gguf")

    def onnx(self) -> OnnxBuild:
        return self._get("onnx")

    def usable_gguf_devices(self) -> list[str]:
        return list(self.gguf().devices)

    def gguf_build_info(self) -> dict[str, Any]:
        b = self.gguf()
        return {"installed": b.installed, "version": b.version, "system_info": b.system_info,
                "gpu_offload": b.gpu_offload, "backends": list(b.backends), "devices": list(b.devices),
                "problems": list(b.problems), "error": b.error}

    def onnx_provider_status(self) -> dict[str, ProviderStatus]:
        return dict(self.onnx().status)

    def usable_onnx_providers(self) -> list[str]:
        return self.onnx().usable

    def onnx_build_info(self) -> dict[str, Any]:
        b = self.onnx()
        return {"installed": b.installed, "version": b.genai_version, "genai_version": b.genai_version,
                "onnxruntime_version": b.onnxruntime_version, "ort_providers": list(b.ort_providers),
                "error": b.error}


#: The process-wide instance behind the module-level functions.
default_probe = RuntimeProbe()


def usable_gguf_devices() -> list[str]:
    """Devices llama.cpp can run on here, GPU first; always ends with ``cpu``."""
    return default_probe.usable_gguf_devices()


def gguf_build_info() -> dict[str, Any]:
    return default_probe.gguf_build_info()


def onnx_provider_status() -> dict[str, ProviderStatus]:
    """Every provider we know, usable or not, with the reason."""
    return default_probe.onnx_provider_status()


def usable_onnx_providers() -> list[str]:
    """Providers that really work here, NPU first, then GPU, then CPU."""
    return default_probe.usable_onnx_providers()


def onnx_build_info() -> dict[str, Any]:
    return default_probe.onnx_build_info()


def prefetch() -> None:
    """Probe both runtimes now, side by side, for callers that will ask about both."""
    default_probe.prefetch()


def clear_cache() -> None:
    """Forget the default instance's answers (tests, or after installing a runtime)."""
    default_probe.clear()
