"""Which variant of a catalog model this machine should use. Pure: usable devices are passed in.

The automatic rule (no ``--format/--quant/--device``), best first:

1. an NPU provider is usable (QNN, OpenVINO) -> the ONNX ``npu`` variant built for it;
2. llama.cpp can offload to a CUDA/ROCm/Metal GPU -> the GGUF variant, fully offloaded;
3. an ONNX GPU provider is usable (DirectML, CUDA, WebGPU) -> the ONNX ``gpu`` variant for it;
4. llama.cpp on Vulkan -> the GGUF variant;
5. otherwise the CPU: GGUF (default quant ``Q4_K_M``), else an ONNX ``cpu`` variant.

Within a step the quant decides (the pinned or requested one, else ``Q4_K_M`` for GGUF and ``INT4``
for ONNX, then smaller before bigger); between equally good variants an installed one wins.
``--format``, ``--quant`` and ``--device`` (a class or a concrete name) narrow the choice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from slmctl.catalog.catalog import PROVIDER_CLASS, CatalogEntry, Variant, normalize_quant
from slmctl.devices import DEVICE_CLASSES, GGUF_DEVICES, ONNX_PROVIDERS, PRIORITY
from slmctl.errors import DeviceUnavailable, ModelNotFound, UsageError

DEFAULT_GGUF_QUANT = "Q4_K_M"
DEFAULT_ONNX_QUANT = "INT4"
#: Quant preference when none is asked for (after the default): small and good first.
QUANT_ORDER: tuple[str, ...] = ("Q4_K_M", "INT4", "Q4_K_S", "Q5_K_M", "Q4_0", "Q5_K_S", "Q6_K", "Q8_0", "INT8",
                                "F16", "FP16", "BF16", "F32", "FP32")

# (format, device name) -> step of the automatic rule (lower is better)
_GGUF_STEP = {"cuda": 1, "rocm": 1, "metal": 1, "vulkan": 3, "cpu": 4}
_ONNX_STEP = {"qnn": 0, "openvino": 0, "dml": 2, "cuda": 2, "webgpu": 2, "cpu": 5}


@dataclass(frozen=True)
class Selection:
    """The chosen variant and where it runs: ``device`` is a concrete name (``cuda``, ``dml``, ``cpu``)."""

    variant: Variant
    device: str
    device_class: str
    #: llama.cpp ``n_gpu_layers`` (-1: every layer on the GPU, 0: CPU only); None for ONNX.
    gpu_layers: int | None
    installed: bool = False


def _rank(name: str) -> int:
    return PRIORITY.index(name) if name in PRIORITY else len(PRIORITY)


def _clean(usable: Sequence[str], names: dict[str, str]) -> list[str]:
    return sorted({u.strip().lower() for u in usable if u.strip().lower() in names}, key=_rank)


def _placements(variant: Variant, gguf: list[str], onnx: list[str]) -> list[str]:
    """The concrete devices this variant can run on here."""
    if variant.format == "gguf":
        return gguf
    if variant.provider:
        return [variant.provider] if variant.provider in onnx else []
    return [p for p in onnx if PROVIDER_CLASS.get(p) == variant.device]


def _quant_rank(variant: Variant) -> int:
    default = DEFAULT_GGUF_QUANT if variant.format == "gguf" else DEFAULT_ONNX_QUANT
    if variant.quant == default:
        return -1
    return QUANT_ORDER.index(variant.quant) if variant.quant in QUANT_ORDER else len(QUANT_ORDER)


def _device_filter(device: str | None) -> tuple[str | None, str | None]:
    """(class, concrete name) asked for by ``--device``; UsageError for a name no format knows."""
    if device is None or device.strip().lower() in ("", "auto"):
        return None, None
    key = device.strip().lower()
    if key in DEVICE_CLASSES:
        return key, None
    if key in GGUF_DEVICES or key in ONNX_PROVIDERS:
        return None, key
    known = sorted({*GGUF_DEVICES, *ONNX_PROVIDERS}, key=_rank)
    raise UsageError(f"unknown device '{device}'", hint=f"valid: auto, {', '.join(DEVICE_CLASSES)}, {', '.join(known)}")


def _class_of(fmt: str, name: str) -> str:
    return (GGUF_DEVICES if fmt == "gguf" else ONNX_PROVIDERS)[name]


def choose_variant(entry: CatalogEntry, *, usable_gguf: Sequence[str], usable_onnx: Sequence[str],
                   format: str | None = None, quant: str | None = None, device: str | None = None,
                   installed: set[str] | frozenset[str] = frozenset(), pinned: str | None = None) -> Selection:
    """The variant of ``entry`` to use here and the device it runs on (see the module docstring).

    ``installed`` holds the ``source`` of variants already in the store; ``pinned`` is the quant the
    name pinned (from :meth:`Catalog.resolve`), combined with ``quant`` by :func:`resolve_quant`. Raises
    :class:`ModelNotFound` when the catalog has no variant matching ``format``/``quant``/``device``,
    :class:`DeviceUnavailable` when matching variants exist but none can run on this machine, and
    :class:`UsageError` for a bad flag value.
    """
    fmt = format.strip().lower() if format else None
    if fmt is not None and fmt not in ("gguf", "onnx"):
        raise UsageError(f"unknown format '{format}'", hint="valid: gguf, onnx")
    want_quant = resolve_quant(pinned, quant)
    want_class, want_name = _device_filter(device)

    def matches(v: Variant, fmt_ok: bool = True) -> bool:
        if fmt_ok and fmt and v.format != fmt:
            return False
        return not (want_quant and v.quant != want_quant)

    described = " ".join(p for p in (fmt, want_quant) if p)
    candidates = [v for v in entry.variants if matches(v)]
    if not candidates:
        have = ", ".join(v.label for v in entry.variants)
        raise ModelNotFound(f"the catalog has no {described} variant of {entry.name}",
                            hint=f"available: {have}")
    # variants the device flag allows, by what they are built for
    def built_for(v: Variant) -> bool:
        if want_name:
            if v.format == "gguf":
                return want_name in GGUF_DEVICES
            return (want_name in ONNX_PROVIDERS and (v.provider or want_name) == want_name
                    and _class_of("onnx", want_name) == v.device)
        if want_class:
            if v.format == "gguf":  # llama.cpp runs on a CPU or a GPU, never an NPU
                return want_class in GGUF_DEVICES.values()
            return v.device == want_class
        return True

    fitting = [v for v in candidates if built_for(v)]
    if not fitting:
        have = ", ".join(v.label for v in candidates)
        raise ModelNotFound(f"the catalog has no {described + ' ' if described else ''}variant of {entry.name} "
                            f"for device '{device}'", hint=f"available: {have}")
    gguf = _clean(usable_gguf, GGUF_DEVICES)
    onnx = _clean(usable_onnx, ONNX_PROVIDERS)
    scored: list[tuple[tuple[int, int, int, int, int], Variant, str]] = []
    for index, v in enumerate(fitting):
        for place in _placements(v, gguf, onnx):
            if want_name and place != want_name:
                continue
            if want_class and _class_of(v.format, place) != want_class:
                continue
            step = (_GGUF_STEP if v.format == "gguf" else _ONNX_STEP).get(place, 9)
            key = (step, _quant_rank(v), 0 if v.source in installed else 1, _rank(place), index)
            scored.append((key, v, place))
    if not scored:
        usable = [f"gguf: {', '.join(gguf) or 'none'}", f"onnx: {', '.join(onnx) or 'none'}"]
        what = ", ".join(dict.fromkeys(v.label for v in fitting))
        raise DeviceUnavailable(
            f"no variant of {entry.name} can run on this machine"
            + (f" on device '{device}'" if device and device.lower() != "auto" else "") + f" (variants: {what})",
            hint=f"usable devices here - {'; '.join(usable)}; run 'slmctl doctor' for details",
        )
    scored.sort(key=lambda item: item[0])
    _, variant, place = scored[0]
    cls = _class_of(variant.format, place)
    layers = (-1 if cls == "gpu" else 0) if variant.format == "gguf" else None
    return Selection(variant, place, cls, layers, variant.source in installed)


def select_variant(entry: CatalogEntry, *, usable_gguf: Sequence[str], usable_onnx: Sequence[str],
                   format: str | None = None, quant: str | None = None, device: str | None = None,
                   installed: set[str] | frozenset[str] = frozenset(), pinned: str | None = None) -> Variant:
    """The variant of ``entry`` to use here (:func:`choose_variant` without the placement)."""
    return choose_variant(entry, usable_gguf=usable_gguf, usable_onnx=usable_onnx, format=format, quant=quant,
                          device=device, installed=installed, pinned=pinned).variant


def resolve_quant(pinned: str | None, requested: str | None) -> str | None:
    """Combine an alias's pinned quant with ``--quant``; a conflict is a usage error."""
    if pinned and requested and normalize_quant(pinned) != normalize_quant(requested):
        raise UsageError(f"the name pins quant {pinned} but --quant asks for {normalize_quant(requested)}",
                         hint="drop one of them")
    return normalize_quant(requested) if requested else pinned
