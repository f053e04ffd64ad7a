"""The isolation rule: no probe ever has llama.cpp and ONNX Runtime loaded in one process.

On an NVIDIA H200 with a CUDA build of llama.cpp, ``import onnxruntime`` after ``import llama_cpp``
segfaults. This CPU machine does not crash, so the tests below make it: a ``sitecustomize`` put on
``PYTHONPATH`` of every process started here (slmctl and its probe children) kills the process with
SIGSEGV when one runtime is imported while the other is loaded, and at exit writes down which
runtimes each process had. Code that broke the rule (as ``doctor`` did: llama_cpp, then onnxruntime
in one process) dies with signal 11 here, and its log line shows both runtimes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("onnxruntime_genai")
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="simulates the crash with a POSIX signal")

SITECUSTOMIZE = '''
import atexit, importlib.abc, json, os, signal, sys

_GGUF, _ONNX = ("llama_cpp",), ("onnxruntime", "onnxruntime_genai")
_CRASH_ON = os.environ.get("SLMCTL_TEST_CRASH_ON", "")


def _has(names):
    return any(name in sys.modules for name in names)


class _Guard(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        top = name.partition(".")[0]
        mixed = (top in _GGUF and _has(_ONNX)) or (top in _ONNX and _has(_GGUF))
        if mixed or top == _CRASH_ON:  # what the CUDA build does, or a forced crash
            os.kill(os.getpid(), signal.SIGSEGV)
        return None


def _record():
    with open(os.environ["SLMCTL_TEST_MODULE_LOG"], "a", encoding="utf-8") as log:
        log.write(json.dumps({"argv": sys.argv, "gguf": _has(_GGUF), "onnx": _has(_ONNX)}) + "\\n")


sys.meta_path.insert(0, _Guard())
atexit.register(_record)
'''


@pytest.fixture
def guarded_env(tmp_path: Path) -> dict[str, str]:
    """An environment whose Python processes crash on mixing the runtimes and log what they loaded."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("SLMCTL_DEBUG", "SLMCTL_TEST_CRASH_ON")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(hooks), env.get("PYTHONPATH", "")) if p)
    env["SLMCTL_HOME"] = str(tmp_path / "home")
    env["SLMCTL_TEST_MODULE_LOG"] = str(tmp_path / "modules.jsonl")
    return env


def processes(env: dict[str, str]) -> list[dict[str, Any]]:
    log = Path(env["SLMCTL_TEST_MODULE_LOG"])
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()] if log.exists() else []


def is_probe_child(process: dict[str, Any], kind: str) -> bool:
    return process["argv"] == ["-c", kind]  # probe_worker.child_command


def run_python(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=120)


def test_the_guard_catches_a_mixed_process(guarded_env: dict[str, str]) -> None:
    """The harness itself: doing what the old doctor did must crash and be logged as it is."""
    proc = run_python(guarded_env, "-c", "import llama_cpp, onnxruntime")
    assert proc.returncode == -11
    proc = run_python(guarded_env, "-c", "import llama_cpp")
    assert proc.returncode == 0 and processes(guarded_env) == [{"argv": ["-c"], "gguf": True, "onnx": False}]


def test_doctor_keeps_the_runtimes_apart(guarded_env: dict[str, str]) -> None:
    proc = run_python(guarded_env, "-m", "slmctl", "doctor", "--json")
    assert proc.returncode == 0, f"doctor died with {proc.returncode}: {proc.stderr[-2000:]}"
    report = json.loads(proc.stdout)
    gguf, onnx = report["backends"]["gguf"], report["backends"]["onnx"]
    assert gguf["installed"] and gguf["error"] is None and "cpu" in gguf["devices"]
    assert onnx["installed"] and onnx["error"] is None and "cpu" in onnx["providers"]
    seen = processes(guarded_env)
    assert seen, "no process logged its modules"
    assert not [p for p in seen if p["gguf"] and p["onnx"]], f"a process loaded both runtimes: {seen}"
    parent = [p for p in seen if p["argv"][0] != "-c"]
    assert parent == [{"argv": parent[0]["argv"], "gguf": False, "onnx": False}]  # doctor itself loads neither
    assert [p["gguf"] for p in seen if is_probe_child(p, "gguf")] == [True]
    assert [p["onnx"] for p in seen if is_probe_child(p, "onnx")] == [True]


def test_gguf_probe_after_onnxruntime_stays_out_of_process(guarded_env: dict[str, str]) -> None:
    code = ("import json, sys, onnxruntime\nfrom slmctl.backends import probes\n"
            "info = probes.gguf_build_info()\nassert 'llama_cpp' not in sys.modules, 'llama_cpp was imported'\n"
            "print(json.dumps(info))")
    proc = run_python(guarded_env, "-c", code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = json.loads(proc.stdout)
    assert info["installed"] and info["error"] is None and info["version"]
    assert not [p for p in processes(guarded_env) if p["gguf"] and p["onnx"]]


def test_onnx_probe_after_llama_cpp_stays_out_of_process(guarded_env: dict[str, str]) -> None:
    code = ("import json, sys, llama_cpp\nfrom slmctl.backends import probes\n"
            "usable, info = probes.usable_onnx_providers(), probes.onnx_build_info()\n"
            "assert not {'onnxruntime', 'onnxruntime_genai'} & set(sys.modules), 'onnxruntime was imported'\n"
            "print(json.dumps([usable, info]))")
    proc = run_python(guarded_env, "-c", code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    usable, info = json.loads(proc.stdout)
    assert "cpu" in usable and info["installed"] and info["error"] is None
    assert not [p for p in processes(guarded_env) if p["gguf"] and p["onnx"]]


def test_a_crashing_probe_child_does_not_kill_doctor(guarded_env: dict[str, str]) -> None:
    env = guarded_env | {"SLMCTL_TEST_CRASH_ON": "onnxruntime_genai"}  # the ONNX probe child segfaults
    proc = run_python(env, "-m", "slmctl", "doctor", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    onnx = report["backends"]["onnx"]
    assert onnx["installed"] is False and onnx["error"] == "probe crashed with signal 11 (SIGSEGV)"
    assert "backends/onnx/probe: probe crashed with signal 11 (SIGSEGV)" in report["problems"]
    assert report["backends"]["gguf"]["installed"] and report["selection"]["onnx"] is None
    text = run_python(env, "-m", "slmctl", "doctor")
    assert text.returncode == 0 and "  onnx   probe failed: probe crashed with signal 11 (SIGSEGV)" in text.stdout
