"""Which devices the runtimes can use on this machine, as the services and the CLI ask for them.

Above the backends, devices are the engine's business: the pull service and ``list --available`` (the
catalog's variant for this machine), ``bench`` (the runtime versions of its report) and ``doctor`` (the
whole runtime probe) ask here, never :mod:`slmctl.backends.probes` directly; an :class:`Engine`
asks its own backends (:meth:`~slmctl.engine.Engine.devices`). The probes run once per process and are
cached; each runs in a child process unless this process has already loaded that runtime (llama.cpp and
ONNX Runtime must never share one). Importing this module probes nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from slmctl.errors import DeviceUnavailable

if TYPE_CHECKING:
    from slmctl.backends.probes import RuntimeProbe

__all__ = ["runtime_probe", "runtime_versions", "usable_devices"]


def usable_devices(fmt: str) -> list[str]:
    """What ``fmt``'s runtime can use here: GGUF, llama.cpp's devices, GPU first, always ending with
    ``cpu``; ONNX, the execution providers that really work, NPU first, then GPU, then CPU."""
    from slmctl.backends import probes
    from slmctl.backends.registry import FORMATS

    if fmt == "gguf":
        return probes.usable_gguf_devices()
    if fmt == "onnx":
        return probes.usable_onnx_providers()
    raise DeviceUnavailable(f"no backend for {fmt!r} models", f"supported formats: {', '.join(FORMATS)}")


def runtime_probe() -> RuntimeProbe:
    """This process's runtime probe (builds, devices, providers and why; answers cached), for a full report."""
    from slmctl.backends import probes

    return probes.default_probe


def runtime_versions() -> dict[str, str | None]:
    """Python's and the runtimes' versions (None: unknown). Both probes run side by side unless an earlier
    ask ran them already."""
    import platform

    from slmctl.backends import probes

    probes.prefetch()
    versions: dict[str, str | None] = {"python": platform.python_version()}
    try:
        versions["llama-cpp-python"] = probes.gguf_build_info().get("version")
    except Exception:  # noqa: BLE001 - a version is informative only
        versions["llama-cpp-python"] = None
    try:
        onnx = probes.onnx_build_info()
        versions["onnxruntime-genai"] = onnx.get("genai_version")
        versions["onnxruntime"] = onnx.get("onnxruntime_version")
    except Exception:  # noqa: BLE001
        versions["onnxruntime-genai"] = versions["onnxruntime"] = None
    return versions
