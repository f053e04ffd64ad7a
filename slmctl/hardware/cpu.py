"""The CPU (model and instruction-set features, from ``/proc/cpuinfo``, ``sysctl`` or the Windows API)
and the memory of this machine."""

from __future__ import annotations

import platform
from collections.abc import Sequence

from slmctl.hardware.model import UNKNOWN, CpuInfo, Host, MemoryInfo, Runner, guarded

# -- CPU ------------------------------------------------------------------------------------------
X86_FEATURES: tuple[str, ...] = ("sse3", "ssse3", "sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni",
                                 "avx512f", "avx512bw", "avx512vl", "avx512_vbmi", "avx512_vnni", "avx512_bf16",
                                 "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16")
ARM_FEATURES: tuple[str, ...] = ("neon", "fp16", "dotprod", "i8mm", "bf16", "sve", "sve2", "sme")
_ORDER = {name: i for i, name in enumerate(X86_FEATURES + ARM_FEATURES)}
_FEATURE_ALIASES = {
    "pni": "sse3", "sse4.1": "sse4_1", "sse4.2": "sse4_2", "avx1.0": "avx", "avx512vbmi": "avx512_vbmi",
    "avx512vnni": "avx512_vnni", "avx512bf16": "avx512_bf16", "avx512fp16": "avx512_fp16", "amx-tile": "amx_tile",
    "asimd": "neon", "asimdhp": "fp16", "fphp": "fp16", "asimddp": "dotprod", "feat_dotprod": "dotprod",
    "feat_i8mm": "i8mm", "feat_bf16": "bf16", "feat_fp16": "fp16", "feat_sme": "sme", "feat_sve": "sve",
    "feat_sve2": "sve2", "neon_fp16": "fp16",
}


def normalise_features(tokens: Sequence[str], arch: str = UNKNOWN) -> list[str]:
    """Known feature names from raw flags (``/proc/cpuinfo``, sysctl), deduplicated, in a fixed order."""
    found = {_FEATURE_ALIASES.get(t.strip().lower(), t.strip().lower()) for t in tokens}
    if arch == "arm64":
        found.add("neon")  # Advanced SIMD is mandatory on AArch64
    return sorted(found & _ORDER.keys(), key=_ORDER.__getitem__)


_ARM_IMPLEMENTERS = {"0x41": "Arm", "0x42": "Broadcom", "0x46": "Fujitsu", "0x48": "HiSilicon", "0x4e": "NVIDIA",
                     "0x51": "Qualcomm", "0x61": "Apple", "0xc0": "Ampere"}


def parse_cpuinfo(text: str) -> tuple[str, list[str]]:
    """(model name, raw flags) from the first processor block of ``/proc/cpuinfo``."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    model = fields.get("model name") or fields.get("Model") or fields.get("Hardware") or fields.get("cpu model")
    if not model and "CPU implementer" in fields:
        vendor = _ARM_IMPLEMENTERS.get(fields["CPU implementer"].lower(), fields["CPU implementer"])
        model = f"{vendor} CPU (part {fields.get('CPU part', '?')})"
    flags = fields.get("flags") or fields.get("Features") or ""
    return model or UNKNOWN, flags.split()


def _sysctl_values(text: str) -> dict[str, str]:
    pairs = (line.partition(":") for line in text.splitlines())
    return {key.strip(): value.strip() for key, sep, value in pairs if sep}


def _macos_cpu(host: Host, run: Runner) -> tuple[str, list[str]]:
    model = run(["sysctl", "-n", "machdep.cpu.brand_string"], 3.0).strip() or UNKNOWN
    if host.arch == "arm64":
        values = _sysctl_values(run(["sysctl", "hw.optional"], 3.0))
        tokens = [key.rsplit(".", 1)[-1] for key, value in values.items() if value == "1"]
    else:
        tokens = run(["sysctl", "-n", "machdep.cpu.features", "machdep.cpu.leaf7_features"], 3.0).split()
    return model, tokens


_WINDOWS_FEATURES = {13: "sse3", 36: "ssse3", 37: "sse4_1", 38: "sse4_2", 39: "avx", 40: "avx2", 41: "avx512f",
                     19: "neon", 43: "dotprod", 46: "sve", 47: "sve2"}  # PF_* of IsProcessorFeaturePresent


def _windows_cpu(host: Host, run: Runner) -> tuple[str, list[str]]:  # pragma: no cover - Windows only
    import ctypes
    import winreg  # type: ignore[import-not-found]

    key = winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, r"HARDWARE\DESCRIPTION\System\CentralProcessor\0")
    model = str(winreg.QueryValueEx(key, "ProcessorNameString")[0]).strip() or platform.processor() or UNKNOWN
    present = ctypes.windll.kernel32.IsProcessorFeaturePresent  # type: ignore[attr-defined]
    return model, [name for code, name in _WINDOWS_FEATURES.items() if present(code)]


def probe_cpu(host: Host, run: Runner, problems: list[str]) -> CpuInfo:
    """The CPU: model, architecture, core counts and SIMD features."""
    model, tokens = UNKNOWN, []
    readers = {"Linux": lambda: parse_cpuinfo(host.path("/proc/cpuinfo").read_text(errors="replace")),
               "Darwin": lambda: _macos_cpu(host, run), "Windows": lambda: _windows_cpu(host, run)}
    if host.system in readers:
        model, tokens = guarded(problems, "cpu/model", readers[host.system], (UNKNOWN, []))
    physical = guarded(problems, "cpu/cores", lambda: host.cpu_count(False), None)
    logical = guarded(problems, "cpu/cores", lambda: host.cpu_count(True), None)
    return CpuInfo(model, host.arch, physical, logical, normalise_features(tokens, host.arch))


def probe_memory(host: Host, problems: list[str]) -> MemoryInfo:
    """Total and available system memory in bytes."""
    values = guarded(problems, "memory", host.virtual_memory, None)
    return MemoryInfo(*values) if values else MemoryInfo()
