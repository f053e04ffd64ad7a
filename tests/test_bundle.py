"""Bundles (``export`` / ``import`` of a bundle) and ``verify``, through the real CLI where it matters."""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
from pathlib import Path

import pytest

from cli_runner import run_cli
from slmctl.errors import IntegrityError, InvalidModelFile, UsageError
from slmctl.names import parse_model_ref
from slmctl.store import ModelStore
from slmctl.store.bundle import export_bundle, import_bundle, is_bundle
from slmctl.store.verify import verify_models


@pytest.fixture(scope="module")
def source_home(tmp_path_factory: pytest.TempPathFactory, tiny_gguf: Path, tiny_onnx: Path) -> Path:
    """A store holding ``tiny`` (GGUF) and ``tiny-onnx`` (ONNX); tests must not change it."""
    home = tmp_path_factory.mktemp("bundle-src")
    for path, name in ((tiny_gguf, "tiny"), (tiny_onnx, "tiny-onnx")):
        result = run_cli(home, "import", str(path), "--name", name)
        assert result.code == 0, result.stderr
    return home


@pytest.fixture(scope="module")
def bundle(source_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both models in one bundle, written by the CLI."""
    out = tmp_path_factory.mktemp("bundle-out") / "models.tar"
    result = run_cli(source_home, "export", "tiny", "tiny-onnx", "-o", str(out))
    assert result.code == 0, result.stderr
    assert "exported tiny:latest, tiny-onnx:latest" in result.stdout
    return out


def _store(home: Path) -> ModelStore:
    return ModelStore(home / "models")


def _listing(home: Path) -> dict[str, dict]:
    result = run_cli(home, "list", "--json")
    assert result.code == 0, result.stderr
    return {entry["name"]: entry for entry in json.loads(result.stdout)}


def _store_files(home: Path) -> list[str]:
    root = home / "models"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != ".lock")


def _members(path: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(path, "r:") as tar:
        return tar.getmembers()


def test_bundle_layout(bundle: Path, source_home: Path) -> None:
    members = _members(bundle)
    assert members[0].name == "bundle.json" and is_bundle(bundle)
    with tarfile.open(bundle, "r:") as tar:
        index = json.loads(tar.extractfile("bundle.json").read())  # type: ignore[union-attr]
    assert index["format"] == "slmctl-bundle" and index["version"] == 1
    assert [m["name"] for m in index["models"]] == ["tiny", "tiny-onnx"]
    digests = {item["digest"] for m in index["models"] for item in [*m["files"], *m["layers"]]}
    blob_names = [m.name for m in members[1:]]
    assert sorted(blob_names) == sorted(f"blobs/sha256-{d.removeprefix('sha256:')}" for d in digests)
    assert len(blob_names) == len(set(blob_names))  # each blob once
    assert not bundle.with_name(bundle.name + ".partial").exists()


def test_round_trip_gguf_and_onnx_runs(bundle: Path, source_home: Path, tmp_path: Path) -> None:
    target = tmp_path / "target"
    result = run_cli(target, "import", str(bundle))
    assert result.code == 0, result.stderr
    assert "imported tiny:latest" in result.stdout and "imported tiny-onnx:latest" in result.stdout
    before, after = _listing(source_home), _listing(target)
    assert {n: e["digest"] for n, e in after.items()} == {n: e["digest"] for n, e in before.items()}
    assert _store(target).stored_digests() == _store(source_home).stored_digests()
    for name in ("tiny", "tiny-onnx"):
        run = run_cli(target, "run", name, "hi", "--max-tokens", "2")
        assert run.code == 0, run.stderr
    assert run_cli(target, "verify").code == 0
    again = run_cli(target, "import", str(bundle), "--json")  # re-import: same content, replaced in place
    assert again.code == 0 and len(json.loads(again.stdout)) == 2


def test_single_model_to_stdout_and_name(source_home: Path, tmp_path: Path) -> None:
    out = tmp_path / "tiny.tar"
    with open(out, "wb") as fh:
        import subprocess

        from cli_runner import slmctl_command

        proc = subprocess.run([*slmctl_command(), "export", "tiny", "-o", "-"], stdout=fh, stderr=subprocess.PIPE,
                              env={**os.environ, "SLMCTL_HOME": str(source_home)}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert is_bundle(out) and len(_members(out)) == 2  # bundle.json + the GGUF file
    target = tmp_path / "target"
    result = run_cli(target, "import", str(out), "--name", "copy:v2", "--json")
    assert result.code == 0, result.stderr
    entry = json.loads(result.stdout)
    assert entry["name"] == "copy:v2" and entry["digest"] == _listing(source_home)["tiny:latest"]["digest"]


def test_name_refused_for_multi_model_bundle(bundle: Path, tmp_path: Path) -> None:
    result = run_cli(tmp_path / "target", "import", str(bundle), "--name", "x")
    assert result.code == 2 and "--name needs a bundle of one model" in result.stderr


def test_export_unknown_model_is_exit_3_and_leaves_no_file(source_home: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.tar"
    result = run_cli(source_home, "export", "tiny", "nope", "-o", str(out))
    assert result.code == 3 and "nope" in result.stderr
    assert not out.exists() and not out.with_name("x.tar.partial").exists()


def _flip_byte_in_largest_blob(src: Path, dst: Path) -> str:
    """Copy the bundle with one byte of its largest blob flipped; returns that blob's digest."""
    data = bytearray(src.read_bytes())
    member = max(_members(src)[1:], key=lambda m: m.size)
    data[member.offset_data + member.size // 2] ^= 0x01
    dst.write_bytes(bytes(data))
    return "sha256:" + member.name.removeprefix("blobs/sha256-")


def test_flipped_byte_is_exit_6_and_store_unchanged(bundle: Path, tmp_path: Path, tiny_gguf: Path) -> None:
    damaged = tmp_path / "damaged.tar"
    digest = _flip_byte_in_largest_blob(bundle, damaged)
    target = tmp_path / "target"
    assert run_cli(target, "import", str(tiny_gguf), "--name", "keep").code == 0
    before = _store_files(target)
    result = run_cli(target, "import", str(damaged))
    assert result.code == 6, result.stderr
    assert digest in result.stderr and "does not match" in result.stderr
    assert _store_files(target) == before  # nothing committed, staging cleaned
    assert list(_listing(target)) == ["keep:latest"]


def test_truncated_bundle_is_rejected_with_a_clear_message(bundle: Path, tmp_path: Path) -> None:
    data = bundle.read_bytes()
    target = tmp_path / "target"
    for cut in (len(data) // 2, _members(bundle)[-1].offset):  # mid-blob, and at a member boundary
        truncated = tmp_path / f"cut-{cut}.tar"
        truncated.write_bytes(data[:cut])
        result = run_cli(target, "import", str(truncated))
        assert result.code in (4, 6), result.stderr
        assert "truncated" in result.stderr or "incomplete" in result.stderr
        assert _store_files(target) == []


def test_import_bundle_api_checks_sizes_before_commit(bundle: Path, tmp_path: Path) -> None:
    """A blob whose tar size disagrees with its manifest is refused (IntegrityError), store untouched."""
    out = tmp_path / "resized.tar"
    with tarfile.open(bundle, "r:") as src, tarfile.open(out, "w:") as dst:
        for member in src.getmembers():
            payload = src.extractfile(member).read()  # type: ignore[union-attr]
            if member.name.startswith("blobs/") and member.size == max(m.size for m in src.getmembers()[1:]):
                payload += b"\0"
                member.size += 1
            dst.addfile(member, io.BytesIO(payload))
    store = ModelStore(tmp_path / "target" / "models")
    with pytest.raises(IntegrityError, match="bytes, the manifest says"):
        import_bundle(store, out)
    assert store.list() == [] and store.stored_digests() == set()
    with pytest.raises(UsageError):
        import_bundle(store, bundle, name=parse_model_ref("x"))


def test_not_a_bundle(tmp_path: Path, tiny_gguf: Path) -> None:
    assert not is_bundle(tiny_gguf) and not is_bundle(tmp_path)
    other = tmp_path / "other.tar"
    with tarfile.open(other, "w:") as tar:
        info = tarfile.TarInfo("bundle.json")
        payload = b'{"format": "something-else"}'
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(InvalidModelFile, match="not a valid slmctl bundle"):
        import_bundle(ModelStore(tmp_path / "models"), other)


def test_export_api_writes_to_any_stream(source_home: Path, tmp_path: Path) -> None:
    buffer = io.BytesIO()
    manifests = export_bundle(_store(source_home), [parse_model_ref("tiny")], buffer)
    assert [str(m.ref) for m in manifests] == ["tiny:latest"]
    path = tmp_path / "b.tar"
    path.write_bytes(buffer.getvalue())
    imported = import_bundle(ModelStore(tmp_path / "models"), path)
    assert [m.digest() for m in imported] == [m.digest() for m in manifests]


# ------------------------------------------------------------------------------------------ verify


@pytest.fixture
def verify_home(bundle: Path, tmp_path: Path) -> Path:
    home = tmp_path / "verify-home"
    assert run_cli(home, "import", str(bundle)).code == 0
    return home


def _blob_of(home: Path, name: str, file_path: str) -> tuple[Path, str]:
    manifest = _store(home).get(parse_model_ref(name))
    entry = next(e for e in manifest.files if e.path == file_path)
    return _store(home).blob_path(entry.digest), entry.digest


def test_verify_ok(verify_home: Path) -> None:
    result = run_cli(verify_home, "verify")
    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("tiny:latest") and line.rstrip().endswith("ok") for line in lines)
    assert any(line.startswith("tiny-onnx:latest") and line.rstrip().endswith("ok") for line in lines)
    named = run_cli(verify_home, "verify", "tiny", "--json")
    assert named.code == 0 and [r["status"] for r in json.loads(named.stdout)] == ["ok"]
    assert run_cli(verify_home, "verify", "nope").code == 3


def test_verify_corrupt_blob_is_exit_6_naming_the_file(verify_home: Path) -> None:
    primary = _store(verify_home).get(parse_model_ref("tiny")).primary_file.path
    blob, digest = _blob_of(verify_home, "tiny", primary)
    blob.chmod(blob.stat().st_mode | stat.S_IWUSR)
    with open(blob, "r+b") as fh:
        fh.seek(100)
        byte = fh.read(1)
        fh.seek(100)
        fh.write(bytes([byte[0] ^ 0xFF]))
    result = run_cli(verify_home, "verify")
    assert result.code == 6
    line = next(line for line in result.stdout.splitlines() if line.startswith("tiny:latest"))
    assert f"DAMAGED: file {primary} (expected {digest}, got sha256:" in line
    assert any(line.startswith("tiny-onnx:latest") and line.rstrip().endswith("ok")
               for line in result.stdout.splitlines())
    assert "tiny:latest" in result.stderr
    as_json = run_cli(verify_home, "verify", "--json")
    assert as_json.code == 6
    by_name = {r["name"]: r for r in json.loads(as_json.stdout)}
    assert by_name["tiny:latest"]["status"] == "damaged" and by_name["tiny-onnx:latest"]["status"] == "ok"
    assert [f["status"] for f in by_name["tiny:latest"]["files"]] == ["corrupt"]
    # a damaged model is refused by export too
    assert run_cli(verify_home, "export", "tiny", "-o", str(verify_home / "t.tar")).code == 6
    assert not (verify_home / "t.tar").exists() and not (verify_home / "t.tar.partial").exists()


def test_verify_missing_blob_is_exit_6(verify_home: Path) -> None:
    blob, _ = _blob_of(verify_home, "tiny-onnx", "genai_config.json")
    blob.unlink()
    result = run_cli(verify_home, "verify", "tiny-onnx")
    assert result.code == 6
    assert "DAMAGED: file genai_config.json missing" in result.stdout
    results = verify_models(_store(verify_home), [parse_model_ref("tiny-onnx")])
    assert [c.status for c in results[0].files if c.name == "genai_config.json"] == ["missing"]
    assert not results[0].ok
