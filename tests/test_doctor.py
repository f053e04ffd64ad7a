"""``slmctl doctor``: end to end through the real entry point, plus render/collect with fakes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cli_runner import run_cli
from slmctl.backends.probe_worker import failed_gguf, failed_onnx
from slmctl.backends.probes import RuntimeProbe
from slmctl.backends.providers import GgufBuild, OnnxBuild, ProviderStatus
from slmctl.cli.doctor import render
from slmctl.hardware import CpuInfo, GpuInfo, HardwareReport, MemoryInfo, NpuInfo
from slmctl.services.diagnostics import collect

SECTIONS = ("CPU", "Memory", "GPUs", "NPUs", "Runtimes")


@pytest.fixture(scope="module")
def doctor_json(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``python -m slmctl doctor --json`` in a clean environment."""
    home = tmp_path_factory.mktemp("home")
    env = {k: v for k, v in os.environ.items() if k != "SLMCTL_DEBUG"} | {"SLMCTL_HOME": str(home)}
    proc = subprocess.run([sys.executable, "-m", "slmctl", "doctor", "--json"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return json.loads(proc.stdout)


def test_json_has_every_field(doctor_json: dict[str, Any]) -> None:
    report = doctor_json
    for key in ("slmctl_version", "platform", "python", "cpu", "memory", "gpus", "npus", "backends", "selection",
                "problems"):
        assert key in report
    cpu = report["cpu"]
    assert {"model", "arch", "cores", "cores_physical", "cores_logical", "features"} <= set(cpu)
    assert cpu["cores"] >= 1 and isinstance(cpu["features"], list)
    assert report["memory"]["total"] >= report["memory"]["available"] > 0
    assert isinstance(report["gpus"], list) and isinstance(report["npus"], list)
    gguf, onnx = report["backends"]["gguf"], report["backends"]["onnx"]
    assert gguf["installed"] is True and gguf["version"] and "cpu" in gguf["devices"]
    assert onnx["installed"] is True and onnx["version"] and "cpu" in onnx["providers"]
    assert onnx["provider_status"]["cpu"] == {"usable": True, "reason": "ok"}
    assert onnx["provider_status"]["qnn"]["usable"] is False
    assert report["selection"]["gguf"] in gguf["devices"]
    assert report["selection"]["onnx"] in onnx["providers"]
    assert gguf["error"] is None and onnx["error"] is None  # both probe children answered


def test_json_on_this_cpu_only_machine(doctor_json: dict[str, Any]) -> None:
    if doctor_json["gpus"] or doctor_json["npus"] or doctor_json["backends"]["onnx"]["providers"] != ["cpu"]:
        pytest.skip("this machine has accelerators")
    assert doctor_json["selection"] == {"gguf": "cpu", "onnx": "cpu"}


def test_human_report(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "doctor")
    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    for section in SECTIONS:
        assert section in lines
    assert "ONNX providers" not in lines and "Problems" not in lines
    assert lines[-1].startswith("run would use: gguf -> ")
    assert ", onnx -> " in lines[-1]


def test_debug_shows_reasons(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "--debug", "doctor")
    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    for section in (*SECTIONS, "ONNX providers", "llama.cpp", "Problems"):
        assert section in lines
    assert any(line.split()[:1] == ["qnn"] and "usable" in line for line in lines)
    assert lines[-1].startswith("run would use: ")


def test_help_has_examples(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "doctor", "--help")
    assert result.code == 0 and "slmctl doctor --json" in result.stdout


# -- collect and render with fakes -----------------------------------------------------------------
def fake_runtime() -> RuntimeProbe:
    status = {"qnn": ProviderStatus(True, "ok"), "cuda": ProviderStatus(False, "failed to initialise: no GPU"),
              "cpu": ProviderStatus(True, "ok")}
    return RuntimeProbe(gguf=lambda: GgufBuild(True, "0.3.36", "CUDA : ARCHS = 900 |", True,
                                               ["CUDA0: NVIDIA L4 (gpu, backend CUDA)"], ["cuda", "cpu"]),
                        onnx=lambda: OnnxBuild(True, "0.18.0", "1.32.0", ["CPUExecutionProvider"], status))


def fake_hardware() -> HardwareReport:
    return HardwareReport(CpuInfo("Snapdragon X Elite", "arm64", 12, 12, ["neon", "dotprod"]),
                          MemoryInfo(32_000_000_000, 20_000_000_000),
                          [GpuInfo(0, "nvidia", "NVIDIA L4", 24 * 1024**3, "550.1", "cuda")],
                          [NpuInfo("qualcomm", "Qualcomm Hexagon NPU", None)], ["gpu/nvml: slow"])


def test_collect_with_fakes_and_preferences() -> None:
    report = collect(hardware=fake_hardware, runtime=fake_runtime())
    assert report["selection"] == {"gguf": "cuda", "onnx": "qnn"}
    assert report["gpus"][0]["name"] == "NVIDIA L4" and report["npus"][0]["vendor"] == "qualcomm"
    assert report["backends"]["onnx"]["providers"] == ["qnn", "cpu"]
    assert report["problems"] == ["gpu/nvml: slow"]
    json.dumps(report)
    cpu_first = collect(hardware=fake_hardware, runtime=fake_runtime(), preference=("cpu",))
    assert cpu_first["selection"] == {"gguf": "cpu", "onnx": "cpu"}
    gpu_only = collect(hardware=fake_hardware, runtime=fake_runtime(), preference=("dml",))
    assert gpu_only["selection"] == {"gguf": None, "onnx": None}
    assert any(p.startswith("selection/onnx: none of the preferred devices") for p in gpu_only["problems"])
    assert any(p.startswith("selection/gguf: none of the preferred devices (none apply)") for p in gpu_only["problems"])


def test_render_with_fakes() -> None:
    report = collect(hardware=fake_hardware, runtime=fake_runtime())
    text = render(report)
    assert "  model      Snapdragon X Elite" in text
    assert "gpu 0   NVIDIA L4, vendor nvidia, api cuda, 25.8 GB, driver 550.1" in text
    assert "Qualcomm Hexagon NPU" in text
    assert "note: 1 probe(s) failed" in text and "gpu/nvml: slow" not in text
    assert text.splitlines()[-1] == "run would use: gguf -> cuda, onnx -> qnn"
    debug = render(report, debug=True)
    assert "gpu/nvml: slow" in debug and "not usable: failed to initialise: no GPU" in debug


def test_everything_failing_never_crashes() -> None:
    def broken() -> Any:
        raise RuntimeError("probe exploded")

    runtime = RuntimeProbe(gguf=broken, onnx=broken)
    report = collect(hardware=broken, runtime=runtime)
    assert report["cpu"]["model"] == "unknown" and report["memory"]["total"] is None
    assert report["selection"] == {"gguf": None, "onnx": None}
    assert "hardware: probe exploded" in report["problems"]
    assert "backends/gguf: probe exploded" in report["problems"]
    text = render(report)
    assert "unknown" in text and text.splitlines()[-1] == "run would use: gguf -> none, onnx -> none"
    assert "probe exploded" in render(report, debug=True)


def test_runtimes_not_installed() -> None:
    status = {"cpu": ProviderStatus(False, "onnxruntime-genai is not installed")}
    runtime = RuntimeProbe(gguf=lambda: GgufBuild(False, problems=["gguf/import: no llama_cpp"]),
                           onnx=lambda: OnnxBuild(False, status=status))
    report = collect(hardware=fake_hardware, runtime=runtime)
    assert report["selection"] == {"gguf": None, "onnx": None}
    assert report["backends"]["gguf"]["installed"] is False and report["backends"]["onnx"]["providers"] == []
    assert "backends/gguf/import: no llama_cpp" in report["problems"]
    text = render(report)
    assert "  gguf   not installed" in text and "  onnx   not installed" in text
    assert text.splitlines()[-1] == "run would use: gguf -> none, onnx -> none"


def test_a_probe_that_crashed_is_reported_not_fatal() -> None:
    runtime = RuntimeProbe(gguf=lambda: failed_gguf("probe crashed with signal 11 (SIGSEGV)"),
                           onnx=lambda: failed_onnx("probe timed out after 60 s"))
    report = collect(hardware=fake_hardware, runtime=runtime)
    gguf, onnx = report["backends"]["gguf"], report["backends"]["onnx"]
    assert gguf["installed"] is False and gguf["error"] == "probe crashed with signal 11 (SIGSEGV)"
    assert onnx["installed"] is False and onnx["error"] == "probe timed out after 60 s"
    assert onnx["provider_status"]["cpu"] == {"usable": False, "reason": "probe timed out after 60 s"}
    assert "backends/gguf/probe: probe crashed with signal 11 (SIGSEGV)" in report["problems"]
    assert "backends/onnx/probe: probe timed out after 60 s" in report["problems"]
    assert report["selection"] == {"gguf": None, "onnx": None}
    json.dumps(report)
    text = render(report)
    assert "  gguf   probe failed: probe crashed with signal 11 (SIGSEGV)" in text
    assert "  onnx   probe failed: probe timed out after 60 s" in text
