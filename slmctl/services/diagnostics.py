"""The ``slmctl doctor`` report: hardware, runtimes, usable devices and what ``run`` would pick.

Owns the gathering only (the command renders). :func:`collect` returns one JSON-ready dict and never
raises: every section is guarded, and a failure lands in ``problems`` while its field says
``"unknown"`` (or stays empty). The hardware and runtime probes are injectable for tests.

The runtime probes start first, in a background thread, and run while the hardware is probed: by
default each one runs in its own child process (llama.cpp and ONNX Runtime must never be loaded
into one process - on a CUDA build that segfaults; see :mod:`slmctl.backends.probes`), and the
two children run side by side. A probe whose child crashed or timed out shows as not installed,
with its ``error`` and a ``backends/<format>/probe: ...`` problem.
"""

from __future__ import annotations

import platform
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

from slmctl import __version__
from slmctl.devices import DEFAULT_PREFERENCE, describe_choice
from slmctl.hardware import UNKNOWN, CpuInfo, HardwareReport, MemoryInfo, guarded, probe_hardware


def _platform() -> str:
    return platform.platform()


def _cpu(cpu: CpuInfo) -> dict[str, Any]:
    return {"model": cpu.model, "arch": cpu.arch, "cores": cpu.cores_physical or cpu.cores_logical,
            "cores_physical": cpu.cores_physical, "cores_logical": cpu.cores_logical, "features": list(cpu.features)}


def _gguf_section(runtime: Any) -> dict[str, Any]:
    info = runtime.gguf_build_info()
    return {"installed": info["installed"], "version": info["version"], "devices": info["devices"],
            "gpu_offload": info["gpu_offload"], "system_info": info["system_info"],
            "ggml_devices": info["backends"], "problems": info["problems"], "error": info.get("error")}


def _onnx_section(runtime: Any) -> dict[str, Any]:
    info = runtime.onnx_build_info()
    status = runtime.onnx_provider_status()
    return {"installed": info["installed"], "version": info["genai_version"],
            "onnxruntime_version": info["onnxruntime_version"], "providers": runtime.usable_onnx_providers(),
            "provider_status": {name: {"usable": s.usable, "reason": s.reason} for name, s in status.items()},
            "ort_providers": info["ort_providers"], "error": info.get("error")}


def collect(*, hardware: Callable[[], HardwareReport] = probe_hardware, runtime: Any = None,
            preference: Sequence[str] = DEFAULT_PREFERENCE, fallback: Sequence[str] | None = None) -> dict[str, Any]:
    """Everything ``slmctl doctor`` reports, as plain JSON types. Never raises.

    ``runtime`` is a :class:`slmctl.backends.probes.RuntimeProbe` (the process's own if None:
    :func:`slmctl.engine.devices.runtime_probe`).
    """
    problems: list[str] = []
    if runtime is None:
        from slmctl.engine.devices import runtime_probe

        runtime = runtime_probe()
    prefetch = getattr(runtime, "prefetch", None)  # both runtime probes, side by side, while the hardware is probed
    runtimes = threading.Thread(target=prefetch, name="slmctl-doctor-runtimes", daemon=True) if prefetch else None
    if runtimes is not None:
        runtimes.start()
    report = guarded(problems, "hardware", hardware, HardwareReport(CpuInfo(), MemoryInfo(), [], []))
    if runtimes is not None:
        runtimes.join()
    problems.extend(report.problems)
    gguf = guarded(problems, "backends/gguf", lambda: _gguf_section(runtime),
                   {"installed": False, "version": None, "devices": [], "gpu_offload": False,
                    "system_info": None, "ggml_devices": [], "problems": [], "error": None})
    problems.extend(f"backends/{p}" for p in gguf.pop("problems"))  # "backends/gguf/..."
    onnx = guarded(problems, "backends/onnx", lambda: _onnx_section(runtime),
                   {"installed": False, "version": None, "onnxruntime_version": None, "providers": [],
                    "provider_status": {}, "ort_providers": [], "error": None})
    if onnx["error"]:
        problems.append(f"backends/onnx/probe: {onnx['error']}")
    selection: dict[str, str | None] = {}
    for fmt, section, usable in (("gguf", gguf, gguf["devices"]), ("onnx", onnx, onnx["providers"])):
        if not section["installed"]:
            selection[fmt] = None
            continue
        choice = describe_choice(fmt, None, usable, preference=preference, fallback=fallback)
        selection[fmt] = choice.device
        if choice.error:
            problems.append(f"selection/{fmt}: {choice.error}")
    return {
        "slmctl_version": __version__,
        "platform": guarded(problems, "platform", _platform, UNKNOWN),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "cpu": _cpu(report.cpu),
        "memory": {"total": report.memory.total, "available": report.memory.available},
        "gpus": [asdict(g) for g in report.gpus],
        "npus": [asdict(n) for n in report.npus],
        "backends": {"gguf": gguf, "onnx": onnx},
        "selection": selection,
        "problems": problems,
    }
