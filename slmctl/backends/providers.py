"""What each runtime can really use on this machine: llama.cpp devices and ONNX Runtime providers.

Owns the runtime probes and their per-process cache. GGUF: always ``cpu``, plus the GPU kind of the
llama.cpp build (from ggml's device registry, else its system-info string, else the platform) when
it can offload. ONNX: ``onnxruntime_genai.is_*_available()`` are not trusted (they answer True for
QNN, OpenVINO and WebGPU on builds that lack them); each provider is tried for real by creating a
tiny in-memory session and checking that ORT did not silently fall back to the CPU. Nothing here
raises. These probes run in whatever process calls them; :mod:`slmctl.backends.probes` decides which
process that is (a child, unless this one already has the runtime) and caches the answers.
"""

from __future__ import annotations

import platform
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from slmctl.devices import GGUF_DEVICES, ONNX_PROVIDER_NAMES, ONNX_PROVIDERS, PRIORITY

#: Options for the probe session: OpenVINO must prove it reaches the NPU, not its CPU plugin.
PROBE_OPTIONS: dict[str, dict[str, str]] = {"openvino": {"device_type": "NPU"}}
#: A one-node ONNX model (Identity on float[1], IR 7, opset 13), as :func:`build_probe_model` makes it.
PROBE_MODEL = (b'\x08\x07\x12\x06slmctl:;\n\x10\n\x01x\x12\x01y"\x08Identity\x12\x05probeZ\x0f\n\x01x\x12\n\n\x08\x08'
               b'\x01\x12\x04\n\x02\x08\x01b\x0f\n\x01y\x12\n\n\x08\x08\x01\x12\x04\n\x02\x08\x01B\x04\n\x00\x10\r')
NOT_INSTALLED = "onnxruntime-genai is not installed"
_GGML_TO_DEVICE = {"cuda": "cuda", "rocm": "rocm", "hip": "rocm", "metal": "metal", "mtl": "metal", "vulkan": "vulkan"}
_GGML_DEVICE_TYPES = {0: "cpu", 1: "gpu", 2: "igpu", 3: "accel"}


def _ordered(names: Any) -> list[str]:
    return sorted(dict.fromkeys(names), key=PRIORITY.index)


def build_probe_model() -> bytes:
    """Rebuild :data:`PROBE_MODEL` with ``onnx.helper`` (kept for tests; the probe needs no ``onnx``)."""
    import onnx
    from onnx import helper

    def tensor(name: str) -> Any:
        return helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, [1])

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [tensor("x")], [tensor("y")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=7, producer_name="slmctl")
    return model.SerializeToString()


# -- GGUF / llama.cpp -----------------------------------------------------------------------------
@dataclass(frozen=True)
class GgufBuild:
    installed: bool
    version: str | None = None
    system_info: str | None = None
    gpu_offload: bool = False
    #: ggml devices, e.g. ``CUDA0: NVIDIA H200 (gpu, backend CUDA)``.
    backends: list[str] = field(default_factory=list)
    devices: list[str] = field(default_factory=lambda: ["cpu"])
    problems: list[str] = field(default_factory=list)
    #: Why the probe itself failed (its child crashed or timed out); None when it ran.
    error: str | None = None


def _load_llama_cpp() -> Any:
    import llama_cpp

    from slmctl.backends import llama_log

    llama_log.install(llama_cpp)  # anything ggml logs while we probe goes to the buffer, not stderr
    return llama_cpp


def ggml_devices(llama_cpp: Any) -> list[tuple[str, str, str, str]]:
    """(backend, device, description, type) for every device in ggml's registry (ctypes)."""
    import ctypes

    from llama_cpp import _ggml  # loads libggml, next to libllama

    lib = ctypes.CDLL(_ggml.libggml._name)  # our own handle object: we set prototypes without touching theirs
    lib.ggml_backend_dev_count.restype = ctypes.c_size_t
    lib.ggml_backend_dev_get.restype = ctypes.c_void_p
    lib.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    for func in ("ggml_backend_dev_name", "ggml_backend_dev_description", "ggml_backend_reg_name"):
        getattr(lib, func).restype = ctypes.c_char_p
        getattr(lib, func).argtypes = [ctypes.c_void_p]
    lib.ggml_backend_dev_type.restype = ctypes.c_int
    lib.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_dev_backend_reg.restype = ctypes.c_void_p
    lib.ggml_backend_dev_backend_reg.argtypes = [ctypes.c_void_p]
    result = []
    for i in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(i)
        backend = (lib.ggml_backend_reg_name(lib.ggml_backend_dev_backend_reg(dev)) or b"?").decode(errors="replace")
        result.append((backend, (lib.ggml_backend_dev_name(dev) or b"?").decode(errors="replace"),
                       (lib.ggml_backend_dev_description(dev) or b"").decode(errors="replace"),
                       _GGML_DEVICE_TYPES.get(lib.ggml_backend_dev_type(dev), "unknown")))
    return result


def gpu_kinds_from_system_info(info: str) -> list[str]:
    """GPU device names from ``llama_print_system_info()`` (``CUDA : ARCHS = 890 | ... | CPU : ...``)."""
    names = re.findall(r"(?:^|\|)\s*([A-Za-z][\w-]*)\s*:", info)
    return _ordered(_GGML_TO_DEVICE[n.lower()] for n in names if n.lower() in _GGML_TO_DEVICE)


def probe_gguf(load: Callable[[], Any] = _load_llama_cpp,
               registry: Callable[[Any], list[tuple[str, str, str, str]]] = ggml_devices,
               machine: Callable[[], tuple[str, str]] = lambda: (platform.system(), platform.machine())) -> GgufBuild:
    """Probe the installed llama-cpp-python build; never raises."""
    try:
        llama_cpp = load()
    except Exception as error:  # noqa: BLE001 - ImportError, or a shared library that will not load
        return GgufBuild(False, problems=[f"gguf/import: llama-cpp-python is not usable: {error}"])
    problems: list[str] = []
    version = getattr(llama_cpp, "__version__", None)
    info, offload = None, False
    try:
        info = llama_cpp.llama_print_system_info().decode("utf-8", errors="replace").strip()
    except Exception as error:  # noqa: BLE001
        problems.append(f"gguf/system-info: {error}")
    try:
        offload = bool(llama_cpp.llama_supports_gpu_offload())
    except Exception as error:  # noqa: BLE001
        problems.append(f"gguf/gpu-offload: {error}")
    try:
        found = registry(llama_cpp)
    except Exception as error:  # noqa: BLE001
        problems.append(f"gguf/ggml-registry: {error}")
        found = []
    backends = [f"{dev}: {desc or '?'} ({kind}, backend {backend})" for backend, dev, desc, kind in found]
    kinds: list[str] = []
    if offload:
        kinds = _ordered(_GGML_TO_DEVICE[b.lower()] for b, _, _, kind in found
                         if kind in ("gpu", "igpu") and b.lower() in _GGML_TO_DEVICE)
        kinds = kinds or gpu_kinds_from_system_info(info or "")
        system, arch = machine()
        if not kinds and system == "Darwin" and arch.lower() == "arm64":
            kinds = ["metal"]
        if not kinds:
            problems.append(f"gguf/gpu: llama.cpp can offload, but not through one of {', '.join(GGUF_DEVICES)}")
    return GgufBuild(True, version, info, offload, backends, [*kinds, "cpu"], problems)


# -- ONNX Runtime (GenAI) -------------------------------------------------------------------------
@dataclass(frozen=True)
class ProviderStatus:
    usable: bool
    reason: str


@dataclass(frozen=True)
class OnnxBuild:
    installed: bool
    genai_version: str | None = None
    onnxruntime_version: str | None = None
    #: ``onnxruntime.get_available_providers()``: compiled in, not necessarily working.
    ort_providers: list[str] = field(default_factory=list)
    status: dict[str, ProviderStatus] = field(default_factory=dict)
    #: Why the probe itself failed (its child crashed or timed out); None when it ran.
    error: str | None = None

    @property
    def usable(self) -> list[str]:
        return _ordered(name for name, s in self.status.items() if s.usable)


def _load_onnx() -> tuple[Any, Any]:
    import onnxruntime
    import onnxruntime_genai

    return onnxruntime_genai, onnxruntime


def probe_provider(ort: Any, genai: Any, name: str) -> ProviderStatus:
    """Try one provider for real: a tiny session must keep it among ``get_providers()``."""
    ep = ONNX_PROVIDER_NAMES[name].runtime_name
    if ep not in ort.get_available_providers():
        return ProviderStatus(False, "not in this onnxruntime build")
    check = getattr(genai, f"is_{name}_available", None)
    if check is not None and not check():
        return ProviderStatus(False, f"onnxruntime-genai was built without {name} support")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.enable_mem_pattern = False  # DirectML refuses memory patterns; no provider needs them here
    providers: list[Any] = [(ep, PROBE_OPTIONS[name]) if name in PROBE_OPTIONS else ep]
    if name != "cpu":
        providers.append("CPUExecutionProvider")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            session = ort.InferenceSession(PROBE_MODEL, options, providers=providers, enable_fallback=0)
        got = list(session.get_providers())
    except Exception as error:  # noqa: BLE001 - an EP that fails to initialise
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        return ProviderStatus(False, f"failed to initialise: {reason}")
    if ep not in got:
        return ProviderStatus(False, f"failed to initialise (onnxruntime fell back to {', '.join(got) or 'nothing'})")
    return ProviderStatus(True, "ok")


def probe_onnx(load: Callable[[], tuple[Any, Any]] = _load_onnx) -> OnnxBuild:
    """Probe onnxruntime-genai and every provider we know; never raises."""
    try:
        genai, ort = load()
    except Exception as error:  # noqa: BLE001
        reason = NOT_INSTALLED if isinstance(error, ImportError) else f"onnxruntime-genai is not usable: {error}"
        return OnnxBuild(False, status={name: ProviderStatus(False, reason) for name in ONNX_PROVIDERS})
    status = {}
    for name in ONNX_PROVIDERS:
        try:
            status[name] = probe_provider(ort, genai, name)
        except Exception as error:  # noqa: BLE001
            status[name] = ProviderStatus(False, f"probe failed: {error}")
    try:
        available = list(ort.get_available_providers())
    except Exception:  # noqa: BLE001
        available = []
    return OnnxBuild(True, getattr(genai, "__version__", None), getattr(ort, "__version__", None), available, status)
