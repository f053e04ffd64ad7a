"""GPU and NPU probes behind :func:`slmctl.hardware.probe_hardware`.

NVIDIA through NVML (ctypes on ``libnvidia-ml``), else ``nvidia-smi``; Apple Silicon's Metal GPU and
Neural Engine; AMD and Intel GPUs from ``/sys/class/drm`` (plus ``rocm-smi`` when present); NPUs
from ``/sys/class/accel`` (``intel_vpu``, ``amdxdna``, ``qaic``); Windows devices through a CIM query,
best effort. Each probe returns a list and reports failures (never absence) into ``problems``.
"""

from __future__ import annotations

import ctypes
import json
import re
from typing import Any

from slmctl.hardware.model import UNKNOWN, GpuInfo, Host, NpuInfo, Runner, describe_exception, guarded

PCI_VENDORS = {"0x10de": "nvidia", "0x1002": "amd", "0x8086": "intel", "0x17cb": "qualcomm", "0x5143": "qualcomm"}
_NVML_NAMES = {"Windows": ("nvml.dll", r"C:\Program Files\NVIDIA Corporation\NVSMI\nvml.dll")}
_NVML_DEFAULT = ("libnvidia-ml.so.1", "libnvidia-ml.so")
_SMI_QUERY = ["nvidia-smi", "--query-gpu=index,name,memory.total,driver_version", "--format=csv,noheader,nounits"]
_MIB = 1024 * 1024


class NvmlError(RuntimeError):
    pass


class _NvmlMemory(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]


def _nvml_check(lib: Any, code: int, call: str) -> None:
    if code == 0:
        return
    try:
        describe = lib.nvmlErrorString
        describe.restype = ctypes.c_char_p
        text = describe(code)
        text = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
    except Exception:  # noqa: BLE001 - an old or odd library: the number will do
        text = ""
    raise NvmlError(f"{call} returned NVML error {code}" + (f" ({text})" if text else ""))


def _nvml_devices(lib: Any) -> list[tuple[int, ctypes.c_void_p]]:
    """(index, handle) of every GPU an initialised NVML sees."""
    count = ctypes.c_uint(0)
    _nvml_check(lib, lib.nvmlDeviceGetCount_v2(ctypes.byref(count)), "nvmlDeviceGetCount_v2")
    devices = []
    for index in range(count.value):
        handle = ctypes.c_void_p()
        code = lib.nvmlDeviceGetHandleByIndex_v2(ctypes.c_uint(index), ctypes.byref(handle))
        _nvml_check(lib, code, "nvmlDeviceGetHandleByIndex_v2")
        devices.append((index, handle))
    return devices


def load_nvml(system: str, load_library: Any = ctypes.CDLL) -> Any | None:
    """The NVML library under its usual names on ``system`` (not initialised); None where it is absent."""
    for name in _NVML_NAMES.get(system, _NVML_DEFAULT):
        try:
            return load_library(name)
        except OSError:
            continue  # not installed under this name: try the next
    return None


def nvml_gpus(lib: Any) -> list[GpuInfo]:
    """NVIDIA GPUs from a loaded NVML library (ctypes semantics)."""
    _nvml_check(lib, lib.nvmlInit_v2(), "nvmlInit_v2")
    try:
        buf = ctypes.create_string_buffer(96)
        driver = buf.value.decode(errors="replace") if lib.nvmlSystemGetDriverVersion(buf, 96) == 0 else None
        gpus = []
        for index, handle in _nvml_devices(lib):
            name = buf.value.decode(errors="replace") if lib.nvmlDeviceGetName(handle, buf, 96) == 0 else UNKNOWN
            memory = _NvmlMemory()
            total = memory.total if lib.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(memory)) == 0 else None
            gpus.append(GpuInfo(index, "nvidia", name, total, driver, "cuda"))
        return gpus
    finally:
        lib.nvmlShutdown()


class _NvmlProcess(ctypes.Structure):
    """``nvmlProcessInfo_v2_t``, what ``nvmlDeviceGetComputeRunningProcesses_v3`` fills."""
    _fields_ = [("pid", ctypes.c_uint), ("usedGpuMemory", ctypes.c_ulonglong), ("gpuInstanceId", ctypes.c_uint),
                ("computeInstanceId", ctypes.c_uint)]


_NVML_INSUFFICIENT_SIZE = 7
_NVML_VALUE_NOT_AVAILABLE = 2**64 - 1  # usedGpuMemory where the driver cannot tell (Windows WDDM)


def open_nvml(system: str, load_library: Any = ctypes.CDLL) -> Any | None:
    """NVML loaded and initialised (the caller ends with ``nvmlShutdown``); None without a usable one."""
    lib = load_nvml(system, load_library)
    return lib if lib is not None and lib.nvmlInit_v2() == 0 else None


def nvml_process_memory(lib: Any, pid: int) -> int:
    """Device memory (bytes) compute process ``pid`` holds on all NVIDIA GPUs, from an initialised NVML."""
    total = 0
    for _, handle in _nvml_devices(lib):
        listed = ctypes.c_uint(0)
        code = lib.nvmlDeviceGetComputeRunningProcesses_v3(handle, ctypes.byref(listed), None)
        if code == 0:  # no compute process on this GPU
            continue
        if code != _NVML_INSUFFICIENT_SIZE:
            _nvml_check(lib, code, "nvmlDeviceGetComputeRunningProcesses_v3")
        infos = (_NvmlProcess * (listed.value + 8))()  # room for processes started since the count
        listed = ctypes.c_uint(len(infos))
        code = lib.nvmlDeviceGetComputeRunningProcesses_v3(handle, ctypes.byref(listed), infos)
        _nvml_check(lib, code, "nvmlDeviceGetComputeRunningProcesses_v3")
        total += sum(info.usedGpuMemory for info in infos[:listed.value]
                     if info.pid == pid and info.usedGpuMemory != _NVML_VALUE_NOT_AVAILABLE)
    return total


def parse_nvidia_smi(text: str) -> list[GpuInfo]:
    """Rows of ``nvidia-smi --query-gpu=index,name,memory.total,driver_version`` (csv, no units)."""
    gpus = []
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 4:
            continue
        memory = int(float(parts[-2]) * _MIB) if re.fullmatch(r"\d+(\.\d+)?", parts[-2]) else None
        index = int(parts[0]) if parts[0].isdigit() else len(gpus)
        gpus.append(GpuInfo(index, "nvidia", ", ".join(parts[1:-2]) or UNKNOWN, memory, parts[-1] or None, "cuda"))
    return gpus


def _nvidia(host: Host, run: Runner, problems: list[str]) -> list[GpuInfo]:
    lib = load_nvml(host.system, host.load_library)
    if lib is not None:  # else nvidia-smi
        gpus = guarded(problems, "gpu/nvml", lambda: nvml_gpus(lib), None)
        if gpus is not None:
            return gpus
    try:
        return parse_nvidia_smi(run(_SMI_QUERY, 5.0))
    except FileNotFoundError:
        return []
    except Exception as error:  # noqa: BLE001
        problems.append(f"gpu/nvidia-smi: {describe_exception(error)}")
        return []


def _read(path: Any) -> str | None:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return None


def _driver_of(device: Any) -> str | None:
    """The kernel driver bound to a sysfs device (``uevent`` DRIVER=, else the ``driver`` link)."""
    for line in (_read(device / "uevent") or "").splitlines():
        if line.startswith("DRIVER="):
            return line.split("=", 1)[1] or None
    link = device / "driver"
    return link.resolve().name if link.exists() else None


def _rocm_smi(run: Runner) -> list[tuple[str | None, int | None]]:
    """(name, VRAM bytes) per AMD GPU from ``rocm-smi --json``; empty when rocm-smi is absent."""
    try:
        text = run(["rocm-smi", "--showproductname", "--showmeminfo", "vram", "--json"], 5.0)
    except FileNotFoundError:
        return []
    data = json.loads(text[text.index("{"):])
    cards = sorted((k for k in data if k.startswith("card")), key=lambda k: int(re.sub(r"\D", "", k) or 0))
    result = []
    for key in cards:
        info = {k.lower(): v for k, v in data[key].items()}
        name = info.get("card series") or info.get("card sku") or info.get("card model")
        vram = str(info.get("vram total memory (b)", ""))
        result.append((name, int(vram) if vram.isdigit() else None))
    return result


def _drm_gpus(host: Host, run: Runner, problems: list[str], skip_nvidia: bool) -> list[GpuInfo]:
    drm = host.path("/sys/class/drm")
    cards = [c for c in drm.glob("card*") if re.fullmatch(r"card\d+", c.name)] if drm.is_dir() else []
    gpus: list[GpuInfo] = []
    for card in sorted(cards, key=lambda c: int(c.name[4:])):
        device = card / "device"
        vendor = PCI_VENDORS.get((_read(device / "vendor") or "").lower())
        if vendor is None or (vendor == "nvidia" and skip_nvidia):
            continue
        ids = f"{(_read(device / 'vendor') or '')[2:]}:{(_read(device / 'device') or '')[2:]}"
        name = _read(device / "product_name") or f"{vendor.upper() if vendor == 'amd' else vendor.title()} GPU [{ids}]"
        vram = _read(device / "mem_info_vram_total")
        index = sum(1 for g in gpus if g.vendor == vendor)
        gpus.append(GpuInfo(index, vendor, name, int(vram) if vram and vram.isdigit() else None, _driver_of(device)))
    amd = [g for g in gpus if g.vendor == "amd"]
    if amd:
        rocm = guarded(problems, "gpu/rocm-smi", lambda: _rocm_smi(run), [])
        api = "rocm" if rocm or host.path("/dev/kfd").exists() else UNKNOWN
        for i, gpu in enumerate(amd):
            name, vram = rocm[i] if i < len(rocm) else (None, None)
            memory = gpu.memory_total or vram
            gpus[gpus.index(gpu)] = GpuInfo(gpu.index, "amd", name or gpu.name, memory, gpu.driver, api)
    if skip_nvidia is False and any(g.vendor == "nvidia" for g in gpus):
        problems.append("gpu/nvidia: an NVIDIA device is present but neither NVML nor nvidia-smi answered")
    return gpus


def _powershell(run: Runner, script: str) -> list[list[str]]:  # pragma: no cover - Windows only
    out = run(["powershell", "-NoProfile", "-NonInteractive", "-Command", script], 10.0)
    return [line.split("|") for line in out.splitlines() if line.strip()]


def _vendor_from_name(name: str) -> str:
    lowered = name.lower()
    for vendor, words in (("nvidia", ("nvidia",)), ("amd", ("amd", "radeon")), ("intel", ("intel",)),
                          ("qualcomm", ("qualcomm", "adreno", "hexagon"))):
        if any(word in lowered for word in words):
            return vendor
    return UNKNOWN


def _windows_gpus(run: Runner, skip_nvidia: bool) -> list[GpuInfo]:  # pragma: no cover - Windows only
    rows = _powershell(run, "Get-CimInstance Win32_VideoController | "
                            "ForEach-Object { '{0}|{1}' -f $_.Name, $_.DriverVersion }")
    gpus: list[GpuInfo] = []
    for name, *rest in rows:
        vendor = _vendor_from_name(name)
        if "basic" in name.lower() or (vendor == "nvidia" and skip_nvidia):
            continue
        index = sum(1 for g in gpus if g.vendor == vendor)
        gpus.append(GpuInfo(index, vendor, name.strip(), None, (rest[0].strip() if rest else "") or None, "directx"))
    return gpus


def _sysctl_int(run: Runner, key: str) -> int | None:
    value = run(["sysctl", "-n", key], 3.0).strip()
    return int(value) if value.isdigit() else None


def probe_gpus(host: Host, run: Runner, problems: list[str]) -> list[GpuInfo]:
    """Every GPU found, NVIDIA first."""
    gpus = guarded(problems, "gpu/nvidia", lambda: _nvidia(host, run, problems), [])
    if host.system == "Linux":
        gpus += guarded(problems, "gpu/drm", lambda: _drm_gpus(host, run, problems, bool(gpus)), [])
    elif host.system == "Darwin" and host.arch == "arm64":
        brand = ["sysctl", "-n", "machdep.cpu.brand_string"]
        name = guarded(problems, "gpu/metal", lambda: run(brand, 3.0).strip(), "")
        memory = guarded(problems, "gpu/metal", lambda: _sysctl_int(run, "hw.memsize"), None)
        gpus.append(GpuInfo(0, "apple", name or "Apple Silicon GPU", memory, None, "metal"))
    elif host.system == "Windows":  # pragma: no cover - Windows only
        gpus += guarded(problems, "gpu/windows", lambda: _windows_gpus(run, bool(gpus)), [])
    return gpus


_ACCEL_DRIVERS = {"intel_vpu": ("intel", "Intel NPU"), "amdxdna": ("amd", "AMD XDNA NPU"),
                  "qaic": ("qualcomm", "Qualcomm Cloud AI 100")}


def _accel_npus(host: Host) -> list[NpuInfo]:
    accel = host.path("/sys/class/accel")
    npus = []
    for node in sorted(accel.glob("accel*")) if accel.is_dir() else []:
        device = node / "device"
        driver = _driver_of(device)
        vendor, name = _ACCEL_DRIVERS.get(driver or "", (None, None))
        if vendor is None:
            vendor = PCI_VENDORS.get((_read(device / "vendor") or "").lower(), UNKNOWN)
            name = f"accelerator ({driver or 'unknown driver'})"
        npus.append(NpuInfo(vendor, name or UNKNOWN, driver))
    return npus


def _windows_npus(run: Runner) -> list[NpuInfo]:  # pragma: no cover - Windows only
    rows = _powershell(run, "Get-CimInstance Win32_PnPEntity -Filter \"PNPClass='ComputeAccelerator'\" | "
                            "ForEach-Object { '{0}|{1}' -f $_.Name, $_.Manufacturer }")
    return [NpuInfo(_vendor_from_name(" ".join(row)), row[0].strip(), None) for row in rows]


def probe_npus(host: Host, run: Runner, problems: list[str]) -> list[NpuInfo]:
    """Every NPU found (the Apple Neural Engine included, though no runtime of ours drives it)."""
    if host.system == "Linux":
        return guarded(problems, "npu/accel", lambda: _accel_npus(host), [])
    if host.system == "Darwin" and host.arch == "arm64":
        return [NpuInfo("apple", "Apple Neural Engine", None)]
    if host.system == "Windows":  # pragma: no cover - Windows only
        return guarded(problems, "npu/windows", lambda: _windows_npus(run), [])
    return []
