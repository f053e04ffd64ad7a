"""Render Ollama's bundled chat templates with slmctl and compare with Ollama's expected prompts.

Usage: ``python tests/tools/check_ollama_templates.py FOLDER`` where FOLDER holds Ollama's
``template/*.gotmpl`` and ``template/testdata/<name>.gotmpl/<case>`` files (a checkout's ``template``
folder, or a copy of them). Prints each mismatch as a diff, then ``N/M match``; exits 1 on any mismatch.

The conversations and the comparison rule are those of Ollama's ``TestTemplate``
(``template/template_test.go``): the whole conversation goes in as messages (its system message too),
and for five templates one trailing space of the output is dropped before comparing. Not collected
by pytest (no ``test_`` prefix); the committed tests are in ``tests/test_ollama_templates.py``.
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path

from slmctl.backends.base import ChatMessage
from slmctl.modelfile.prompting import render_messages

HELLO = ChatMessage("user", "Hello, how are you?")
REPLY = ChatMessage("assistant", "I'm doing great. How can I help you today?")
SHOW = ChatMessage("user", "I'd like to show off how chat templating works!")
CASES = {
    "user": [HELLO],
    "user-assistant-user": [HELLO, REPLY, SHOW],
    "system-user-assistant-user": [ChatMessage("system", "You are a helpful assistant."), HELLO, REPLY, SHOW],
}
TRAILING_SPACE_DROPPED = {"chatqa.gotmpl", "llama2-chat.gotmpl", "mistral-instruct.gotmpl", "openchat.gotmpl",
                          "vicuna.gotmpl"}


def check(folder: Path) -> tuple[int, int]:
    matched = total = 0
    templates = sorted(folder.glob("*.gotmpl"))
    if not templates:
        raise SystemExit(f"no *.gotmpl files in {folder}")
    for path in templates:
        # Ollama normalises line endings of its bundled templates
        text = path.read_bytes().replace(b"\r\n", b"\n").decode("utf-8")
        for case, messages in CASES.items():
            total += 1
            expected = (folder / "testdata" / path.name / case).read_bytes().decode("utf-8")
            try:
                actual = render_messages(text, messages)
            except Exception as exc:  # noqa: BLE001 - report and go on
                print(f"--- {path.name} / {case}: {type(exc).__name__}: {exc}")
                continue
            if path.name in TRAILING_SPACE_DROPPED and actual.endswith(" "):
                actual = actual[:-1]
            if actual == expected:
                matched += 1
                continue
            print(f"--- {path.name} / {case}: mismatch")
            diff = difflib.unified_diff(expected.splitlines(keepends=True), actual.splitlines(keepends=True),
                                        "expected", "slmctl", lineterm="")
            for line in diff:
                print(repr(line) if line.startswith(("+", "-", " ")) else line)
    return matched, total


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    matched, total = check(Path(argv[1]))
    print(f"{matched}/{total} match")
    return 0 if matched == total else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
