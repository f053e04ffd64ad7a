"""llama.cpp's extra CPU buffers (AMX): probed once per machine, turned off where they crash, so a
quantized model runs instead of killing the process with SIGILL (as it does on this workplace's VMs)."""

from __future__ import annotations

import json
from pathlib import Path

from cli_runner import run_cli
from slmctl.backends.cpu_buffers import CACHE_FILE, amx_flags, extra_buffers_work, machine_key, probe_in_child
from slmctl.testing.tiny_gguf import TinyGGUFSpec, write_bench_gguf

AMX_CPU = "processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu sse2 avx512f amx_tile amx_int8 amx_bf16\n"
PLAIN_CPU = "processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu sse2 avx2\n"


def cpuinfo(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    return path


class Probe:
    def __init__(self, answer: bool | None) -> None:
        self.answer, self.calls = answer, 0

    def __call__(self) -> bool | None:
        self.calls += 1
        return self.answer


def test_a_cpu_without_amx_is_never_probed(tmp_path: Path) -> None:
    probe = Probe(False)
    assert extra_buffers_work(tmp_path, cpuinfo=cpuinfo(tmp_path, PLAIN_CPU), probe=probe)
    assert probe.calls == 0 and not (tmp_path / CACHE_FILE).exists()
    assert amx_flags(tmp_path / "missing") == ()


def test_a_crash_is_remembered_per_machine(tmp_path: Path) -> None:
    info, probe = cpuinfo(tmp_path, AMX_CPU), Probe(False)
    assert amx_flags(info) == ("amx_bf16", "amx_int8", "amx_tile")
    assert not extra_buffers_work(tmp_path, cpuinfo=info, probe=probe)
    assert not extra_buffers_work(tmp_path, cpuinfo=info, probe=probe)
    assert probe.calls == 1
    assert json.loads((tmp_path / CACHE_FILE).read_text()) == {machine_key(info): False}
    (tmp_path / "other").mkdir()
    other = cpuinfo(tmp_path / "other", AMX_CPU.replace("Test CPU", "Newer CPU"))
    assert extra_buffers_work(tmp_path, cpuinfo=other, probe=Probe(True))  # another CPU: asked again
    assert len(json.loads((tmp_path / CACHE_FILE).read_text())) == 2


def test_a_probe_that_fails_otherwise_changes_nothing(tmp_path: Path) -> None:
    probe = Probe(None)
    assert extra_buffers_work(tmp_path, cpuinfo=cpuinfo(tmp_path, AMX_CPU), probe=probe)
    assert not (tmp_path / CACHE_FILE).exists()


def test_the_child_probe_reaches_an_answer_here() -> None:
    """True (decoded) or False (SIGILL), never None (the child itself broken)."""
    assert probe_in_child() in (True, False)


def test_a_quantized_model_runs_through_the_cli(tmp_path: Path) -> None:
    model = write_bench_gguf(tmp_path / "tiny-q8.gguf", "Q8_0", spec=TinyGGUFSpec())
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    assert run_cli(tmp_path / "home", "import", str(model), "--name", "q8", env=env).code == 0
    result = run_cli(tmp_path / "home", "run", "q8", "hello", "--max-tokens", "4", "--json", env=env)
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["eval_count"] == 4
