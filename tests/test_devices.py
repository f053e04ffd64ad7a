"""Device selection (slmctl.devices): pure logic driven by injected lists of usable devices."""

from __future__ import annotations

import pytest

from slmctl.devices import (
    DEFAULT_PREFERENCE,
    GGUF_DEVICES,
    ONNX_PROVIDERS,
    describe_choice,
    device_class,
    select_device,
    valid_names,
)
from slmctl.errors import DeviceUnavailable, ExitCode, UsageError


def test_vocabulary_is_the_documented_one() -> None:
    assert DEFAULT_PREFERENCE == ("npu", "gpu", "cpu")
    assert ONNX_PROVIDERS == {"qnn": "npu", "openvino": "npu", "cuda": "gpu", "dml": "gpu", "webgpu": "gpu",
                              "cpu": "cpu"}
    assert GGUF_DEVICES == {"cuda": "gpu", "metal": "gpu", "vulkan": "gpu", "rocm": "gpu", "cpu": "cpu"}


@pytest.mark.parametrize(("fmt", "usable", "expected"), [
    ("onnx", ["cpu"], "cpu"),
    ("onnx", ["cpu", "cuda"], "cuda"),
    ("onnx", ["cpu", "dml", "qnn"], "qnn"),
    ("onnx", ["cpu", "openvino", "qnn", "cuda"], "qnn"),
    ("onnx", ["webgpu", "dml", "cuda", "cpu"], "cuda"),
    ("onnx", ["webgpu", "dml", "cpu"], "dml"),
    ("onnx", ["cpu", "openvino"], "openvino"),
    ("gguf", ["cpu"], "cpu"),
    ("gguf", ["cpu", "vulkan", "cuda"], "cuda"),
    ("gguf", ["vulkan", "rocm", "cpu"], "rocm"),
    ("gguf", ["metal", "cpu"], "metal"),
])
def test_auto_walks_npu_then_gpu_then_cpu(fmt: str, usable: list[str], expected: str) -> None:
    assert select_device(fmt, None, usable) == expected
    assert select_device(fmt, "auto", usable) == expected


def test_requested_class_takes_the_best_of_that_class() -> None:
    assert select_device("onnx", "gpu", ["qnn", "webgpu", "dml", "cpu"]) == "dml"
    assert select_device("onnx", "cpu", ["qnn", "cuda", "cpu"]) == "cpu"
    assert select_device("onnx", "npu", ["cpu", "openvino"]) == "openvino"
    assert select_device("gguf", "GPU", ["cpu", "metal"]) == "metal"


def test_requested_name_is_used_as_is_when_usable() -> None:
    assert select_device("onnx", "webgpu", ["cuda", "webgpu", "cpu"]) == "webgpu"
    assert select_device("onnx", "CUDA", ["cuda", "cpu"]) == "cuda"
    assert select_device("gguf", "cpu", ["cuda", "cpu"]) == "cpu"


@pytest.mark.parametrize(("fmt", "requested"), [("onnx", "npu"), ("onnx", "gpu"), ("onnx", "qnn"),
                                                 ("onnx", "cuda"), ("gguf", "gpu"), ("gguf", "metal")])
def test_unusable_request_is_device_unavailable(fmt: str, requested: str) -> None:
    with pytest.raises(DeviceUnavailable) as info:
        select_device(fmt, requested, ["cpu"])
    error = info.value
    assert error.exit_code == ExitCode.UNAVAILABLE == 7
    assert error.message == f"device '{requested}' is not available for {fmt} models on this machine"
    assert error.hint == "usable here: cpu"


def test_hint_lists_every_usable_device() -> None:
    with pytest.raises(DeviceUnavailable) as info:
        select_device("onnx", "qnn", ["cuda", "cpu"])
    assert info.value.hint == "usable here: cuda, cpu"


@pytest.mark.parametrize(("fmt", "requested"), [("onnx", "tpu"), ("onnx", "metal"), ("gguf", "qnn"),
                                                 ("gguf", "dml"), ("gguf", "")])
def test_unknown_name_is_a_usage_error_listing_valid_names(fmt: str, requested: str) -> None:
    with pytest.raises(UsageError) as info:
        select_device(fmt, requested, ["cpu"])
    assert info.value.exit_code == ExitCode.USAGE
    assert f"'{requested}'" in info.value.message
    assert info.value.hint == f"valid names: {', '.join(valid_names(fmt))}"


def test_valid_names() -> None:
    assert valid_names("onnx") == ["auto", "npu", "gpu", "cpu", "qnn", "openvino", "cuda", "dml", "webgpu"]
    assert valid_names("gguf") == ["auto", "npu", "gpu", "cpu", "cuda", "rocm", "metal", "vulkan"]


def test_preference_and_fallback() -> None:
    usable = ["cuda", "dml", "cpu"]
    assert select_device("onnx", None, usable, preference=("cpu",)) == "cpu"
    assert select_device("onnx", None, usable, preference=("dml", "cpu")) == "dml"
    assert select_device("onnx", None, ["cpu"], preference=("npu", "gpu"), fallback=("cpu",)) == "cpu"
    assert select_device("onnx", None, ["qnn", "cpu"], preference=("gpu",), fallback=("npu",)) == "qnn"
    with pytest.raises(DeviceUnavailable) as info:
        select_device("onnx", None, ["cpu"], preference=("npu",))
    assert "none of the preferred devices (npu)" in info.value.message
    assert info.value.hint == "usable here: cpu"
    with pytest.raises(UsageError):
        select_device("onnx", None, ["cpu"], preference=("tpu",))
    # one preference list serves both formats: names of the other format are skipped
    assert select_device("gguf", None, ["metal", "cpu"], preference=("qnn", "dml", "metal", "cpu")) == "metal"
    assert select_device("onnx", None, ["dml", "cpu"], preference=("metal", "dml", "cpu")) == "dml"


def test_an_explicit_request_ignores_the_preference() -> None:
    assert select_device("onnx", "cpu", ["cuda", "cpu"], preference=("gpu",)) == "cpu"


def test_nothing_usable() -> None:
    with pytest.raises(DeviceUnavailable) as info:
        select_device("gguf", None, [])
    assert "no device is available for gguf models" in info.value.message
    assert info.value.hint is not None and info.value.hint.startswith("usable here: none")


def test_usable_names_of_another_format_are_ignored() -> None:
    assert select_device("onnx", None, ["metal", "cpu"]) == "cpu"


def test_device_class() -> None:
    assert device_class("onnx", "qnn") == "npu"
    assert device_class("onnx", "openvino") == "npu"
    assert device_class("onnx", "webgpu") == "gpu"
    assert device_class("gguf", "Metal") == "gpu"
    assert device_class("gguf", "cpu") == "cpu"
    assert device_class("gguf", "gpu") == "gpu"
    with pytest.raises(UsageError):
        device_class("gguf", "qnn")
    with pytest.raises(ValueError):
        device_class("safetensors", "cpu")


def test_describe_choice_never_raises() -> None:
    ok = describe_choice("onnx", None, ["cuda", "cpu"])
    assert (ok.device, ok.device_class, ok.error) == ("cuda", "gpu", None)
    bad = describe_choice("onnx", "npu", ["cpu"])
    assert bad.device is None and bad.error is not None and bad.hint == "usable here: cpu"
    unknown = describe_choice("gguf", "tpu", ["cpu"])
    assert unknown.device is None and "unknown device" in (unknown.error or "")
