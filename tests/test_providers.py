"""Runtime probes (slmctl.backends.providers, cached and isolated by slmctl.backends.probes): the real ones on this machine, injected fakes, and the probe
child (slmctl.backends.probe_worker) with its failure modes."""

from __future__ import annotations

import json
import sys
import threading
from types import SimpleNamespace
from typing import Any

import pytest

from slmctl.backends import probe_worker, probes, providers
from slmctl.devices import ONNX_PROVIDER_NAMES
from slmctl.backends.probes import RuntimeProbe
from slmctl.backends.providers import (
    NOT_INSTALLED,
    PROBE_MODEL,
    GgufBuild,
    OnnxBuild,
    ProviderStatus,
    gpu_kinds_from_system_info,
    probe_gguf,
    probe_onnx,
)

og = pytest.importorskip("onnxruntime_genai")
ort = pytest.importorskip("onnxruntime")
llama_cpp = pytest.importorskip("llama_cpp")
CPU_ONLY_ORT = set(ort.get_available_providers()) <= {"CPUExecutionProvider", "AzureExecutionProvider"}


# -- the real probes -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_onnx() -> OnnxBuild:
    return probe_onnx()


def test_cpu_provider_is_usable(real_onnx: OnnxBuild) -> None:
    assert real_onnx.installed
    assert real_onnx.status["cpu"] == ProviderStatus(True, "ok")
    assert set(real_onnx.status) == {"cpu", "cuda", "dml", "qnn", "openvino", "webgpu"}
    assert real_onnx.genai_version == og.__version__ and real_onnx.onnxruntime_version == ort.__version__


@pytest.mark.parametrize("name", ["qnn", "openvino", "webgpu"])
def test_genai_availability_claims_are_not_trusted(real_onnx: OnnxBuild, name: str) -> None:
    if f"{ONNX_PROVIDER_NAMES[name].runtime_name}" in ort.get_available_providers():
        pytest.skip(f"this onnxruntime build really has {name}")
    claim = getattr(og, f"is_{name}_available")()
    assert not real_onnx.status[name].usable, f"og.is_{name}_available() said {claim}"
    assert real_onnx.status[name].reason == "not in this onnxruntime build"


@pytest.mark.skipif(not CPU_ONLY_ORT, reason="this onnxruntime build has accelerator providers")
def test_usable_onnx_providers_here(real_onnx: OnnxBuild) -> None:
    assert real_onnx.usable == ["cpu"]
    assert probes.usable_onnx_providers() == ["cpu"]
    info = probes.onnx_build_info()
    assert info["installed"] and info["version"] == og.__version__
    assert info["onnxruntime_version"] == ort.__version__


@pytest.mark.skipif(bool(llama_cpp.llama_supports_gpu_offload()), reason="a GPU build of llama.cpp")
def test_usable_gguf_devices_on_a_cpu_build() -> None:
    from slmctl.backends.gguf import LlamaCppBackend

    assert probes.usable_gguf_devices() == ["cpu"]
    assert LlamaCppBackend().devices() == ["cpu"]
    info = probes.gguf_build_info()
    assert info["installed"] and info["version"] == llama_cpp.__version__ and info["gpu_offload"] is False
    assert "CPU" in (info["system_info"] or "")
    assert any("backend CPU" in b for b in info["backends"])
    assert info["problems"] == []


def test_probe_model_matches_onnx_helper() -> None:
    pytest.importorskip("onnx")
    assert providers.build_probe_model() == PROBE_MODEL


# -- ONNX with a fake onnxruntime ------------------------------------------------------------------
class FakeSession:
    def __init__(self, model: bytes, options: Any, providers: list[Any], enable_fallback: int) -> None:
        assert model == PROBE_MODEL and enable_fallback == 0
        first = providers[0]
        name, opts = first if isinstance(first, tuple) else (first, {})
        FakeOrt.seen[name] = opts
        if name == "QNNExecutionProvider":
            raise RuntimeError("QNN backend library not found\nmore detail")
        if name == "CUDAExecutionProvider":  # ORT's silent fall-back: CUDA is dropped
            self._providers = ["CPUExecutionProvider"]
        else:
            self._providers = [name, "CPUExecutionProvider"]

    def get_providers(self) -> list[str]:
        return self._providers


class FakeOrt:
    __version__ = "9.9.9"
    seen: dict[str, dict[str, str]] = {}
    SessionOptions = SimpleNamespace
    InferenceSession = FakeSession

    @staticmethod
    def get_available_providers() -> list[str]:
        return ["QNNExecutionProvider", "OpenVINOExecutionProvider", "CUDAExecutionProvider",
                "WebGpuExecutionProvider", "CPUExecutionProvider"]


def fake_genai(**claims: bool) -> Any:
    return SimpleNamespace(__version__="0.99", **{f"is_{k}_available": (lambda v=v: v) for k, v in claims.items()})


def test_real_probe_logic_with_a_fake_runtime() -> None:
    genai = fake_genai(cuda=True, qnn=True, openvino=True, webgpu=False, dml=True)
    build = probe_onnx(lambda: (genai, FakeOrt))
    assert build.status["qnn"] == ProviderStatus(False, "failed to initialise: QNN backend library not found")
    assert build.status["cuda"].usable is False and "fell back to CPUExecutionProvider" in build.status["cuda"].reason
    assert build.status["openvino"] == ProviderStatus(True, "ok")
    assert FakeOrt.seen["OpenVINOExecutionProvider"] == {"device_type": "NPU"}
    assert build.status["webgpu"] == ProviderStatus(False, "onnxruntime-genai was built without webgpu support")
    assert build.status["dml"] == ProviderStatus(False, "not in this onnxruntime build")
    assert build.usable == ["openvino", "cpu"]
    assert (build.genai_version, build.onnxruntime_version) == ("0.99", "9.9.9")


def test_missing_onnxruntime_genai() -> None:
    def load() -> Any:
        raise ImportError("No module named 'onnxruntime_genai'")

    build = probe_onnx(load)
    assert not build.installed and build.usable == []
    assert all(s == ProviderStatus(False, NOT_INSTALLED) for s in build.status.values())
    assert set(build.status) == {"cpu", "cuda", "dml", "qnn", "openvino", "webgpu"}


def test_broken_onnxruntime() -> None:
    def load() -> Any:
        raise OSError("libonnxruntime.so.1: cannot open shared object file")

    build = probe_onnx(load)
    assert not build.installed and "cannot open shared object" in build.status["cpu"].reason


# -- GGUF with a fake llama_cpp --------------------------------------------------------------------
def fake_llama(offload: bool, info: str = "CPU : AVX2 = 1 |") -> Any:
    return SimpleNamespace(__version__="0.0.1", llama_supports_gpu_offload=lambda: offload,
                           llama_print_system_info=lambda: info.encode())


def test_gpu_kind_from_the_ggml_registry() -> None:
    registry = [("CUDA", "CUDA0", "NVIDIA H200", "gpu"), ("CPU", "CPU", "Xeon", "cpu")]
    build = probe_gguf(lambda: fake_llama(True), lambda _: registry, lambda: ("Linux", "x86_64"))
    assert build.devices == ["cuda", "cpu"]
    assert build.backends == ["CUDA0: NVIDIA H200 (gpu, backend CUDA)", "CPU: Xeon (cpu, backend CPU)"]
    assert build.gpu_offload and build.problems == []


def test_gpu_kind_from_system_info_when_the_registry_fails() -> None:
    def registry(_: Any) -> Any:
        raise AttributeError("no ggml_backend_dev_count")

    llama = fake_llama(True, "Vulkan : ... | CPU : NEON = 1 |")
    build = probe_gguf(lambda: llama, registry, lambda: ("Linux", "arm64"))
    assert build.devices == ["vulkan", "cpu"]
    assert build.problems == ["gguf/ggml-registry: no ggml_backend_dev_count"]


def test_gpu_kind_from_the_platform_as_a_last_resort() -> None:
    build = probe_gguf(lambda: fake_llama(True, ""), lambda _: [], lambda: ("Darwin", "arm64"))
    assert build.devices == ["metal", "cpu"]
    unknown = probe_gguf(lambda: fake_llama(True, "SYCL : X = 1 |"), lambda _: [], lambda: ("Linux", "x86_64"))
    assert unknown.devices == ["cpu"] and unknown.problems[0].startswith("gguf/gpu: ")


def test_no_gpu_when_the_build_cannot_offload() -> None:
    registry = [("CUDA", "CUDA0", "NVIDIA H200", "gpu")]  # registered, but offload says no
    build = probe_gguf(lambda: fake_llama(False), lambda _: registry, lambda: ("Linux", "x86_64"))
    assert build.devices == ["cpu"]


def test_system_info_parsing() -> None:
    assert gpu_kinds_from_system_info("CUDA : ARCHS = 900 | USE_GRAPHS = 1 | CPU : SSE3 = 1 |") == ["cuda"]
    assert gpu_kinds_from_system_info("Metal : EMBED_LIBRARY = 1 | CPU : NEON = 1 |") == ["metal"]
    assert gpu_kinds_from_system_info("ROCm : NO_VMM = 1 | Vulkan : x = 1 | CPU : AVX = 1 |") == ["rocm", "vulkan"]
    assert gpu_kinds_from_system_info("CPU : AVX = 1 |") == []


def test_missing_llama_cpp() -> None:
    def load() -> Any:
        raise ImportError("No module named 'llama_cpp'")

    build = probe_gguf(load)
    assert not build.installed and build.devices == ["cpu"] and "not usable" in build.problems[0]


# -- the cache -------------------------------------------------------------------------------------
def test_probe_results_are_cached_until_cleared() -> None:
    calls = {"gguf": 0, "onnx": 0}

    def gguf() -> GgufBuild:
        calls["gguf"] += 1
        return GgufBuild(True, "1.0", devices=["cuda", "cpu"])

    def onnx() -> OnnxBuild:
        calls["onnx"] += 1
        status = {"cpu": ProviderStatus(True, "ok"), "dml": ProviderStatus(True, "ok"),
                  "qnn": ProviderStatus(True, "ok"), "cuda": ProviderStatus(False, "no GPU")}
        return OnnxBuild(True, "0.1", "1.2", ["CPUExecutionProvider"], status)

    probe = RuntimeProbe(gguf=gguf, onnx=onnx)
    assert probe.usable_gguf_devices() == ["cuda", "cpu"]
    assert probe.usable_onnx_providers() == ["qnn", "dml", "cpu"]
    assert probe.onnx_provider_status()["cuda"] == ProviderStatus(False, "no GPU")
    assert probe.gguf_build_info()["version"] == "1.0"
    assert probe.onnx_build_info()["onnxruntime_version"] == "1.2"
    assert calls == {"gguf": 1, "onnx": 1}
    probe.usable_gguf_devices().append("mutating a copy")
    assert probe.usable_gguf_devices() == ["cuda", "cpu"]
    probe.clear()
    probe.usable_onnx_providers()
    assert calls == {"gguf": 1, "onnx": 2}


# -- isolation: in process only when that runtime is already here, else a child -------------------
def test_which_runtime_is_loaded_here() -> None:
    assert probes.loaded_here("gguf", {"llama_cpp": object()})
    assert not probes.loaded_here("gguf", {"onnxruntime": object(), "onnxruntime_genai": object()})
    assert probes.loaded_here("onnx", {"onnxruntime_genai": object()})
    assert probes.loaded_here("onnx", {"onnxruntime": object()})
    assert not probes.loaded_here("onnx", {"llama_cpp": object()})
    assert probes.loaded_here("gguf") and probes.loaded_here("onnx")  # this test module imported both


def test_the_default_probes_are_the_isolated_ones() -> None:
    probe = RuntimeProbe()
    assert probe._probes == {"gguf": probes.isolated_gguf, "onnx": probes.isolated_onnx}


def test_a_runtime_already_loaded_is_probed_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_child(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("started a probe child for a runtime this process already has")

    monkeypatch.setattr(probe_worker, "run_probe", no_child)
    assert probes.isolated_gguf() == probe_gguf()
    assert probes.isolated_onnx() == probe_onnx()


@pytest.mark.parametrize("kind", ["gguf", "onnx"])
def test_a_runtime_not_loaded_is_probed_in_a_child(monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    for name in (*probes.GGUF_MODULES, *probes.ONNX_MODULES):
        monkeypatch.delitem(sys.modules, name, raising=False)  # restored after the test
    seen: list[str] = []

    def child(kind_: str, **kwargs: Any) -> tuple[None, str]:
        seen.append(kind_)
        return None, "probe crashed with signal 11 (SIGSEGV)"

    monkeypatch.setattr(probe_worker, "run_probe", child)
    build = probes.isolated_gguf() if kind == "gguf" else probes.isolated_onnx()
    assert seen == [kind] and not build.installed and build.error == "probe crashed with signal 11 (SIGSEGV)"
    assert "llama_cpp" not in sys.modules and "onnxruntime" not in sys.modules


def test_the_child_answers_like_the_probe_here() -> None:
    assert probe_worker.probe_gguf_in_child() == probe_gguf()
    assert probe_worker.probe_onnx_in_child() == probe_onnx()


def test_builds_survive_json() -> None:
    gguf = GgufBuild(True, "1", "CUDA : x |", True, ["CUDA0: H200 (gpu, backend CUDA)"], ["cuda", "cpu"], ["p"])
    onnx = OnnxBuild(True, "0.1", "1.2", ["CPUExecutionProvider"], {"cpu": ProviderStatus(True, "ok")}, None)
    assert probe_worker.gguf_from_dict(json.loads(json.dumps(probe_worker.build_to_dict(gguf)))) == gguf
    assert probe_worker.onnx_from_dict(json.loads(json.dumps(probe_worker.build_to_dict(onnx)))) == onnx


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_crashing_child_becomes_an_error() -> None:
    crash = python("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    build = probe_worker.probe_onnx_in_child(command=crash)
    assert build == probe_worker.failed_onnx("probe crashed with signal 11 (SIGSEGV)")
    assert set(build.status) == {"cpu", "cuda", "dml", "qnn", "openvino", "webgpu"} and build.usable == []
    gguf = probe_worker.probe_gguf_in_child(command=crash)
    assert not gguf.installed and gguf.error == "probe crashed with signal 11 (SIGSEGV)"
    assert gguf.problems == ["gguf/probe: probe crashed with signal 11 (SIGSEGV)"] and gguf.devices == ["cpu"]
    info = RuntimeProbe(gguf=lambda: gguf).gguf_build_info()
    assert info["installed"] is False and info["error"] == "probe crashed with signal 11 (SIGSEGV)"


def test_every_other_child_failure_becomes_an_error() -> None:
    run = probe_worker.run_probe
    assert run("gguf", command=python("import time; time.sleep(30)"), timeout=0.5) == (
        None, "probe timed out after 0.5 s")
    assert run("gguf", command=python("import sys; sys.exit('boom\\nlast words')")) == (
        None, "probe exited with code 1: last words")
    assert run("onnx", command=python("print('not json')")) == (None, "probe returned no result")
    wrong = python("import json; print(json.dumps({'kind': 'gguf', 'build': {'installed': True}}))")
    assert run("onnx", command=wrong) == (None, "probe returned no result")
    assert run("gguf", command=["/nonexistent/python"])[1].startswith("probe could not start: ")
    odd = python("import json; print(json.dumps({'kind': 'onnx', 'build': {'status': 1}}))")
    assert probe_worker.probe_onnx_in_child(command=odd).error.startswith("probe returned an unreadable result")


def test_the_worker_refuses_a_bad_kind(capsys: pytest.CaptureFixture[str]) -> None:
    assert probe_worker.main(["tflite"]) == 2
    assert "usage:" in capsys.readouterr().err


def test_prefetch_runs_both_probes_side_by_side() -> None:
    both = threading.Barrier(2, timeout=10)  # each probe waits for the other: only concurrent runs get through

    def gguf() -> GgufBuild:
        both.wait()
        return GgufBuild(True, "1.0")

    def onnx() -> OnnxBuild:
        both.wait()
        return OnnxBuild(True, "0.1")

    probe = RuntimeProbe(gguf=gguf, onnx=onnx)
    probe.prefetch()
    assert probe.gguf_build_info()["version"] == "1.0" and probe.onnx_build_info()["version"] == "0.1"
    probe.prefetch()  # cached: nothing runs (a lone probe would now wait on the barrier and fail)


def test_prefetch_never_raises() -> None:
    def broken() -> Any:
        raise RuntimeError("probe exploded")

    probe = RuntimeProbe(gguf=broken, onnx=lambda: OnnxBuild(True, "0.1"))
    probe.prefetch()
    assert probe.onnx_build_info()["installed"]
    with pytest.raises(RuntimeError, match="probe exploded"):  # not cached: the caller's ask reports it
        probe.gguf()
