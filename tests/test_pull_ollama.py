"""``slmctl pull ollama://...`` end to end, against the loopback registry of :mod:`tests.registry_fixtures`.

The registry serves a tiny F16 GGUF model layer with template, system, params and license layers;
``SLMCTL_OLLAMA_REGISTRY`` points ``ollama://`` references at it (plain http, so ``--insecure``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli_runner import run_cli
from slmctl.modelfile import parse_modelfile
from slmctl.store import ModelStore
from tests.http_fixtures import Fault
from tests.pull_support import blob_name, loopback_env, stored, tmp_leftovers
from tests.registry_fixtures import RegistryServer

TEMPLATE = ("{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
            "<|im_start|>user\n{{ .Prompt }}<|im_end|>\n<|im_start|>assistant\n")
SYSTEM = "You are a tiny test model."
#: What slmctl keeps of the registry's params layer (REGISTRY_PARAMS adds Ollama-only options it cannot honour).
PARAMS = {"stop": ["<|im_end|>"], "temperature": 0.2, "num_ctx": 256}
REGISTRY_PARAMS = {**PARAMS, "mirostat": 0, "penalize_newline": False, "num_keep": 4}
LICENSE = "Tiny Test License 1.0\nDo what you like with it."


@pytest.fixture(scope="module")
def model_bytes(tiny_gguf: Path) -> bytes:
    return tiny_gguf.read_bytes()


@pytest.fixture
def registry() -> Iterator[RegistryServer]:
    with RegistryServer() as server:
        yield server


@pytest.fixture
def digests(registry: RegistryServer, model_bytes: bytes) -> dict[str, str]:
    """``library/tiny:1b`` published with every layer kind; kind -> digest."""
    return registry.publish("tiny", "1b", [
        ("model", model_bytes), ("template", TEMPLATE.encode()), ("system", SYSTEM.encode()),
        ("params", json.dumps(REGISTRY_PARAMS).encode()), ("license", LICENSE.encode())])


def _env(registry: RegistryServer, **extra: str) -> dict[str, str]:
    return loopback_env(SLMCTL_OLLAMA_REGISTRY=registry.base, **extra)


def _pull(home: Path, registry: RegistryServer, *args: str) -> tuple[int, str, str]:
    """``slmctl pull ARGS`` against ``registry``: (exit code, stdout, stderr)."""
    result = run_cli(home, "pull", *args, env=_env(registry))
    return result.code, result.stdout, result.stderr


def _nothing_stored(home: Path) -> None:
    assert stored(home) == ([], [])
    assert tmp_leftovers(home) == []


def test_pull_then_run_and_show_the_layers(slmctl_home: Path, registry: RegistryServer, digests: dict[str, str],
                                           model_bytes: bytes) -> None:
    code, out, err = _pull(slmctl_home, registry, "ollama://tiny:1b", "--insecure")
    assert code == 0, err
    assert "pulled tiny:1b (gguf" in out and "success" in err
    assert ("warning: the registry's parameters mirostat, num_keep, penalize_newline are not supported by slmctl "
            "and were left out") in err
    names, blobs = stored(slmctl_home)
    assert names == ["tiny:1b"]
    assert blob_name(digests["model"]) in blobs and len(blobs) == 5  # the model + 4 text layers

    shown = json.loads(run_cli(slmctl_home, "show", "tiny:1b", "--json").stdout)
    assert (shown["template"], shown["system"], shown["license"]) == (TEMPLATE, SYSTEM, LICENSE)
    assert shown["parameters"] == PARAMS  # the Ollama-only options are dropped: the model stays usable
    assert shown["files"] == [{"path": "model.gguf", "digest": digests["model"], "size": len(model_bytes)}]
    assert shown["source"] == {"type": "ollama", "ref": f"ollama://{registry.host}/library/tiny:1b",
                               "revision": digests["manifest"]}
    assert (shown["architecture"], shown["quantization"]) == ("llama", "F16")

    modelfile = run_cli(slmctl_home, "show", "tiny:1b", "--modelfile")
    assert modelfile.code == 0, modelfile.stderr
    parsed = parse_modelfile(modelfile.stdout)
    assert (parsed.from_, parsed.template, parsed.system, parsed.licenses) == ("tiny:1b", TEMPLATE, SYSTEM, [LICENSE])
    assert parsed.parameters == PARAMS

    # The reference maps to the stored model: no network needed, and the template and system layers
    # shape the prompt the model reads.
    ran = run_cli(slmctl_home, "--debug", "run", "ollama://tiny:1b", "hi", "--max-tokens", "2",
                  env=_env(registry, SLMCTL_OFFLINE="1"))
    assert ran.code == 0 and ran.stdout.strip(), ran.stderr
    assert f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n" \
        in ran.stderr


def test_plain_http_needs_insecure(slmctl_home: Path, registry: RegistryServer, digests: dict[str, str]) -> None:
    code, _, err = _pull(slmctl_home, registry, "ollama://tiny:1b")
    assert code == 2, err
    assert f"error: refusing plain http for the Ollama registry {registry.host}" in err
    assert "hint: registries with plain http need --insecure" in err
    # A registry named in the reference is tried over https only: the plain-http server cannot answer.
    code, _, err = _pull(slmctl_home, registry, f"ollama://{registry.host}/tiny:1b")
    assert code == 5 and "--insecure" in err, err
    assert registry.requests == []  # not one plain-http request was made
    _nothing_stored(slmctl_home)
    # With --insecure, https fails to connect and plain http is used.
    code, out, err = _pull(slmctl_home, registry, f"ollama://{registry.host}/tiny:1b", "--insecure")
    assert code == 0, err
    host_dir = registry.host.replace(":", "-")
    assert f"pulled {host_dir}/library/tiny:1b" in out
    assert stored(slmctl_home)[0] == [f"{host_dir}/library/tiny:1b"]


@pytest.mark.parametrize("kind", ["model", "template"])
def test_wrong_digest_exits_6_and_stores_nothing(slmctl_home: Path, registry: RegistryServer,
                                                 digests: dict[str, str], kind: str) -> None:
    registry.corrupt.add(digests[kind])
    code, _, err = _pull(slmctl_home, registry, "ollama://tiny:1b", "--insecure")
    assert code == 6, err
    assert "digest mismatch" in err if kind == "model" else f"does not match its digest {digests[kind]}" in err
    _nothing_stored(slmctl_home)


def test_unknown_model_or_tag_exits_3(slmctl_home: Path, registry: RegistryServer, digests: dict[str, str]) -> None:
    for ref in ("ollama://nothing:1b", "ollama://tiny:7b"):
        code, _, err = _pull(slmctl_home, registry, ref, "--insecure")
        assert code == 3 and "not found (HTTP 404" in err, (ref, err)
    _nothing_stored(slmctl_home)


def test_unauthorized_exits_5(slmctl_home: Path, registry: RegistryServer, digests: dict[str, str]) -> None:
    registry.token = "s3cret"
    code, _, err = _pull(slmctl_home, registry, "ollama://tiny:1b", "--insecure")
    assert code == 5, err
    assert "access denied (HTTP 401)" in err and "hint: the registry refused access to this model" in err
    # The manifest is readable but the model blob is refused: still nothing stored.
    registry.token = None
    registry.fail_next("blob", Fault(status=401), digest=digests["model"])
    code, _, err = _pull(slmctl_home, registry, "ollama://tiny:1b", "--insecure")
    assert code == 5 and "HTTP 401" in err, err
    assert "hint: the registry refused access to this model" in err and "HF_TOKEN" not in err
    assert stored(slmctl_home) == ([], [])


def test_server_error_then_success(slmctl_home: Path, registry: RegistryServer, digests: dict[str, str],
                                   model_bytes: bytes) -> None:
    registry.fail_next("blob", Fault(status=503), digest=digests["model"])
    code, _, err = _pull(slmctl_home, registry, "ollama://tiny:1b", "--insecure")
    assert code == 0, err
    assert registry.pending_faults == 0  # the 503 was answered, and the download retried
    assert registry.served[digests["model"]] - len(model_bytes) < 1024  # the file once (and a range probe)
    names, blobs = stored(slmctl_home)
    assert names == ["tiny:1b"] and blob_name(digests["model"]) in blobs


def test_manifest_server_error_is_retried(slmctl_home: Path, registry: RegistryServer, digests: dict[str, str]) -> None:
    registry.fail_next("manifest", Fault(status=503))
    code, _, err = _pull(slmctl_home, registry, "ollama://tiny:1b", "--insecure")
    assert code == 0, err
    assert registry.pending_faults == 0  # the manifest was asked again after the 503
    assert stored(slmctl_home)[0] == ["tiny:1b"]


def test_dropped_connection_resumes(slmctl_home: Path, registry: RegistryServer, digests: dict[str, str],
                                    model_bytes: bytes) -> None:
    registry.fail_next("blob", Fault(drop_after=100_000), digest=digests["model"])
    code, _, err = _pull(slmctl_home, registry, "ollama://tiny:1b", "--insecure")
    assert code == 0, err
    assert registry.pending_faults == 0
    # Resumed where it stopped: a restart would fetch the first 100 kB twice.
    assert registry.served[digests["model"]] < len(model_bytes) + 100_000
    names, blobs = stored(slmctl_home)
    assert names == ["tiny:1b"] and blob_name(digests["model"]) in blobs


def test_blobs_behind_a_cdn_redirect(slmctl_home: Path, registry: RegistryServer, digests: dict[str, str]) -> None:
    registry.redirect_blobs = True
    code, _, err = _pull(slmctl_home, registry, "ollama://tiny:1b", "--insecure")
    assert code == 0, err
    cdn = [r for r in registry.requests if r.path.startswith("/cdn/")]
    assert any(r.path.endswith(digests["model"]) for r in cdn) and any(r.path.endswith(digests["system"]) for r in cdn)
    assert json.loads(run_cli(slmctl_home, "show", "tiny:1b", "--json").stdout)["system"] == SYSTEM


def test_json_events_and_second_pull_is_a_noop(slmctl_home: Path, registry: RegistryServer,
                                               digests: dict[str, str], model_bytes: bytes) -> None:
    code, out, err = _pull(slmctl_home, registry, "ollama://tiny:1b", "--insecure", "--json")
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    statuses = [e["status"] for e in events]
    assert statuses[:2] == ["pulling manifest", "resolved"]
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    assert events[1]["name"] == "tiny:1b" and events[1]["source"] == f"ollama://{registry.host}/library/tiny:1b"
    progress = [e for e in events if "completed" in e]
    assert progress and {e["status"] for e in progress} == {f"pulling {digests['model'][7:19]}"}
    expected = (digests["model"], "model.gguf", len(model_bytes))
    assert {(e["digest"], e["file"], e["total"]) for e in progress} == {expected}
    assert progress[0]["completed"] == 0 and progress[-1]["completed"] == len(model_bytes)
    served, before = registry.served[digests["model"]], stored(slmctl_home)
    digest = ModelStore(slmctl_home / "models").list()[0].digest()

    code, out, err = _pull(slmctl_home, registry, "ollama://tiny:1b", "--insecure")
    assert code == 0, err
    assert out.startswith("pulled tiny:1b (gguf, ") and out.rstrip().endswith(f", {digest[7:19]})")
    assert registry.served[digests["model"]] == served  # the model blob is not fetched again
    assert stored(slmctl_home) == before
    assert [m.digest() for m in ModelStore(slmctl_home / "models").list()] == [digest]
