"""Hardware probes (the slmctl.hardware package) with a fake /proc and /sys, fake commands
and a fake NVML; plus the real probe on this machine."""

from __future__ import annotations

import ctypes
import json
import platform
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from slmctl.hardware.accelerators import nvml_gpus, nvml_process_memory, open_nvml, parse_nvidia_smi
from slmctl.hardware import (
    CommandFailed,
    GpuInfo,
    Host,
    NpuInfo,
    normalise_arch,
    normalise_features,
    parse_cpuinfo,
    probe_hardware,
    run_command,
)

X86_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Core(TM) i7-1185G7 @ 3.00GHz
flags\t\t: fpu pni ssse3 fma sse4_1 sse4_2 avx f16c avx2 avx512f avx512bw avx512vl avx512_vnni avx512vbmi

processor\t: 1
model name\t: Intel(R) Core(TM) i7-1185G7 @ 3.00GHz
flags\t\t: fpu
"""
ARM_CPUINFO = """processor\t: 0
BogoMIPS\t: 48.00
Features\t: fp asimd evtstrm aes crc32 atomics fphp asimdhp asimddp i8mm bf16 sve sve2
CPU implementer\t: 0x41
CPU part\t: 0xd0c
"""
SMI_OUTPUT = "0, NVIDIA GeForce RTX 4090, 24564, 550.54.14\n1, NVIDIA H200, 143771, 550.54.14\n"


def no_library(name: str) -> Any:
    raise OSError(f"{name}: cannot open shared object file")


def make_host(root: Path, system: str = "Linux", arch: str = "x86_64", cpuinfo: str | None = X86_CPUINFO,
              **overrides: Any) -> Host:
    """A fake Linux (by default) below ``root``, with ``/proc/cpuinfo`` unless ``cpuinfo`` is None."""
    if cpuinfo is not None and not (root / "proc/cpuinfo").exists():
        write(root / "proc/cpuinfo", cpuinfo)
    fields: dict[str, Any] = {"cpu_count": lambda logical: 8 if logical else 4,
                              "virtual_memory": lambda: (16_000_000_000, 9_000_000_000),
                              "load_library": no_library}
    fields.update(overrides)
    return Host(system=system, arch=arch, root=root, **fields)


def make_runner(answers: dict[str, str | BaseException]) -> Callable[[Sequence[str], float], str]:
    """A fake runner: the answer for the longest matching command prefix; absent programs raise."""
    def run(args: Sequence[str], timeout: float) -> str:
        line = " ".join(args)
        for prefix in sorted(answers, key=len, reverse=True):
            if line.startswith(prefix):
                answer = answers[prefix]
                if isinstance(answer, BaseException):
                    raise answer
                return answer
        raise FileNotFoundError(args[0])
    return run


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def pci_device(root: Path, klass: str, node: str, vendor: str, device: str, driver: str | None,
               extra: dict[str, str] | None = None) -> Path:
    dev = root / "sys/class" / klass / node / "device"
    write(dev / "vendor", vendor + "\n")
    write(dev / "device", device + "\n")
    write(dev / "uevent", (f"DRIVER={driver}\n" if driver else "") + f"PCI_ID={vendor[2:]}:{device[2:]}\n")
    for name, text in (extra or {}).items():
        write(dev / name, text)
    return dev


# -- CPU -------------------------------------------------------------------------------------------
def test_linux_x86_cpu_from_proc_cpuinfo(tmp_path: Path) -> None:
    report = probe_hardware(host=make_host(tmp_path), runner=make_runner({}))
    cpu = report.cpu
    assert cpu.model == "Intel(R) Core(TM) i7-1185G7 @ 3.00GHz"
    assert (cpu.arch, cpu.cores_physical, cpu.cores_logical) == ("x86_64", 4, 8)
    assert cpu.features == ["sse3", "ssse3", "sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f",
                            "avx512bw", "avx512vl", "avx512_vbmi", "avx512_vnni"]
    assert report.memory.total == 16_000_000_000 and report.memory.available == 9_000_000_000
    assert report.gpus == [] and report.npus == [] and report.problems == []


def test_linux_arm_cpu(tmp_path: Path) -> None:
    cpu = probe_hardware(host=make_host(tmp_path, arch="arm64", cpuinfo=ARM_CPUINFO), runner=make_runner({})).cpu
    assert cpu.model == "Arm CPU (part 0xd0c)"
    assert cpu.features == ["neon", "fp16", "dotprod", "i8mm", "bf16", "sve", "sve2"]


def test_parse_cpuinfo_and_normalisation() -> None:
    assert parse_cpuinfo("")[0] == "unknown"
    assert parse_cpuinfo("Model\t: Raspberry Pi 5 Model B Rev 1.0\n")[0] == "Raspberry Pi 5 Model B Rev 1.0"
    assert normalise_features(["AVX2", "avx", "amx_int8", "amx_tile", "bogus"]) == ["avx", "avx2", "amx_tile",
                                                                                     "amx_int8"]
    assert normalise_features([], "arm64") == ["neon"]
    assert normalise_arch("AMD64") == "x86_64" and normalise_arch("aarch64") == "arm64"


def test_macos_arm64(tmp_path: Path) -> None:
    runner = make_runner({
        "sysctl -n machdep.cpu.brand_string": "Apple M2 Pro\n",
        "sysctl hw.optional": "hw.optional.arm.FEAT_DotProd: 1\nhw.optional.arm.FEAT_I8MM: 1\n"
                              "hw.optional.arm.FEAT_BF16: 1\nhw.optional.arm.FEAT_SME: 0\nhw.optional.neon: 1\n"
                              "hw.optional.neon_fp16: 1\n",
        "sysctl -n hw.memsize": "34359738368\n",
    })
    report = probe_hardware(host=make_host(tmp_path, system="Darwin", arch="arm64"), runner=runner)
    assert report.cpu.model == "Apple M2 Pro"
    assert report.cpu.features == ["neon", "fp16", "dotprod", "i8mm", "bf16"]
    assert report.gpus == [GpuInfo(0, "apple", "Apple M2 Pro", 34359738368, None, "metal")]
    assert report.npus == [NpuInfo("apple", "Apple Neural Engine", None)]
    assert report.problems == []


def test_macos_x86(tmp_path: Path) -> None:
    runner = make_runner({
        "sysctl -n machdep.cpu.brand_string": "Intel(R) Core(TM) i9-9880H CPU @ 2.30GHz",
        "sysctl -n machdep.cpu.features": "FPU SSE3 SSSE3 FMA SSE4.1 SSE4.2 AVX1.0 F16C\nAVX2 BMI2",
    })
    report = probe_hardware(host=make_host(tmp_path, system="Darwin"), runner=runner)
    assert report.cpu.features == ["sse3", "ssse3", "sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c"]
    assert report.gpus == [] and report.npus == [] and report.problems == []


# -- NVIDIA ----------------------------------------------------------------------------------------
def test_parse_nvidia_smi() -> None:
    gpus = parse_nvidia_smi(SMI_OUTPUT + "2, Odd, Name, [N/A], 550.54.14\nnot a row\n")
    assert gpus[0] == GpuInfo(0, "nvidia", "NVIDIA GeForce RTX 4090", 24564 * 1024 * 1024, "550.54.14", "cuda")
    assert gpus[1].name == "NVIDIA H200" and gpus[1].memory_total == 143771 * 1024 * 1024
    assert gpus[2].name == "Odd, Name" and gpus[2].memory_total is None
    assert len(gpus) == 3


def test_nvidia_smi_when_nvml_is_absent(tmp_path: Path) -> None:
    report = probe_hardware(host=make_host(tmp_path), runner=make_runner({"nvidia-smi": SMI_OUTPUT}))
    assert [g.name for g in report.gpus] == ["NVIDIA GeForce RTX 4090", "NVIDIA H200"]
    assert all(g.api == "cuda" and g.vendor == "nvidia" for g in report.gpus)
    assert report.problems == []


class FakeNvml:
    """Answers like libnvidia-ml through ctypes arguments (byref objects expose ``_obj``)."""

    def __init__(self, names: list[str], init_code: int = 0) -> None:
        self.names, self.init_code, self.shut = names, init_code, False

    def nvmlInit_v2(self) -> int:
        return self.init_code

    def nvmlShutdown(self) -> int:
        self.shut = True
        return 0

    def nvmlSystemGetDriverVersion(self, buf: Any, size: int) -> int:
        buf.value = b"560.35.03"
        return 0

    def nvmlDeviceGetCount_v2(self, ref: Any) -> int:
        ref._obj.value = len(self.names)
        return 0

    def nvmlDeviceGetHandleByIndex_v2(self, index: ctypes.c_uint, ref: Any) -> int:
        ref._obj.value = 1000 + index.value
        return 0

    def nvmlDeviceGetName(self, handle: ctypes.c_void_p, buf: Any, size: int) -> int:
        buf.value = self.names[handle.value - 1000].encode()
        return 0

    def nvmlDeviceGetMemoryInfo(self, handle: ctypes.c_void_p, ref: Any) -> int:
        if handle.value == 1001:
            return 3  # NVML_ERROR_NOT_SUPPORTED
        ref._obj.total = 80 * 1024**3
        return 0


class FakeNvmlProcesses(FakeNvml):
    """GPUs whose compute processes are ``processes[gpu]``: (pid, bytes) pairs, listed like NVML does
    (a first call without a buffer answers the count and INSUFFICIENT_SIZE, or 0 when there are none)."""

    def __init__(self, processes: list[list[tuple[int, int]]]) -> None:
        super().__init__([f"GPU {i}" for i in range(len(processes))])
        self.processes = processes

    def nvmlDeviceGetComputeRunningProcesses_v3(self, handle: ctypes.c_void_p, count: Any, infos: Any) -> int:
        listed = self.processes[handle.value - 1000]
        if infos is None:
            count._obj.value = len(listed)
            return 7 if listed else 0
        if count._obj.value < len(listed):
            return 7
        for info, (pid, used) in zip(infos, listed):
            info.pid, info.usedGpuMemory = pid, used
        count._obj.value = len(listed)
        return 0


def test_nvml_process_memory_sums_this_process_on_every_gpu() -> None:
    not_available = 2**64 - 1
    lib = FakeNvmlProcesses([[(7, 1 << 30), (8, 5 << 30)], [], [(7, 512 << 20), (7, not_available)]])
    assert nvml_process_memory(lib, 7) == (1 << 30) + (512 << 20)
    assert nvml_process_memory(lib, 8) == 5 << 30
    assert nvml_process_memory(lib, 9) == 0


def test_open_nvml_needs_a_library_that_initialises() -> None:
    def missing(name: str) -> Any:
        raise OSError(f"{name}: cannot open shared object file")

    assert open_nvml("Linux", missing) is None
    assert open_nvml("Linux", lambda name: FakeNvml([], init_code=9)) is None
    tried: list[str] = []
    lib = FakeNvml(["GPU 0"])
    assert open_nvml("Linux", lambda name: tried.append(name) or (lib if len(tried) == 2 else missing(name))) is lib
    assert tried == ["libnvidia-ml.so.1", "libnvidia-ml.so"]


def test_nvml_through_ctypes_semantics() -> None:
    lib = FakeNvml(["NVIDIA A100-SXM4-80GB", "NVIDIA A100 MIG"])
    gpus = nvml_gpus(lib)
    assert gpus == [GpuInfo(0, "nvidia", "NVIDIA A100-SXM4-80GB", 80 * 1024**3, "560.35.03", "cuda"),
                    GpuInfo(1, "nvidia", "NVIDIA A100 MIG", None, "560.35.03", "cuda")]
    assert lib.shut


def test_nvml_is_preferred_over_nvidia_smi(tmp_path: Path) -> None:
    host = make_host(tmp_path, load_library=lambda name: FakeNvml(["NVIDIA L4"]))
    report = probe_hardware(host=host, runner=make_runner({"nvidia-smi": SMI_OUTPUT}))
    assert [g.name for g in report.gpus] == ["NVIDIA L4"]


def test_failing_nvml_falls_back_to_nvidia_smi_and_says_why(tmp_path: Path) -> None:
    host = make_host(tmp_path, load_library=lambda name: FakeNvml([], init_code=9))
    report = probe_hardware(host=host, runner=make_runner({"nvidia-smi": SMI_OUTPUT}))
    assert len(report.gpus) == 2
    assert "gpu/nvml: nvmlInit_v2 returned NVML error 9" in report.problems


def test_nvml_error_strings_are_used_when_the_library_has_them(tmp_path: Path) -> None:
    lib = FakeNvml([], init_code=9)
    lib.nvmlErrorString = lambda code: b"Driver Not Loaded"  # type: ignore[attr-defined]
    report = probe_hardware(host=make_host(tmp_path, load_library=lambda name: lib), runner=make_runner({}))
    assert report.problems == ["gpu/nvml: nvmlInit_v2 returned NVML error 9 (Driver Not Loaded)"]


def test_failing_nvidia_smi_is_a_problem(tmp_path: Path) -> None:
    runner = make_runner({"nvidia-smi": CommandFailed("nvidia-smi exited with status 9: NVIDIA-SMI has failed")})
    report = probe_hardware(host=make_host(tmp_path), runner=runner)
    assert report.gpus == []
    assert any(p.startswith("gpu/nvidia-smi: nvidia-smi exited with status 9") for p in report.problems)


# -- /sys: DRM GPUs and accel NPUs -----------------------------------------------------------------
def test_amd_and_intel_gpus_from_sysfs(tmp_path: Path) -> None:
    pci_device(tmp_path, "drm", "card0", "0x1002", "0x744c", "amdgpu", {"mem_info_vram_total": "25753026560\n"})
    pci_device(tmp_path, "drm", "card1", "0x8086", "0x7d55", "xe")
    pci_device(tmp_path, "drm", "card2", "0x1af4", "0x1050", "virtio-pci")  # a virtual display: not a GPU
    write(tmp_path / "sys/class/drm/card0-DP-1/status", "connected\n")  # a connector, not a card
    write(tmp_path / "dev/kfd", "")
    report = probe_hardware(host=make_host(tmp_path), runner=make_runner({}))
    assert report.gpus == [GpuInfo(0, "amd", "AMD GPU [1002:744c]", 25753026560, "amdgpu", "rocm"),
                           GpuInfo(0, "intel", "Intel GPU [8086:7d55]", None, "xe", "unknown")]
    assert report.problems == []


def test_rocm_smi_names_amd_gpus(tmp_path: Path) -> None:
    pci_device(tmp_path, "drm", "card1", "0x1002", "0x744c", "amdgpu")
    rocm = {"card0": {"Card Series": "Navi 31 [Radeon RX 7900 XTX]", "VRAM Total Memory (B)": "25753026560"}}
    runner = make_runner({"rocm-smi": "WARNING: something\n" + json.dumps(rocm)})
    gpus = probe_hardware(host=make_host(tmp_path), runner=runner).gpus
    assert gpus == [GpuInfo(0, "amd", "Navi 31 [Radeon RX 7900 XTX]", 25753026560, "amdgpu", "rocm")]


def test_nvidia_card_without_nvml_or_smi_is_reported(tmp_path: Path) -> None:
    pci_device(tmp_path, "drm", "card0", "0x10de", "0x2684", "nvidia")
    report = probe_hardware(host=make_host(tmp_path), runner=make_runner({}))
    assert report.gpus == [GpuInfo(0, "nvidia", "Nvidia GPU [10de:2684]", None, "nvidia", "unknown")]
    assert any(p.startswith("gpu/nvidia: an NVIDIA device is present") for p in report.problems)


def test_npus_from_sys_class_accel(tmp_path: Path) -> None:
    pci_device(tmp_path, "accel", "accel0", "0x8086", "0x7d1d", "intel_vpu")
    amd = pci_device(tmp_path, "accel", "accel1", "0x1022", "0x17f0", None)
    (tmp_path / "drivers/amdxdna").mkdir(parents=True)
    (amd / "driver").symlink_to(tmp_path / "drivers/amdxdna")
    pci_device(tmp_path, "accel", "accel2", "0x1da3", "0x1020", "habanalabs")
    npus = probe_hardware(host=make_host(tmp_path), runner=make_runner({})).npus
    assert npus == [NpuInfo("intel", "Intel NPU", "intel_vpu"), NpuInfo("amd", "AMD XDNA NPU", "amdxdna"),
                    NpuInfo("unknown", "accelerator (habanalabs)", "habanalabs")]


# -- failures never crash --------------------------------------------------------------------------
def boom(*args: Any) -> Any:
    raise RuntimeError("boom")


def test_failing_probes_become_problems(tmp_path: Path) -> None:
    host = make_host(tmp_path, cpuinfo=None, cpu_count=boom, virtual_memory=boom, load_library=boom)
    report = probe_hardware(host=host, runner=boom)
    assert report.cpu.model == "unknown" and report.cpu.cores_physical is None and report.cpu.features == []
    assert report.memory.total is None and report.memory.available is None
    assert report.gpus == [] and report.npus == []
    assert "cpu/cores: boom" in report.problems
    assert "memory: boom" in report.problems
    assert "gpu/nvidia: boom" in report.problems
    assert any(p.startswith("cpu/model: ") for p in report.problems)  # no /proc/cpuinfo under the fake root


def test_unreadable_sysfs_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    write(tmp_path / "sys/class/accel", "a file where a directory should be")
    (tmp_path / "sys/class/drm").mkdir(parents=True)
    (tmp_path / "sys/class/drm/card0").symlink_to(tmp_path / "sys/class/drm/card0")  # a symlink loop
    report = probe_hardware(host=make_host(tmp_path), runner=make_runner({}))
    assert report.gpus == [] and report.npus == []
    assert report.cpu.model.startswith("Intel")


def test_unknown_system(tmp_path: Path) -> None:
    report = probe_hardware(host=make_host(tmp_path, system="Plan9", arch="mips"), runner=make_runner({}))
    assert report.cpu.model == "unknown" and report.cpu.arch == "mips"
    assert report.gpus == [] and report.npus == [] and report.problems == []


# -- the real machine and the default runner -------------------------------------------------------
def test_real_probe_is_sane() -> None:
    report = probe_hardware()
    assert report.cpu.arch == normalise_arch(platform.machine())
    assert report.cpu.cores_logical and report.cpu.cores_logical >= 1
    assert report.cpu.cores_physical is None or 1 <= report.cpu.cores_physical <= report.cpu.cores_logical
    assert report.memory.total and report.memory.available and 0 < report.memory.available <= report.memory.total
    assert isinstance(report.problems, list)
    if platform.system() == "Linux":
        assert report.cpu.model != "unknown"
        if report.cpu.arch == "x86_64":
            assert "sse3" in report.cpu.features


def test_default_runner() -> None:
    assert run_command([sys.executable, "-c", "print('hi')"]) == "hi\n"
    with pytest.raises(CommandFailed, match="status 3: oops"):
        run_command([sys.executable, "-c", "import sys; sys.stderr.write('oops\\n'); sys.exit(3)"])
    with pytest.raises(FileNotFoundError):
        run_command(["slmctl-no-such-program-anywhere"])
    with pytest.raises(subprocess.TimeoutExpired):
        run_command([sys.executable, "-c", "import time; time.sleep(5)"], 0.2)


def test_importing_the_probes_is_light() -> None:
    code = ("import sys, slmctl.hardware, slmctl.devices; "
            "heavy = {'psutil', 'llama_cpp', 'onnxruntime', 'onnxruntime_genai', 'slmctl.cli', 'subprocess'}; "
            "print(sorted(heavy & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
