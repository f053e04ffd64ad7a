"""End-to-end tests of the CLI through the real entry point, on tiny GGUF models and real llama.cpp."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cli_runner import Result, run_cli

SPEC_RUN_FIELDS = {"model", "response", "done_reason", "total_duration", "load_duration", "prompt_eval_count",
                   "prompt_eval_duration", "eval_count", "eval_duration"}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def stored(home: Path, tiny_gguf: Path) -> Path:
    """A home with the tiny model imported as ``tiny``."""
    assert run_cli(home, "import", str(tiny_gguf), "--name", "tiny").code == 0
    return home


def one_line_error(result: Result, code: int) -> str:
    assert result.code == code, (result.code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and len(lines) <= 2, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


def test_import_list_show_run_cp_rm_lifecycle(home: Path, tiny_gguf: Path) -> None:
    # end to end: the installed console script, through a whole lifecycle
    imported = run_cli(home, "import", str(tiny_gguf), "--name", "tiny", process=True)
    assert imported.code == 0 and "tiny:latest" in imported.stdout

    listed = json.loads(run_cli(home, "list", "--json", process=True).stdout)
    assert [m["name"] for m in listed] == ["tiny:latest"]
    item = listed[0]
    assert {"name", "format", "size", "digest", "modified_at", "architecture", "parameter_size",
            "quantization"} <= set(item)
    assert item["format"] == "gguf" and item["architecture"] == "llama" and item["size"] == tiny_gguf.stat().st_size

    shown = json.loads(run_cli(home, "show", "tiny", "--json", process=True).stdout)
    assert {"name", "format", "architecture", "parameter_size", "quantization", "context_length", "parameters",
            "template", "system", "license", "files"} <= set(shown)
    assert shown["context_length"] == 512 and "<|im_start|>" in shown["template"]
    assert shown["files"][0]["size"] == tiny_gguf.stat().st_size

    ran = run_cli(home, "run", "tiny", "hello", "--max-tokens", "8", process=True)
    assert ran.code == 0 and ran.stdout.strip() and ran.stdout.endswith("\n")

    assert run_cli(home, "cp", "tiny", "tiny:copy", process=True).code == 0
    listed = json.loads(run_cli(home, "list", "--json", process=True).stdout)
    assert {m["name"] for m in listed} == {"tiny:latest", "tiny:copy"}
    assert len({m["digest"] for m in listed}) == 1
    blobs = list((home / "models" / "blobs").iterdir())
    assert len(blobs) == 1  # the copy shares the blob

    assert run_cli(home, "rm", "tiny", process=True).code == 0
    assert run_cli(home, "run", "tiny:copy", "hi", "--max-tokens", "4", process=True).code == 0
    assert run_cli(home, "rm", "tiny:copy", process=True).code == 0
    assert json.loads(run_cli(home, "list", "--json", process=True).stdout) == []
    assert list((home / "models" / "blobs").iterdir()) == []


def test_run_json_has_spec_fields(stored: Path) -> None:
    result = run_cli(stored, "run", "tiny", "--json", "--max-tokens", "8", input="hi\n")
    assert result.code == 0
    obj = json.loads(result.stdout)
    assert SPEC_RUN_FIELDS <= set(obj)
    assert obj["model"] == "tiny:latest" and obj["eval_count"] == 8 and obj["done_reason"] == "length"
    assert obj["total_duration"] >= obj["load_duration"] > 0


def test_stdout_holds_only_the_answer_and_seed_is_reproducible(stored: Path) -> None:
    # end to end: stdout is the real file descriptor 1, which a native runtime could also write to
    args = ("run", "tiny", "hello", "--max-tokens", "12", "--seed", "42")
    first, second = run_cli(stored, *args, process=True), run_cli(stored, *args, process=True)
    as_json = json.loads(run_cli(stored, *args, "--json", process=True).stdout)
    assert first.stdout == second.stdout == as_json["response"] + "\n"
    assert run_cli(stored, *args[:-1], "43", process=True).stdout != first.stdout


def test_piped_stdin_is_prepended_to_the_prompt(stored: Path) -> None:
    only_prompt = json.loads(run_cli(stored, "run", "tiny", "Summarise", "--json", "--max-tokens", "1").stdout)
    with_stdin = json.loads(run_cli(stored, "run", "tiny", "Summarise", "--json", "--max-tokens", "1",
                                    input="a long document\n" * 5).stdout)
    assert with_stdin["prompt_eval_count"] > only_prompt["prompt_eval_count"]


def test_verbose_prints_statistics_to_stderr(stored: Path) -> None:
    # end to end: real stdout/stderr file descriptors (llama.cpp writes to fd 2)
    result = run_cli(stored, "run", "tiny", "hello", "--max-tokens", "6", "--verbose", process=True)
    assert result.code == 0
    for label in ("total duration:", "load duration:", "prompt eval count:", "prompt eval duration:",
                  "prompt eval rate:", "eval count:", "eval duration:", "eval rate:"):
        assert label in result.stderr
    assert "eval count:           6 token(s)" in result.stderr
    assert "duration" not in result.stdout


def test_format_json_output_parses(stored: Path) -> None:
    result = run_cli(stored, "run", "tiny", "give me json", "--format", "json", "--seed", "3",
                     "--max-tokens", "400")
    assert result.code == 0
    json.loads(result.stdout)


def test_system_and_params_change_the_prompt(stored: Path) -> None:
    plain = json.loads(run_cli(stored, "run", "tiny", "hi", "--json", "--max-tokens", "1").stdout)
    system = json.loads(run_cli(stored, "run", "tiny", "hi", "--json", "--max-tokens", "1",
                                "--system", "You are terse.").stdout)
    assert system["prompt_eval_count"] > plain["prompt_eval_count"]
    limited = json.loads(run_cli(stored, "run", "tiny", "hi", "--json", "--param", "num_predict=3").stdout)
    assert limited["eval_count"] == 3


def test_missing_file_is_a_usage_error(home: Path, tmp_path: Path) -> None:
    err = one_line_error(run_cli(home, "import", str(tmp_path / "nope.gguf")), 2)
    assert "nope.gguf" in err


@pytest.mark.parametrize("kind, fragment", [("not_gguf", "not a GGUF"), ("truncated", "truncated"),
                                            ("empty", "empty"), ("bad_header", "")])
def test_corrupt_files_are_rejected_before_the_store(home: Path, corrupt_gguf_files: dict[str, Path],
                                                     kind: str, fragment: str) -> None:
    err = one_line_error(run_cli(home, "import", str(corrupt_gguf_files[kind]), "--name", "bad"), 4)
    assert fragment in err
    assert json.loads(run_cli(home, "list", "--json").stdout) == []
    blobs = home / "models" / "blobs"
    assert not blobs.exists() or not list(blobs.iterdir())


def test_unknown_model_exits_3(home: Path) -> None:
    # end to end: the exit code a shell sees
    err = one_line_error(run_cli(home, "run", "nosuch", "hi", process=True), 3)
    assert "nosuch" in err and "hint:" in err
    one_line_error(run_cli(home, "show", "nosuch", process=True), 3)
    one_line_error(run_cli(home, "rm", "nosuch", process=True), 3)


@pytest.mark.parametrize("args, fragment", [
    (("--param", "temprature=1"), "temperature"),
    (("--param", "top_p=7"), "top_p"),
    (("--param", "oops"), "KEY=VALUE"),
    (("--format", "yaml"), "--format"),
    (("--backend", "onnx"), "gguf"),
])
def test_bad_run_options_exit_2(stored: Path, args: tuple[str, ...], fragment: str) -> None:
    assert fragment in one_line_error(run_cli(stored, "run", "tiny", "hi", *args), 2)


def test_bad_names_exit_2(stored: Path) -> None:
    one_line_error(run_cli(stored, "cp", "tiny", "../escape"), 2)
    one_line_error(run_cli(stored, "run", "/etc/passwd", "hi"), 2)


def test_unavailable_device_exits_7(stored: Path) -> None:
    import llama_cpp

    if llama_cpp.llama_supports_gpu_offload():
        pytest.skip("this llama.cpp build can offload to a GPU")
    err = one_line_error(run_cli(stored, "run", "tiny", "hi", "--device", "cuda"), 7)
    assert "usable here: cpu" in err
    assert run_cli(stored, "run", "tiny", "hi", "--device", "cpu", "--max-tokens", "2").code == 0


def test_model_refused_by_llama_cpp_shows_reason_and_store_is_untouched(home: Path, tiny_gguf: Path,
                                                                        tmp_path: Path) -> None:
    data = tiny_gguf.read_bytes()
    key = b"general.architecture" + (8).to_bytes(4, "little") + (5).to_bytes(8, "little") + b"llama"
    odd = tmp_path / "odd.gguf"
    odd.write_bytes(data.replace(key, key[:-5] + b"llamz", 1))
    assert run_cli(home, "import", str(odd), "--name", "odd").code == 0
    before = run_cli(home, "list", "--json").stdout
    err = one_line_error(run_cli(home, "run", "odd", "hi"), 4)
    assert "unknown model architecture: 'llamz'" in err
    assert run_cli(home, "list", "--json").stdout == before
    debug = run_cli(home, "--debug", "run", "odd", "hi")
    assert debug.code == 4 and "Traceback" in debug.stderr and "llama_model_loader" in debug.stderr


def test_help_has_examples_for_every_command(home: Path) -> None:
    for command in ("import", "list", "show", "rm", "cp", "run"):
        result = run_cli(home, command, "--help")
        assert result.code == 0 and "Examples:" in result.stdout and "slmctl " in result.stdout, command


def test_top_level_help_does_not_import_the_runtimes() -> None:
    code = ("import sys\nfrom slmctl.cli.app import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('llama_cpp', 'onnxruntime_genai', 'pydantic', 'numpy') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out


def test_version_and_module_entry_point(home: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "slmctl", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("slmctl ")


def test_unknown_command_is_usage_error(home: Path) -> None:
    # end to end: a Click usage error as a shell sees it
    assert run_cli(home, "frobnicate", process=True).code == 2


def test_ctrl_c_exits_130_with_one_line(stored: Path) -> None:
    import os
    import signal
    import time

    from cli_runner import slmctl_command

    env = {**os.environ, "SLMCTL_HOME": str(stored)}
    proc = subprocess.Popen([*slmctl_command(), "run", "tiny"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    time.sleep(2)  # it is now waiting for the piped prompt
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and err.strip() == "error: interrupted"
