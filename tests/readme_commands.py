"""Read the commands of README.md as a reader copies them, and run them in an offline world.

This module owns the mechanics of the README contract (:mod:`test_readme_contract` owns its tables).
Reading: :func:`readme_items` returns, in the order of the file, every shell command of every fenced
````sh`` block (a command spans several lines when a line ends with ``\\`` or a quote is still open, as
in the ``curl ... -d '{...}'`` examples), the ````python`` blocks of each section joined as one session
(a later block uses an earlier one's names) and the commands given inline in prose that start with
given prefixes (the offline quick start, ``python -m slmctl.testing ...``). :func:`key` is a command
without its trailing ``# comment``, blanks collapsed: a reworded comment changes nothing, a changed
command is a new command.

Running: :func:`offline_world` builds a work folder, an ``SLMCTL_HOME`` and loopback Hugging Face and
Ollama mirrors serving a tiny model at every source of the built-in catalog, with an environment in
which any other connection fails; :func:`execute` runs an item there through ``bash`` (or Python),
:func:`serve` a ``slmctl serve`` command in the background until it answers. An :class:`Expect` (exit
codes, a check of the outcome), a :class:`Skip` (a reason) or an :class:`Elsewhere` (the test that checks what
the command does, where it cannot run) is what the contract says of each item;
:func:`verdict` compares a result with its :class:`Expect`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from hub_fixtures import HubServer
from serve_fixtures import free_port
from slmctl.testing.__main__ import main as write_model
from tests.registry_fixtures import RegistryServer

README = Path(__file__).resolve().parents[1] / "README.md"
VENV_BIN = Path(sys.executable).parent
_DEAD_PROXY = "http://127.0.0.1:9"  # the discard port: a connection that is not to loopback fails at once
_PROXIES = ("http_proxy", "https_proxy", "all_proxy")
_CHATML = ("{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
           "<|im_start|>user\n{{ .Prompt }}<|im_end|>\n<|im_start|>assistant\n")
_FENCE = re.compile(r"^```(\w*)\s*$")


@dataclass(frozen=True)
class Command:
    """A shell command of the README (its text, comment included), or the Python blocks of a section."""

    text: str
    section: str
    line: int
    language: str = "sh"

    @property
    def key(self) -> str:
        return key(self.text) if self.language == "sh" else f"{self.language}: {self.section}"


def _blocks(text: str, language: str) -> list[tuple[str, int, list[str]]]:
    """``(section, first body line number, body lines)`` of each fenced block in ``language``."""
    blocks: list[tuple[str, int, list[str]]] = []
    section, inside, body, start, lang = "", False, [], 0, ""
    for number, line in enumerate(text.splitlines(), 1):
        fence = _FENCE.match(line)
        if not inside and line.startswith("#"):
            section = line.lstrip("#").strip()
        elif fence and not inside:
            inside, body, start, lang = True, [], number + 1, fence.group(1)
        elif fence and inside:
            inside = False
            if lang == language:
                blocks.append((section, start, body))
        elif inside:
            body.append(line)
    return blocks


def _complete(text: str) -> bool:
    """Whether ``text`` is a whole command: no open quote, no trailing line continuation."""
    if text.rstrip().endswith("\\"):
        return False
    try:
        shlex.split(text, comments=True)
    except ValueError:  # "No closing quotation"
        return False
    return True


def readme_commands(path: Path = README) -> list[Command]:
    """Every command of every ````sh`` block of ``path``, in the order of the file."""
    commands: list[Command] = []
    for section, start, body in _blocks(path.read_text(encoding="utf-8"), "sh"):
        pending: list[str] = []
        for offset, line in enumerate(body):
            if not pending and (not line.strip() or line.lstrip().startswith("#")):
                continue  # a blank or comment-only line is no command
            pending.append(line)
            if _complete("\n".join(pending)):
                commands.append(Command("\n".join(pending), section, start + offset - len(pending) + 1))
                pending = []
        if pending:
            raise ValueError(f"README.md:{start}: unterminated command in a sh block: {pending[0]!r}")
    return commands


def readme_python(path: Path = README) -> list[Command]:
    """The ````python`` blocks of each section, joined as one session (a later block uses an earlier one's
    names), at the line of the section's first block."""
    sessions: dict[str, Command] = {}
    for section, start, body in _blocks(path.read_text(encoding="utf-8"), "python"):
        text = "\n".join(body) + "\n"
        first = sessions.get(section)
        sessions[section] = Command((first.text if first else "") + text, section, first.line if first else start,
                                    "python")
    return list(sessions.values())


def readme_inline(prefixes: tuple[str, ...], path: Path = README) -> list[Command]:
    """The inline code spans of ``path`` that start with one of ``prefixes`` (commands given in prose)."""
    found, section = [], ""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        section = line.lstrip("#").strip() if line.startswith("#") else section
        spans = re.findall(r"`([^`\n]+)`", line)
        found += [Command(span, section, number) for span in spans if span.startswith(prefixes)]
    return found


def key(command: str) -> str:
    """``command`` without its trailing ``# comment``, blanks collapsed (quotes respected)."""
    cut, quote, previous = len(command), "", " "
    for index, char in enumerate(command):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and previous.isspace():
            cut = index
            break
        previous = char
    return " ".join(command[:cut].replace("\\\n", " ").split())


def readme_items(inline: tuple[str, ...], path: Path = README) -> list[Command]:
    """The inline commands starting with one of ``inline``, the sh commands and the Python sessions, in order."""
    found = readme_inline(inline, path) + readme_commands(path) + readme_python(path)
    return sorted(found, key=lambda item: item.line)


# --- running -------------------------------------------------------------------------------------------

@dataclass
class Ran:
    code: int
    stdout: str
    stderr: str


@dataclass
class World:
    """The work folder, the store, the environment, the server addresses and what earlier commands left."""

    cwd: Path
    home: Path
    env: dict[str, str]
    hosts: dict[str, str]
    doctor: dict = field(default_factory=dict)
    servers: list[subprocess.Popen] = field(default_factory=list)

    def cli_json(self, *args: str) -> object:
        """``slmctl ARGS`` in this world, its stdout parsed as JSON."""
        proc = subprocess.run([str(VENV_BIN / "slmctl"), *args], env=self.env, capture_output=True, text=True)
        return json.loads(proc.stdout)

    def models(self) -> dict[str, str]:
        """The stored models' ``name:tag`` -> format, read in process (no CLI start-up)."""
        from slmctl.store import ModelStore

        return {str(m.ref): m.format for m in ModelStore(self.home / "models").list()}

    def substitute(self, text: str, table: tuple[tuple[str, str], ...]) -> str:
        """Apply ``table``'s ``(pattern, replacement)`` rewrites; ``{venv}`` and the host keys are filled in."""
        values = {"venv": str(VENV_BIN), **self.hosts}
        for pattern, replacement in table:
            text = re.sub(pattern, lambda m, r=replacement: m.expand(r).format(**values), text)
        return text


@dataclass(frozen=True)
class Expect:
    """The exit code(s) (or a function of ``doctor --json`` giving it), a check of the outcome, a server."""

    code: int | tuple[int, ...] | Callable[[dict], int] = 0
    check: Callable[[Ran, World], None] | None = None
    serve: str | None = None  # a `slmctl serve` command: the address it listens on ("host" is kept running)
    ready: str = "/api/health"
    #: Runs again after a failure: only where a random model decides the outcome (see the SDK session).
    retries: int = 0


@dataclass(frozen=True)
class Skip:
    reason: str


@dataclass(frozen=True)
class Elsewhere:
    """A command that needs what no test machine has (a Kubernetes cluster, a container engine and root),
    whose substance the named test (``tests/FILE.py::test_name``) checks instead: the chart it installs,
    the image script it runs."""

    test: str
    reason: str

    def exists(self) -> bool:
        path, _, name = self.test.partition("::")
        file = README.parent / path
        return file.is_file() and f"def {name}(" in file.read_text(encoding="utf-8")


def verdict(entry: Expect, ran: Ran, world: World) -> str:
    """What is wrong with ``ran`` (the exit code, then the check of the outcome), or ``""``."""
    expected = entry.code(world.doctor) if callable(entry.code) else entry.code
    allowed = expected if isinstance(expected, tuple) else (expected,)
    if ran.code not in allowed:
        return f"exit code {ran.code}, the README says {expected}"
    if entry.check is not None:
        try:
            entry.check(ran, world)
        except Exception as error:  # noqa: BLE001 - reported with the command
            return f"{type(error).__name__}: {error}"
    return ""


def _mirror_catalog(models: Path, hub: HubServer, registry: RegistryServer, gguf_args: list[str],
                    onnx_args: list[str]) -> None:
    """Serve a tiny model at every Hugging Face source and Ollama name of the built-in catalog."""
    gguf = write_model([str(models / "mirrored.gguf"), *gguf_args]).read_bytes()
    folder = write_model([str(models / "mirrored-onnx"), *onnx_args])
    onnx = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    catalog = json.loads((README.parent / "slmctl" / "catalog" / "catalog.json").read_text())["models"]
    for model in catalog:
        for variant in model["variants"]:
            owner, repo, *rest = variant["source"].removeprefix("hf://").split("/", 2)
            files, path = hub.repos.setdefault((owner, repo), {}), rest[0] if rest else ""
            if path.endswith(".gguf"):
                files[path] = gguf
            else:
                files.update({f"{path}/{name}".lstrip("/"): data for name, data in onnx.items()})
        if model.get("ollama"):
            name, _, tag = model["ollama"].partition(":")
            registry.publish(name, tag or "latest", [
                ("model", gguf), ("template", _CHATML.encode()), ("params", b'{"stop": ["<|im_end|>"]}')])


def _environment(home: Path, hub: HubServer, registry: RegistryServer, host: str) -> dict[str, str]:
    """The developer's environment without slmctl/Ollama/HF settings or proxies, plus the world's."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLMCTL_", "OLLAMA_", "HF_")) and k.lower() not in (*_PROXIES, "no_proxy")}
    for name in _PROXIES:
        env[name] = env[name.upper()] = _DEAD_PROXY
    env["no_proxy"] = env["NO_PROXY"] = "127.0.0.1,localhost"
    env.update(PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}", SLMCTL_HOME=str(home), NO_COLOR="1",
               HF_ENDPOINT=hub.endpoint, SLMCTL_OLLAMA_REGISTRY=registry.base, SLMCTL_HOST=host)
    return env


@contextmanager
def offline_world(root: Path, files: dict[str, list[str] | None], stored: dict[str, list[str]],
                  mirrored: tuple[list[str], list[str]]) -> Iterator[World]:
    """A world in ``root``: ``files`` written into the work folder (``python -m slmctl.testing`` arguments, or
    None for a short text), ``stored`` models imported under their names, the catalog mirrored with the
    ``(gguf, onnx)`` arguments of ``mirrored``; two free loopback addresses, ``host`` (``SLMCTL_HOST``) and
    ``host2`` (its port: ``port2``). Servers still running at the end are killed."""
    from slmctl.services.importer import import_path
    from slmctl.store import ModelStore

    cwd, home, models = root / "work", root / "home", root / "models"
    cwd.mkdir(parents=True)
    models.mkdir()
    for path, args in files.items():
        if args is None:
            (cwd / path).write_text("Contoso's gateway listens on port 8080; its admin console on 9443.\n")
        else:
            write_model([str(cwd / path), *args])
    for folder in ("modelfiles", "configs", "deploy"):  # the repository's own, as a reader's checkout has them
        (cwd / folder).symlink_to(README.parent / folder)
    for name, args in stored.items():
        import_path(ModelStore(home / "models"), write_model([str(models / name), *args]), name)
    hub = HubServer()
    try:
        with RegistryServer() as registry:
            _mirror_catalog(models, hub, registry, *mirrored)
            port2 = free_port()
            hosts = {"host": f"127.0.0.1:{free_port()}", "host2": f"127.0.0.1:{port2}", "port2": str(port2)}
            world = World(cwd, home, _environment(home, hub, registry, hosts["host"]), hosts)
            try:
                yield world
            finally:
                for server in world.servers:
                    server.kill()
                    server.wait()
    finally:
        hub.close()


def stop(server: subprocess.Popen) -> int:
    """SIGTERM (as Ctrl-C: the server drains and stops); its exit code."""
    server.send_signal(signal.SIGTERM)
    try:
        return server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        return server.wait()


def serve(command: str, world: World, host: str, ready: str, keep: bool) -> Ran:
    """Start a ``slmctl serve`` command in the background and wait until ``http://<host><ready>`` is 200;
    then keep it in ``world.servers`` or stop it (its exit code is the result)."""
    log = world.cwd.parent / f"serve-{host}.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=world.cwd, env=world.env,
                                  stdout=out, stderr=subprocess.STDOUT)
    world.servers.append(server)
    url, deadline = f"http://{world.hosts[host]}{ready}", time.monotonic() + 60
    while time.monotonic() < deadline and server.poll() is None:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    else:  # exited, or not ready in time
        world.servers.remove(server)
        code = server.poll() if server.poll() is not None else stop(server)
        return Ran(code, "", log.read_text(errors="replace"))
    if keep:
        return Ran(0, "", "")
    world.servers.remove(server)
    return Ran(stop(server), "", log.read_text(errors="replace"))


def execute(item: Command, command: str, world: World) -> Ran:
    """Run ``command`` (the item's text after substitution) in the work folder: bash, or Python for a session."""
    argv = [sys.executable, "-c", command] if item.language == "python" else ["bash", "-o", "pipefail", "-c", command]
    proc = subprocess.run(argv, cwd=world.cwd, env=world.env, capture_output=True, text=True, timeout=300)
    return Ran(proc.returncode, proc.stdout, proc.stderr)


__all__ = ["README", "Command", "Elsewhere", "Expect", "Ran", "Skip", "World", "execute", "key", "offline_world", "readme_items",
           "serve", "stop", "verdict"]
