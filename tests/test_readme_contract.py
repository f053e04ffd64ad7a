"""README.md as an executable contract: every command of its ````sh`` blocks runs, offline, as written.

The commands run in README order through ``bash`` in one work folder, over one ``SLMCTL_HOME``, the
way a reader who copies them would run them, with the commands the README gives inline in prose for
making tiny models (:data:`INLINE`: the offline quick start that makes ``tiny``, and ``tiny-onnx``).
Three things stand in for the internet and the reader's own files, none of which edits a command:

* **the reader's files** (:data:`FILES`): the model files and folders the examples name
  (``./model.gguf``, ``./all-MiniLM-L6-v2-onnx`` ...) are tiny models written by
  ``python -m slmctl.testing``, ``report.txt``/``doc.txt`` are short texts, ``modelfiles/`` is the
  repository's; the models the benchmark examples use without saying where they come from (``phi3``,
  ``phi3-onnx``) are imported under those names (:data:`STORED`);
* **the network**: ``HF_ENDPOINT`` and ``SLMCTL_OLLAMA_REGISTRY`` point at loopback mirrors serving a
  tiny model (:data:`MIRRORED`) at every source of the catalog (the README's own offline route: "pull
  from a mirror"), and a dead proxy with ``NO_PROXY=127.0.0.1,localhost`` fails any other connection;
* **the server**: ``SLMCTL_HOST`` is a free loopback port, so the README's ``slmctl serve`` listens
  there (in the background, until the last command) and ``ps``/``stop`` talk to it.

Then :data:`SUBSTITUTIONS`, a short table of mechanical rewrites, each of which must still apply.
:data:`CONTRACT` lists every command (keyed by :func:`readme_commands.key`) with the exit code the
README's table gives and, where the README states an outcome, a check of it; or a :class:`Skip` with
the reason it cannot run offline; or, for the cluster and container commands of "Deploy", an
:class:`Elsewhere` naming the test that checks what they do (the chart they install, the image script).
A command missing from the table, or an entry whose command left the
README, fails :func:`test_every_readme_command_is_in_the_contract`: a new example is covered or the
test fails. The ````python`` blocks of a section (the OpenAI SDK) run as one session against the server.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from readme_commands import (Command, Elsewhere, Expect, Ran, Skip, World, execute, offline_world, readme_items, serve,
                             stop, verdict)
from slmctl.testing.__main__ import main as write_model

SDK_SECTION = "Use it from the OpenAI SDK"
#: Commands given inline in prose that the contract runs too: the offline quick start and the tiny models.
INLINE = (".venv/bin/python -m slmctl.testing", "python -m slmctl.testing")

#: The reader's own files the examples name: path -> ``python -m slmctl.testing`` arguments (None: text).
FILES: dict[str, list[str] | None] = {
    "qwen2.5-0.5b-instruct-q4_k_m.gguf": [],
    "model.gguf": [],
    "Phi-4-mini-instruct-onnx/cpu-int4-rtn-block-32": ["--onnx"],
    "all-MiniLM-L6-v2-onnx": ["--encoder"],
    "report.txt": None,
    "doc.txt": None,
}
#: Names the examples use without importing them: name -> ``python -m slmctl.testing`` arguments.
STORED: dict[str, list[str]] = {"phi3": ["--ctx", "4096"], "phi3-onnx": ["--onnx", "--ctx", "4096"]}
#: What every catalog source serves on the loopback mirrors: EOS reachable, so an answer may end as a real
#: model's does, and a 2k context: room for the enterprise-assistant Modelfile's SYSTEM and FILE (~600 tokens;
#: 512 is too small) and for the random JSON strings of the SDK example's tool call, while an answer that
#: never samples EOS still stops within seconds at the end of the context.
MIRRORED = ["--ctx", "2048", "--eos"], ["--onnx", "--ctx", "2048", "--eos"]

#: (pattern, replacement) applied to each command by :meth:`World.substitute` (``{venv}``, ``{host}``, ``{host2}``).
SUBSTITUTIONS: tuple[tuple[str, str], ...] = (
    (r"(?<![\w/])\.venv/bin/", "{venv}/"),          # the quick start names the project's venv from its root
    (r"\blocalhost:11434\b", "{host}"),             # the test's `slmctl serve` listens on SLMCTL_HOST
    (r"\b0\.0\.0\.0:8080\b", "0.0.0.0:{port2}"),    # the second serve example: another free port
    (r"(ollama://\S+)", r"\1 --insecure"),          # the loopback registry is plain http (README: needs --insecure)
)


# --- checks of the outcomes the README states ---------------------------------------------------------

Check = Callable[[Ran, World], None]


def that(predicate: Callable[[Ran, World], object]) -> Check:
    """A check from a predicate of the result and the world: a falsy value fails, showing the result."""
    def check(ran: Ran, world: World) -> None:
        assert predicate(ran, world), ran
    return check


def both(*checks: Check) -> Check:
    def check(ran: Ran, world: World) -> None:
        for each in checks:
            each(ran, world)
    return check


def out(ran: Ran) -> object:
    return json.loads(ran.stdout)


def names(world: World) -> set[str]:
    return set(world.models())


def listed(*wanted: str) -> Check:
    return that(lambda ran, world: set(wanted) <= names(world))


def stored_like(fragment: str, fmt: str) -> Check:
    """A model of format ``fmt`` whose name contains ``fragment`` (case-insensitive) is in the store."""
    return that(lambda ran, world: any(fragment in name.lower() and form == fmt
                                       for name, form in world.models().items()))


def shown(name: str, **fields: object) -> Check:
    return that(lambda ran, world: fields.items() <= world.cli_json("show", name, "--json").items())


def embeddings(count: int) -> Check:
    """``{"model", "embeddings": [...]}``, ``count`` L2-normalised vectors."""
    return that(lambda ran, world: len(out(ran)["embeddings"]) == count and out(ran)["model"].startswith("minilm")
                and all(abs(sum(x * x for x in vector) - 1) < 1e-3 for vector in out(ran)["embeddings"]))


def device(fmt: str, *wanted: str) -> Callable[[dict], int]:
    """0 when ``doctor --json`` lists a usable ``fmt`` device for each of ``wanted`` (a class or a name), else 7."""
    from slmctl.devices import vocabulary

    def code(doctor: dict) -> int:
        usable = doctor["backends"][fmt]["devices" if fmt == "gguf" else "providers"]
        return 0 if all(any(u == w or vocabulary(fmt).get(u) == w for u in usable) for w in wanted) else 7
    return code


#: README: "Asking for a device that is not usable exits with code 7 and lists the usable ones."
lists_usable = that(lambda ran, world: ran.code == 0 or "usable" in ran.stderr)


def doctor_json(ran: Ran, world: World) -> None:
    world.doctor.update(out(ran))  # the exit codes of the --device examples depend on it
    assert {"cpu", "memory", "gpus", "npus", "backends"} <= world.doctor.keys()


def same_digest(ran: Ran, world: World) -> None:
    """README: "create with it again: same digest"."""
    again = subprocess.run(["slmctl", "create", "ea-again", "-f", "Modelfile"], cwd=world.cwd, env=world.env,
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    digest = world.cli_json("show", "enterprise-assistant", "--json")["digest"]
    assert world.cli_json("show", "ea-again", "--json")["digest"] == digest


def json_answer(ran: Ran, world: World) -> None:
    """Exit 0 and JSON on stdout, or - a random model may not close its JSON before the context ends - exit 9
    and the README's warning naming the cause."""
    if ran.code == 0:
        json.loads(ran.stdout)
    else:
        assert "warning: the answer was cut off after" in ran.stderr and "not complete JSON" in ran.stderr, ran


def sse(ran: Ran, world: World) -> None:
    """Server-Sent Events: one ``data:`` line per chunk, the usage chunk, then ``data: [DONE]``."""
    lines = [line for line in ran.stdout.splitlines() if line]
    assert lines[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in lines), lines
    assert json.loads(lines[-2][6:])["usage"]["completion_tokens"] > 0


RUN_FIELDS = {"model", "response", "done_reason", "total_duration", "load_duration", "prompt_eval_count",
              "prompt_eval_duration", "eval_count", "eval_duration"}
LIST_FIELDS = {"name", "format", "size", "digest", "modified_at", "architecture"}
answered = that(lambda ran, world: ran.stdout.strip())
is_json = that(lambda ran, world: out(ran) is not None)
modelfile = that(lambda ran, world: (world.cwd / "Modelfile").read_text().startswith(("FROM", "#")))
loaded = that(lambda ran, world: "phi4:mini" in ran.stdout)
unloaded = that(lambda ran, world: not any(m["name"] == "phi4:mini" for m in world.cli_json("ps", "--json")))
#: A timing gate on a shared machine may pass or fail (0 or 1); it must have compared the configuration (not 8).
gate = that(lambda ran, world: "compared 1 configuration" in ran.stdout + ran.stderr)
#: Every bench run is appended to the history: the 4 above that succeed on any machine, at least.
history = that(lambda ran, world: "phi3|gguf" in ran.stdout
               and len((world.home / "bench" / "history.jsonl").read_text().splitlines()) >= 4)


#: ``slmctl keys create`` prints the new key alone on stdout.
printed_key = that(lambda ran, world: re.fullmatch(r"slmctl_[0-9A-Za-z]{54}", ran.stdout.strip()))


def keys_named(*wanted: str) -> Check:
    """The active keys are exactly ``wanted`` (and ``keys list`` never shows a key)."""
    return that(lambda ran, world: {k["name"] for k in world.cli_json("keys", "list", "--json")} == set(wanted)
                and "slmctl_" not in ran.stdout)


NETWORK_SETUP = "installs slmctl with pip (network: PyPI) and compiles llama.cpp - the CI job runs it"
CLUSTER = "needs a Kubernetes cluster: the test renders the chart offline, validates it, and serves its probes"
CONTAINER = "needs root, mmdebstrap, buildah and podman: the test builds and runs the image where they exist"
DOCKER = ("needs a Docker engine: the test builds the same image with build-image.sh, runs it with podman "
          "(a key and a model in the volume, health, a generation), and keeps the Dockerfile in step with it")
CONTRACT: dict[str, Expect | Skip | Elsewhere] = {
    'python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/slmctl run qwen2.5:0.5b "Hello, who are you?"':
        Skip(NETWORK_SETUP + "; its `slmctl run qwen2.5:0.5b` runs below, through the mirror"),
    'python3 -m venv .venv && .venv/bin/pip install -q -e ".[test]" && .venv/bin/python -m pytest -q':
        Skip(NETWORK_SETUP + "; it runs this very test"),
    "slmctl import ./qwen2.5-0.5b-instruct-q4_k_m.gguf": Expect(check=listed("qwen2.5-0.5b-instruct-q4_k_m:latest")),
    "slmctl import ./model.gguf --name team/assistant:v1": Expect(check=listed("team/assistant:v1")),
    "slmctl import ./Phi-4-mini-instruct-onnx/cpu-int4-rtn-block-32 --name phi4-mini-onnx":
        Expect(check=shown("phi4-mini-onnx", format="onnx")),
    "slmctl import ./all-MiniLM-L6-v2-onnx --name minilm": Expect(check=listed("minilm:latest")),
    "slmctl list": Expect(check=answered),
    "slmctl list --json": Expect(check=that(lambda ran, world: all(LIST_FIELDS <= m.keys() for m in out(ran)))),
    "slmctl show tiny": Expect(check=answered),
    "slmctl show tiny --json": Expect(check=that(lambda ran, world: out(ran)["context_length"] == 512
                                                                and out(ran)["files"])),
    "slmctl show tiny --template": Expect(check=answered),
    'slmctl run tiny "Explain quantum computing"': Expect(check=answered),
    'cat report.txt | slmctl run tiny "Summarise this in three bullet points"': Expect(check=answered),
    'slmctl run tiny "hello" > answer.txt': Expect(check=that(lambda ran, world: ran.stdout == ""
                                                                and (world.cwd / "answer.txt").read_text().strip())),
    'slmctl run tiny "hello" --json': Expect(check=that(lambda ran, world: RUN_FIELDS <= out(ran).keys())),
    'slmctl run tiny "hello" --verbose':
        Expect(check=that(lambda ran, world: ran.stdout and "eval rate" in ran.stderr)),
    'slmctl run tiny "List three colours" --format json': Expect(code=(0, 9), check=json_answer),
    'slmctl run tiny "hello" --seed 42 --max-tokens 64 --temperature 0.2 --param top_k=20 --param stop="###"':
        Expect(check=answered),
    'slmctl run tiny "hello" --system "Answer in French."': Expect(check=answered),
    'slmctl run tiny "hello" --device cpu': Expect(check=answered),
    "slmctl doctor": Expect(check=answered),
    "slmctl doctor --json": Expect(check=doctor_json),
    'slmctl run phi4-mini-onnx "hello" --device npu': Expect(code=device("onnx", "npu"), check=lists_usable),
    'slmctl run phi4-mini-onnx "hello" --device cuda --provider-option device_id=1':
        Expect(code=device("onnx", "cuda"), check=lists_usable),
    'slmctl embed minilm "The sky is blue" "Grass is green"': Expect(check=embeddings(2)),
    "cat doc.txt | slmctl embed minilm": Expect(check=embeddings(1)),
    "slmctl create enterprise-assistant -f modelfiles/enterprise-assistant/Modelfile":
        Expect(check=shown("enterprise-assistant", parameters={"temperature": 0.7, "top_p": 0.9, "num_ctx": 4096,
                                                               "num_gpu": 1, "num_thread": 8})),
    'slmctl run enterprise-assistant "What port does the gateway use?"': Expect(check=answered),
    "slmctl show enterprise-assistant --modelfile > Modelfile": Expect(check=both(modelfile, same_digest)),
    "slmctl create tiny-q8 -f Modelfile --quantize q8_0": Expect(check=shown("tiny-q8", quantization="Q8_0")),
    "printf 'FROM qwen2.5:0.5b\\nSYSTEM Answer in one sentence.\\n' > Modelfile": Expect(check=modelfile),
    "slmctl create brief -f Modelfile": Expect(check=shown("brief", system="Answer in one sentence.")),
    "slmctl bench tiny tiny-onnx --gen-tokens 32 --repetitions 3": Expect(check=answered),
    "slmctl bench phi3 --device cpu,gpu --threads 1,2,4 --prompt-tokens 512 --gen-tokens 128":
        Expect(code=device("gguf", "cpu", "gpu"), check=lists_usable),
    "slmctl bench phi3 phi3-onnx --concurrency 1,4,8": Expect(check=answered),
    "slmctl bench phi3 --json > result.json":
        Expect(check=that(lambda ran, world: json.loads((world.cwd / "result.json").read_text()))),
    "slmctl bench phi3 --baseline result.json --max-regression 5%": Expect(code=(0, 1), check=gate),
    "slmctl bench --history": Expect(check=history),
    "slmctl models test phi3 --benchmark": Expect(check=answered),
    "slmctl serve": Expect(serve="host"),
    "slmctl keys create ci --role user": Expect(check=printed_key),
    "slmctl serve --host 0.0.0.0:8080 --keep-alive 30m --max-loaded 2 --preload phi4:mini":
        Expect(serve="host2", ready="/readyz"),
    'curl -X POST http://localhost:11434/api/generate -H "Content-Type: application/json" -d \'{ "model": '
    '"phi4:mini", "prompt": "Write a recursive function to calculate factorial", "stream": false }\'':
        Expect(check=that(lambda ran, world: out(ran)["done"] and out(ran)["response"])),
    'curl -N http://localhost:11434/v1/chat/completions -H "Content-Type: application/json" -d \'{ "model": '
    '"phi4:mini", "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", '
    '"content": "Hello"}]}\'': Expect(check=sse),
    # A random model may loop inside the forced tool call's string until the context ends (finish_reason
    # "length", no tool_calls: ~1% of runs), which the README's snippet does not handle: run it again once.
    f"python: {SDK_SECTION}": Expect(check=that(lambda ran, world: "CompletionUsage(" in ran.stdout), retries=1),
    "slmctl keys create alice --role user --expires 90d": Expect(check=printed_key),
    "slmctl keys create ops --role admin": Expect(check=printed_key),
    "slmctl keys list": Expect(check=keys_named("alice", "ops", "ci")),
    "slmctl keys revoke alice": Expect(check=keys_named("ops", "ci")),
    "python: Run it for a team": Expect(),
    "slmctl serve --config configs/production.json --print-config":
        Expect(check=that(lambda ran, world: re.search(r"^num_ctx\s+4096\s+\[file .*\.optimization\.max_context\]",
                                                       ran.stdout, re.MULTILINE))),
    "slmctl serve --config configs/performance.json --print-config --json": Expect(check=is_json),
    "SLMCTL_NUM_PARALLEL=2 slmctl serve --config configs/production.json --parallel 6 --print-config":
        Expect(check=that(lambda ran, world: re.search(r"^parallel\s+6\s+\[flag", ran.stdout, re.MULTILINE))),
    "slmctl serve --host 0.0.0.0:11434 --read-only-store --config configs/production.json --print-config":
        Expect(check=that(lambda ran, world: re.search(r"^read_only_store\s+true", ran.stdout, re.MULTILINE))),
    "docker build -t slmctl .": Elsewhere("tests/test_container.py::test_dockerfile_matches_build_script", DOCKER),
    "docker run --rm -v slmctl-data:/data slmctl keys create ops --role admin":
        Elsewhere("tests/test_container.py::test_build_image_smoke", DOCKER),
    'docker run --rm -v slmctl-data:/data -v "$PWD:/in:ro" slmctl import /in/model.gguf --name mymodel':
        Elsewhere("tests/test_container.py::test_build_image_smoke", DOCKER),
    "docker run -d --name slmctl -p 11434:11434 -v slmctl-data:/data slmctl":
        Elsewhere("tests/test_container.py::test_build_image_smoke", DOCKER),
    "deploy/build-image.sh --smoke": Elsewhere("tests/test_container.py::test_build_image_smoke", CONTAINER),
    "slmctl keys create cluster --role admin": Expect(check=printed_key),
    "kubectl create secret generic slmctl-keys --from-file=keys.json=$SLMCTL_HOME/keys.json":
        Elsewhere("tests/test_helm_chart.py::test_api_keys_come_from_the_secret_through_a_private_copy", CLUSTER),
    "helm install slmctl deploy/helm/slmctl -f deploy/helm/slmctl/values-cpu.yaml":
        Elsewhere("tests/test_helm_chart.py::test_every_rendered_object_validates_strictly", CLUSTER),
    "kubectl port-forward svc/slmctl 11434:11434":
        Elsewhere("tests/test_helm_chart.py::test_a_real_server_answers_every_probe_the_chart_renders", CLUSTER),
    "kubectl apply -k deploy/k8s":
        Elsewhere("tests/test_helm_chart.py::test_deploy_k8s_is_what_the_chart_renders_with_its_defaults", CLUSTER),
    "slmctl ps": Expect(check=loaded),
    "slmctl ps --json": Expect(check=loaded),
    "slmctl stop phi4:mini": Expect(check=unloaded),
    "slmctl list --available": Expect(check=answered),
    "slmctl list --available --type code --size small --format gguf --json": Expect(check=is_json),
    "slmctl pull qwen2.5:0.5b": Expect(check=listed("qwen2.5:0.5b")),
    "slmctl pull phi4-mini --format onnx --device gpu": Expect(code=device("onnx", "gpu"), check=lists_usable),
    "slmctl pull hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q8_0": Expect(check=stored_like("llama-3.2-1b", "gguf")),
    "slmctl pull hf://microsoft/Phi-4-mini-instruct-onnx/cpu_and_mobile/cpu-int4-rtn-block-32-acc-level-4":
        Expect(check=stored_like("phi-4-mini-instruct-onnx", "onnx")),
    "slmctl pull ollama://qwen2.5:3b": Expect(check=stored_like("qwen2.5:3b", "gguf")),
    "slmctl pull qwen2.5:0.5b --json":
        Expect(check=that(lambda ran, world: json.loads(ran.stdout.splitlines()[-1])["status"] == "success")),
    'slmctl run qwen2.5:0.5b "hello"': Expect(check=answered),
    "slmctl export tiny tiny-onnx -o models.tar":
        Expect(check=that(lambda ran, world: (world.cwd / "models.tar").stat().st_size)),
    "slmctl import models.tar": Expect(),
    "slmctl verify": Expect(check=that(lambda ran, world: " ok" in ran.stdout and "DAMAGED" not in ran.stdout)),
    "slmctl verify --repair": Expect(),
    "slmctl cp tiny tiny:backup": Expect(check=listed("tiny:latest", "tiny:backup")),
    "slmctl rm tiny tiny:backup":
        Expect(check=that(lambda ran, world: not {"tiny:latest", "tiny:backup"} & names(world))),
}
CONTRACT["python -m slmctl.testing tiny.gguf"] = Expect(check=that(lambda ran, world: (world.cwd / "tiny.gguf").stat()))
CONTRACT["python -m slmctl.testing --onnx tiny-onnx && slmctl import tiny-onnx"] = \
    Expect(check=listed("tiny-onnx:latest"))
CONTRACT[INLINE[0] + ' tiny.gguf && .venv/bin/slmctl import tiny.gguf --name tiny && .venv/bin/slmctl run tiny '
         '"Hello" --max-tokens 32'] = Expect(check=both(answered, listed("tiny:latest")))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with offline_world(tmp_path_factory.mktemp("readme"), FILES, STORED, MIRRORED) as world:
        yield world


def items() -> list[Command]:
    return readme_items(INLINE)


def test_every_readme_command_is_in_the_contract() -> None:
    keys = [item.key for item in items()]
    missing = [k for k in keys if k not in CONTRACT]
    assert not missing, "README commands the contract does not cover (add each to CONTRACT):\n" + "\n".join(missing)
    stale = [k for k in CONTRACT if k not in keys]
    assert not stale, "CONTRACT entries no longer in README.md (remove them):\n" + "\n".join(stale)
    ran = [item.text for item in items() if isinstance(CONTRACT[item.key], Expect)]
    unused = [pattern for pattern, _ in SUBSTITUTIONS if not any(re.search(pattern, text) for text in ran)]
    assert not unused, f"substitutions that no longer apply to any README command (remove them): {unused}"
    assert sum(isinstance(entry, Skip) for entry in CONTRACT.values()) <= 3, "keep the skip table small"
    gone = [entry.test for entry in CONTRACT.values() if isinstance(entry, Elsewhere) and not entry.exists()]
    assert not gone, f"CONTRACT names tests that do not exist: {gone}"


def test_readme_commands_run_as_documented(world: World) -> None:
    failures: list[str] = []
    for item in items():
        entry = CONTRACT[item.key]
        if not isinstance(entry, Expect):
            continue
        command = world.substitute(item.text, SUBSTITUTIONS)
        for _ in range(entry.retries + 1):
            if entry.serve:
                ran = serve(command, world, entry.serve, entry.ready, keep=entry.serve == "host")
            else:
                ran = execute(item, command, world)
            if not (problem := verdict(entry, ran, world)):
                break
        if problem:
            failures.append(f"README.md:{item.line} ({item.section}): {item.text}\n  {problem}\n"
                            f"  stdout: {ran.stdout[-600:]!r}\n  stderr: {ran.stderr[-1200:]!r}")
    for server in list(world.servers):  # README: "Ctrl-C or SIGTERM drains and stops"
        world.servers.remove(server)
        if (code := stop(server)) != 0:
            failures.append(f"slmctl serve exited with {code} on SIGTERM")
    assert not failures, "\n\n".join(failures)


def test_testing_module_writes_what_the_examples_need(tmp_path: Path) -> None:
    """``python -m slmctl.testing``: ``--ctx`` on both text formats, ``--eos``, and a usage error for the encoder."""
    import gguf

    long = write_model([str(tmp_path / "long.gguf"), "--ctx", "4096", "--eos"])
    reader = gguf.GGUFReader(long)
    assert int(reader.fields["llama.context_length"].parts[-1][0]) == 4096
    output = next(t for t in reader.tensors if t.name == "output.weight")
    assert abs(output.data[2]).sum() > 0  # the EOS row (id 2) is not zeroed: EOS can be sampled
    onnx = write_model([str(tmp_path / "onnx"), "--onnx", "--ctx", "2048"])
    assert json.loads((onnx / "genai_config.json").read_text())["search"]["max_length"] == 2048
    with pytest.raises(SystemExit) as usage:
        write_model([str(tmp_path / "enc"), "--encoder", "--ctx", "4096"])
    assert usage.value.code == 2
    shown = subprocess.run([sys.executable, "-m", "slmctl.testing", "--help"], capture_output=True, text=True)
    assert shown.returncode == 0 and "--ctx N" in shown.stdout and "examples:" in shown.stdout
