"""``slmctl serve`` settings (flags > environment > file), and ``ps``/``stop`` as clients of a server."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from cli_runner import run_cli
from serve_fixtures import Served, free_port
from slmctl.cli.ps import processor, until
from slmctl.cli.serve import resolve
from slmctl.errors import UsageError


def test_flags_win_over_environment_which_wins_over_the_file(tmp_path: Path) -> None:
    config = tmp_path / "serve.json"
    config.write_text(json.dumps({"host": "0.0.0.0:9000", "parallel": 3, "keep_alive": "1h", "queue": 7}))
    env = {"OLLAMA_HOST": "127.0.0.1:8000", "SLMCTL_NUM_PARALLEL": "2", "OLLAMA_NUM_PARALLEL": "9"}
    resolved = resolve({"queue": 5}, env, config)
    assert (resolved.host, resolved.port) == ("127.0.0.1", 8000)  # OLLAMA_HOST, ours unset, beats the file
    assert resolved.parallel == 2  # SLMCTL_ beats OLLAMA_
    assert resolved.keep_alive == 3600 and resolved.queue == 5
    assert resolve({}, {"OLLAMA_KEEP_ALIVE": "-1"}, None).keep_alive is None
    assert resolve({}, {"SLMCTL_KEEP_ALIVE": "0"}, None).keep_alive == 0
    assert resolve({}, {}, None).port == 11434 and resolve({}, {}, None).keep_alive == 300
    assert resolve({}, {"OLLAMA_FLASH_ATTENTION": "1"}, None).flash_attention is True
    assert resolve({"preload": ["a", "b"]}, {"SLMCTL_PRELOAD": "c"}, None).preload == ("a", "b")
    assert resolve({}, {"SLMCTL_PRELOAD": "c, d"}, None).preload == ("c", "d")


@pytest.mark.parametrize(("flags", "env", "message"), [
    ({"host": "127.0.0.1:http"}, {}, "port"),
    ({"keep_alive": "soon"}, {}, "duration"),
    ({}, {"OLLAMA_NUM_PARALLEL": "many"}, "invalid"),
    ({"parallel": 0}, {}, "parallel"),
])
def test_bad_settings_are_usage_errors(flags: dict, env: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        resolve(flags, env, None)


def test_unknown_config_key_is_named(tmp_path: Path) -> None:
    config = tmp_path / "serve.json"
    config.write_text(json.dumps({"paralel": 2}))
    with pytest.raises(UsageError, match="paralel"):
        resolve({}, {}, config)


def test_serve_help_names_ollama_variables(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "serve", "--help")
    assert result.code == 0 and "OLLAMA_HOST" in result.stdout and "OLLAMA_KEEP_ALIVE" in result.stdout


def test_ps_and_stop_without_a_server_say_so_in_one_line(tmp_path: Path) -> None:
    env = {"SLMCTL_HOST": f"127.0.0.1:{free_port()}"}
    for args in (("ps",), ("stop", "tiny")):
        result = run_cli(tmp_path, *args, env=env)
        assert result.code == 5 and result.stdout == ""
        assert result.stderr.startswith("error: no slmctl server answers at http://127.0.0.1:")
        assert "Traceback" not in result.stderr


def test_ps_lists_and_stop_unloads(private_home: Path) -> None:
    served = Served(private_home)
    env = {"SLMCTL_HOST": f"127.0.0.1:{served.port}"}
    try:
        assert run_cli(private_home, "ps", env=env).stdout.split() == ["NAME", "ID", "SIZE", "PROCESSOR",
                                                                      "CONTEXT", "UNTIL"]
        import httpx

        httpx.post(f"{served.url}/api/generate", json={"model": "phi4:mini", "keep_alive": -1})
        table = run_cli(private_home, "ps", env=env).stdout.splitlines()
        assert table[1].startswith("phi4:mini") and "100% CPU" in table[1] and "Forever" in table[1]
        listed = json.loads(run_cli(private_home, "ps", "--json", env=env).stdout)
        assert listed[0]["name"] == "phi4:mini" and listed[0]["context_length"] > 0
        stopped = run_cli(private_home, "stop", "phi4:mini", env=env)
        assert stopped.code == 0 and "stopped" in stopped.stderr
        assert json.loads(run_cli(private_home, "ps", "--json", env=env).stdout) == []
        missing = run_cli(private_home, "stop", "phi4:mini", env=env)
        assert missing.code == 3 and "is not running" in missing.stderr
    finally:
        assert served.stop() == 0


def test_processor_and_until_read_like_ollama() -> None:
    assert processor({"size": 100, "size_vram": 0}) == "100% CPU"
    assert processor({"size": 100, "size_vram": 100}) == "100% GPU"
    assert processor({"size": 100, "size_vram": 40}) == "60%/40% CPU/GPU"
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert until("2318-01-01T00:00:00Z", now) == "Forever"
    assert until((now + timedelta(minutes=4, seconds=30)).isoformat(), now) == "4 minutes from now"
    assert until((now - timedelta(seconds=1)).isoformat(), now) == "Stopping..."
