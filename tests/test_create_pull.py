"""``slmctl create`` with a FROM that is not in the store: catalog aliases and source references are pulled.

The base comes from the loopback Hugging Face-style server (``hub`` from :mod:`hub_fixtures`); a user
catalog in ``SLMCTL_HOME`` adds the alias ``tiny:base`` for its F16 file. Both ``hf.co/...`` and ``hf://...``
references go through ``HF_ENDPOINT``; ``ollama://`` and ``https://`` do not (they are not served here).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from cli_runner import run_cli, slmctl_command
from hub_fixtures import HubServer, hub_env, stored

ALIAS_SOURCE = "hf://test/tiny-GGUF/tiny-F16.gguf"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    catalog = {"version": 1, "models": [{
        "name": "tinybase", "aliases": ["tiny:base"], "task": "chat", "parameter_size": "125K",
        "variants": [{"format": "gguf", "quant": "F16", "device": "any", "source": ALIAS_SOURCE}]}]}
    (home / "catalog.json").write_text(json.dumps(catalog))
    return home


def modelfile(tmp_path: Path, base: str, name: str = "Modelfile") -> Path:
    path = tmp_path / name
    path.write_text(f"FROM {base}\nSYSTEM Be brief.\nPARAMETER temperature 0.1\n", encoding="utf-8")
    return path


def show(home: Path, name: str) -> dict:
    return json.loads(run_cli(home, "show", name, "--json").stdout)


def leftovers(home: Path) -> list[str]:
    tmp = home / "models" / "tmp"
    return sorted(p.name for p in tmp.iterdir() if not p.name.endswith(".lock")) if tmp.is_dir() else []


def test_from_a_catalog_alias_pulls_the_base_then_creates(home: Path, hub: HubServer, tmp_path: Path,
                                                         gguf_bytes: bytes) -> None:
    created = run_cli(home, "create", "brief", "-f", str(modelfile(tmp_path, "tiny:base")), env=hub_env(hub))
    assert created.code == 0, created.stderr
    assert created.stdout.startswith("created brief:latest (gguf, ")
    lines = created.stderr.splitlines()
    assert lines[:2] == ["pulling manifest", f"resolved tiny:base: {ALIAS_SOURCE} (gguf F16)"], created.stderr
    assert any(re.fullmatch(r"pulling [0-9a-f]{12} \(tiny-F16\.gguf\): .* 100%", line) for line in lines)
    assert lines.index("success") < lines.index("using base tiny:base")  # plain lines: stderr is no terminal
    listed, blobs = stored(home)
    assert [m["name"] for m in listed] == ["brief:latest", "tiny:base"]  # the base stays a model of its own
    digest = f"sha256:{hashlib.sha256(gguf_bytes).hexdigest()}"
    assert f"sha256-{digest[7:]}" in blobs
    info, base = show(home, "brief"), show(home, "tiny:base")
    assert info["base"] == digest and info["files"] == base["files"] and base["source"]["ref"] == ALIAS_SOURCE
    assert info["system"] == "Be brief." and info["parameters"] == {"temperature": 0.1}
    ran = run_cli(home, "run", "brief", "hi", "--max-tokens", "2", env=hub_env(hub))
    assert ran.code == 0 and ran.stdout.strip(), ran.stderr
    served = hub.bytes_served
    again = run_cli(home, "create", "brief2", "-f", str(modelfile(tmp_path, "tiny:base")), "--quiet",
                    env=hub_env(hub))
    assert again.code == 0 and again.stderr == "", again.stderr  # stored now: no pull, and --quiet
    assert hub.bytes_served == served
    assert show(home, "brief2")["digest"] == info["digest"]


def test_from_hf_references_pull_through_hf_endpoint(home: Path, hub: HubServer, tmp_path: Path,
                                                     gguf_bytes: bytes) -> None:
    short = run_cli(home, "create", "a", "-f", str(modelfile(tmp_path, "hf.co/test/tiny-GGUF:F16")), "--quiet",
                    env=hub_env(hub))
    assert short.code == 0, short.stderr
    assert short.stderr == "" and short.stdout.startswith("created a:latest")
    # a reference ending in .gguf is a source, not a file next to the Modelfile
    path_ref = run_cli(home, "create", "b", "-f", str(modelfile(tmp_path, "hf://test/tiny-GGUF/tiny-Q8_0.gguf")),
                       env=hub_env(hub))
    assert path_ref.code == 0, path_ref.stderr
    assert "using base hf.co/test/tiny-gguf:tiny-q8_0" in path_ref.stderr
    listed, _ = stored(home)
    assert [m["name"] for m in listed] == ["a:latest", "b:latest", "hf.co/test/tiny-gguf:f16",
                                           "hf.co/test/tiny-gguf:tiny-q8_0"]
    digest = f"sha256:{hashlib.sha256(gguf_bytes).hexdigest()}"
    assert show(home, "a")["base"] == show(home, "b")["base"] == digest


def test_offline_fails_as_run_does_and_creates_nothing(home: Path, hub: HubServer, tmp_path: Path) -> None:
    offline = hub_env(hub, SLMCTL_OFFLINE="1")
    for base in ("tiny:base", "hf.co/test/tiny-GGUF:F16"):
        created = run_cli(home, "create", "x", "-f", str(modelfile(tmp_path, base)), env=offline)
        assert created.code == 5, created.stderr
        assert created.stderr.startswith(f"error: offline mode (SLMCTL_OFFLINE=1): cannot download '{base}' from ")
        ran = run_cli(home, "run", base, "hi", env=offline)
        assert (ran.code, ran.stderr) == (5, created.stderr)
        assert created.stdout == ""
    assert stored(home) == ([], []) and hub.bytes_served == 0


def test_unknown_from_is_not_found_with_a_hint(home: Path, hub: HubServer, tmp_path: Path) -> None:
    created = run_cli(home, "create", "x", "-f", str(modelfile(tmp_path, "tiny:bsae")), env=hub_env(hub))
    assert created.code == 3
    assert created.stderr.splitlines() == [
        "error: model 'tiny:bsae' is not in the store nor in the catalog",
        "hint: did you mean: tiny:base, tinybase? run 'slmctl list --available' to see the catalog"]
    assert stored(home) == ([], [])


def test_a_failed_pull_exits_with_its_code_and_creates_nothing(home: Path, hub: HubServer, tmp_path: Path) -> None:
    missing = run_cli(home, "create", "x", "-f", str(modelfile(tmp_path, "hf.co/test/nothing-GGUF")),
                      env=hub_env(hub))
    assert missing.code == 3 and "HTTP 404" in missing.stderr, missing.stderr
    corrupt = run_cli(home, "create", "x", "-f", str(modelfile(tmp_path, "hf.co/test/bad-GGUF")), env=hub_env(hub))
    assert corrupt.code == 6 and "digest mismatch" in corrupt.stderr, corrupt.stderr
    assert "using base" not in missing.stderr + corrupt.stderr
    assert stored(home) == ([], []) and leftovers(home) == []


def test_terminal_gets_bars_that_stop_before_create_goes_on(home: Path, hub: HubServer, tmp_path: Path) -> None:
    pty = pytest.importorskip("pty")
    master, slave = pty.openpty()
    env = {**os.environ, "SLMCTL_HOME": str(home), **hub_env(hub)}
    proc = subprocess.Popen([*slmctl_command(), "create", "x", "-f", str(modelfile(tmp_path, "tiny:base"))],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    screen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        screen += chunk
    os.close(master)
    stdout = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 0 and stdout.startswith("created x:latest"), screen
    text = screen.decode()
    bars, _, after = text.partition("\x1b[?25h")  # rich shows the cursor again when the bars stop
    assert "pulling manifest" in bars and "━" in bars and "success" in bars
    assert "using base tiny:base" in after and "\x1b[" not in after


def test_pull_progress_renders_quiet_plain_and_terminal() -> None:
    from slmctl.cli.progress import RichProgress, pull_progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    from slmctl.events import FileProgress, Status

    events = [Status("pulling manifest"), FileProgress("pulling abc", "m.gguf", 10, 10), Status("success")]
    with pull_progress(io.StringIO(), quiet=True) as quiet:
        assert quiet is None
    plain = io.StringIO()
    with pull_progress(plain) as handler:
        assert handler is not None
        for event in events:
            handler(event)
    assert plain.getvalue() == "pulling manifest\npulling abc (m.gguf): 10 B/10 B 100%\nsuccess\n"
    terminal = Terminal()
    with pull_progress(terminal) as handler:
        assert handler is not None and isinstance(getattr(handler, "__self__", None), RichProgress)
        bars = handler.__self__  # type: ignore[attr-defined]
        assert not bars.live  # nothing is drawn before the first event
        for event in events:
            handler(event)
            assert bars.live == (event.status != "success")
    assert "pulling manifest" in terminal.getvalue() and "success" in terminal.getvalue()
