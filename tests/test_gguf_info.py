"""Tests of slmctl.formats.gguf_info: inspecting valid GGUF files and rejecting broken ones."""

from __future__ import annotations

import struct
import tempfile
from pathlib import Path

import gguf
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slmctl.errors import InvalidModelFile, OperationFailed
from slmctl.formats.gguf_info import ArraySummary, format_parameter_count, inspect_gguf, is_gguf_file
from slmctl.testing.tiny_gguf import CHATML_TEMPLATE, TinyGGUFSpec, write_tiny_gguf


@pytest.fixture(scope="module")
def tiny_bytes(tiny_gguf: Path) -> bytes:
    return tiny_gguf.read_bytes()


@pytest.fixture(scope="module")
def tiny_data_start(tiny_gguf: Path) -> int:
    """Where the tensor data of the tiny model begins (everything before is header)."""
    return int(gguf.GGUFReader(tiny_gguf).data_offset)


def _patched(tmp_path: Path, data: bytes, offset: int, new: bytes) -> Path:
    path = tmp_path / "patched.gguf"
    path.write_bytes(data[:offset] + new + data[offset + len(new) :])
    return path


def _renamed(tmp_path: Path, data: bytes, old: bytes, new: bytes) -> Path:
    assert len(old) == len(new)
    return _patched(tmp_path, data, data.index(old), new)


def test_tiny_model_is_described(tiny_gguf: Path) -> None:
    info = inspect_gguf(tiny_gguf)
    reader = gguf.GGUFReader(tiny_gguf)

    assert info.architecture == "llama"
    assert info.name == "tiny"
    assert info.parameter_count == sum(int(t.n_elements) for t in reader.tensors)
    assert info.parameter_size == format_parameter_count(info.parameter_count)
    assert info.tensor_count == len(reader.tensors) == 21
    assert info.quantization == "F16"
    assert (info.context_length, info.embedding_length, info.block_count) == (512, 64, 2)
    assert info.chat_template == CHATML_TEMPLATE
    assert (info.bos_token_id, info.eos_token_id) == (1, 2)
    assert info.file_size == tiny_gguf.stat().st_size
    assert info.version == 3


def test_metadata_keeps_scalars_and_summarizes_arrays(tiny_gguf: Path) -> None:
    metadata = inspect_gguf(tiny_gguf).metadata
    n_vocab = len(gguf.GGUFReader(tiny_gguf).fields["tokenizer.ggml.tokens"].data)

    assert metadata["general.architecture"] == "llama"
    assert metadata["llama.attention.head_count"] == 4
    assert metadata["tokenizer.ggml.add_bos_token"] is True
    assert metadata["llama.rope.freq_base"] == pytest.approx(10000.0)
    assert metadata["tokenizer.ggml.tokens"] == ArraySummary("string", n_vocab)
    assert metadata["tokenizer.ggml.scores"] == ArraySummary("float32", n_vocab)
    assert str(metadata["tokenizer.ggml.tokens"]) == f"[{n_vocab} x string]"


def test_f32_model_reports_f32(tmp_path: Path) -> None:
    path = write_tiny_gguf(tmp_path / "f32.gguf", TinyGGUFSpec(dtype="F32"))
    assert inspect_gguf(path).quantization == "F32"


def test_quantization_falls_back_to_the_dominant_tensor_type(tmp_path: Path, tiny_bytes: bytes) -> None:
    path = _renamed(tmp_path, tiny_bytes, b"general.file_type", b"general.file_typX")
    assert inspect_gguf(path).quantization == "F16"


@pytest.mark.parametrize(
    ("count", "expected"),
    [
        (494_032_768, "494.03M"),
        (1_543_714_304, "1.5B"),
        (7_615_616_512, "7.6B"),
        (7_000_000_000, "7B"),
        (124_992, "125K"),
        (999, "999"),
    ],
)
def test_parameter_size_is_rounded_like_ollama(count: int, expected: str) -> None:
    assert format_parameter_count(count) == expected


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("not_gguf", "not a GGUF file: it starts with b'this is '"),
        ("truncated", "truncated GGUF file: tensor '"),
        ("bad_header", "truncated or corrupt GGUF file: the header declares"),
        ("empty", "empty file"),
    ],
)
def test_corrupt_files_are_rejected(corrupt_gguf_files: dict[str, Path], kind: str, message: str) -> None:
    with pytest.raises(InvalidModelFile) as caught:
        inspect_gguf(corrupt_gguf_files[kind])
    assert message in caught.value.message
    assert "\n" not in caught.value.message
    assert caught.value.hint


def test_truncation_message_names_the_tensor_and_sizes(corrupt_gguf_files: dict[str, Path]) -> None:
    path = corrupt_gguf_files["truncated"]
    with pytest.raises(InvalidModelFile, match=rf"needs bytes up to \d+ but the file has {path.stat().st_size} bytes"):
        inspect_gguf(path)


def test_missing_file_is_an_operation_failure(tmp_path: Path) -> None:
    with pytest.raises(OperationFailed, match="file not found"):
        inspect_gguf(tmp_path / "absent.gguf")


def test_directory_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(InvalidModelFile, match="is a directory"):
        inspect_gguf(tmp_path)


@pytest.mark.parametrize(
    ("version", "message"),
    [(1, "GGUF version 1"), (99, "GGUF version 99"), (0x03000000, "big-endian")],
)
def test_unsupported_versions_are_rejected(tmp_path: Path, tiny_bytes: bytes, version: int, message: str) -> None:
    path = _patched(tmp_path, tiny_bytes, 4, struct.pack("<I", version))
    with pytest.raises(InvalidModelFile, match=message):
        inspect_gguf(path)


def test_missing_architecture_is_rejected(tmp_path: Path, tiny_bytes: bytes) -> None:
    path = _renamed(tmp_path, tiny_bytes, b"general.architecture", b"general.architecturX")
    with pytest.raises(InvalidModelFile, match="no 'general.architecture'"):
        inspect_gguf(path)


def test_unknown_metadata_value_type_is_rejected(tmp_path: Path, tiny_bytes: bytes) -> None:
    key = b"general.name"
    path = _patched(tmp_path, tiny_bytes, tiny_bytes.index(key) + len(key), struct.pack("<I", 42))
    with pytest.raises(InvalidModelFile, match="metadata key 'general.name' has unknown value type 42"):
        inspect_gguf(path)


def test_unknown_tensor_type_is_rejected(tmp_path: Path, tiny_bytes: bytes) -> None:
    name = b"token_embd.weight"  # a 2-D tensor: name, n_dims (u32), 2 dims (u64), type (u32)
    type_offset = tiny_bytes.index(name) + len(name) + 4 + 2 * 8
    path = _patched(tmp_path, tiny_bytes, type_offset, struct.pack("<I", 250))
    with pytest.raises(InvalidModelFile, match="tensor 'token_embd.weight' has unknown type id 250"):
        inspect_gguf(path)


def test_is_gguf_file(tiny_gguf: Path, corrupt_gguf_files: dict[str, Path], tmp_path: Path) -> None:
    assert is_gguf_file(tiny_gguf)
    assert is_gguf_file(corrupt_gguf_files["bad_header"])  # a cheap check: the magic only
    assert not is_gguf_file(corrupt_gguf_files["not_gguf"])
    assert not is_gguf_file(corrupt_gguf_files["empty"])
    assert not is_gguf_file(tmp_path / "absent.gguf")
    assert not is_gguf_file(tmp_path)


def _inspect_bytes(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "model.gguf"
        path.write_bytes(data)
        inspect_gguf(path)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_any_truncation_raises_only_invalid_model_file(
    data: st.DataObject, tiny_bytes: bytes, tiny_data_start: int
) -> None:
    # Half the cuts land in the (small) header, half anywhere in the file.
    header_cut = st.integers(min_value=0, max_value=tiny_data_start)
    any_cut = st.integers(min_value=0, max_value=len(tiny_bytes) - 1)
    cut = data.draw(st.one_of(header_cut, any_cut), label="cut")
    with pytest.raises(InvalidModelFile):
        _inspect_bytes(tiny_bytes[:cut])


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_a_corrupted_header_byte_never_raises_anything_else(
    data: st.DataObject, tiny_bytes: bytes, tiny_data_start: int
) -> None:
    offset = data.draw(st.integers(min_value=0, max_value=tiny_data_start - 1), label="offset")
    value = data.draw(st.integers(min_value=0, max_value=255), label="value")
    corrupted = tiny_bytes[:offset] + bytes([value]) + tiny_bytes[offset + 1 :]
    try:
        _inspect_bytes(corrupted)
    except InvalidModelFile:
        pass  # rejected cleanly; a byte inside a string may also leave the file valid


def test_gguf_constants_match_the_gguf_package_without_importing_numpy() -> None:
    import subprocess
    import sys

    code = ("import sys; from slmctl.formats.gguf_info import inspect_gguf; "
            "print('numpy' in sys.modules, 'gguf' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]

    from gguf import GGUFWriter
    from gguf.constants import GGUFValueType

    from slmctl.formats.gguf_constants import SCALARS

    writer_table = {int(t): f for t, f in GGUFWriter._simple_value_packing.items()}
    assert {t: s.format.lstrip("<") for t, s in SCALARS.items()} == writer_table
    assert int(GGUFValueType.STRING) not in SCALARS


def test_later_parts_of_a_split_model_need_no_architecture(tmp_path: Path) -> None:
    from slmctl.testing.tiny_gguf import write_tiny_split_gguf

    first, second = write_tiny_split_gguf(tmp_path / "model.gguf", parts=2)
    head, tail = inspect_gguf(first), inspect_gguf(second)
    assert head.architecture == "llama" and tail.architecture == ""
    assert head.parameter_count > 0 and tail.parameter_count > 0
