"""The device vocabulary and the choice of a device: pure logic, no runtime imports.

A *device class* is ``npu``, ``gpu`` or ``cpu``. A *device name* is concrete and belongs to one model
format: llama.cpp builds (``cuda``, ``metal``, ``vulkan``, ``rocm``, ``cpu``) for GGUF, ONNX Runtime
execution providers (``qnn``, ``openvino``, ``cuda``, ``dml``, ``webgpu``, ``cpu``) for ONNX. What is
*usable* on this machine is probed elsewhere (:mod:`slmctl.backends.providers`) and passed in here,
so every rule below is testable with plain lists.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from slmctl.errors import DeviceUnavailable, SlmctlError, UsageError

DEVICE_CLASSES: tuple[str, ...] = ("npu", "gpu", "cpu")
DEFAULT_PREFERENCE: tuple[str, ...] = ("npu", "gpu", "cpu")  # Foundry Local's order


@dataclass(frozen=True)
class OnnxProvider:
    """One ONNX execution provider under its three names: ours (the table's key), ONNX Runtime's, and
    onnxruntime-genai's (for ``Config.append_provider``; the CPU is what is left with none appended)."""

    device_class: str
    runtime_name: str
    genai_name: str


#: The one table of ONNX execution providers.
ONNX_PROVIDER_NAMES: dict[str, OnnxProvider] = {
    "qnn": OnnxProvider("npu", "QNNExecutionProvider", "QNN"),
    "openvino": OnnxProvider("npu", "OpenVINOExecutionProvider", "OpenVINO"),
    "cuda": OnnxProvider("gpu", "CUDAExecutionProvider", "cuda"),
    "dml": OnnxProvider("gpu", "DmlExecutionProvider", "dml"),
    "webgpu": OnnxProvider("gpu", "WebGpuExecutionProvider", "WebGPU"),
    "cpu": OnnxProvider("cpu", "CPUExecutionProvider", "cpu"),
}
#: Execution provider -> device class (the vocabulary of ``--device`` for ONNX models).
ONNX_PROVIDERS: dict[str, str] = {name: p.device_class for name, p in ONNX_PROVIDER_NAMES.items()}
GGUF_DEVICES: dict[str, str] = {"cuda": "gpu", "metal": "gpu", "vulkan": "gpu", "rocm": "gpu", "cpu": "cpu"}
#: Within a class, the first usable name of this list wins.
PRIORITY: tuple[str, ...] = ("qnn", "openvino", "cuda", "rocm", "metal", "dml", "vulkan", "webgpu", "cpu")
#: ``--device auto`` (or no flag) means "choose for me".
AUTO = "auto"

_VOCABULARY: dict[str, dict[str, str]] = {"gguf": GGUF_DEVICES, "onnx": ONNX_PROVIDERS}


def vocabulary(fmt: str) -> dict[str, str]:
    """The device names of a model format, mapped to their class."""
    try:
        return _VOCABULARY[fmt]
    except KeyError:
        raise ValueError(f"unknown model format {fmt!r} (expected one of: {', '.join(_VOCABULARY)})") from None


def valid_names(fmt: str) -> list[str]:
    """Everything ``--device`` accepts for ``fmt``: auto, the classes, then the concrete names."""
    names = sorted((n for n in vocabulary(fmt) if n not in DEVICE_CLASSES), key=_rank)
    return [AUTO, *DEVICE_CLASSES, *names]


def _rank(name: str) -> int:
    return PRIORITY.index(name) if name in PRIORITY else len(PRIORITY)


def _normalise(fmt: str, name: str) -> str:
    """Lower-cased ``name``; :class:`UsageError` unless it is a class or a device name of ``fmt``."""
    names, key = vocabulary(fmt), name.strip().lower()
    if key in DEVICE_CLASSES or key == AUTO or key in names:
        return key
    raise UsageError(f"unknown device '{name}' for {fmt} models", hint=f"valid names: {', '.join(valid_names(fmt))}")


def device_class(fmt: str, device: str) -> str:
    """The class (``npu``/``gpu``/``cpu``) of a device name of ``fmt``; a class maps to itself."""
    key = _normalise(fmt, device)
    if key == AUTO:
        raise UsageError(f"'{device}' is not a device", hint=f"valid names: {', '.join(valid_names(fmt))}")
    return key if key in DEVICE_CLASSES else vocabulary(fmt)[key]


def _usable_of(fmt: str, wanted: str, usable: Sequence[str]) -> list[str]:
    """The usable names matching ``wanted`` (a class or a name), best first."""
    names = vocabulary(fmt)
    known = [u.strip().lower() for u in usable if u.strip().lower() in names]
    if wanted in DEVICE_CLASSES:
        return sorted({u for u in known if names[u] == wanted}, key=_rank)
    return [wanted] if wanted in known else []


def _unavailable(fmt: str, requested: str, usable: Sequence[str]) -> DeviceUnavailable:
    return DeviceUnavailable(f"device '{requested}' is not available for {fmt} models on this machine",
                             hint=f"usable here: {', '.join(usable) or 'none'}")


def _preference_entry(fmt: str, name: str) -> str:
    """A preference entry: a class or a name; a name of the *other* format reads as ``auto`` (skipped)."""
    key = name.strip().lower()
    if key not in vocabulary(fmt) and any(key in names for names in _VOCABULARY.values()):
        return AUTO
    return _normalise(fmt, name)


def select_device(fmt: str, requested: str | None, usable: Sequence[str], *,
                  preference: Sequence[str] = DEFAULT_PREFERENCE, fallback: Sequence[str] | None = None) -> str:
    """The concrete device name to run a ``fmt`` model on.

    ``requested`` is ``None``/``"auto"`` (walk ``preference`` then ``fallback``, each entry a class or
    a name; names of the other format only are skipped), a class (the best usable name of that class)
    or a name (used as is if usable). Raises :class:`UsageError` for a name ``fmt`` does not know and
    :class:`DeviceUnavailable` when nothing that fits is usable.
    """
    wanted = AUTO if requested is None else _normalise(fmt, requested)
    if wanted != AUTO:
        found = _usable_of(fmt, wanted, usable)
        if not found:
            raise _unavailable(fmt, requested or wanted, usable)
        return found[0]
    order = list(dict.fromkeys(_preference_entry(fmt, p) for p in (*preference, *(fallback or ()))))
    order = [entry for entry in order if entry != AUTO]
    for entry in order:
        found = _usable_of(fmt, entry, usable)
        if found:
            return found[0]
    if not usable:
        raise DeviceUnavailable(f"no device is available for {fmt} models on this machine",
                                hint="usable here: none; run 'slmctl doctor' to see why")
    raise DeviceUnavailable(
        f"none of the preferred devices ({', '.join(order) or 'none apply'}) is available for {fmt} models "
        "on this machine",
        hint=f"usable here: {', '.join(usable)}",
    )


@dataclass(frozen=True)
class DeviceChoice:
    """The outcome of :func:`select_device` as data: the device, or why there is none."""

    fmt: str
    requested: str | None
    device: str | None
    device_class: str | None
    error: str | None = None
    hint: str | None = None


def describe_choice(fmt: str, requested: str | None, usable: Sequence[str], *,
                    preference: Sequence[str] = DEFAULT_PREFERENCE,
                    fallback: Sequence[str] | None = None) -> DeviceChoice:
    """:func:`select_device` that never raises (for reports such as ``slmctl doctor``)."""
    try:
        device = select_device(fmt, requested, usable, preference=preference, fallback=fallback)
    except SlmctlError as error:
        return DeviceChoice(fmt, requested, None, None, error.message, error.hint)
    return DeviceChoice(fmt, requested, device, vocabulary(fmt)[device])
