"""Find or build llama.cpp's own ``llama-server`` (the speed anchor of ``bench_serve.py``) from the llama.cpp
sources vendored in the llama-cpp-python sdist of the version slmctl pins, cached outside the repository."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path


def _pinned_llama_cpp_python(default: str = "0.3.36") -> str:
    """The llama-cpp-python version pyproject.toml pins: llama-server is built from the same llama.cpp."""
    try:
        text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    except OSError:
        return default
    for line in text.splitlines():
        if (spec := line.strip().strip('",')).startswith("llama-cpp-python=="):
            return spec.split("==", 1)[1]
    return default


LLAMA_CPP_PYTHON_VERSION = _pinned_llama_cpp_python()
DEFAULT_SERVER_DIR = Path.home() / ".cache" / "slmctl-bench" / f"llama-server-{LLAMA_CPP_PYTHON_VERSION}"
CMAKE_FLAGS = ("-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_BUILD_TOOLS=ON",
               "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF",
               "-DBUILD_SHARED_LIBS=OFF", "-DGGML_NATIVE=ON")


def build_llama_server(dest: Path, version: str = LLAMA_CPP_PYTHON_VERSION) -> Path:
    """``dest/bin/llama-server``, built once from the llama.cpp vendored in the llama-cpp-python sdist."""
    binary = dest / "bin" / "llama-server"
    if binary.is_file() and os.access(binary, os.X_OK):
        return binary
    if not shutil.which("cmake"):
        sys.exit("building llama-server needs cmake and a C++ compiler (apt-get install cmake g++); "
                 "or pass --llama-server PATH")
    dest.parent.mkdir(parents=True, exist_ok=True)
    log_path = dest.parent / f"{dest.name}.build.log"
    print(f"building llama-server from llama-cpp-python {version}'s llama.cpp into {dest} "
          f"(several minutes, done once; log: {log_path}) ...", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="llama-server-build-") as work_name, open(log_path, "w") as log:
        work = Path(work_name)

        def step(*cmd: str) -> None:
            log.write(f"$ {' '.join(cmd)}\n")
            log.flush()
            if subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode != 0:
                log.close()
                tail = "".join(log_path.read_text(errors="replace").splitlines(keepends=True)[-30:])
                sys.exit(f"building llama-server failed at: {' '.join(cmd)}\n{tail}")

        step(sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
             f"llama-cpp-python=={version}", "-d", str(work))
        with tarfile.open(next(work.glob("llama_cpp_python-*.tar.gz"))) as tar:
            tar.extractall(work, filter="data")
        src = next(work.glob("llama_cpp_python-*/vendor/llama.cpp"))
        step("cmake", "-S", str(src), "-B", str(work / "build"), *CMAKE_FLAGS)
        step("cmake", "--build", str(work / "build"), "-j", str(os.cpu_count() or 1), "--target", "llama-server")
        staged = Path(tempfile.mkdtemp(prefix=f".{dest.name}.part-", dir=dest.parent))
        staged.chmod(0o755)
        (staged / "bin").mkdir()
        shutil.copy2(work / "build" / "bin" / "llama-server", staged / "bin" / "llama-server")
        (staged / "BUILD").write_text(f"llama-cpp-python {version} sdist: vendor/llama.cpp\n"
                                      f"cmake {' '.join(CMAKE_FLAGS)}\n")
        if dest.exists() and not binary.exists():
            shutil.rmtree(dest)  # a broken earlier attempt
        try:
            os.replace(staged, dest)
        except OSError:
            shutil.rmtree(staged, ignore_errors=True)
            if not binary.is_file():  # else another run built it meanwhile
                raise
    return binary


def llama_server_version(binary: Path) -> str:
    proc = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30)
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("version")]
    return lines[0].split(":", 1)[1].strip() if lines else "unknown"
