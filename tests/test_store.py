"""Tests of the manifest schema and of ModelStore on real files, including two processes at once."""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import os
import random
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest
from filelock import FileLock
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from slmctl.errors import IntegrityError, ModelNotFound, OperationFailed, UsageError
from slmctl.fileio import sha256_bytes, sha256_file
from slmctl.names import ModelRef, parse_model_ref
from slmctl.store import (
    FileEntry,
    Layer,
    Manifest,
    ModelStore,
    SourceInfo,
    StagedBlob,
    blob_name,
)

# --------------------------------------------------------------------------- helpers


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_manifest(name: str, files: dict[str, bytes], fmt: str = "gguf", **extra: object) -> Manifest:
    ref = parse_model_ref(name)
    entries = [FileEntry(path=p, digest=digest_of(d), size=len(d)) for p, d in files.items()]
    return Manifest(
        name=ref.name,
        tag=ref.tag,
        format=fmt,
        files=entries,
        source=SourceInfo(type="local", ref="/models/" + entries[0].path),
        **extra,
    )


def import_model(store: ModelStore, name: str, files: dict[str, bytes], fmt: str = "gguf") -> Manifest:
    """Stage every file and commit, as an import does."""
    staged = [store.stage_bytes(data) for data in files.values()]
    return store.commit(make_manifest(name, files, fmt), staged)


def blob_files(store: ModelStore) -> set[str]:
    return {p.name for p in store.blobs_dir.iterdir()} if store.blobs_dir.is_dir() else set()


def tmp_entries(store: ModelStore) -> list[Path]:
    return list(store.tmp_dir.iterdir()) if store.tmp_dir.is_dir() else []


def assert_consistent(store: ModelStore) -> None:
    """Every manifest parses, every referenced blob exists with the right hash, no orphans, no leftovers."""
    manifests, problems = store.list_with_problems()
    assert problems == []
    referenced = set().union(*(m.blob_digests() for m in manifests)) if manifests else set()
    assert blob_files(store) == {blob_name(d) for d in referenced}
    for digest in referenced:
        assert sha256_file(store.blob_path(digest))[0] == digest
    assert tmp_entries(store) == []
    assert list(store.manifests_dir.rglob("*.tmp")) == []  # rglob of a missing folder yields nothing
    if store.materialized_dir.is_dir():
        wanted = {store.materialized_path(m).name for m in manifests}
        assert {p.name for p in store.materialized_dir.iterdir()} <= wanted


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "models", lock_timeout=5)


REF = parse_model_ref
GOOD_DIGEST = digest_of(b"x")

# --------------------------------------------------------------------------- manifest validation


@pytest.mark.parametrize(
    "digest",
    [
        "",
        "sha256:",
        "sha256:" + "A" * 64,
        "sha256:" + "0" * 63,
        "sha256:" + "0" * 65,
        "md5:" + "0" * 64,
        "0" * 64,
        "sha256-" + "0" * 64,
        " sha256:" + "0" * 64,
    ],
)
def test_bad_digests_are_rejected(digest: str) -> None:
    with pytest.raises(ValidationError):
        FileEntry(path="model.gguf", digest=digest, size=1)
    with pytest.raises(ValidationError):
        Layer(kind="system", digest=digest, size=1)


@pytest.mark.parametrize(
    "path",
    ["", "/etc/passwd", "../x", "a/../b", "a/..", "a\\b", "a//b", "a/", "./a", "a/./b", "C:/x", "a\nb", "a\x00"],
)
def test_escaping_or_odd_paths_are_rejected(path: str) -> None:
    with pytest.raises(ValidationError):
        FileEntry(path=path, digest=GOOD_DIGEST, size=1)


@pytest.mark.parametrize("path", ["model.gguf", "onnx/model.onnx.data", "a/b/c.json", ".hidden", "..a"])
def test_relative_paths_are_accepted(path: str) -> None:
    assert FileEntry(path=path, digest=GOOD_DIGEST, size=1).path == path


@pytest.mark.parametrize(
    "change",
    [
        {"files": []},
        {"name": "Upper"},
        {"name": "../evil"},
        {"tag": "a b"},
        {"format": "safetensors"},
        {"created_at": datetime(2024, 1, 1)},  # naive
        {"unexpected": 1},
        {"schema_version": 2},
        {"files": [{"path": "a", "digest": GOOD_DIGEST, "size": 1}] * 2},
        {"files": [{"path": "a", "digest": GOOD_DIGEST, "size": 1}, {"path": "a/b", "digest": GOOD_DIGEST, "size": 1}]},
        {"files": [{"path": "a", "digest": GOOD_DIGEST, "size": -1}]},
    ],
)
def test_invalid_manifests_are_rejected(change: dict[str, object]) -> None:
    data = make_manifest("m", {"model.gguf": b"x"}).model_dump()
    data.update(change)
    with pytest.raises(ValidationError):
        Manifest.model_validate(data)


def test_manifest_helpers() -> None:
    m = make_manifest("ns/m:v1", {"a.onnx": b"aa", "b.data": b"bbb"}, fmt="onnx")
    m = Manifest.model_validate(
        {**m.model_dump(), "layers": [{"kind": "system", "digest": digest_of(b"aa"), "size": 2}]}
    )
    assert m.ref == ModelRef("ns/m", "v1")
    assert m.primary_file.path == "a.onnx"
    assert m.total_size == 5  # the layer shares a.onnx's blob: counted once
    assert m.blob_digests() == {digest_of(b"aa"), digest_of(b"bbb")}
    assert m.layer("system") is not None and m.layer("template") is None
    assert m.created_at.tzinfo is not None and m.created_at.utcoffset() == timedelta(0)


def test_created_at_is_normalized_to_utc() -> None:
    paris = timezone(timedelta(hours=2))
    m = make_manifest("m", {"a": b"a"}, created_at=datetime(2024, 5, 1, 12, tzinfo=paris))
    assert m.created_at == datetime(2024, 5, 1, 10, tzinfo=timezone.utc)
    assert m.created_at.utcoffset() == timedelta(0)


# --------------------------------------------------------------------------- manifest properties

_segment = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,8}", fullmatch=True)
_path_part = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,8}", fullmatch=True)
_digests = st.binary(max_size=16).map(digest_of)
_times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(timezone.utc)
)


@st.composite
def manifests(draw: st.DrawFn) -> Manifest:
    paths = draw(st.lists(st.lists(_path_part, min_size=1, max_size=3).map("/".join), min_size=1, max_size=4, unique=True))
    # drop paths that are also used as a folder by another path
    paths = [p for p in paths if not any(other.startswith(p + "/") for other in paths)]
    files = [FileEntry(path=p, digest=draw(_digests), size=draw(st.integers(0, 2**40))) for p in paths]
    layers = draw(
        st.lists(
            st.builds(Layer, kind=st.sampled_from(["system", "template", "params", "license"]), digest=_digests,
                      size=st.integers(0, 10_000), media_type=st.text(max_size=10)),
            max_size=3,
        )
    )
    return Manifest(
        name="/".join(draw(st.lists(_segment, min_size=1, max_size=3))),
        tag=draw(_segment),
        format=draw(st.sampled_from(["gguf", "onnx"])),
        files=files,
        layers=layers,
        source=SourceInfo(type=draw(st.sampled_from(["local", "hf", "url"])), ref=draw(st.text(max_size=20))),
        created_at=draw(_times),
        base=draw(st.none() | st.text(max_size=10)),
    )


@settings(max_examples=60, deadline=None)
@given(manifests())
def test_json_round_trip(m: Manifest) -> None:
    again = Manifest.from_json(m.to_json())
    assert again == m
    assert again.digest() == m.digest()


@settings(max_examples=60, deadline=None)
@given(manifests(), _segment, _segment, _times)
def test_digest_ignores_name_tag_and_time(m: Manifest, name: str, tag: str, when: datetime) -> None:
    other = Manifest.model_validate({**m.model_dump(), "name": name, "tag": tag, "created_at": when})
    assert other.digest() == m.digest()
    assert m.renamed(ModelRef(name, tag)).digest() == m.digest()


@settings(max_examples=60, deadline=None)
@given(manifests(), st.data())
def test_digest_changes_with_a_file_digest(m: Manifest, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(m.files) - 1))
    new_digest = data.draw(_digests.filter(lambda d: d != m.files[index].digest))
    files = [f.model_dump() for f in m.files]
    files[index]["digest"] = new_digest
    changed = Manifest.model_validate({**m.model_dump(), "files": files})
    assert changed.digest() != m.digest()
    assert m.digest().startswith("sha256:") and len(m.digest()) == 71


# --------------------------------------------------------------------------- blobs helpers


def test_sha256_helpers(tmp_path: Path) -> None:
    f = tmp_path / "f.bin"
    f.write_bytes(b"abc" * 1000)
    assert sha256_file(f, chunk=7) == (sha256_bytes(b"abc" * 1000), 3000)
    assert blob_name(digest_of(b"")) == "sha256-" + hashlib.sha256(b"").hexdigest()
    with pytest.raises(OperationFailed, match="missing.bin"):
        sha256_file(tmp_path / "missing.bin")
    with pytest.raises(ValueError):
        blob_name("sha256:nothex")


# --------------------------------------------------------------------------- staging and commit


def test_stage_commit_get_list(store: ModelStore, tmp_path: Path) -> None:
    src = tmp_path / "model.gguf"
    src.write_bytes(b"GGUF" + os.urandom(3000))
    staged = store.stage_file(src)
    assert isinstance(staged, StagedBlob)
    assert (staged.digest, staged.size) == sha256_file(src)
    assert staged.tmp_path.parent == store.tmp_dir
    manifest = make_manifest("my-model", {"model.gguf": src.read_bytes()})

    assert store.list() == [] and not store.exists(manifest.ref)  # not listed before commit
    assert blob_files(store) == set()

    committed = store.commit(manifest, [staged])
    assert committed == manifest
    assert store.get(REF("my-model:latest")) == manifest
    assert store.exists(REF("my-model"))
    assert store.list() == [manifest]
    assert store.model_path(manifest).read_bytes() == src.read_bytes()
    assert store.blob_path(staged.digest).stat().st_mode & 0o222 == 0  # blobs are read-only
    assert (store.manifests_dir / "my-model" / "latest.json").is_file()
    assert_consistent(store)


def test_list_is_sorted_and_names_nest(store: ModelStore) -> None:
    for name in ["zeta", "ns/alpha:v2", "ns/alpha:v1", "beta:latest"]:
        import_model(store, name, {"m.gguf": name.encode()})
    assert [str(m.ref) for m in store.list()] == ["beta:latest", "ns/alpha:v1", "ns/alpha:v2", "zeta:latest"]
    assert (store.manifests_dir / "ns" / "alpha" / "v1.json").is_file()


def test_identical_content_is_stored_once(store: ModelStore) -> None:
    import_model(store, "a", {"m.gguf": b"same"})
    import_model(store, "b", {"m.gguf": b"same"})
    assert blob_files(store) == {blob_name(digest_of(b"same"))}
    assert_consistent(store)


def test_failed_commit_leaves_no_manifest_no_blob(store: ModelStore) -> None:
    staged = store.stage_bytes(b"real content")
    manifest = make_manifest("m", {"model.gguf": b"real content", "other.bin": b"never staged"})
    with pytest.raises(IntegrityError, match="missing"):
        store.commit(manifest, [staged])
    assert store.list() == [] and not store.exists(manifest.ref)
    assert blob_files(store) == set()
    assert tmp_entries(store) == []


def test_commit_rejects_a_size_mismatch(store: ModelStore) -> None:
    staged = store.stage_bytes(b"12345")
    manifest = Manifest.model_validate(
        {**make_manifest("m", {"a": b"12345"}).model_dump(), "files": [{"path": "a", "digest": staged.digest, "size": 4}]}
    )
    with pytest.raises(IntegrityError, match="5 bytes"):
        store.commit(manifest, [staged])
    assert store.list() == [] and blob_files(store) == set() and tmp_entries(store) == []


def test_commit_drops_unreferenced_staged_files(store: ModelStore) -> None:
    import_model(store, "m", {"a": b"a"})
    extra = store.stage_bytes(b"not in the manifest")
    again = store.stage_bytes(b"a")  # already stored: the staged copy is dropped
    store.commit(make_manifest("n", {"a": b"a"}), [extra, again])
    assert_consistent(store)


def test_stage_missing_file_names_it(store: ModelStore, tmp_path: Path) -> None:
    with pytest.raises(OperationFailed, match="nope.gguf"):
        store.stage_file(tmp_path / "nope.gguf")
    with pytest.raises(OperationFailed, match="cannot read"):
        store.stage_file(tmp_path)  # a directory
    assert tmp_entries(store) == []


def test_staged_blob_survives_removal_of_the_model_that_had_it(store: ModelStore) -> None:
    """The concurrency rule, step by step: GC never touches tmp/, so an in-flight import is safe."""
    import_model(store, "old", {"w.gguf": b"shared weights"})
    staged = store.stage_bytes(b"shared weights")  # import in flight ...
    store.remove(REF("old"))  # ... while another command removes the only model using that blob
    assert blob_files(store) == set()
    manifest = store.commit(make_manifest("new", {"w.gguf": b"shared weights"}), [staged])
    assert store.model_path(manifest).read_bytes() == b"shared weights"
    assert_consistent(store)


def test_layers_are_blobs(store: ModelStore) -> None:
    weights = store.stage_bytes(b"weights")
    system = store.stage_bytes(b"You are terse.")
    base = make_manifest("m", {"m.gguf": b"weights"})
    manifest = Manifest.model_validate(
        {**base.model_dump(), "layers": [{"kind": "system", "digest": system.digest, "size": system.size}]}
    )
    store.commit(manifest, [weights, system])
    layer = store.get(manifest.ref).layer("system")
    assert layer is not None and store.blob_path(layer.digest).read_bytes() == b"You are terse."
    store.remove(manifest.ref)
    assert blob_files(store) == set()


def test_recommit_same_tag_collects_the_old_blobs(store: ModelStore) -> None:
    import_model(store, "m", {"a": b"keep", "b": b"old"})
    import_model(store, "m", {"a": b"keep", "b": b"new"})
    assert blob_files(store) == {blob_name(digest_of(b"keep")), blob_name(digest_of(b"new"))}
    assert_consistent(store)


def test_name_clash_with_a_folder_of_other_models(store: ModelStore) -> None:
    import_model(store, "a/b.json/c", {"m": b"1"})
    with pytest.raises(UsageError, match="clashes"):
        import_model(store, "a:b", {"m": b"2"})
    assert_consistent(store)


def test_non_canonical_refs_are_refused(store: ModelStore) -> None:
    with pytest.raises(UsageError):
        store.get(ModelRef("../../etc", "passwd"))
    with pytest.raises(UsageError):
        store.exists(ModelRef("UPPER", "latest"))


# --------------------------------------------------------------------------- atomic manifests, bad files


def test_manifest_write_is_atomic_and_partial_files_are_ignored(store: ModelStore) -> None:
    manifest = import_model(store, "m", {"a": b"a"})
    folder = store.manifests_dir / "m"
    assert sorted(p.name for p in folder.iterdir()) == ["latest.json"]  # no *.tmp left
    # a crash in the middle of a write leaves only a partial temporary file
    (folder / ".v2.json.x1y2.tmp").write_text('{"schema_version": 1, "name": "m", "ta')
    assert store.list() == [manifest]
    assert store.list_with_problems()[1] == []
    assert not store.exists(REF("m:v2"))


def test_corrupt_manifest_is_skipped_and_reported(store: ModelStore) -> None:
    good = import_model(store, "good", {"a": b"a"})
    kept = import_model(store, "broken", {"b": b"b"})
    bad_path = store.manifest_path(kept.ref)
    bad_path.write_text(bad_path.read_text()[:-20])  # truncated JSON that still names the blob
    (store.manifests_dir / "wrong-place.json").write_text(good.to_json())
    manifests, problems = store.list_with_problems()
    assert manifests == [good] and store.list() == [good]
    assert sorted(p.path.name for p in problems) == ["latest.json", "wrong-place.json"]
    assert all(p.reason for p in problems)
    with pytest.raises(OperationFailed, match="unreadable"):
        store.get(kept.ref)
    (store.manifests_dir / "wrong-place.json").unlink()
    store.remove(good.ref)  # GC keeps the blob named in the unreadable manifest
    assert blob_files(store) == {blob_name(digest_of(b"b"))}
    store.remove(kept.ref)  # removing the broken model works and frees its blob
    assert blob_files(store) == set()


def test_cleanup_tmp_removes_only_stale_leftovers(store: ModelStore) -> None:
    store.tmp_dir.mkdir(parents=True)
    old = time.time() - 7200
    dead = store.tmp_dir / "stage-999999999-crashed.partial"  # pid that cannot exist
    mine = store.tmp_dir / f"stage-{os.getpid()}-inflight.partial"
    fresh = store.tmp_dir / "stage-999999999-fresh.partial"
    crashed_dir = store.tmp_dir / "mat-999999999-abc"
    (crashed_dir / "sub").mkdir(parents=True)
    for f in (dead, mine, fresh, crashed_dir / "sub" / "x"):
        f.write_bytes(b"partial")
    for f in (dead, mine, crashed_dir):
        os.utime(f, (old, old))
    half = store.manifests_dir / "m" / ".latest.json.abc.tmp"
    half.parent.mkdir(parents=True)
    half.write_text("{")
    os.utime(half, (old, old))
    assert store.cleanup_tmp(max_age_s=3600) == 3
    assert sorted(p.name for p in tmp_entries(store)) == sorted([mine.name, fresh.name])
    assert not half.exists()


# --------------------------------------------------------------------------- remove and copy


def test_remove_keeps_shared_blobs(store: ModelStore) -> None:
    one = import_model(store, "ns/one", {"shared.bin": b"shared", "one.bin": b"unique one"})
    two = import_model(store, "ns/two:v1", {"shared.bin": b"shared", "two.bin": b"unique two"})

    result = store.remove(one.ref)
    assert result.ref == one.ref
    assert result.removed_blobs == [digest_of(b"unique one")]
    assert result.freed_bytes == len(b"unique one")
    assert blob_files(store) == {blob_name(digest_of(b"shared")), blob_name(digest_of(b"unique two"))}
    assert not (store.manifests_dir / "ns" / "one").exists()
    assert store.list() == [two]

    result = store.remove(two.ref)
    assert sorted(result.removed_blobs) == sorted([digest_of(b"shared"), digest_of(b"unique two")])
    assert result.freed_bytes == len(b"shared") + len(b"unique two")
    assert blob_files(store) == set()
    assert list(store.manifests_dir.iterdir()) == []  # empty name folders pruned, root kept
    with pytest.raises(ModelNotFound) as info:
        store.remove(two.ref)
    assert info.value.hint == "run 'slmctl list' to see the models in the store"


def test_get_missing_model(store: ModelStore) -> None:
    with pytest.raises(ModelNotFound, match="model 'nope:latest' not found"):
        store.get(REF("nope"))
    assert not store.exists(REF("nope"))


def test_copy_shares_blobs(store: ModelStore) -> None:
    original = import_model(store, "orig", {"m.gguf": b"weights"})
    blobs_before = blob_files(store)
    inode = store.blob_path(original.primary_file.digest).stat().st_ino
    copy = store.copy(original.ref, REF("team/copy:v1"))
    assert copy.ref == REF("team/copy:v1")
    assert copy.digest() == original.digest()
    assert copy.files == original.files
    assert copy.created_at >= original.created_at
    assert blob_files(store) == blobs_before
    assert store.blob_path(copy.primary_file.digest).stat().st_ino == inode

    store.remove(original.ref)
    assert store.model_path(store.get(copy.ref)).read_bytes() == b"weights"
    assert_consistent(store)


def test_copy_errors_and_replacement(store: ModelStore) -> None:
    src = import_model(store, "src", {"m": b"src data"})
    import_model(store, "dst", {"m": b"dst data"})
    with pytest.raises(UsageError, match="onto itself"):
        store.copy(src.ref, src.ref)
    with pytest.raises(ModelNotFound):
        store.copy(REF("missing"), REF("x"))
    store.copy(src.ref, REF("dst"))  # replaces dst, collecting the blob only it used
    assert store.get(REF("dst")).digest() == src.digest()
    assert blob_files(store) == {blob_name(digest_of(b"src data"))}
    assert_consistent(store)


# --------------------------------------------------------------------------- ONNX materialization

ONNX_FILES = {
    "model.onnx": b"onnx graph",
    "model.onnx.data": b"external weights" * 10,
    "tokenizer/tokenizer.json": b'{"tokens": []}',
}


def test_onnx_materialization(store: ModelStore) -> None:
    manifest = import_model(store, "phi-onnx", ONNX_FILES, fmt="onnx")
    folder = store.model_path(manifest)
    assert folder.is_dir() and folder.parent == store.materialized_dir
    assert folder.name == manifest.digest().removeprefix("sha256:")[:16]
    for rel, data in ONNX_FILES.items():
        entry = folder / rel
        assert entry.read_bytes() == data
        assert os.path.samefile(entry, store.blob_path(digest_of(data)))
        if entry.is_symlink():
            assert entry.resolve() == store.blob_path(digest_of(data)).resolve()
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_dir()) == sorted(ONNX_FILES)

    mtime = folder.stat().st_mtime_ns
    assert store.model_path(manifest) == folder  # idempotent: nothing rebuilt
    assert folder.stat().st_mtime_ns == mtime
    assert tmp_entries(store) == []

    copy = store.copy(manifest.ref, REF("phi-copy"))
    assert store.model_path(copy) == folder  # same content, same folder
    store.remove(manifest.ref)
    assert folder.is_dir()  # still used by the copy
    store.remove(copy.ref)
    assert not folder.exists()
    assert_consistent(store)


def test_incomplete_materialized_folder_is_rebuilt(store: ModelStore) -> None:
    manifest = import_model(store, "o", ONNX_FILES, fmt="onnx")
    folder = store.materialized_path(manifest)
    (folder / "tokenizer").mkdir(parents=True)
    (folder / "tokenizer" / "tokenizer.json").write_bytes(b"junk")
    assert (store.model_path(manifest) / "model.onnx").read_bytes() == b"onnx graph"
    assert (folder / "tokenizer" / "tokenizer.json").read_bytes() == ONNX_FILES["tokenizer/tokenizer.json"]


def test_model_path_of_a_damaged_model(store: ModelStore) -> None:
    gguf = import_model(store, "g", {"m.gguf": b"gguf"})
    onnx = import_model(store, "o", ONNX_FILES, fmt="onnx")
    for manifest in (gguf, onnx):
        path = store.blob_path(manifest.primary_file.digest)
        path.chmod(0o644)
        path.unlink()
        with pytest.raises(IntegrityError, match="damaged"):
            store.model_path(manifest)


def test_model_path_of_a_removed_model(store: ModelStore) -> None:
    manifest = import_model(store, "o", ONNX_FILES, fmt="onnx")
    store.remove(manifest.ref)
    with pytest.raises(ModelNotFound):
        store.model_path(manifest)
    assert_consistent(store)


# --------------------------------------------------------------------------- lock


def test_lock_timeout_names_the_lock_file(tmp_path: Path) -> None:
    busy = ModelStore(tmp_path / "models", lock_timeout=0.2)
    busy.root.mkdir(parents=True)
    other = FileLock(busy.lock_path)  # another holder (a distinct lock, as another process would have)
    with other:
        with pytest.raises(OperationFailed) as info:
            busy.remove(REF("m"))
    assert str(busy.lock_path) in (info.value.hint or "")
    with pytest.raises(ModelNotFound):  # the lock is free again
        busy.remove(REF("m"))


# --------------------------------------------------------------------------- two processes at once
# Workers run in fresh interpreters (spawn) on one store root; they must be module-level functions.

SHARED = [b"shared weights A" * 64, b"shared weights B" * 64]
ROUNDS = 30


def _churn_worker(root: str, worker: int, start: Barrier) -> None:
    """Import, copy and remove models that share blobs, racing another worker on the same store."""
    store = ModelStore(Path(root), lock_timeout=60)
    rng = random.Random(worker)
    start.wait()
    for i in range(ROUNDS):
        name = f"w{worker}-m{i % 3}"
        manifest = import_model(store, name, {"shared.bin": SHARED[i % 2], "own.bin": f"{worker}/{i}".encode()})
        if i % 4 == 0:
            with contextlib.suppress(ModelNotFound):  # the other worker may have removed it already
                store.copy(manifest.ref, REF(f"w{worker}-copy"))
        victim = REF(f"w{rng.randrange(2)}-m{rng.randrange(3)}")
        with contextlib.suppress(ModelNotFound):
            store.remove(victim)


def _importer_worker(root: str, start: Barrier) -> None:
    """Import a model sharing a blob with the remover's, check it opens, remove it again."""
    store = ModelStore(Path(root), lock_timeout=60)
    start.wait()
    for i in range(ROUNDS):
        manifest = import_model(store, "importer", {"shared.bin": SHARED[0], "own.bin": f"i{i}".encode()})
        assert store.model_path(manifest).read_bytes() == SHARED[0]
        if i < ROUNDS - 1:
            store.remove(manifest.ref)


def _remover_worker(root: str, start: Barrier) -> None:
    """Keep importing and removing a model that shares the importer's blob (so GC runs on it)."""
    store = ModelStore(Path(root), lock_timeout=60)
    start.wait()
    for i in range(ROUNDS):
        import_model(store, "remover", {"shared.bin": SHARED[0], "own.bin": f"r{i}".encode()})
        store.remove(REF("remover"))


def _run_together(*jobs: tuple[Callable[..., None], tuple[object, ...]]) -> None:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(len(jobs))
    procs = [ctx.Process(target=target, args=(*args, start)) for target, args in jobs]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
    assert [proc.exitcode for proc in procs] == [0] * len(procs)


def test_two_processes_churning_one_store(store: ModelStore) -> None:
    root = str(store.root)
    _run_together((_churn_worker, (root, 0)), (_churn_worker, (root, 1)))
    assert_consistent(store)
    for manifest in store.list():
        store.remove(manifest.ref)
    assert_consistent(store)
    assert blob_files(store) == set()


def test_import_while_another_process_removes_a_model_sharing_a_blob(store: ModelStore) -> None:
    root = str(store.root)
    _run_together((_importer_worker, (root,)), (_remover_worker, (root,)))
    assert_consistent(store)
    assert [str(m.ref) for m in store.list()] == ["importer:latest"]
    assert store.model_path(store.get(REF("importer"))).read_bytes() == SHARED[0]


# --------------------------------------------------------------------------- trusting stored blobs (issue 11, item 1)
# A stored blob is reused only while its verification stamp (size, mtime, inode) matches; one that changed is
# hashed again, and a damaged one is moved to quarantine/ (never deleted) and replaced by the fresh copy.


def _flip_byte(path: Path, offset: int = 3) -> bytes:
    """Flip one byte of a (read-only) blob in place, as disk damage or a stray write would; returns the new bytes."""
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    with open(path, "r+b") as fh:
        fh.write(bytes(data))
    return bytes(data)


def test_a_changed_stored_blob_is_rehashed_and_a_damaged_one_replaced(store: ModelStore) -> None:
    data = b"weights shared by two models" * 8
    import_model(store, "a", {"m.gguf": data})
    blob = store.blob_path(digest_of(data))
    damaged = _flip_byte(blob)
    notices: list[str] = []
    staged = [store.stage_bytes(data)]
    store.commit(make_manifest("b", {"m.gguf": data}), staged, on_notice=notices.append)
    assert blob.read_bytes() == data  # the fresh copy replaced the damaged one
    (moved,) = list(store.quarantine_dir.iterdir())
    assert moved.read_bytes() == damaged and moved.name.startswith(blob.name + ".")
    assert len(notices) == 1 and str(moved) in notices[0] and "damaged" in notices[0]
    assert_consistent(store)


def test_an_unstamped_good_blob_is_verified_and_kept(store: ModelStore) -> None:
    import_model(store, "a", {"m.gguf": b"good"})
    stamp = store.verified_dir / blob_name(digest_of(b"good"))
    assert stamp.is_file()
    stamp.unlink()  # a store written before stamps existed, or a stamp that could not be written
    inode = store.blob_path(digest_of(b"good")).stat().st_ino
    import_model(store, "b", {"m.gguf": b"good"})
    assert store.blob_path(digest_of(b"good")).stat().st_ino == inode  # kept, not replaced
    assert stamp.is_file() and not store.quarantine_dir.exists()
    assert_consistent(store)


def test_damage_that_kept_the_mtime_is_caught_once_verify_saw_it(store: ModelStore) -> None:
    from slmctl.store.verify import verify_models

    import_model(store, "a", {"m.gguf": b"bit rot target"})
    blob = store.blob_path(digest_of(b"bit rot target"))
    before = blob.stat()
    _flip_byte(blob)
    os.utime(blob, ns=(before.st_atime_ns, before.st_mtime_ns))  # bit rot leaves size, mtime and inode alone
    assert [r.ok for r in verify_models(store)] == [False]  # verify drops the stamp of what it found damaged
    import_model(store, "b", {"m.gguf": b"bit rot target"})
    assert blob.read_bytes() == b"bit rot target"
    assert [r.ok for r in verify_models(store)] == [True, True]


def test_a_commit_without_a_fresh_copy_of_a_damaged_blob_fails(store: ModelStore) -> None:
    original = import_model(store, "a", {"m.gguf": b"will be damaged"})
    _flip_byte(store.blob_path(digest_of(b"will be damaged")))
    with pytest.raises(IntegrityError, match="damaged") as info:
        store.commit(original.renamed(REF("b")), [])
    assert "verify --repair" in (info.value.hint or "")
    assert [str(m.ref) for m in store.list()] == ["a:latest"]


def test_commit_refuses_a_name_held_by_another_model_unless_replace(store: ModelStore) -> None:
    import_model(store, "x", {"m.gguf": b"first"})
    staged = [store.stage_bytes(b"second")]
    with pytest.raises(UsageError, match="taken by another model") as info:
        store.commit(make_manifest("x", {"m.gguf": b"second"}), staged, replace=False)
    assert "--force" in (info.value.hint or "")
    assert store.model_path(store.get(REF("x"))).read_bytes() == b"first"
    same = [store.stage_bytes(b"first")]
    store.commit(make_manifest("x", {"m.gguf": b"first"}), same, replace=False)  # same content: fine
    assert_consistent(store)


# --------------------------------------------------------------------------- Ctrl-C at the commit point (item 10)


def _interrupt_after(monkeypatch: pytest.MonkeyPatch, module: object, name: str) -> None:
    """Make ``module.name`` deliver a real SIGINT to this process right after it ran."""
    import signal

    original = getattr(module, name)

    def wrapped(*args: object, **kwargs: object) -> object:
        result = original(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)
        return result

    monkeypatch.setattr(module, name, wrapped)


@pytest.mark.skipif(os.name != "posix", reason="delivers SIGINT with os.kill")
def test_ctrl_c_before_the_commit_point_stores_nothing(store: ModelStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from slmctl.store import integrity

    _interrupt_after(monkeypatch, integrity, "adopt")  # blobs moving in, manifest not yet written
    staged = [store.stage_bytes(b"interrupted")]
    with pytest.raises(KeyboardInterrupt):
        store.commit(make_manifest("m", {"m.gguf": b"interrupted"}), staged)
    assert store.list() == [] and blob_files(store) == set() and tmp_entries(store) == []


@pytest.mark.skipif(os.name != "posix", reason="delivers SIGINT with os.kill")
def test_ctrl_c_after_the_commit_point_is_absorbed(store: ModelStore, monkeypatch: pytest.MonkeyPatch) -> None:
    _interrupt_after(monkeypatch, ModelStore, "_publish")  # the manifest is published, GC and cleanup to come
    staged = [store.stage_bytes(b"stored")]
    manifest = store.commit(make_manifest("m", {"m.gguf": b"stored"}), staged)  # returns: no KeyboardInterrupt
    assert store.get(manifest.ref) == manifest
    assert_consistent(store)
    import signal

    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Ctrl-C works as usual again


# --------------------------------------------------------------------------- lock files of pulls (item 10)


def test_job_locks_remove_their_file_and_stale_ones_are_swept(tmp_path: Path) -> None:
    from slmctl.fileio import job_lock, sweep_stale_locks

    path = tmp_path / "pull-model-x.lock"
    with pytest.raises(RuntimeError), job_lock(path):
        assert path.exists()
        raise RuntimeError("a failed pull")
    assert not path.exists()
    stale = tmp_path / "pull-model-stale.lock"
    stale.write_text("")  # left by a killed process: nobody holds it
    held = tmp_path / "pull-model-held.lock"
    with FileLock(str(held)):
        assert sweep_stale_locks(tmp_path, "pull-*.lock") == 1
        assert held.exists() and not stale.exists()
