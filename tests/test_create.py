"""``slmctl create`` end to end: Modelfiles on tiny GGUF and ONNX bases, through the real CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cli_runner import run_cli

REPO = Path(__file__).resolve().parents[1]
FAST = ("--param", "num_thread=2")


@pytest.fixture(scope="module")
def tiny_gguf_4k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with a 4096-token context (its tokenizer spends about a token per character)."""
    from slmctl.testing.tiny_gguf import TinyGGUFSpec, write_tiny_gguf

    return write_tiny_gguf(tmp_path_factory.mktemp("models") / "tiny-4k.gguf", TinyGGUFSpec(context_length=4096))


@pytest.fixture
def home(tmp_path: Path, tiny_gguf_4k: Path) -> Path:
    """A store where the examples' FROM names (phi4:mini, qwen2.5:0.5b) are tiny models."""
    home = tmp_path / "home"
    for name in ("phi4:mini", "qwen2.5:0.5b"):
        assert run_cli(home, "import", str(tiny_gguf_4k), "--name", name).code == 0
    return home


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def show(home: Path, name: str) -> dict:
    return json.loads(run_cli(home, "show", name, "--json").stdout)


def test_enterprise_assistant_example(home: Path) -> None:
    modelfile = REPO / "modelfiles" / "enterprise-assistant" / "Modelfile"
    created = run_cli(home, "create", "enterprise-assistant", "-f", str(modelfile))
    assert created.code == 0, created.stderr
    info = show(home, "enterprise-assistant")
    assert info["parameters"] == {"temperature": 0.7, "top_p": 0.9, "num_ctx": 4096, "num_gpu": 1, "num_thread": 8}
    assert info["system"].startswith("You are the enterprise assistant of Contoso")
    base = show(home, "phi4:mini")
    assert info["files"] == base["files"]  # the base's blobs are shared
    debug = run_cli(home, "--debug", "run", "enterprise-assistant", "port?", "--max-tokens", "2", *FAST)
    assert debug.code == 0
    assert "enterprise assistant of Contoso" in debug.stderr and "Default port: 8080" in debug.stderr


def test_show_modelfile_round_trips_to_the_same_digest(home: Path, tmp_path: Path) -> None:
    for example in ("enterprise-assistant", "plain-template", "chatml-messages"):
        modelfile = REPO / "modelfiles" / example / "Modelfile"
        assert run_cli(home, "create", example, "-f", str(modelfile)).code == 0
        printed = run_cli(home, "show", example, "--modelfile").stdout
        again = write(tmp_path / example / "Modelfile", printed)
        assert run_cli(home, "create", f"{example}-again", "-f", str(again)).code == 0, printed
        assert show(home, f"{example}-again")["digest"] == show(home, example)["digest"], example


def test_same_modelfile_twice_same_digest(home: Path) -> None:
    modelfile = REPO / "modelfiles" / "chatml-messages" / "Modelfile"
    assert run_cli(home, "create", "a", "-f", str(modelfile)).code == 0
    assert run_cli(home, "create", "b", "-f", str(modelfile)).code == 0
    assert show(home, "a")["digest"] == show(home, "b")["digest"]


def test_template_parameters_and_messages_are_used(home: Path) -> None:
    assert run_cli(home, "create", "plain", "-f", str(REPO / "modelfiles/plain-template/Modelfile")).code == 0
    debug = run_cli(home, "--debug", "run", "plain", "Why?", "--max-tokens", "2", *FAST)
    assert "You are a helpful assistant. Answer in one short paragraph.\nUser: Why?\nAssistant: " in debug.stderr
    assert "<|im_start|>" not in debug.stderr.split("prompt as the model reads it:")[1]
    assert run_cli(home, "create", "bot", "-f", str(REPO / "modelfiles/chatml-messages/Modelfile")).code == 0
    debug = run_cli(home, "--debug", "run", "bot", "Hours?", "--max-tokens", "2", *FAST)
    prompt = debug.stderr.split("prompt as the model reads it:")[1]
    assert prompt.index("What port does the gateway listen on?") < prompt.index("Port 8080") < prompt.index("Hours?")
    overridden = run_cli(home, "--debug", "run", "bot", "x", "--system", "Be rude.", "--max-tokens", "1", *FAST)
    assert "Be rude." in overridden.stderr and "two sentences" not in overridden.stderr
    limited = json.loads(run_cli(home, "run", "plain", "x", "--json", "--param", "num_predict=3", *FAST).stdout)
    assert limited["eval_count"] <= 3


def test_created_model_inherits_from_a_created_model(home: Path, tmp_path: Path) -> None:
    assert run_cli(home, "create", "bot", "-f", str(REPO / "modelfiles/chatml-messages/Modelfile")).code == 0
    child = write(tmp_path / "child" / "Modelfile", "FROM bot\nPARAMETER temperature 0.1\n")
    assert run_cli(home, "create", "child", "-f", str(child)).code == 0
    info, parent = show(home, "child"), show(home, "bot")
    assert info["parameters"]["temperature"] == 0.1 and info["parameters"]["num_ctx"] == 2048
    assert info["system"] == parent["system"] and info["messages"] == parent["messages"]
    assert info["template"] == parent["template"]


def test_from_a_gguf_path_and_an_onnx_folder(home: Path, tmp_path: Path, tiny_gguf: Path, tiny_onnx: Path) -> None:
    shutil.copy(tiny_gguf, tmp_path / "base.gguf")
    shutil.copytree(tiny_onnx, tmp_path / "onnx-base")
    gguf = write(tmp_path / "Modelfile", "FROM ./base.gguf\nSYSTEM Be brief.\n")
    onnx = write(tmp_path / "Modelfile.onnx", 'FROM ./onnx-base\nSYSTEM Be brief.\nPARAMETER temperature 0.2\n'
                 'TEMPLATE """{{ .System }}\nQ: {{ .Prompt }}\nA: """\n')
    assert run_cli(home, "create", "from-gguf", "-f", str(gguf)).code == 0
    result = run_cli(home, "create", "from-onnx", "-f", str(onnx))
    assert result.code == 0, result.stderr
    assert show(home, "from-onnx")["format"] == "onnx"
    for name in ("from-gguf", "from-onnx"):
        answer = json.loads(run_cli(home, "run", name, "hi", "--max-tokens", "3", "--json").stdout)
        assert answer["eval_count"] == 3
    debug = run_cli(home, "--debug", "run", "from-onnx", "hi", "--max-tokens", "1")
    assert "Be brief.\nQ: hi\nA: " in debug.stderr


def test_knowledge_file_pdf_and_context_check(home: Path, tmp_path: Path) -> None:
    pdf = tmp_path / "guide.pdf"
    pdf.write_bytes(minimal_pdf("Contoso gateway manual page one"))
    modelfile = write(tmp_path / "Modelfile", "FROM phi4:mini\nFILE guide.pdf\n")
    assert run_cli(home, "create", "pdf", "-f", str(modelfile)).code == 0
    debug = run_cli(home, "--debug", "run", "pdf", "x", "--max-tokens", "1", *FAST)
    assert "Contoso gateway manual page one" in debug.stderr
    write(tmp_path / "big.md", "lorem ipsum dolor " * 1000)
    too_big = write(tmp_path / "Modelfile.big", "FROM phi4:mini\nFILE big.md\n")
    result = run_cli(home, "create", "big", "-f", str(too_big))
    assert result.code == 4 and "tokens but the context holds 4096" in result.stderr
    assert "big:latest" not in run_cli(home, "list").stdout


def test_errors_point_at_the_line_and_leave_nothing(home: Path, tmp_path: Path) -> None:
    blobs_before = sorted((home / "models" / "blobs").iterdir())
    typo = write(tmp_path / "Modelfile", "FROM phi4:mini\n\nPARAMETR temperature 0.5\n")
    result = run_cli(home, "create", "x", "-f", str(typo))
    assert result.code == 4 and "Modelfile:3:1" in result.stderr and "PARAMETER" in result.stderr
    param = write(tmp_path / "Modelfile2", "FROM phi4:mini\nPARAMETER temprature 0.5\n")
    result = run_cli(home, "create", "x", "-f", str(param))
    assert result.code == 4 and ":2:" in result.stderr and "temperature" in result.stderr
    missing = write(tmp_path / "Modelfile3", "FROM no-such-model\n")
    assert run_cli(home, "create", "x", "-f", str(missing)).code == 3
    bad_template = write(tmp_path / "Modelfile4", 'FROM phi4:mini\nTEMPLATE "{{ define \\"x\\" }}"\n')
    assert run_cli(home, "create", "x", "-f", str(bad_template)).code == 4
    no_file = write(tmp_path / "Modelfile5", "FROM phi4:mini\nFILE nowhere.md\n")
    assert run_cli(home, "create", "x", "-f", str(no_file)).code == 4
    assert run_cli(home, "create", "x", "-f", str(tmp_path / "absent")).code == 2
    future = write(tmp_path / "Modelfile6", "FROM phi4:mini\nREQUIRES 99.0\n")
    result = run_cli(home, "create", "x", "-f", str(future))
    assert result.code == 4 and "requires slmctl 99.0" in result.stderr
    assert "x:latest" not in run_cli(home, "list").stdout
    assert sorted((home / "models" / "blobs").iterdir()) == blobs_before
    assert not list((home / "models" / "tmp").glob("stage-*"))


def test_quantize_an_f16_base_and_refuse_a_quantized_one(home: Path, tmp_path: Path) -> None:
    modelfile = write(tmp_path / "Modelfile", "FROM phi4:mini\n")
    result = run_cli(home, "create", "q8", "-f", str(modelfile), "--quantize", "q8_0")
    assert result.code == 0, result.stderr
    assert "quantizing tensor" in result.stderr
    info = show(home, "q8")
    assert info["quantization"] == "Q8_0" and info["files"] != show(home, "phi4:mini")["files"]
    again = write(tmp_path / "Modelfile.q", "FROM q8\n")
    refused = run_cli(home, "create", "q4", "-f", str(again), "--quantize", "q4_k_m")
    assert refused.code == 4 and "Q8_0" in refused.stderr
    assert run_cli(home, "create", "x", "-f", str(modelfile), "--quantize", "q3_weird").code == 2


def minimal_pdf(text: str) -> bytes:
    """A one-page PDF whose page shows ``text`` (enough for a text extractor)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def test_adapter_is_applied_at_load_time(home: Path, tmp_path: Path, tiny_gguf: Path, tiny_onnx: Path) -> None:
    from slmctl.testing.tiny_gguf import write_tiny_lora

    write_tiny_lora(tmp_path / "lora.gguf")
    shutil.copy(tiny_gguf, tmp_path / "base.gguf")
    modelfile = write(tmp_path / "Modelfile", "FROM ./base.gguf\nADAPTER ./lora.gguf\n")
    assert run_cli(home, "create", "adapted", "-f", str(modelfile)).code == 0
    plain = write(tmp_path / "Modelfile.plain", "FROM ./base.gguf\n")
    assert run_cli(home, "create", "plain", "-f", str(plain)).code == 0
    args = ("hello", "--max-tokens", "12", "--seed", "1")
    assert run_cli(home, "run", "adapted", *args).stdout != run_cli(home, "run", "plain", *args).stdout
    assert "ADAPTER" in run_cli(home, "show", "adapted", "--modelfile").stdout
    not_lora = write(tmp_path / "Modelfile.bad", "FROM ./base.gguf\nADAPTER ./base.gguf\n")
    result = run_cli(home, "create", "bad", "-f", str(not_lora))
    assert result.code == 4 and "not a GGUF LoRA adapter" in result.stderr
    shutil.copytree(tiny_onnx, tmp_path / "onnx-base")
    onnx = write(tmp_path / "Modelfile.onnx", "FROM ./onnx-base\nADAPTER ./lora.gguf\n")
    result = run_cli(home, "create", "bad", "-f", str(onnx))
    assert result.code == 4 and "GGUF models only" in result.stderr
