"""The benchmark's memory samplers: resident memory (any reading function) and GPU memory through NVML
(a fake NVML stands in for a GPU, which this machine has none of)."""

from __future__ import annotations

import os
import time

from test_hardware import FakeNvml, FakeNvmlProcesses

from slmctl.services.bench.workload import PeakGpuMemory, PeakMemory


def test_peak_memory_keeps_the_highest_reading_and_skips_failed_ones() -> None:
    values = iter([10, 30, RuntimeError("gone"), 20])

    def read() -> int:
        value = next(values, 5)
        if isinstance(value, Exception):
            raise value
        return value

    with PeakMemory(read, interval=0.001) as memory:
        time.sleep(0.05)
    assert memory.peak == 30


def test_gpu_peak_is_this_processs_most_device_memory_during_the_block() -> None:
    me = os.getpid()
    lib = FakeNvmlProcesses([[(me, 1 << 30), (me + 1, 9 << 30)], []])
    with PeakGpuMemory(interval=0.001, open_library=lambda: lib) as gpu:
        time.sleep(0.02)
        lib.processes[1] = [(me, 2 << 30)]  # the model moved to the second GPU too: 3 GiB in all
        time.sleep(0.02)
        lib.processes = [[], []]  # freed before the end: the peak stays
        time.sleep(0.02)
    assert gpu.peak == 3 << 30 and lib.shut


def test_gpu_peak_is_none_without_nvml_or_when_it_never_answers() -> None:
    with PeakGpuMemory(open_library=lambda: None) as gpu:
        pass
    assert gpu.peak is None

    class Broken(FakeNvml):
        def nvmlDeviceGetCount_v2(self, ref: object) -> int:
            return 999  # NVML_ERROR_UNKNOWN

    broken = Broken(["GPU 0"])
    with PeakGpuMemory(interval=0.001, open_library=lambda: broken) as gpu:
        time.sleep(0.01)
    assert gpu.peak is None and broken.shut

    def failing() -> object:
        raise OSError("libnvidia-ml.so.1: wrong ELF class")

    with PeakGpuMemory(open_library=failing) as gpu:
        pass
    assert gpu.peak is None
