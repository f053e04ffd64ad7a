"""Pulls and the store's integrity (issue 11, items 1 and 10), against the loopback Hugging Face-style server.

A pull never reuses a stored blob it has not verified since it changed; ``verify --repair`` downloads a damaged
blob again from the recorded source; pulls leave no lock files in ``models/tmp``; a catalog variant without a
pinned revision says so.
"""

from __future__ import annotations

import json
from pathlib import Path

from cli_runner import run_cli
from hub_fixtures import HubServer, hub_env


def _flip_one_byte(blob: Path) -> None:
    blob.chmod(0o644)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))


def _only_blob(home: Path) -> Path:
    (blob,) = (home / "models" / "blobs").iterdir()
    return blob


def _locks(home: Path) -> list[str]:
    tmp = home / "models" / "tmp"
    return sorted(p.name for p in tmp.glob("*.lock")) if tmp.is_dir() else []


def test_pull_downloads_again_a_damaged_stored_blob(tmp_path: Path, hub: HubServer, gguf_bytes: bytes) -> None:
    home = tmp_path / "home"
    assert run_cli(home, "pull", "hf://test/tiny-GGUF/tiny-Q4_K_M.gguf", env=hub_env(hub)).code == 0
    _flip_one_byte(_only_blob(home))
    served = hub.bytes_served
    # the Q8_0 file has the same bytes: before, the damaged stored blob was taken as "already stored"
    again = run_cli(home, "pull", "hf://test/tiny-GGUF/tiny-Q8_0.gguf", env=hub_env(hub))
    assert again.code == 0, again.stderr
    assert hub.bytes_served - served >= len(gguf_bytes)
    assert "was damaged: moved it to" in again.stderr
    assert _only_blob(home).read_bytes() == gguf_bytes
    assert run_cli(home, "verify").code == 0


def test_verify_repair_downloads_from_the_recorded_source(tmp_path: Path, hub: HubServer, gguf_bytes: bytes) -> None:
    home = tmp_path / "home"
    assert run_cli(home, "pull", "hf.co/test/tiny-GGUF", env=hub_env(hub)).code == 0
    _flip_one_byte(_only_blob(home))
    offline = run_cli(home, "verify", "--repair", env=hub_env(hub, SLMCTL_OFFLINE="1"))
    assert offline.code == 6
    assert ("offline mode (SLMCTL_OFFLINE=1) forbids downloads: run 'slmctl verify --repair "
            "hf.co/test/tiny-gguf:latest' again once hf.co/test/tiny-GGUF:Q4_K_M can be reached") in offline.stderr
    repaired = run_cli(home, "verify", "--repair", "--json", env=hub_env(hub))
    assert repaired.code == 0, repaired.stderr
    assert [(m["name"], m["repaired"], m["status"]) for m in json.loads(repaired.stdout)] == [
        ("hf.co/test/tiny-gguf:latest", True, "ok")]
    assert "(pulled from hf.co/test/tiny-GGUF:Q4_K_M)" in repaired.stderr
    assert _only_blob(home).read_bytes() == gguf_bytes
    assert _locks(home) == []


def test_pulls_leave_no_lock_files(tmp_path: Path, hub: HubServer) -> None:
    home = tmp_path / "home"
    tmp = home / "models" / "tmp"
    tmp.mkdir(parents=True)
    (tmp / "pull-model-0123456789abcdef01234567.lock").write_text("")  # left by a killed pull
    failed = run_cli(home, "pull", "hf.co/test/bad-GGUF", env=hub_env(hub))
    assert failed.code == 6, failed.stderr
    assert _locks(home) == []
    assert run_cli(home, "pull", "hf.co/test/tiny-GGUF", env=hub_env(hub)).code == 0
    assert _locks(home) == []


def test_an_unpinned_catalog_variant_says_so(tmp_path: Path, hub: HubServer) -> None:
    home = tmp_path / "home"
    home.mkdir()
    variant = {"format": "gguf", "quant": "Q4_K_M", "device": "any", "source": "hf://test/tiny-GGUF/tiny-Q4_K_M.gguf"}
    catalog = {"version": 1, "models": [
        {"name": "loose", "task": "chat", "parameter_size": "125K", "variants": [variant]},
        {"name": "pinned", "task": "chat", "parameter_size": "125K", "variants": [{**variant, "revision": "main"}]}]}
    (home / "catalog.json").write_text(json.dumps(catalog))
    loose = run_cli(home, "pull", "loose", env=hub_env(hub))
    assert loose.code == 0, loose.stderr
    assert "warning: the catalog pins no revision for this variant: pulling what 'main' holds today" in loose.stderr
    pinned = run_cli(home, "pull", "pinned", env=hub_env(hub))
    assert pinned.code == 0 and "pins no revision" not in pinned.stderr
