"""Run one runtime probe in a short-lived child process, and read its answer back.

Why: llama.cpp's native libraries (``llama_cpp``, with ggml's CUDA backend on a GPU build) and ONNX
Runtime's (``onnxruntime`` / ``onnxruntime_genai``) must not be loaded into one process - on an
NVIDIA H200 with a CUDA build of llama.cpp, ``import onnxruntime`` after ``import llama_cpp``
segfaults inside ``onnxruntime/capi/_pybind_state.py``. ``slmctl doctor``, ``bench``'s machine
section and device choice need facts about both runtimes, so each probe that would load a runtime
this process has not loaded yet runs here instead: a child ``python`` runs :func:`main` (as
``python -m slmctl.backends.probe_worker gguf|onnx`` does by hand), which prints one JSON object
(``{"kind": ..., "build": {...}}``) on stdout and exits.

Parent side: :func:`probe_gguf_in_child` / :func:`probe_onnx_in_child` (through :func:`run_probe`)
start the child with a timeout and turn every way it can go wrong (a crash by signal, a non-zero
exit, a timeout, output that is not the expected JSON) into an error string such as ``"probe crashed
with signal 11 (SIGSEGV)"``, returned as a build with ``installed`` False and that ``error``; nothing
here raises. The child's stderr is captured, never shown, except its last line in an error. Child
side: :func:`main` runs the in-process probe of :mod:`slmctl.backends.providers` with file descriptor 1
pointed at stderr while it runs, so whatever a native library prints cannot corrupt the JSON.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from slmctl.backends.providers import ONNX_PROVIDERS, GgufBuild, OnnxBuild, ProviderStatus, probe_gguf, probe_onnx

KINDS = ("gguf", "onnx")
#: Seconds a probe child may take (a CUDA context, or a provider that JIT-compiles, can be slow).
PROBE_TIMEOUT = 60.0
#: The folder that holds the ``slmctl`` package, so the child imports this very copy of it.
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
#: The child's program: drop the current directory from ``sys.path`` (a ``slmctl`` folder there must not
#: win), put this copy of slmctl first if ``sys.path`` lacks it (a source checkout), then :func:`main`.
_BOOTSTRAP = ("import sys\nif sys.path[:1] == ['']: del sys.path[0]\nroot = {root!r}\n"
              "if root not in sys.path: sys.path.insert(0, root)\n"
              "from slmctl.backends.probe_worker import main; sys.exit(main())")


def child_command(kind: str) -> list[str]:
    """The command line of the probe child for ``kind`` (``python -m slmctl.backends.probe_worker KIND``
    does the same by hand)."""
    return [sys.executable, "-c", _BOOTSTRAP.format(root=_PACKAGE_ROOT), kind]


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def _exit_reason(code: int) -> str:
    if code < 0:  # POSIX: killed by a signal
        try:
            name = signal.Signals(-code).name
        except ValueError:
            return f"probe crashed with signal {-code}"
        return f"probe crashed with signal {-code} ({name})"
    if code > 0xFFFF:  # Windows: an NTSTATUS such as 0xC0000005 (access violation)
        return f"probe crashed with exit code {code:#010x}"
    return f"probe exited with code {code}"


def run_probe(kind: str, *, timeout: float = PROBE_TIMEOUT,
              command: Sequence[str] | None = None) -> tuple[dict[str, Any] | None, str | None]:
    """Run the ``kind`` probe in a child: ``(build dict, None)``, or ``(None, error)``. Never raises."""
    argv = list(command) if command is not None else child_command(kind)
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return None, f"probe timed out after {timeout:g} s"
    except OSError as error:
        return None, f"probe could not start: {error}"
    stderr = proc.stderr.decode("utf-8", errors="replace")
    if proc.returncode != 0:
        detail = _last_line(stderr)
        return None, _exit_reason(proc.returncode) + (f": {detail}" if detail and proc.returncode > 0 else "")
    try:
        answer = json.loads(proc.stdout.decode("utf-8", errors="replace"))
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or answer.get("kind") != kind or not isinstance(answer.get("build"), dict):
        detail = _last_line(stderr)
        return None, "probe returned no result" + (f": {detail}" if detail else "")
    return answer["build"], None


# -- the builds as JSON ----------------------------------------------------------------------------
def build_to_dict(build: GgufBuild | OnnxBuild) -> dict[str, Any]:
    """A build as plain JSON types (what the probe child prints)."""
    data = {k: v for k, v in vars(build).items() if k != "status"}
    if isinstance(build, OnnxBuild):
        data["status"] = {name: {"usable": s.usable, "reason": s.reason} for name, s in build.status.items()}
    return data


def gguf_from_dict(data: dict[str, Any]) -> GgufBuild:
    return GgufBuild(bool(data["installed"]), data.get("version"), data.get("system_info"),
                     bool(data.get("gpu_offload")), list(data.get("backends") or []),
                     list(data.get("devices") or ["cpu"]), list(data.get("problems") or []), data.get("error"))


def onnx_from_dict(data: dict[str, Any]) -> OnnxBuild:
    status = {name: ProviderStatus(bool(s["usable"]), str(s["reason"]))
              for name, s in (data.get("status") or {}).items()}
    return OnnxBuild(bool(data["installed"]), data.get("genai_version"), data.get("onnxruntime_version"),
                     list(data.get("ort_providers") or []), status, data.get("error"))


def failed_gguf(error: str) -> GgufBuild:
    """The answer when the GGUF probe itself failed: not usable, and why."""
    return GgufBuild(False, problems=[f"gguf/probe: {error}"], error=error)


def failed_onnx(error: str) -> OnnxBuild:
    """The answer when the ONNX probe itself failed: every provider unusable, with the reason."""
    return OnnxBuild(False, status={name: ProviderStatus(False, error) for name in ONNX_PROVIDERS}, error=error)


def probe_gguf_in_child(timeout: float | None = None, command: Sequence[str] | None = None) -> GgufBuild:
    """:func:`~slmctl.backends.providers.probe_gguf` in a child process; never raises."""
    data, error = run_probe("gguf", timeout=PROBE_TIMEOUT if timeout is None else timeout, command=command)
    try:
        return failed_gguf(error) if error is not None or data is None else gguf_from_dict(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return failed_gguf(f"probe returned an unreadable result: {exc!r}")


def probe_onnx_in_child(timeout: float | None = None, command: Sequence[str] | None = None) -> OnnxBuild:
    """:func:`~slmctl.backends.providers.probe_onnx` in a child process; never raises."""
    data, error = run_probe("onnx", timeout=PROBE_TIMEOUT if timeout is None else timeout, command=command)
    try:
        return failed_onnx(error) if error is not None or data is None else onnx_from_dict(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return failed_onnx(f"probe returned an unreadable result: {exc!r}")


# -- the child -------------------------------------------------------------------------------------
def probe_here(kind: str) -> dict[str, Any]:
    """Run the ``kind`` probe in this process and return its JSON-ready dict (the child's work)."""
    return build_to_dict(probe_gguf() if kind == "gguf" else probe_onnx())


def main(argv: Sequence[str] | None = None) -> int:
    """Child entry point: ``python -m slmctl.backends.probe_worker gguf|onnx``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or args[0] not in KINDS:
        print(f"usage: python -m slmctl.backends.probe_worker {'|'.join(KINDS)}", file=sys.stderr)
        return 2
    import faulthandler

    faulthandler.enable()  # a native crash leaves a Python stack on stderr (the parent keeps it out of sight)
    sys.stdout.flush()
    result_fd = os.dup(1)
    os.dup2(2, 1)  # native libraries that print to stdout now print to stderr
    try:
        build = probe_here(args[0])
    finally:
        sys.stdout.flush()
    with os.fdopen(result_fd, "w", encoding="utf-8") as out:
        out.write(json.dumps({"kind": args[0], "build": build}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
