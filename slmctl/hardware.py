"""What this machine has: CPU, memory, GPUs and NPUs, as plain dataclasses.

Owns the hardware probes and :func:`probe_hardware`. Probes never crash: each one runs guarded, a
failure becomes a ``problems`` entry (``"gpu/nvml: <reason>"``) and its field stays ``"unknown"`` or
empty; a thing that is simply absent (no ``nvidia-smi``, no ``/sys/class/accel``) is no problem.
Everything a probe touches comes through a :class:`Host` (file-system root, platform, library
loader, psutil readings) and a :data:`Runner` (external commands), so tests inject fakes. Importing
this module has no side effects and imports nothing heavy; the GPU and NPU probes live in
:mod:`slmctl.accelerators`.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

UNKNOWN = "unknown"
T = TypeVar("T")

#: Runs a command and returns its standard output. Raises ``FileNotFoundError`` when the program
#: does not exist, any other exception when it fails or runs past ``timeout`` seconds.
Runner = Callable[[Sequence[str], float], str]


@dataclass(frozen=True)
class CpuInfo:
    model: str = UNKNOWN
    arch: str = UNKNOWN
    cores_physical: int | None = None
    cores_logical: int | None = None
    #: Normalised instruction-set names (:data:`X86_FEATURES`, :data:`ARM_FEATURES`), in that order.
    features: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class MemoryInfo:
    total: int | None = None  # bytes
    available: int | None = None


@dataclass(frozen=True)
class GpuInfo:
    index: int  # position among the GPUs of its vendor
    vendor: str  # nvidia, amd, intel, apple, qualcomm, unknown
    name: str
    memory_total: int | None = None  # bytes (unified memory on Apple Silicon)
    driver: str | None = None  # version (NVIDIA) or kernel driver name
    api: str = UNKNOWN  # cuda, rocm, metal, directx, unknown


@dataclass(frozen=True)
class NpuInfo:
    vendor: str  # intel, amd, qualcomm, apple, unknown
    name: str
    driver: str | None = None


@dataclass(frozen=True)
class HardwareReport:
    cpu: CpuInfo
    memory: MemoryInfo
    gpus: list[GpuInfo]
    npus: list[NpuInfo]
    problems: list[str] = field(default_factory=list)


class CommandFailed(RuntimeError):
    """An external command ran but exited with an error."""


def run_command(args: Sequence[str], timeout: float = 5.0) -> str:
    """The default :data:`Runner`: ``subprocess.run`` with a timeout, no stdin, text output."""
    import subprocess

    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=False,
                          stdin=subprocess.DEVNULL, errors="replace")
    if proc.returncode != 0:
        last = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or [""]
        raise CommandFailed(f"{args[0]} exited with status {proc.returncode}: {last[0]}".rstrip(": "))
    return proc.stdout


def _psutil_cpu_count(logical: bool) -> int | None:
    import psutil

    return psutil.cpu_count(logical=logical)


def _psutil_memory() -> tuple[int, int]:
    import psutil

    vm = psutil.virtual_memory()
    return int(vm.total), int(vm.available)


def _load_library(name: str) -> Any:
    import ctypes

    return ctypes.CDLL(name)


_ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "i686": "x86", "i386": "x86", "aarch64": "arm64",
                 "armv8": "arm64", "armv7l": "arm"}


def normalise_arch(machine: str) -> str:
    """``x86_64``, ``arm64``, ``x86``, ``arm``... from ``platform.machine()``."""
    key = machine.strip().lower()
    return _ARCH_ALIASES.get(key, key) or UNKNOWN


@dataclass(frozen=True)
class Host:
    """The machine as the probes see it; tests pass a fake ``root`` and fake callables."""

    system: str  # platform.system(): Linux, Darwin, Windows
    arch: str  # normalised: x86_64, arm64, ...
    root: Path = Path("/")  # /proc, /sys and /dev are read below it
    cpu_count: Callable[[bool], int | None] = _psutil_cpu_count
    virtual_memory: Callable[[], tuple[int, int]] = _psutil_memory
    load_library: Callable[[str], Any] = _load_library

    @classmethod
    def current(cls) -> Host:
        return cls(system=platform.system(), arch=normalise_arch(platform.machine()))

    def path(self, absolute: str) -> Path:
        """``absolute`` (``/proc/cpuinfo``) below :attr:`root`."""
        return self.root / absolute.lstrip("/")


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


# -- the whole report -----------------------------------------------------------------------------
def describe_exception(error: BaseException) -> str:
    """One line for a problems entry: the message, or the exception type when there is none."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def guarded(problems: list[str], tag: str, probe: Callable[[], T], default: T) -> T:
    """Run ``probe``; on any exception record ``"tag: reason"`` in ``problems`` and return ``default``."""
    try:
        return probe()
    except Exception as error:  # noqa: BLE001 - a probe must never take the program down
        problems.append(f"{tag}: {describe_exception(error)}")
        return default


def probe_hardware(*, host: Host | None = None, runner: Runner | None = None) -> HardwareReport:
    """Probe everything; never raises (failures are listed in ``problems``)."""
    problems: list[str] = []
    host = guarded(problems, "platform", Host.current, Host(UNKNOWN, UNKNOWN)) if host is None else host
    run = runner or run_command
    cpu = guarded(problems, "cpu", lambda: probe_cpu(host, run, problems), CpuInfo(arch=host.arch))
    memory = guarded(problems, "memory", lambda: probe_memory(host, problems), MemoryInfo())
    from slmctl import accelerators

    gpus = guarded(problems, "gpu", lambda: accelerators.probe_gpus(host, run, problems), [])
    npus = guarded(problems, "npu", lambda: accelerators.probe_npus(host, run, problems), [])
    return HardwareReport(cpu, memory, gpus, npus, list(dict.fromkeys(problems)))
