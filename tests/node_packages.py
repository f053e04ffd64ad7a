"""Pinned npm packages for the tests that drive a real server from Node.js clients.

``node_modules_for`` installs exact versions once into pytest's cache folder (keyed by the pins) and
skips the test where ``node`` or ``npm`` is missing; later runs reuse the cached folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest


def npm(args: list[str], cwd: Path) -> None:
    done = subprocess.run(["npm", *args, "--no-audit", "--no-fund", "--loglevel=error"], cwd=cwd,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "npm_config_update_notifier": "false"})
    assert done.returncode == 0, f"npm {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"


def installed(folder: Path, pins: dict[str, str]) -> bool:
    def version(package: str) -> str | None:
        try:
            return json.loads((folder / "node_modules" / package / "package.json").read_text())["version"]
        except (OSError, ValueError, KeyError):
            return None

    return all(version(package) == pin for package, pin in pins.items())


def node_modules_for(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                     pins: dict[str, str]) -> Path:
    """A ``node_modules`` folder holding exactly ``pins`` (package -> version)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed for the Node.js client tests")
    cache = getattr(request.config, "cache", None)
    root = cache.mkdir("node-modules") if cache is not None else tmp_path_factory.mktemp("node")
    folder = root / "_".join(f"{package}-{pin}" for package, pin in sorted(pins.items()))
    if not installed(folder, pins):
        staging = Path(tempfile.mkdtemp(prefix="install-", dir=root))
        try:
            npm(["init", "-y"], staging)
            npm(["install", "--save-exact", *(f"{package}@{pin}" for package, pin in pins.items())], staging)
            assert installed(staging, pins), "npm installed other versions than pinned"
            shutil.rmtree(folder, ignore_errors=True)
            try:
                staging.rename(folder)
            except OSError:  # another run installed it meanwhile
                assert installed(folder, pins)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return folder / "node_modules"
