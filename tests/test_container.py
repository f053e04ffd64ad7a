"""The container images: ``Dockerfile``, ``Dockerfile.cuda`` and ``deploy/build-image.sh``.

No Docker daemon or registry is needed for the first tests: they parse both Dockerfiles and the
script and check that they describe the same image (a non-root numeric user, ``SLMCTL_HOME`` on the
volume, the port ``EXPOSE``d is the one ``CMD`` serves on, a HEALTHCHECK on a real, key-free route, the
OCI labels), and run the healthcheck script against a local HTTP server.

``test_build_image_smoke`` (marker ``container``) builds the CPU image for real with
``deploy/build-image.sh --smoke`` (mmdebstrap + buildah, then podman: health, a generation, SIGTERM)
and compares the built image's configuration with the Dockerfile. It needs root, ``mmdebstrap``,
``buildah`` and ``podman``, and skips naming what is missing; ``pytest -m container`` runs only it.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "deploy" / "build-image.sh"
HEALTHCHECK = ROOT / "deploy" / "healthcheck.py"
DOCKERFILES = ("Dockerfile", "Dockerfile.cuda")
OCI_LABELS = ("title", "description", "source", "licenses", "version")


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        result.append((word.upper(), rest.strip()))
    assert not pending, f"{path.name} ends inside a continued line"
    return result


def _final_stage(path: Path) -> dict[str, list[str]]:
    """The instructions of the last stage (the image that ships), keyed by instruction."""
    instructions = _instructions(path)
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    stage: dict[str, list[str]] = {}
    for word, rest in instructions[last_from:]:
        stage.setdefault(word, []).append(rest)
    return stage


def _pairs(text: str) -> dict[str, str]:
    """KEY=VALUE pairs of an ENV or LABEL instruction (values may be double-quoted)."""
    return {key: value for key, value in (item.split("=", 1) for item in shlex.split(text))}


def _args(path: Path) -> dict[str, str]:
    """Default values of every ARG in the file."""
    return {k: v for word, rest in _instructions(path) if word == "ARG" and "=" in rest
            for k, v in _pairs(rest).items()}


def _script_settings() -> dict[str, str]:
    """The ``NAME=value`` settings at the top of build-image.sh (the image's user, paths, port ...)."""
    settings = {}
    for line in SCRIPT.read_text().splitlines():
        match = re.fullmatch(r"([A-Z_]+)=(.*)", line)
        if match:
            value = match.group(2)
            settings[match.group(1)] = shlex.split(value)[0] if value else ""
    return settings


def _script_labels() -> dict[str, str]:
    """The ``--label KEY=VALUE`` arguments build-image.sh gives ``buildah config``."""
    text = SCRIPT.read_text()
    return {key: value for key, value in re.findall(r'--label "([^=]+)=([^"]*)"', text)}


def _version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def _healthcheck_default_url() -> str:
    match = re.search(r'^DEFAULT_URL = "([^"]+)"', HEALTHCHECK.read_text(), re.MULTILINE)
    assert match, "deploy/healthcheck.py has no DEFAULT_URL"
    return match.group(1)


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_matches_build_script(name: str) -> None:
    """User, paths, port, entrypoint, healthcheck and labels: the same in the Dockerfile and the script."""
    settings = _script_settings()
    stage = _final_stage(ROOT / name)
    env = {k: v for text in stage["ENV"] for k, v in _pairs(text).items()}
    labels = {k: v for text in stage["LABEL"] for k, v in _pairs(text).items()}

    # A non-root user, numeric so that Kubernetes' runAsNonRoot can check it, created with that uid.
    (user,) = stage["USER"]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid == uid, f"{name}: USER {user} is not a numeric non-root user"
    assert uid == settings["IMAGE_UID"]
    assert any(f"--uid {uid}" in run and settings["IMAGE_USER"] in run for run in stage["RUN"])

    # The store on the volume, owned by that user.
    assert env["SLMCTL_HOME"] == settings["DATA_DIR"] == "/data"
    assert json.loads(stage["VOLUME"][0]) == [settings["DATA_DIR"]]
    assert any(f"chown {uid}:{uid} {settings['DATA_DIR']}" in run for run in stage["RUN"])
    assert env["PATH"].startswith(f"{settings['VENV_DIR']}/bin:")
    assert stage["COPY"][0].split() == ["--from=build", settings["VENV_DIR"], settings["VENV_DIR"]]

    # Entrypoint and command; the port EXPOSEd is the one CMD serves on.
    entrypoint = json.loads(stage["ENTRYPOINT"][0])
    cmd = json.loads(stage["CMD"][0])
    assert entrypoint == json.loads(settings["ENTRYPOINT"]) == ["slmctl"]
    assert cmd == json.loads(settings["CMD"])
    assert cmd[:2] == ["serve", "--host"] and "--no-auth" not in cmd, "the default CMD keeps auth on"
    host, _, port = cmd[2].rpartition(":")
    assert host == "0.0.0.0"
    assert stage["EXPOSE"] == [port] == [settings["PORT"]]

    # HEALTHCHECK: the script the image copies in, run by the venv's Python (no curl in slim images).
    (healthcheck,) = stage["HEALTHCHECK"]
    options, _, command = healthcheck.partition("CMD ")
    assert "--interval=" in options and "--timeout=" in options
    assert json.loads(command) == [f"{settings['VENV_DIR']}/bin/python", settings["HEALTHCHECK_BIN"]]
    assert f"deploy/healthcheck.py {settings['HEALTHCHECK_BIN']}" in stage["COPY"]

    # OCI labels: all present, and those that do not describe the build equal to the script's.
    script_labels = _script_labels()
    for key in OCI_LABELS:
        full = f"org.opencontainers.image.{key}"
        assert labels.get(full), f"{name} lacks the label {full}"
        assert full in script_labels, f"build-image.sh lacks the label {full}"
    for key in ("title", "source", "licenses"):
        full = f"org.opencontainers.image.{key}"
        assert labels[full] == script_labels[full].replace("$SOURCE_URL", settings["SOURCE_URL"])
    assert labels["org.opencontainers.image.version"] == "${VERSION}"
    assert _args(ROOT / name)["VERSION"] == _version()


def test_healthcheck_probes_a_public_route_on_the_served_port() -> None:
    """The probe's URL is a real route of the server that needs no API key, on the port CMD serves."""
    from slmctl.server.access import ROUTES, Need
    from slmctl.server.health import router

    url = urlsplit(_healthcheck_default_url())
    settings = _script_settings()
    assert url.path == settings["HEALTH_PATH"]
    assert str(url.port) == settings["PORT"]
    assert url.hostname == "127.0.0.1"
    assert url.path in {route.path for route in router.routes}
    assert (url.path, Need.PUBLIC) in {(path, need) for path, need, _ in ROUTES}


def test_cuda_dockerfile_uses_the_pinned_onnxruntime_genai_version() -> None:
    """Dockerfile.cuda swaps onnxruntime-genai==X for onnxruntime-genai-cuda==X, and builds llama.cpp with CUDA."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(dep.startswith("onnxruntime-genai==") for dep in deps)
    text = (ROOT / "Dockerfile.cuda").read_text()
    assert "replace('onnxruntime-genai==', 'onnxruntime-genai-cuda==')" in text
    assert "-DGGML_CUDA=on" in _args(ROOT / "Dockerfile.cuda")["CMAKE_ARGS"]
    froms = [rest for word, rest in _instructions(ROOT / "Dockerfile.cuda") if word == "FROM"]
    assert all(rest.startswith("nvidia/cuda:") for rest in froms)


def test_dockerignore_keeps_what_the_dockerfiles_copy() -> None:
    """The build context keeps every path COPYed from it, and leaves out the venv, git and the tests."""
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    for name in DOCKERFILES:
        for word, rest in _instructions(ROOT / name):
            if word == "COPY" and not rest.startswith("--from"):
                for source in rest.split()[:-1]:
                    top = source.split("/")[0]
                    assert top not in ignored and source not in ignored, f"{name} copies {source}, .dockerignore drops it"
    for needed_out in (".venv", ".git", "tests"):
        assert needed_out in ignored


def test_build_script_syntax_and_help() -> None:
    assert os.access(SCRIPT, os.X_OK), "deploy/build-image.sh is not executable"
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    done = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True, check=True)
    for option in ("--smoke", "--image", "--tag", "--cache", "--push"):
        assert option in done.stdout
    bad = subprocess.run(["bash", str(SCRIPT), "--bogus"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown option" in bad.stderr


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        status = 200 if self.path == "/api/health" else 404
        body = b'{"status":"ok"}'
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _probe(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(HEALTHCHECK)], capture_output=True, text=True, timeout=30,
                          env={**os.environ, "SLMCTL_HEALTHCHECK_URL": url})


def test_healthcheck_script_exit_codes() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        healthy = _probe(f"http://127.0.0.1:{port}/api/health")
        assert healthy.returncode == 0 and "healthy" in healthy.stdout
        assert _probe(f"http://127.0.0.1:{port}/nowhere").returncode == 1
    finally:
        server.shutdown()
        server.server_close()
    refused = _probe(f"http://127.0.0.1:{port}/api/health")
    assert refused.returncode == 1 and "unhealthy" in refused.stderr


def _container_tools_missing() -> str | None:
    missing = [tool for tool in ("mmdebstrap", "buildah", "podman") if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not on PATH (apt-get install podman buildah mmdebstrap runc)"
    if os.geteuid() != 0:
        return "deploy/build-image.sh needs root (mmdebstrap root mode, buildah/podman system storage)"
    return None


@pytest.mark.container
@pytest.mark.slow
def test_build_image_smoke() -> None:
    """Build the CPU image for real and run it: health, a generation with an API key, SIGTERM."""
    reason = _container_tools_missing()
    if reason:
        pytest.skip(reason)
    image, tag = "localhost/slmctl-pytest", "smoke"
    try:
        done = subprocess.run(["bash", str(SCRIPT), "--smoke", "--image", image, "--tag", tag],
                              capture_output=True, text=True, timeout=3600)
        print(done.stdout[-6000:])
        assert done.returncode == 0, f"build-image.sh failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        assert "response:" in done.stdout and "eval_count: 4" in done.stdout
        assert "podman healthcheck run: healthy" in done.stdout

        # The image built is the image the Dockerfile describes.
        inspect = subprocess.run(["podman", "image", "inspect", f"{image}:{tag}"],
                                 capture_output=True, text=True, check=True)
        (image_info,) = json.loads(inspect.stdout)
        config = image_info["Config"]
        stage = _final_stage(ROOT / "Dockerfile")
        assert config["User"] == stage["USER"][0]
        assert config["Entrypoint"] == json.loads(stage["ENTRYPOINT"][0])
        assert config["Cmd"] == json.loads(stage["CMD"][0])
        assert list(config["ExposedPorts"]) == [f"{stage['EXPOSE'][0]}/tcp"]
        assert config["StopSignal"] == stage["STOPSIGNAL"][0]
        assert config["WorkingDir"] == stage["WORKDIR"][0]
        assert list(config["Volumes"]) == json.loads(stage["VOLUME"][0])
        assert "SLMCTL_HOME=/data" in config["Env"]
        healthcheck = json.loads(stage["HEALTHCHECK"][0].partition("CMD ")[2])
        assert image_info["Healthcheck"]["Test"] == ["CMD", *healthcheck]  # podman lists it beside Config
        labels = {k: v for text in stage["LABEL"] for k, v in _pairs(text).items()}
        for key in ("title", "source", "licenses"):
            full = f"org.opencontainers.image.{key}"
            assert config["Labels"][full] == labels[full]
        assert config["Labels"]["org.opencontainers.image.version"] == _version()
    finally:
        subprocess.run(["podman", "rmi", "-f", f"{image}:{tag}"], capture_output=True)
