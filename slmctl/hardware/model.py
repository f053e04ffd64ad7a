"""The vocabulary of the hardware probes: what a machine has (plain dataclasses), the :class:`Host` and
:data:`Runner` every probe goes through (so tests inject fakes), and :func:`guarded`, which turns a failing
probe into a ``problems`` entry. The bottom of the package: it imports none of its siblings.
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


# -- running probes -------------------------------------------------------------------------------
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
