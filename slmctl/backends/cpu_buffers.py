"""Whether llama.cpp's extra CPU buffer types (AMX tiles, repacked weights) run on this machine.

llama.cpp puts quantized weights in "extra" CPU buffers when the CPU advertises AMX. On some virtual
machines the CPU advertises AMX that the hypervisor does not really provide, and the first matrix
product of any quantized model dies of SIGILL (llama.cpp issues #28328 and #28756, "AMX is not ready to
be used!"): ``slmctl run`` would crash on every Q4/Q8 model. Only a real attempt tells, so on a CPU
that advertises AMX, :func:`extra_buffers_work` decodes a tiny Q8_0 model once in a child process; when
the child dies of SIGILL, models load with extra buffers off (:func:`without_extra_buffers`), slower on
real AMX hardware but correct everywhere. The answer is kept per machine (CPU model, its AMX flags, the
llama-cpp-python version) in the user's cache folder, so the probe runs once, not at every load.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CPUINFO = Path("/proc/cpuinfo")
CACHE_FILE = "llama-cpu-buffers.json"
PROBE_TIMEOUT = 120.0
_PATCH_LOCK = threading.Lock()


def amx_flags(cpuinfo: Path = CPUINFO) -> tuple[str, ...]:
    """The AMX flags the CPU advertises (Linux x86; empty elsewhere)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ()
    for line in text.splitlines():
        if line.startswith("flags"):
            return tuple(sorted(flag for flag in line.partition(":")[2].split() if flag.startswith("amx")))
    return ()


def machine_key(cpuinfo: Path = CPUINFO) -> str:
    """What the answer depends on: the CPU model, its AMX flags and the llama-cpp-python version."""
    from importlib.metadata import PackageNotFoundError, version

    model = ""
    try:
        model = next((line.partition(":")[2].strip() for line in cpuinfo.read_text(errors="replace").splitlines()
                      if line.startswith("model name")), "")
    except OSError:
        pass
    try:
        llama = version("llama-cpp-python")
    except PackageNotFoundError:
        llama = "?"
    return f"{model}|{','.join(amx_flags(cpuinfo))}|llama-cpp-python {llama}"


def extra_buffers_work(cache_dir: Path | None, *, cpuinfo: Path = CPUINFO,
                       probe: Callable[[], bool | None] | None = None) -> bool:
    """True unless this CPU advertises AMX and a tiny quantized model crashes llama.cpp with it."""
    if not amx_flags(cpuinfo):
        return True
    key = machine_key(cpuinfo)
    cache = cache_dir / CACHE_FILE if cache_dir else None
    known = _read_cache(cache).get(key) if cache else None
    if isinstance(known, bool):
        return known
    works = (probe or probe_in_child)()
    if works is None:  # the probe failed for another reason: assume they work, ask again next time
        return True
    if not works:
        log.warning("llama.cpp's AMX kernels crash on this CPU (SIGILL); GGUF models load without "
                    "extra CPU buffers")
    if cache:
        _write_cache(cache, {**_read_cache(cache), key: works})
    return works


@lru_cache(maxsize=1)
def extra_buffers_work_here() -> bool:
    """:func:`extra_buffers_work` for this process, cached in the user's cache folder."""
    from platformdirs import user_cache_dir

    return extra_buffers_work(Path(user_cache_dir("slmctl")))


def probe_in_child() -> bool | None:
    """Decode a tiny Q8_0 model in a child: True if it works, False if it died of SIGILL, else None."""
    with tempfile.TemporaryDirectory(prefix="slmctl-cpu-probe-") as folder:
        try:
            child = subprocess.run([sys.executable, "-m", "slmctl.backends.cpu_buffers", folder],
                                   capture_output=True, timeout=PROBE_TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.debug("CPU buffer probe failed: %s", exc)
            return None
    if child.returncode == 0:
        return True
    if child.returncode == -signal.SIGILL:
        return False
    log.debug("CPU buffer probe exited with %s: %s", child.returncode, child.stderr[-500:])
    return None


@contextmanager
def without_extra_buffers() -> Iterator[None]:
    """Models constructed inside load with ``use_extra_bufts`` off. llama-cpp-python's ``Llama`` takes
    no such argument but builds its parameters from the low-level ``llama_model_default_params`` at
    construction, so that function is wrapped for the duration (under a lock: one load at a time)."""
    import llama_cpp.llama_cpp as low_level

    with _PATCH_LOCK:
        default = low_level.llama_model_default_params

        def params() -> Any:
            value = default()
            value.use_extra_bufts = False
            return value

        low_level.llama_model_default_params = params
        try:
            yield
        finally:
            low_level.llama_model_default_params = default


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(path: Path, data: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:  # a cache that cannot be written only costs another probe
        log.debug("cannot write %s: %s", path, exc)


def _probe(folder: Path) -> None:
    """The child's work: a tiny Q8_0 model (quantized here), loaded and asked for two tokens."""
    import llama_cpp

    from slmctl.testing.tiny_gguf import TinyGGUFSpec, write_bench_gguf

    path = write_bench_gguf(folder / "probe-q8_0.gguf", "Q8_0", spec=TinyGGUFSpec())
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=64, n_threads=1, verbose=False)
    llm.create_completion("hello", max_tokens=2)
    llm.close()


if __name__ == "__main__":
    _probe(Path(sys.argv[1]))
