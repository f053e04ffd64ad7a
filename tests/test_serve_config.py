"""``slmctl serve --config``: the seed's deployment shapes, precedence, ``--print-config``, and errors (exit 4).

Everything runs the real CLI (``--print-config`` exits before serving) or a real ``slmctl serve`` on loopback.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from cli_runner import run_cli
from serve_fixtures import Served, clean_env

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def print_config(home: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict, str]:
    proc = subprocess.run([sys.executable, "-m", "slmctl", "serve", *args, "--print-config", "--json"],
                          env=clean_env(home, env), capture_output=True, text=True, timeout=60)
    return proc.returncode, json.loads(proc.stdout) if proc.returncode == 0 else {}, proc.stderr


def write(tmp_path: Path, data: object, name: str = "serve.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.json")), ids=lambda p: p.name)
def test_each_shipped_config_loads(tmp_path: Path, path: Path) -> None:
    code, shown, err = print_config(tmp_path, "--config", str(path))
    assert code == 0, err
    assert any(item["source"].startswith("file ") for item in shown.values())


def test_the_seed_deployment_example_maps_onto_serve_settings(tmp_path: Path) -> None:
    code, shown, err = print_config(tmp_path, "--config", str(CONFIGS / "production.json"))
    assert code == 0, err
    value = {key: item["value"] for key, item in shown.items()}
    assert value["preload"] == ["microsoft/phi-4-mini"] and value["pull_missing"] is True  # dynamic: catalog's pick
    assert value["device"] == ["npu", "gpu", "cpu"] and value["parallel"] == 4 and value["num_ctx"] == 4096
    assert value["port"] == 8080 and value["openai"] is True
    assert shown["num_ctx"]["source"].endswith("deployment.optimization.max_context")


def test_the_seed_performance_example_maps_onto_serve_settings(tmp_path: Path) -> None:
    code, shown, err = print_config(tmp_path, "--config", str(CONFIGS / "performance.json"))
    assert code == 0, err
    assert shown["parallel"]["value"] == 8  # parallel_requests 8, max_batch_size 16: the smallest wins
    assert shown["parallel"]["source"].endswith("performance.parallel_requests")
    assert shown["kv_cache_size"]["value"] == 4_000_000_000


def test_precedence_flags_then_environment_then_file_then_defaults(tmp_path: Path) -> None:
    config = write(tmp_path, {"deployment": {"api": {"port": 9001}, "optimization": {"batch_size": 3,
                                                                                     "max_context": 2048}},
                              "queue": 7, "keep_alive": "2h"})
    env = {"SLMCTL_NUM_PARALLEL": "5", "SLMCTL_KEEP_ALIVE": "1h", "OLLAMA_CONTEXT_LENGTH": "1024"}
    code, shown, err = print_config(tmp_path, "--config", str(config), "--parallel", "6", env=env)
    assert code == 0, err
    assert (shown["parallel"]["value"], shown["parallel"]["source"]) == (6, "flag --parallel")
    assert (shown["keep_alive"]["value"], shown["keep_alive"]["source"]) == (3600, "env SLMCTL_KEEP_ALIVE")
    assert (shown["num_ctx"]["value"], shown["num_ctx"]["source"]) == (1024, "env OLLAMA_CONTEXT_LENGTH")
    assert shown["queue"] == {"value": 7, "source": f"file {config}: queue"}
    assert shown["port"] == {"value": 9001, "source": f"file {config}: deployment.api.port"}
    assert shown["max_loaded"] == {"value": 3, "source": "default"}
    # the Helm chart's command line: the flag's port wins over the file's api.port
    code, shown, err = print_config(tmp_path, "--host", "0.0.0.0:11434", "--read-only-store", "--config", str(config))
    assert code == 0, err
    assert (shown["host"]["value"], shown["port"]["value"]) == ("0.0.0.0", 11434)
    assert shown["read_only_store"] == {"value": True, "source": "flag --read-only-store"}
    # SLMCTL_CONFIG names the file when --config does not
    code, shown, _ = print_config(tmp_path, env={"SLMCTL_CONFIG": str(config), "SLMCTL_READ_ONLY_STORE": "1"})
    assert code == 0 and shown["queue"]["value"] == 7
    assert shown["read_only_store"] == {"value": True, "source": "env SLMCTL_READ_ONLY_STORE"}


def test_print_config_is_readable_without_json(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "serve", "--config", str(CONFIGS / "production.json"), "--print-config")
    assert result.code == 0
    port_line = next(line for line in result.stdout.splitlines() if line.startswith("port "))
    assert "8080" in port_line and "deployment.api.port" in port_line
    assert any(line.startswith("keep_alive ") and "[default]" in line for line in result.stdout.splitlines())


@pytest.mark.parametrize(("data", "path", "near"), [
    ({"deployment": {"optimization": {"max_contxt": 4096}}}, "deployment.optimization.max_contxt",
     "deployment.optimization.max_context"),
    ({"deployment": {"hardwre": {}}}, "deployment.hardwre", "deployment.hardware"),
    ({"performance": {"memory_optimization": {"max_cache": "1GB"}}}, "performance.memory_optimization.max_cache",
     "performance.memory_optimization.max_cache_size"),
    ({"paralel": 2}, "paralel", "parallel"),
    ({"deploymnt": {}}, "deploymnt", "deployment"),
])
def test_an_unknown_key_exits_4_naming_its_path_and_the_closest_key(tmp_path: Path, data: dict, path: str,
                                                                   near: str) -> None:
    result = run_cli(tmp_path, "serve", "--config", str(write(tmp_path, data)), "--print-config")
    assert result.code == 4 and result.stdout == ""
    assert f"unknown key '{path}'" in result.stderr and f"did you mean '{near}'" in result.stderr


@pytest.mark.parametrize(("data", "env", "words"), [
    ({"deployment": {"api": {"port": "eighty"}}}, {}, ["deployment.api.port", "eighty"]),
    ({"deployment": {"api": {"port": 70000}}}, {}, ["deployment.api.port"]),
    ({"deployment": {"optimization": {"batch_size": 0}}}, {}, ["deployment.optimization.batch_size"]),
    ({"deployment": {"model": "phi4-mini", "optimization": {"quantization": "fast"}}}, {},
     ["deployment.optimization.quantization", "dynamic"]),
    ({"deployment": {"hardware": {"preferred": "npuu"}}}, {}, ["deployment.hardware", "did you mean 'npu'"]),
    ({"performance": {"memory_optimization": {"max_cache_size": "lots"}}}, {},
     ["performance.memory_optimization.max_cache_size", "size"]),
    ({"performance": {"memory_optimization": {"enable_kv_cache": False}}}, {}, ["enable_kv_cache", "cannot be honoured"]),
    ({"performance": {"batch_processing": False, "parallel_requests": 8}}, {}, ["batch_processing", "parallel_requests"]),
    ({"parallel": 2, "performance": {"parallel_requests": 8}}, {}, ["parallel", "performance.parallel_requests"]),
    ({"keep_alive": "soon"}, {}, ["keep_alive", "duration"]),
    ({}, {"SLMCTL_NUM_PARALLEL": "many"}, ["SLMCTL_NUM_PARALLEL", "many"]),
    ({}, {"SLMCTL_READ_ONLY_STORE": "maybe"}, ["SLMCTL_READ_ONLY_STORE", "read_only_store"]),
])
def test_a_bad_value_exits_4_naming_where_it_came_from(tmp_path: Path, data: dict, env: dict, words: list) -> None:
    result = run_cli(tmp_path, "serve", "--config", str(write(tmp_path, data)), "--print-config",
                     env={"NO_PROXY": "*", **env})
    assert result.code == 4, result.stderr
    for word in words:
        assert word in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unreadable_or_yaml_file_exits_4(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text("{", encoding="utf-8")
    (tmp_path / "deploy.yaml").write_text("deployment: {}\n", encoding="utf-8")
    for name in ("broken.json", "deploy.yaml", "absent.json"):
        assert run_cli(tmp_path, "serve", "--config", str(tmp_path / name), "--print-config").code == 4


def test_the_cli_stays_light() -> None:
    code = ("import sys, slmctl.cli.app, slmctl.cli.serve; "
            "assert not {'pydantic_settings', 'fastapi', 'uvicorn'} & set(sys.modules), sorted(sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60).returncode == 0


def test_deployment_settings_reach_the_server(serve_home: Path, tmp_path: Path) -> None:
    """openai_compatible false (404 on /v1), max_context (the load's context), the device preference with its
    fallback (logged once), and the KV cache budget (the context is cut to fit)."""
    config = write(tmp_path, {"deployment": {"hardware": {"preferred": "npu", "fallback": ["cpu"]},
                                             "optimization": {"max_context": 512},
                                             "api": {"openai_compatible": False}}})
    served = Served(serve_home, "--config", str(config), log_dir=tmp_path)
    try:
        assert httpx.get(served.url + "/v1/models").status_code == 404
        chat = httpx.post(served.url + "/v1/chat/completions", json={"model": "phi4:mini", "messages": []})
        assert chat.status_code == 404
        for _ in range(2):
            answer = httpx.post(served.url + "/api/generate", timeout=60, json={
                "model": "phi4:mini", "prompt": "Hi", "stream": False, "options": {"num_predict": 2}})
            assert answer.status_code == 200, answer.text
        loaded = httpx.get(served.url + "/api/ps").json()["models"]
        assert loaded[0]["context_length"] == 512
        assert served.log().count("preferred device npu is not available for gguf models") == 1
    finally:
        assert served.stop() == 0

    budget = Served(serve_home, "--kv-cache-size", "64KiB", "--parallel", "1", log_dir=tmp_path)
    try:
        answer = httpx.post(budget.url + "/api/generate", timeout=60, json={
            "model": "phi4:mini", "prompt": "Hi", "stream": False, "options": {"num_predict": 2}})
        assert answer.status_code == 200, answer.text
        context = httpx.get(budget.url + "/api/ps").json()["models"][0]["context_length"]
        assert context == 256 and "to fit the KV cache budget" in budget.log()  # 64 KiB / 256 bytes a token
    finally:
        budget.stop()
