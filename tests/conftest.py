"""Shared pytest fixtures of the slmctl test suite.

Synthetic GGUF models (written once per session by :mod:`slmctl.testing.tiny_gguf`), an isolated
``SLMCTL_HOME`` for tests that touch the model store or configuration, and (from :mod:`hub_fixtures`)
a loopback Hugging Face-style server for the tests that pull.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from slmctl.testing.tiny_gguf import TinyGGUFSpec, write_corrupt_files, write_tiny_gguf

#: The loopback Hugging Face-style server (``hub``) and its model fixtures, for the pull and create tests.
pytest_plugins = ("hub_fixtures", "serve_fixtures")

#: The test files that take tens of seconds, slowest first. They run before the others, so that under
#: pytest-xdist the short files fill the gaps at the end instead of one worker finishing one of these alone.
SLOW_FILES = ("test_serve_fuzz.py", "test_readme_contract.py", "test_container.py", "test_serve_faults.py",
              "test_serve_auth.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: place for place, name in enumerate(SLOW_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FILES)))  # stable: the rest keep their order


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny F16 Llama model with a ChatML template; it never samples EOS (runs yield max_tokens)."""
    return write_tiny_gguf(tmp_path_factory.mktemp("models") / "tiny.gguf")


@pytest.fixture(scope="session")
def tiny_gguf_eos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model without the no-EOS trick: generation may stop early (for stop tests)."""
    return write_tiny_gguf(tmp_path_factory.mktemp("models") / "tiny-eos.gguf", TinyGGUFSpec(eos_reachable=True))


@pytest.fixture(scope="session")
def corrupt_gguf_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Broken model files keyed by ``not_gguf``, ``truncated``, ``bad_header`` and ``empty``."""
    return write_corrupt_files(tmp_path_factory.mktemp("corrupt"))


@pytest.fixture
def slmctl_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty ``SLMCTL_HOME`` for this test (with ``NO_COLOR=1`` for stable output)."""
    home = tmp_path / "slmctl-home"
    home.mkdir()
    monkeypatch.setenv("SLMCTL_HOME", str(home))
    monkeypatch.setenv("NO_COLOR", "1")
    return home


# Synthetic ONNX models (slmctl.testing.tiny_onnx), imported lazily so GGUF-only runs skip onnx/tokenizers.


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny onnxruntime-genai model folder (ChatML template in tokenizer_config.json); it never samples EOS."""
    from slmctl.testing.tiny_onnx import write_tiny_onnx_genai

    return write_tiny_onnx_genai(tmp_path_factory.mktemp("onnx") / "tiny")


@pytest.fixture(scope="session")
def tiny_onnx_eos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny ONNX model with EOS reachable: generation may stop early (for stop tests)."""
    from slmctl.testing.tiny_onnx import TinyOnnxSpec, write_tiny_onnx_genai

    return write_tiny_onnx_genai(tmp_path_factory.mktemp("onnx") / "tiny-eos", TinyOnnxSpec(eos_reachable=True))


@pytest.fixture(scope="session")
def tiny_onnx_template_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny ONNX model with its chat template in chat_template.jinja (as transformers 5 exports)."""
    from slmctl.testing.tiny_onnx import TinyOnnxSpec, write_tiny_onnx_genai

    folder = tmp_path_factory.mktemp("onnx") / "tiny-template-file"
    return write_tiny_onnx_genai(folder, TinyOnnxSpec(template_file=True))


@pytest.fixture(scope="session")
def tiny_onnx_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny sentence-embedding model folder (model.onnx, tokenizer, sentence-transformers metadata)."""
    from slmctl.testing.tiny_onnx import write_tiny_onnx_encoder

    return write_tiny_onnx_encoder(tmp_path_factory.mktemp("onnx") / "encoder")
