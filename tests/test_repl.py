"""The interactive REPL of ``slmctl run NAME``, driven through a real pseudo-terminal."""

from __future__ import annotations

import os
from pathlib import Path

import pexpect
import pytest

from cli_runner import run_cli, slmctl_command

PROMPT = ">>> "


@pytest.fixture
def repl(tmp_path: Path, tiny_gguf: Path) -> pexpect.spawn:
    home = tmp_path / "home"
    assert run_cli(home, "import", str(tiny_gguf), "--name", "tiny").code == 0
    env = {**os.environ, "SLMCTL_HOME": str(home), "NO_COLOR": "1", "TERM": "dumb"}
    command = slmctl_command()
    child = pexpect.spawn(command[0], [*command[1:], "run", "tiny", "--param", "num_predict=6", "--seed", "1"],
                          env=env, encoding="utf-8", timeout=60, dimensions=(40, 200))
    child.expect_exact("/? for help")
    child.expect_exact(PROMPT)
    yield child
    if child.isalive():
        child.terminate(force=True)


def say(child: pexpect.spawn, line: str) -> str:
    child.sendline(line)
    child.expect_exact(PROMPT)
    return child.before


def test_chat_turns_commands_and_exit(repl: pexpect.spawn, tmp_path: Path) -> None:
    first = say(repl, "hello")
    assert first.replace("hello", "").strip()  # the model answered something
    assert "num_predict" in say(repl, "/show parameters")
    assert "Set parameter 'temperature'" in say(repl, "/set parameter temperature 0.1")
    assert "unknown parameter" in say(repl, "/set parameter bogus 1")
    assert "Set system message" in say(repl, "/set system You are terse.")
    assert "You are terse." in say(repl, "/show system")
    assert "llama" in say(repl, "/show info")
    assert "/bye" in say(repl, "/?")
    assert "Cleared" in say(repl, "/clear")
    repl.sendline('"""first line')
    repl.expect_exact("... ")
    repl.sendline('second line"""')
    repl.expect_exact(PROMPT)
    repl.sendline("/bye")
    repl.expect(pexpect.EOF)
    repl.close()
    assert repl.exitstatus == 0
    assert "hello" in (tmp_path / "home" / "repl_history").read_text()


def test_ctrl_c_at_the_prompt_keeps_the_session_and_ctrl_d_exits(repl: pexpect.spawn) -> None:
    repl.sendintr()
    repl.expect_exact("Use Ctrl + d or /bye to exit.")
    repl.expect_exact(PROMPT)
    assert say(repl, "hi").strip()
    repl.sendeof()
    repl.expect(pexpect.EOF)
    repl.close()
    assert repl.exitstatus == 0
