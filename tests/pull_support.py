"""Helpers of the end-to-end ``slmctl pull`` tests: a loopback-safe environment and what the store holds."""

from __future__ import annotations

from pathlib import Path

from slmctl.store import ModelStore

#: Keeps loopback traffic away from any proxy configured on the machine running the tests.
NO_PROXY_ENV = {"NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1", "HTTP_PROXY": "", "HTTPS_PROXY": "",
                "http_proxy": "", "https_proxy": "", "ALL_PROXY": "", "all_proxy": ""}


def loopback_env(**extra: str) -> dict[str, str]:
    """The proxy-free environment plus ``extra`` (``SLMCTL_OLLAMA_REGISTRY``, ``HF_ENDPOINT``...)."""
    return {**NO_PROXY_ENV, **extra}


def stored(home: Path) -> tuple[list[str], list[str]]:
    """``(model names, blob file names)`` of the store in ``home`` (read in process: no CLI start-up cost)."""
    manifests, problems = ModelStore(home / "models").list_with_problems()
    assert problems == [], problems  # no half-written or unreadable manifest either
    blobs = home / "models" / "blobs"
    return [str(m.ref) for m in manifests], sorted(p.name for p in blobs.iterdir()) if blobs.is_dir() else []


def tmp_leftovers(home: Path) -> list[str]:
    """Entries of the store's ``tmp/`` other than lock files (which the design keeps)."""
    tmp = home / "models" / "tmp"
    return sorted(p.name for p in tmp.iterdir() if not p.name.endswith(".lock")) if tmp.is_dir() else []


def blob_name(digest: str) -> str:
    """The store's file name of blob ``sha256:<hex>``."""
    return digest.replace(":", "-", 1)
