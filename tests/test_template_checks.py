"""A Modelfile TEMPLATE is checked against the values it will be given (issue 11, item 7).

``{{ .Sytem }}`` used to be accepted by ``create`` and print nothing at run time (the data are dicts, a
missing key is empty), silently dropping ``--system``. Unknown fields and functions are now refused when
the template is checked, with their position and the closest valid name; ``create`` runs the check before
it resolves FROM (so before any pull) and locates the error in the Modelfile.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cli_runner import run_cli
from slmctl.backends.base import ChatMessage
from slmctl.modelfile import parse_modelfile
from slmctl.modelfile.gotemplate import TemplateError
from slmctl.modelfile.prompting import TEMPLATE_VALUES, check_template, render_messages

OLLAMA_TEMPLATES = Path(__file__).resolve().parents[2] / "shared" / "peer" / "ollama-templates"

#: Templates that use every kind of value Ollama gives: all of them must pass.
VALID = [
    "{{ .System }} {{ .Prompt }} {{ .Suffix }} {{ .Response }} {{ .Think }} {{ .ThinkLevel }} {{ .IsThinkSet }}",
    "{{ range .Messages }}{{ .Role }}{{ .Content }}{{ .Thinking }}{{ .ToolName }}{{ .ToolCallID }}"
    "{{ range .Images }}{{ . }}{{ end }}{{ range .ToolCalls }}{{ .ID }}{{ .Function.Index }}{{ .Function.Name }}"
    "{{ .Function.Arguments }}{{ .Function.Arguments.city }}{{ end }}{{ end }}",
    "{{ range $i, $m := .Messages }}{{ if eq $m.Role \"user\" }}{{ $m.Content }}{{ end }}{{ $.System }}{{ end }}",
    "{{ range .Tools }}{{ .Type }}{{ .Function.Name }}{{ .Function.Description }}{{ .Function.Parameters.Type }}"
    "{{ range $name, $p := .Function.Parameters.Properties }}{{ $name }}{{ $p.Type }}{{ $p.Description }}"
    "{{ $p.Enum }}{{ range $p.AnyOf }}{{ .Type }}{{ end }}{{ $p.Properties.inner.Description }}{{ end }}"
    "{{ .Function.Parameters.Required }}{{ .Items.anything }}{{ json . }}{{ end }}",
    "{{ with .Messages }}{{ range . }}{{ .Content }}{{ end }}{{ end }}{{ with $m := index .Messages 0 }}"
    "{{ $m.Role }}{{ end }}{{ (index .Messages 0).Content }}{{ (index .Tools 0).Function.Name }}",
    "{{ $last := \"\" }}{{ range .Messages }}{{ $last = .Content }}{{ end }}{{ $last }}{{ len .Messages }}",
    "{{ range 3 }}{{ . }}{{ end }}{{ $x := or .System .Prompt }}{{ $x }}",
    "{{ with .Tools }}{{ (index . 0).Items.anything }}{{ end }}{{ $a := index .Messages 0 }}{{ $a = 1 }}{{ $a.X }}",
]


@pytest.mark.parametrize("template", VALID)
def test_templates_using_ollamas_values_pass(template: str) -> None:
    check_template(template)


# (template, line, column, message fragment, suggestion fragment)
REFUSED = [
    ("{{ .Sytem }} {{ .Prompt }}", 1, 4, "unknown field '.Sytem'", "did you mean '.System'?"),
    ("{{ .system }}", 1, 4, "unknown field '.system'", "did you mean '.System'?"),
    ("a\n{{ range .Messages }}\n  {{ .Contnet }}{{ end }}", 3, 6, "unknown field '.Contnet'",
     "did you mean '.Content'?"),
    ("{{ range $i, $m := .Messages }}{{ $m.Rol }}{{ end }}", 1, 37, "unknown field '$m.Rol'",
     "did you mean '$m.Role'?"),
    ("{{ range .Tools }}{{ .Function.Nme }}{{ end }}", 1, 31, "unknown field '.Function.Nme'",
     "did you mean '.Function.Name'?"),
    ("{{ range .Tools }}{{ range $k, $v := .Function.Parameters.Properties }}{{ $v.Descripton }}{{ end }}"
     "{{ end }}", 1, 77, "unknown field '$v.Descripton'", "did you mean '$v.Description'?"),
    ("{{ (index .Messages 0).Conten }}", 1, 23, "unknown field '(...).Conten'", "'(...).Content'"),
    ("{{ range $.Messages }}{{ $.Sys }}{{ end }}", 1, 27, "unknown field '$.Sys'", "did you mean '$.System'?"),
    ("{{ .Messages.Content }}", 1, 13, "'.Messages' is a list of Message: it has no field 'Content'",
     "{{ range .Messages }}{{ .Content }}{{ end }}"),
    ("{{ .System.Text }}", 1, 11, "'.System' is a string: it has no field 'Text'", "remove '.Text'"),
    ("{{ range .System }}{{ end }}", 1, 10, "range can't iterate over a string", ".Messages"),
    ("{{ prinf \"%s\" .System }}", 1, 4, "unsupported function 'prinf'", "did you mean 'printf'?"),
    ("{{ .First }}", 1, 4, "unknown field '.First'", "a TEMPLATE has the fields .System, .Prompt"),
]


@pytest.mark.parametrize(("template", "line", "column", "message", "suggestion"), REFUSED)
def test_unknown_fields_and_functions_are_refused_with_position_and_suggestion(
        template: str, line: int, column: int, message: str, suggestion: str) -> None:
    with pytest.raises(TemplateError) as caught:
        check_template(template)
    error = caught.value
    assert (error.line, error.column) == (line, column), str(error)
    assert message in error.reason and suggestion in (error.hint or ""), (error.reason, error.hint)


def test_a_go_only_function_gets_no_suggestion() -> None:
    with pytest.raises(TemplateError) as caught:
        check_template("{{ html .System }}")
    assert "unsupported function 'html'" in caught.value.reason and "did you mean" not in (caught.value.hint or "")


def test_every_checked_field_is_one_the_renderer_sets() -> None:
    """The check's values are the renderer's: a template naming all of them renders them."""
    names = list(TEMPLATE_VALUES.fields)
    template = "".join(f"[{name}={{{{ .{name} }}}}]" for name in names if name != "Messages")
    check_template(template)
    rendered = render_messages(template, [ChatMessage("system", "S"), ChatMessage("user", "U")])
    assert "[System=S]" in rendered and "[Prompt=U]" in rendered
    message_fields = TEMPLATE_VALUES.fields["Messages"].elem.fields  # type: ignore[union-attr]
    per_message = "".join(f"<{{{{ .{name} }}}}>" for name in message_fields)
    check_template("{{ range .Messages }}" + per_message + "{{ end }}")
    assert "<user><U>" in render_messages("{{ range .Messages }}" + per_message + "{{ end }}",
                                          [ChatMessage("user", "U")])


@pytest.mark.skipif(not OLLAMA_TEMPLATES.is_dir(), reason="Ollama's templates are not next to this checkout")
def test_ollamas_bundled_templates_all_pass() -> None:
    templates = sorted(OLLAMA_TEMPLATES.glob("*.gotmpl"))
    assert templates
    for path in templates:
        check_template(path.read_text(encoding="utf-8"))


def test_the_parser_records_where_the_template_starts() -> None:
    assert parse_modelfile('FROM x\nTEMPLATE """{{ .Prompt }}"""\n').template_at == (2, 13)
    assert parse_modelfile('FROM x\n  TEMPLATE "{{ .Prompt }}"\n').template_at == (2, 13)
    assert parse_modelfile("FROM x\nTEMPLATE {{ .Prompt }}\n").template_at == (2, 10)
    assert parse_modelfile("FROM x\n").template_at is None
    assert parse_modelfile('FROM x\nTEMPLATE "{{ .Prompt }}"\n') == parse_modelfile('FROM x\nTEMPLATE {{ .Prompt }}\n')


@pytest.fixture
def home(tmp_path: Path, tiny_gguf: Path) -> Path:
    home = tmp_path / "home"
    assert run_cli(home, "import", str(tiny_gguf), "--name", "tiny").code == 0
    return home


def test_create_refuses_a_misspelt_field_and_points_at_it_in_the_modelfile(home: Path, tmp_path: Path) -> None:
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text('FROM tiny\nTEMPLATE """{{ if .System }}{{ .System }}\n{{ end }}{{ .Sytem }} '
                         '{{ .Prompt }}"""\n', encoding="utf-8")
    result = run_cli(home, "create", "typo", "-f", str(modelfile))
    assert result.code == 4, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0] == f"error: {modelfile}:3:13: in TEMPLATE: unknown field '.Sytem'", lines
    assert lines[1].startswith("hint: did you mean '.System'?") and len(lines) == 2
    assert "typo:latest" not in run_cli(home, "list").stdout
    fixed = modelfile.read_text(encoding="utf-8").replace(".Sytem", ".System")
    modelfile.write_text(fixed, encoding="utf-8")
    assert run_cli(home, "create", "typo", "-f", str(modelfile)).code == 0


def test_the_template_is_checked_before_from_is_pulled(tmp_path: Path) -> None:
    """FROM names a catalog model that is not stored and the network is off: the template error comes first."""
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text('FROM qwen2.5:0.5b\nTEMPLATE "{{ range .Messages }}{{ .Contnet }}{{ end }}"\n',
                         encoding="utf-8")
    result = run_cli(tmp_path / "home", "create", "x", "-f", str(modelfile), env={"SLMCTL_OFFLINE": "1"})
    assert result.code == 4 and ":2:35: in TEMPLATE: unknown field '.Contnet'" in result.stderr, result.stderr
    assert "did you mean '.Content'?" in result.stderr
