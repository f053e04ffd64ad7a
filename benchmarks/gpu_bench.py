"""The GPU measurement of the batching issue, in two halves: ``prepare`` here (PyPI reachable), ``run`` on a GPU
machine that reaches nothing (the device is lent for minutes: one build, one measurement, results in a folder).

``prepare`` writes ``benchmarks/.gpu-carry/`` (git-ignored; about 25 MB, within what a device call carries):

* ``llama-cpp-python-<version>-src.tar.gz``: the pinned sdist (76.6 MB) without its ``.git``, without llama.cpp's
  models, docs, tests, benches and examples, and without the web UI's test fixtures (about 10 MB);
* ``wheels/``: slmctl's runtime dependencies at the versions installed here, for CPython 3.11 to 3.13 on
  manylinux x86_64 - all but llama-cpp-python (built there), the ONNX stack (not measured there) and numpy
  (preinstalled there, and large).

``run`` (on the GPU machine, from the repository root) installs those wheels into a folder of its own, builds
llama.cpp once from the sdist's sources with CUDA (``-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90`` unless
``--cpu``): the shared ``libllama`` that llama-cpp-python's Python code loads (``LLAMA_CPP_LIB_PATH``) and
``llama-server`` from the very same build, then measures with slmctl's own scripts:

1. ``slmctl doctor --json`` (what slmctl sees of the GPU);
2. ``bench_streams.py --gpu --clients 1,4,8,16``: ``slmctl serve --parallel N`` vs ``llama-server -np N``, every
   layer on the GPU on both sides;
3. ``slmctl bench --device gpu --concurrency 1,4,8 --json`` on the same model (``peak_gpu_memory`` from NVML).

Everything lands in ``--out`` (``$OUT`` on the device): ``run.log`` with each step's time, ``build.log``,
``nvidia-smi.txt``, ``doctor.json``, ``streams.txt``/``streams.json``, ``bench.json``. ``--cpu`` rehearses the
same steps without CUDA on any machine (the build then takes minutes on 2 cores).

    .venv/bin/python benchmarks/gpu_bench.py prepare
    python3 benchmarks/gpu_bench.py run --out "$OUT"            # on the GPU machine
    .venv/bin/python benchmarks/gpu_bench.py run --cpu --out /tmp/gpu-rehearsal
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _llama_server import LLAMA_CPP_PYTHON_VERSION  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CARRY = REPO / "benchmarks" / ".gpu-carry"
PYTHONS = ("3.11", "3.12", "3.13")  # slmctl's pins (typer 0.29) need 3.11
#: Not carried: built on the GPU machine, not measured there, or preinstalled there (and large).
LEFT_OUT = {"llama-cpp-python", "onnxruntime-genai", "onnxruntime", "onnx", "tokenizers", "numpy", "slmctl",
            "huggingface-hub", "hf-xet", "protobuf", "ml-dtypes"}
#: Parts of the sdist a build of llama.cpp's library and server does not read.
TRIMMED = ("/.git/", "/vendor/llama.cpp/models/", "/vendor/llama.cpp/tests/", "/vendor/llama.cpp/benches/",
           "/tools/ui/tests/", "/examples/", "/docs/")  # the last two: every examples/ and docs/ folder
CMAKE_FLAGS = ["-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=ON", "-DLLAMA_BUILD_SERVER=ON",
               "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_CURL=OFF",
               "-DLLAMA_OPENSSL=OFF"]
CUDA_FLAGS = ["-DGGML_CUDA=on", "-DCMAKE_CUDA_ARCHITECTURES=90"]


def _name(dist: str) -> str:
    return dist.lower().replace("_", "-")


def runtime_closure() -> dict[str, str]:
    """name -> installed version of every package slmctl and llama-cpp-python's Python code need at run time
    (markers of this interpreter), but :data:`LEFT_OUT` and what only they need."""
    from packaging.requirements import Requirement

    found: dict[str, str] = {}
    todo = ["slmctl", "llama-cpp-python"]
    while todo:
        dist = importlib.metadata.distribution(todo.pop())
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue
            name = _name(requirement.name)
            if name in found or name in LEFT_OUT:
                continue
            found[name] = importlib.metadata.version(name)
            todo.append(name)
    return found


def _trim_filter(member: tarfile.TarInfo) -> bool:
    path = "/" + member.name.split("/", 1)[-1] + ("/" if member.isdir() else "")
    return not any(part in path for part in TRIMMED) and not member.name.endswith(".mp4")


def prepare(carry: Path) -> None:
    carry.mkdir(parents=True, exist_ok=True)
    source = carry / f"llama-cpp-python-{LLAMA_CPP_PYTHON_VERSION}-src.tar.gz"
    if not source.exists():
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                            f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}", "-d", tmp], check=True)
            sdist = next(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
            partial = source.with_suffix(".part")
            with tarfile.open(sdist) as full, tarfile.open(partial, "w:gz") as trimmed:
                for member in full:
                    if _trim_filter(member):
                        trimmed.addfile(member, full.extractfile(member) if member.isfile() else None)
            os.replace(partial, source)
    wheels = carry / "wheels"
    wheels.mkdir(exist_ok=True)
    pins = [f"{name}=={version}" for name, version in sorted(runtime_closure().items())]
    for python in PYTHONS:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:",
                        "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_28_x86_64",
                        "--python-version", python, "--implementation", "cp", "-d", str(wheels), *pins], check=True)
    (carry / "requirements.txt").write_text("\n".join(pins) + "\n")
    size = sum(f.stat().st_size for f in carry.rglob("*") if f.is_file())
    print(f"{carry}: {size / 2**20:.1f} MiB ({len(pins)} packages for CPython {', '.join(PYTHONS)}, "
          f"{source.name})")


class Steps:
    """Runs the steps of ``run``, each logged with its time in ``out/run.log`` (with the steps' stderr, and
    their stdout unless it goes to a file of its own, or both there with ``merge``); a failed step is
    logged and the next ones still run where they can."""

    def __init__(self, out: Path) -> None:
        self.out, self.start = out, time.monotonic()
        self.log = open(out / "run.log", "a", buffering=1)

    def say(self, text: str) -> None:
        line = f"[{time.monotonic() - self.start:6.1f} s] {text}"
        print(line, flush=True)
        self.log.write(line + "\n")

    def run(self, title: str, cmd: list[str], *, env: dict[str, str] | None = None, output: Path | None = None,
            timeout: float = 600, merge: bool = False) -> bool:
        self.say(f"{title}: {' '.join(cmd)}")
        began = time.monotonic()
        with open(output or self.out / "run.log", "a") as sink, open(self.out / "run.log", "a") as log:
            try:  # stdout to ``output`` (a JSON document stays one), stderr with the log
                errors = subprocess.STDOUT if merge or output is None else log
                code = subprocess.run(cmd, env=env, stdout=sink, stderr=errors, timeout=timeout, cwd=REPO).returncode
            except subprocess.TimeoutExpired:
                code = "timeout"
        self.say(f"{title}: {'ok' if code == 0 else f'FAILED ({code})'} in {time.monotonic() - began:.1f} s")
        return code == 0


def run(out: Path, work: Path, carry: Path, *, cpu: bool, clients: str, jobs: int) -> int:
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    steps = Steps(out)
    steps.say(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, {'CPU rehearsal' if cpu else 'CUDA'}")
    if shutil.which("nvidia-smi"):
        steps.run("nvidia-smi", ["nvidia-smi"], output=out / "nvidia-smi.txt", timeout=30)
    deps = work / "deps"
    if not (deps / ".done").exists():
        pins = (carry / "requirements.txt").read_text().split()
        if not steps.run("dependencies", [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                                          "--find-links", str(carry / "wheels"), "--target", str(deps), *pins]):
            return 1
        (deps / ".done").touch()
    source = work / "src"
    if not source.exists():
        with tarfile.open(carry / f"llama-cpp-python-{LLAMA_CPP_PYTHON_VERSION}-src.tar.gz") as tar:
            try:
                tar.extractall(work / "src.part", filter="data")
            except TypeError:  # a Python without extraction filters (3.10.11 and older): our own archive
                tar.extractall(work / "src.part")
        os.replace(next((work / "src.part").glob("llama_cpp_python-*")), source)
    build = work / ("build-cpu" if cpu else "build-cuda")
    llama_cpp = source / "vendor" / "llama.cpp"
    flags = CMAKE_FLAGS + ([] if cpu else CUDA_FLAGS)
    if not cpu and not shutil.which("nvcc") and Path("/usr/local/cuda/bin/nvcc").exists():
        flags.append("-DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc")  # the toolkit, off PATH
    if not (build / "bin" / "llama-server").exists():
        if not (steps.run("configure", ["cmake", "-S", str(llama_cpp), "-B", str(build), *flags],
                          output=out / "build.log", merge=True)
                and steps.run("build", ["cmake", "--build", str(build), "-j", str(jobs), "--target", "llama",
                                        "llama-server"], output=out / "build.log", merge=True, timeout=1800)):
            return 1
    lib = build / "bin"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(source), str(deps)]),
           "LLAMA_CPP_LIB_PATH": str(lib), "LD_LIBRARY_PATH": os.pathsep.join(
               [str(lib), os.environ.get("LD_LIBRARY_PATH", "")]).rstrip(os.pathsep),
           "SLMCTL_HOME": str(work / "home")}
    steps.run("offload", [sys.executable, "-c", "import llama_cpp; print('llama.cpp GPU offload:', "
                          "bool(llama_cpp.llama_supports_gpu_offload()))"], env=env)
    steps.run("doctor", [sys.executable, "-m", "slmctl", "doctor", "--json"], env=env, output=out / "doctor.json",
              timeout=120)
    streams = [sys.executable, "benchmarks/bench_streams.py", "--llama-server", str(lib / "llama-server"),
               "--clients", clients, "--output", str(out / "streams.json")] + ([] if cpu else ["--gpu"])
    steps.run("streams", streams, env=env, output=out / "streams.txt", timeout=900)
    model = REPO / "benchmarks" / ".cache" / "bench-Q4_K_M.gguf"  # bench_streams built it
    device = "cpu" if cpu else "gpu"
    if steps.run("import", [sys.executable, "-m", "slmctl", "import", str(model), "--name", "bench"], env=env):
        steps.run("bench", [sys.executable, "-m", "slmctl", "bench", "bench", "--device", device, "--concurrency",
                            "1,4,8", "--prompt-tokens", "64", "--gen-tokens", "128", "--repetitions", "1",
                            "--warmup", "1", "--json"], env=env, output=out / "bench.json", timeout=600)
    steps.say("done")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("prepare", help="fill benchmarks/.gpu-carry (needs PyPI)")
    ran = sub.add_parser("run", help="build and measure (on the GPU machine)")
    ran.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-out")))
    ran.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "slmctl-gpu")
    ran.add_argument("--cpu", action="store_true", help="rehearse without CUDA")
    ran.add_argument("--clients", default="1,4,8,16", help="stream counts for bench_streams.py")
    ran.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel compile jobs")
    args = parser.parse_args()
    if args.what == "prepare":
        prepare(CARRY)
    else:
        sys.exit(run(args.out.resolve(), args.work.resolve(), CARRY, cpu=args.cpu, clients=args.clients,
                     jobs=args.jobs))


if __name__ == "__main__":
    main()
