"""What this machine has: CPU, memory, GPUs and NPUs, as plain dataclasses.

Owns :func:`probe_hardware`. Probes never crash: each one runs guarded, a failure becomes a ``problems``
entry (``"gpu/nvml: <reason>"``) and its field stays ``"unknown"`` or empty; a thing that is simply absent
(no ``nvidia-smi``, no ``/sys/class/accel``) is no problem. Everything a probe touches comes through a
:class:`Host` (file-system root, platform, library loader, psutil readings) and a :data:`Runner` (external
commands), so tests inject fakes. Importing it has no side effects and imports nothing heavy.

The package's arrows run one way: this module -> :mod:`.cpu` (CPU, memory) and :mod:`.accelerators`
(GPUs, NPUs) -> :mod:`.model` (the dataclasses, the host, ``guarded``).
"""

from __future__ import annotations

from slmctl.hardware.accelerators import probe_gpus, probe_npus
from slmctl.hardware.cpu import (ARM_FEATURES, X86_FEATURES, normalise_features, parse_cpuinfo, probe_cpu,
                                 probe_memory)
from slmctl.hardware.model import (UNKNOWN, CommandFailed, CpuInfo, GpuInfo, HardwareReport, Host, MemoryInfo,
                                   NpuInfo, Runner, describe_exception, guarded, normalise_arch, run_command)


def probe_hardware(*, host: Host | None = None, runner: Runner | None = None) -> HardwareReport:
    """Probe everything; never raises (failures are listed in ``problems``)."""
    problems: list[str] = []
    host = guarded(problems, "platform", Host.current, Host(UNKNOWN, UNKNOWN)) if host is None else host
    run = runner or run_command
    cpu = guarded(problems, "cpu", lambda: probe_cpu(host, run, problems), CpuInfo(arch=host.arch))
    memory = guarded(problems, "memory", lambda: probe_memory(host, problems), MemoryInfo())
    gpus = guarded(problems, "gpu", lambda: probe_gpus(host, run, problems), [])
    npus = guarded(problems, "npu", lambda: probe_npus(host, run, problems), [])
    return HardwareReport(cpu, memory, gpus, npus, list(dict.fromkeys(problems)))


__all__ = ["ARM_FEATURES", "UNKNOWN", "X86_FEATURES", "CommandFailed", "CpuInfo", "GpuInfo", "HardwareReport", "Host",
           "MemoryInfo", "NpuInfo", "Runner", "describe_exception", "guarded", "normalise_arch", "normalise_features",
           "parse_cpuinfo", "probe_cpu", "probe_hardware", "probe_memory", "run_command"]
