"""A Modelfile TEMPLATE renders the same prompt through the API as through ``run``: one request builder."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from cli_runner import run_cli
from serve_fixtures import Served
from slmctl.backends.base import ChatMessage
from slmctl.chat import ChatSession
from slmctl.engine import Engine
from slmctl.server.config import ServeConfig
from slmctl.server.serving import Serving
from slmctl.settings import Settings
from slmctl.store import ModelStore

#: Ollama's zephyr template shape: .Messages with .System, closing each turn.
TEMPLATE = ('{{- range .Messages }}<|{{ .Role }}|>\n{{ .Content }}</s>\n{{ end }}<|assistant|>\n')


def create(home: Path, tmp_path: Path) -> None:
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text(f'FROM phi4:mini\nSYSTEM "Answer briefly."\nTEMPLATE """{TEMPLATE}"""\n'
                         'MESSAGE user "hi"\nMESSAGE assistant "hello"\n')
    assert run_cli(home, "create", "zephyr-like", "-f", str(modelfile)).code == 0


def test_api_and_run_build_the_same_prompt(private_home: Path, tmp_path: Path) -> None:
    create(private_home, tmp_path)
    settings = Settings(home=private_home)
    engine = Engine(ModelStore(settings.models_dir))
    with ChatSession(engine, engine.manifest("zephyr-like")) as session:
        expected = session.request_for("What is edge computing?").prompt
    serving = Serving(engine, None, ServeConfig(), settings, {})  # type: ignore[arg-type]
    target = serving.target("zephyr-like", None, None)
    messages, head = serving.conversation(target, [ChatMessage("user", "What is edge computing?")])
    assert head == 3  # the model's SYSTEM and its two MESSAGE lines always stay
    assert serving.request(target, messages).prompt == expected
    assert expected == ("<|system|>\nAnswer briefly.</s>\n<|user|>\nhi</s>\n<|assistant|>\nhello</s>\n"
                        "<|user|>\nWhat is edge computing?</s>\n<|assistant|>\n")
    serving.close()


def test_the_model_reads_as_many_tokens_through_the_api_as_through_run(private_home: Path, tmp_path: Path) -> None:
    create(private_home, tmp_path)
    by_run = json.loads(run_cli(private_home, "run", "zephyr-like", "What is edge computing?", "--json",
                                "--max-tokens", "2").stdout)
    served = Served(private_home)
    try:
        body = {"model": "zephyr-like", "stream": False, "options": {"num_predict": 2},
                "messages": [{"role": "user", "content": "What is edge computing?"}]}
        by_api = httpx.post(f"{served.url}/api/chat", json=body, timeout=60).json()
    finally:
        served.stop()
    assert by_api["prompt_eval_count"] == by_run["prompt_eval_count"] > 20
