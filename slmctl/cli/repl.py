"""The interactive chat of ``slmctl run NAME`` on a terminal (Ollama-compatible commands).

``/bye``, ``/clear``, ``/set parameter K V``, ``/set system TEXT``, ``/set format json``,
``/set noformat``, ``/set verbose``, ``/set quiet``, ``/show info|modelfile|parameters|system|template|license``,
``/?``; ``\"\"\"`` starts and ends a multi-line message. Line editing and history through ``readline``.
Ctrl-C stops an answer; Ctrl-D or ``/bye`` leaves.
"""

from __future__ import annotations

import json
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from slmctl.chat import ChatSession
    from slmctl.cli.context import AppContext

HELP = """Available commands:
  /set parameter KEY VALUE   Set a parameter (e.g. /set parameter temperature 0.2)
  /set system TEXT           Set the system prompt
  /set format json           Answer in JSON;  /set noformat  to stop
  /set verbose | quiet       Show or hide statistics after each answer
  /show info|modelfile|parameters|system|template|license
  /clear                     Forget the conversation
  /bye                       Exit
  /?, /help                  This help

Use \"\"\" to begin and end a multi-line message. Ctrl-C stops an answer, Ctrl-D exits."""


class Repl:
    """A read-eval-print loop over a :class:`~slmctl.chat.ChatSession`."""

    def __init__(self, app: AppContext, session: ChatSession, *, verbose: bool = False) -> None:
        self.app = app
        self.session = session
        self.verbose = verbose
        self.out = app.stdout
        self._told_dropped = False

    # -- terminal ------------------------------------------------------------------------------
    def _setup_history(self) -> ModuleType | None:
        try:
            import readline
        except ImportError:  # pragma: no cover - Windows without pyreadline
            return None
        path = self.app.settings.repl_history_file
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.exists():
                readline.read_history_file(str(path))
        except OSError:
            pass
        readline.set_history_length(1000)
        return readline

    def _save_history(self, readline: ModuleType | None) -> None:
        if readline is not None:
            try:
                readline.write_history_file(str(self.app.settings.repl_history_file))
            except OSError:
                pass

    def _say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def _read_message(self) -> str:
        """One message; a line starting with \"\"\" continues until a line ending with \"\"\"."""
        line = input(">>> ")
        if not line.lstrip().startswith('"""'):
            return line
        first = line.lstrip()[3:]
        if first.rstrip().endswith('"""') and first.strip() != "":
            return first.rstrip()[:-3]
        lines = [first] if first else []
        while True:
            more = input("... ")
            if more.rstrip().endswith('"""'):
                lines.append(more.rstrip()[:-3])
                return "\n".join(lines).strip("\n")
            lines.append(more)

    # -- loop ----------------------------------------------------------------------------------
    def loop(self) -> None:
        readline = self._setup_history()
        self.session.ensure_loaded()
        self._say("Type a message, /? for help, /bye to exit.")
        try:
            while True:
                try:
                    message = self._read_message()
                except KeyboardInterrupt:
                    self._say("\nUse Ctrl + d or /bye to exit.")
                    continue
                except EOFError:
                    self._say()
                    return
                if not message.strip():
                    continue
                if message.strip().startswith("/"):
                    if self.command(message.strip()) == "exit":
                        return
                    continue
                self.chat(message)
        finally:
            self._save_history(readline)

    def chat(self, message: str) -> None:
        from slmctl.cli.output import stats_lines
        from slmctl.errors import SlmctlError

        try:
            generation = self.session.ask(message)
            if self.session.dropped and not self._told_dropped:
                self._told_dropped = True
                self.app.stderr.write("note: older messages no longer fit in the context and were left out "
                               "(/clear starts afresh)\n")
            try:
                for chunk in generation:
                    self.out.write(chunk)
                    self.out.flush()
            except KeyboardInterrupt:
                generation.cancel()
            finally:
                generation.close()
        except SlmctlError as exc:
            self._say(f"error: {exc.message}")
            return
        self._say("\n")
        if self.verbose and generation.stats is not None:
            self._say("\n".join(stats_lines(generation.stats)) + "\n")
        if generation.stats is not None and generation.stats.done_reason != "cancel":
            problem = self.session.format_problem(generation)
            if problem is not None:
                self.app.stderr.write(f"warning: {problem}\n")

    # -- slash commands ------------------------------------------------------------------------
    def command(self, line: str) -> str | None:
        from slmctl.errors import SlmctlError

        words = line.split()
        head = words[0].lower()
        try:
            if head in ("/bye", "/exit", "/quit"):
                return "exit"
            if head in ("/?", "/help"):
                self._say(HELP)
            elif head == "/clear":
                self.session.clear()
                self._say("Cleared session context.")
            elif head == "/set":
                self._set(words[1:], line)
            elif head == "/show":
                self._show(words[1:])
            else:
                self._say(f"Unknown command '{words[0]}'. Type /? for help.")
        except SlmctlError as exc:
            self._say(f"error: {exc.message}" + (f"\nhint: {exc.hint}" if exc.hint else ""))
        return None

    def _set(self, args: list[str], line: str) -> None:
        what = args[0].lower() if args else ""
        if what == "parameter" and len(args) >= 3:
            key = args[1]
            raw: str | list[str] = args[2:] if key.lower() == "stop" else " ".join(args[2:])
            name = self.session.set_parameter(key, raw)
            self._say(f"Set parameter '{name}' to '{' '.join(args[2:])}'")
        elif what == "system" and len(args) >= 2:
            text = line.split(None, 2)[2].strip()
            self.session.system = text.strip('"') if not text.startswith('"""') else text.strip('"').strip()
            self._say("Set system message.")
        elif what == "format" and len(args) == 2 and args[1].lower() == "json":
            self.session.json_format = "json"
            self._say("Set format to 'json' mode.")
        elif what == "noformat":
            self.session.json_format = None
            self._say("Disabled format.")
        elif what in ("verbose", "quiet"):
            self.verbose = what == "verbose"
            self._say(f"Set '{what}' mode.")
        else:
            self._say("Usage: /set parameter KEY VALUE | /set system TEXT | /set format json | "
                      "/set noformat | /set verbose | /set quiet")

    def _show(self, args: list[str]) -> None:
        from slmctl.services.modelinfo import modelfile_text, show_info

        what = args[0].lower() if args else ""
        session = self.session
        if what == "parameters":
            values = {**session.defaults.params, **session.params}
            self._say("\n".join(f"{k:<24}{json.dumps(v)}" for k, v in values.items()) or "No parameters set.")
        elif what == "system":
            self._say(session.system or "No system message was specified for this model.")
        elif what == "modelfile":
            self._say(modelfile_text(session.engine, session.manifest))
        elif what in ("info", "template", "license"):
            info = show_info(session.engine, session.manifest)
            if what == "info":
                for key in ("name", "format", "architecture", "parameter_size", "quantization", "context_length"):
                    self._say(f"  {key:<16}{info[key]}")
                if session.model is not None:
                    self._say(f"  {'device':<16}{session.model.info.device}")
                    self._say(f"  {'context in use':<16}{session.model.info.context_length}")
            else:
                self._say(info[what] or f"No {what} was specified for this model.")
        else:
            self._say("Usage: /show info | modelfile | parameters | system | template | license")
