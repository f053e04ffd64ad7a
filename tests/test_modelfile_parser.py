"""The Modelfile parser and printer: examples, every error path, and round-trip properties."""

from __future__ import annotations

from typing import Any

import annotated_types
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slmctl.errors import ExitCode, InvalidModelFile
from slmctl.modelfile import Message, Modelfile, ModelfileError, format_modelfile, parse_modelfile, quote
from slmctl.options import ALL_KEYS, REPEATABLE_KEYS, LoadOptions, SamplingOptions

SEED_MODELFILE = '''FROM phi4:mini
PARAMETER temperature 0.7
PARAMETER top_p 0.9
PARAMETER context_length 4096
PARAMETER num_gpu 1
PARAMETER num_thread 8
SYSTEM """
You are an enterprise assistant specialised in technical documentation.
Answer concisely and cite the internal documents when you use them.
"""
FILE ./knowledge/product-guide.md
'''

SEED_SYSTEM = ("\nYou are an enterprise assistant specialised in technical documentation.\n"
               "Answer concisely and cite the internal documents when you use them.\n")


def parse(text: str) -> Modelfile:
    return parse_modelfile(text)


# --- examples ----------------------------------------------------------------------------------------

def test_seed_enterprise_modelfile() -> None:
    m = parse(SEED_MODELFILE)
    assert m == Modelfile(
        from_="phi4:mini",
        parameters={"temperature": 0.7, "top_p": 0.9, "num_ctx": 4096, "num_gpu": 1, "num_thread": 8},
        system=SEED_SYSTEM,
        files=["./knowledge/product-guide.md"],
    )
    assert isinstance(m.parameters["num_ctx"], int) and isinstance(m.parameters["temperature"], float)


def test_seed_modelfile_prints_canonically_and_round_trips() -> None:
    text = format_modelfile(parse(SEED_MODELFILE))
    assert text == (
        "FROM phi4:mini\n"
        "PARAMETER num_ctx 4096\nPARAMETER num_gpu 1\nPARAMETER num_thread 8\n"
        "PARAMETER temperature 0.7\nPARAMETER top_p 0.9\n"
        f'SYSTEM """{SEED_SYSTEM}"""\n'
        "FILE ./knowledge/product-guide.md\n"
    )
    assert parse(text) == parse(SEED_MODELFILE)


def test_template_on_one_line_with_newline_escapes_kept_verbatim() -> None:
    m = parse('FROM ./model.gguf\nTEMPLATE """{{ .System }}\\nUser: {{ .Prompt }}\\nAssistant: """\n')
    assert m.from_ == "./model.gguf"
    assert m.template == "{{ .System }}\\nUser: {{ .Prompt }}\\nAssistant: "


def test_template_over_several_lines() -> None:
    m = parse('FROM x\nTEMPLATE """{{ .System }}\nUser: {{ .Prompt }}\nAssistant: """\n')
    assert m.template == "{{ .System }}\nUser: {{ .Prompt }}\nAssistant: "
    assert format_modelfile(m).splitlines()[1] == 'TEMPLATE """{{ .System }}'


def test_comments_blank_lines_and_indentation_are_ignored() -> None:
    m = parse("# a comment\n\n   # indented comment\n\t\n  FROM base   \n"
              "# SYSTEM not this\nSYSTEM hi # not a comment\n")
    assert m.from_ == "base" and m.system == "hi # not a comment"


def test_instructions_are_case_insensitive_and_in_any_order() -> None:
    m = parse("system be brief\nParameter Temperature 0.2\nfrom base\nMessage USER hi\n")
    assert m == Modelfile(from_="base", parameters={"temperature": 0.2}, system="be brief",
                          messages=[Message("user", "hi")])


def test_bom_and_crlf_are_tolerated() -> None:
    m = parse('\ufeffFROM base\r\nSYSTEM """a\r\nb"""\r\nPARAMETER stop x\r\n')
    assert m.from_ == "base" and m.system == "a\nb" and m.parameters == {"stop": ["x"]}


def test_bom_does_not_shift_columns() -> None:
    with pytest.raises(ModelfileError) as info:
        parse("\ufeffFROM a\nBOGUS x")
    assert (info.value.line, info.value.column) == (2, 1)


@pytest.mark.parametrize("written, value", [
    ("plain text  ", "plain text"),
    ('"  padded  "', "  padded  "),
    ('"say \\"hi\\" \\\\ back"', 'say "hi" \\ back'),
    ('"C:\\path\\n"', "C:\\path\\n"),          # other backslashes are kept as written
    ('""', ""),
    ('"""one line"""', "one line"),
    ('"""  spaced  """   ', "  spaced  "),
    ('"""ends with a quote""""', 'ends with a quote"'),
    ('""""starts with one"""', '"starts with one'),
    ('""""""', ""),
    ('say "hi"', 'say "hi"'),                     # quotes inside a bare value are kept
])
def test_quoting_forms(written: str, value: str) -> None:
    assert parse(f"FROM m\nSYSTEM {written}\n").system == value


def test_triple_quoted_value_spanning_lines_keeps_content_verbatim() -> None:
    m = parse('FROM m\nLICENSE """MIT\n\n  indented # not a comment\nFROM inside"""\nLICENSE Apache-2.0\n')
    assert m.licenses == ["MIT\n\n  indented # not a comment\nFROM inside", "Apache-2.0"]


def test_stop_accumulates_and_other_parameters_last_wins() -> None:
    m = parse('FROM m\nPARAMETER stop "<|im_end|>"\nPARAMETER temperature 0.1\nPARAMETER stop </s>\n'
              'PARAMETER stop """\n"""\nPARAMETER temperature 0.9\nPARAMETER use_mmap FALSE\n')
    assert m.parameters == {"stop": ["<|im_end|>", "</s>", "\n"], "temperature": 0.9, "use_mmap": False}
    printed = format_modelfile(m)
    assert 'PARAMETER stop <|im_end|>\nPARAMETER stop </s>\nPARAMETER stop """\n"""' in printed
    assert printed.index("stop") < printed.index("temperature") < printed.index("use_mmap")


def test_aliases_are_canonicalised() -> None:
    m = parse("FROM m\nPARAMETER context_length 2048\nPARAMETER max_tokens 12\n")
    assert m.parameters == {"num_ctx": 2048, "num_predict": 12}


def test_messages_keep_their_order_and_last_system_and_template_win() -> None:
    m = parse("FROM m\nSYSTEM one\nMESSAGE user hello\nMESSAGE assistant hi there\nSYSTEM two\n"
              'MESSAGE system """be\nterse"""\nTEMPLATE a\nTEMPLATE b\n')
    assert m.messages == [Message("user", "hello"), Message("assistant", "hi there"), Message("system", "be\nterse")]
    assert (m.system, m.template) == ("two", "b")


def test_adapters_files_licenses_and_requires() -> None:
    m = parse("FROM m\nADAPTER ./a.gguf\nADAPTER ./b.gguf\nFILE docs/x.md\nFILE \"with space.pdf\"\n"
              "LICENSE MIT\nREQUIRES 0.1.0\n")
    assert m.adapters == ["./a.gguf", "./b.gguf"] and m.files == ["docs/x.md", "with space.pdf"]
    assert m.licenses == ["MIT"] and m.requires == "0.1.0"


def test_printer_order() -> None:
    m = Modelfile(from_="m", parameters={"top_k": 5, "stop": ["a", "b"]}, system="s", template="t",
                  messages=[Message("user", "u")], licenses=["l"], adapters=["ad"], files=["f"], requires="1.2")
    assert format_modelfile(m) == ("FROM m\nPARAMETER stop a\nPARAMETER stop b\nPARAMETER top_k 5\nTEMPLATE t\n"
                                   "SYSTEM s\nMESSAGE user u\nLICENSE l\nADAPTER ad\nFILE f\nREQUIRES 1.2\n")


@pytest.mark.parametrize("text, written", [
    ("plain", "plain"),
    ("", '""'),
    (" lead", '" lead"'),
    ('a "q"', '"a \\"q\\""'),
    ("back\\slash", "back\\slash"),
    ('x\\"', '"x\\\\\\""'),
    ('"""', '"\\"\\"\\""'),
    ("two\nlines", '"""two\nlines"""'),
    ('ends "\n"', '"""ends "\n""""'),
])
def test_quote(text: str, written: str) -> None:
    assert quote(text) == written
    assert parse(f"FROM m\nSYSTEM {written}\n").system == text


@pytest.mark.parametrize("text", ['multi\nline with """ inside', "crlf\r\nline"])
def test_quote_refuses_what_a_modelfile_cannot_hold(text: str) -> None:
    with pytest.raises(ModelfileError) as info:
        quote(text)
    assert info.value.exit_code == ExitCode.INVALID_INPUT and info.value.line is None


@pytest.mark.parametrize("modelfile", [
    Modelfile(from_="  "),
    Modelfile(from_="m", messages=[Message("robot", "x")]),
    Modelfile(from_="m", parameters={"temprature": 1.0}),
    Modelfile(from_="m", requires="soon"),
    Modelfile(from_="m", files=[""]),
])
def test_printer_refuses_what_would_not_parse_back(modelfile: Modelfile) -> None:
    with pytest.raises(ModelfileError):
        format_modelfile(modelfile)


# --- errors ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, where, fragments", [
    ("FROM m\n\nPARAMETR temperature 1\n", "3:1", ["unknown instruction 'PARAMETR'", "did you mean 'PARAMETER'?"]),
    ("FROM m\n  sytem hi\n", "2:3", ["unknown instruction 'sytem'", "did you mean 'SYSTEM'?", "FROM, PARAMETER"]),
    ("# only a comment\n", "1:1", ["missing FROM", "FROM <model name or path>"]),
    ("", "1:1", ["missing FROM"]),
    ("FROM a\nSYSTEM x\nFROM b\n", "3:1", ["FROM given twice", "line 1"]),
    ("FROM\n", "1:1", ["FROM needs a value", "FROM <model name or path>"]),
    ('FROM ""\n', "1:6", ["FROM needs a non-empty value"]),
    ("FROM m\nSYSTEM   \n", "2:1", ["SYSTEM needs a value", "SYSTEM <text>"]),
    ("FROM m\nADAPTER\n", "2:1", ["ADAPTER needs a value", "ADAPTER <path>"]),
    ("FROM m\nPARAMETER\n", "2:1", ["PARAMETER needs a value", "PARAMETER <name> <value>"]),
    ("FROM m\nPARAMETER temperature\n", "2:11", ["PARAMETER temperature needs a value", "PARAMETER <name> <value>"]),
    ("FROM m\nPARAMETER temprature 0.5\n", "2:11", ["unknown parameter 'temprature'", "did you mean 'temperature'?",
                                                   "num_ctx"]),
    ("FROM m\nPARAMETER  top_p   2\n", "2:20", ["invalid value '2' for parameter 'top_p'", "top_p"]),
    ("FROM m\nPARAMETER seed abc\n", "2:16", ["invalid value 'abc' for parameter 'seed'"]),
    ("FROM m\nPARAMETER use_mmap maybe\n", "2:20", ["use_mmap"]),
    ("FROM m\nMESSAGE usr hi\n", "2:9", ["unknown MESSAGE role 'usr'", "did you mean 'user'?", "assistant"]),
    ("FROM m\nMESSAGE user\n", "2:9", ["MESSAGE user needs a text", "MESSAGE <system|user|assistant> <text>"]),
    ('FROM m\nSYSTEM """never\nclosed\n', "2:8", ['unterminated """', "starts here"]),
    ('FROM m\nSYSTEM "never closed\n', "2:8", ['unterminated "', '"""']),
    ('FROM m\nSYSTEM "escaped at the end\\"\n', "2:8", ['unterminated "']),
    ('FROM m\nSYSTEM "a" b\n', "2:12", ['unexpected text after the closing "']),
    ('FROM m\nSYSTEM """a\nb""" c\n', "3:6", ['unexpected text after the closing """']),
    ("FROM m\nREQUIRES latest\n", "2:10", ["invalid REQUIRES version 'latest'", "0.1.0"]),
    ("FROM m\nREQUIRES 1\n", "2:10", ["invalid REQUIRES version"]),
    ("FROM m\r\nBAD x\r\n", "2:1", ["unknown instruction 'BAD'"]),
])
def test_errors_name_file_line_column_and_hint(text: str, where: str, fragments: list[str]) -> None:
    with pytest.raises(ModelfileError) as info:
        parse(text)
    err = info.value
    assert isinstance(err, InvalidModelFile) and err.exit_code == ExitCode.INVALID_INPUT == 4
    assert err.message.startswith(f"Modelfile:{where}: ")
    assert f"{err.line}:{err.column}" == where and err.filename == "Modelfile"
    for fragment in fragments:
        assert fragment in f"{err.message}\n{err.hint}"


def test_error_uses_the_given_filename() -> None:
    with pytest.raises(ModelfileError) as info:
        parse_modelfile("FROM m\nFROM n\n", filename="models/Modelfile.enterprise")
    assert str(info.value).startswith("models/Modelfile.enterprise:2:1: ")


# --- properties --------------------------------------------------------------------------------------

#: Characters the format treats specially, mixed into otherwise arbitrary text.
_SPECIAL = st.sampled_from(['"', '"', "\\", "\n", "\r", " ", "\t", "#", "\ufeff", "\u2028", "\x0b", "é", "🙂"])
any_text = st.text(st.one_of(_SPECIAL, st.characters(exclude_categories=("Cs",))), max_size=30)


def representable(text: str) -> bool:
    """What :func:`quote` can write: everything but multi-line text holding ``\"\"\"`` or CRLF."""
    return "\n" not in text or ('"""' not in text and "\r\n" not in text)


texts = any_text.filter(representable)
paths = texts.filter(lambda t: t.strip() != "")


def _bounds(field: Any) -> tuple[Any, Any]:
    low = high = None
    for rule in field.metadata:
        if isinstance(rule, annotated_types.Ge):
            low = rule.ge
        elif isinstance(rule, annotated_types.Le):
            high = rule.le
    return low, high


def _value_strategy(key: str) -> st.SearchStrategy[Any]:
    field = {**SamplingOptions.model_fields, **LoadOptions.model_fields}[key]
    if key in REPEATABLE_KEYS:
        return st.lists(texts, min_size=1, max_size=3)
    low, high = _bounds(field)
    if field.annotation is bool:
        return st.booleans()
    if field.annotation is float:
        return st.floats(min_value=low, max_value=high, allow_nan=False, allow_infinity=False)
    assert field.annotation is int, key
    return st.integers(min_value=low if low is not None else -(2**40), max_value=high if high is not None else 2**40)


parameters = st.dictionaries(st.sampled_from(ALL_KEYS), st.none()).flatmap(
    lambda keys: st.fixed_dictionaries({key: _value_strategy(key) for key in keys}))

versions = st.from_regex(r"\A[0-9]{1,3}\.[0-9]{1,3}(\.[0-9]{1,3})?(-rc[0-9])?\Z")

modelfiles = st.builds(
    Modelfile,
    from_=paths,
    parameters=parameters,
    system=st.none() | texts,
    template=st.none() | texts,
    messages=st.lists(st.builds(Message, st.sampled_from(["system", "user", "assistant"]), texts), max_size=3),
    licenses=st.lists(texts, max_size=2),
    adapters=st.lists(paths, max_size=2),
    files=st.lists(paths, max_size=2),
    requires=st.none() | versions,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(modelfiles)
def test_format_then_parse_round_trips(modelfile: Modelfile) -> None:
    text = format_modelfile(modelfile)
    assert parse(text) == modelfile
    assert format_modelfile(parse(text)) == text


@settings(max_examples=300)
@given(texts)
def test_quote_round_trips_every_representable_text(text: str) -> None:
    m = parse(f"FROM m\nSYSTEM {quote(text)}\nPARAMETER stop {quote(text)}\nMESSAGE user {quote(text)}\n")
    assert m.system == text and m.parameters["stop"] == [text] and m.messages == [Message("user", text)]


@settings(max_examples=100)
@given(st.tuples(any_text, st.sampled_from(['"""', "\r\n"]), any_text, any_text).map(
    lambda parts: f"{parts[0]}{parts[1]}{parts[2]}\n{parts[3]}"))
def test_quote_refuses_exactly_the_unrepresentable(text: str) -> None:
    assert not representable(text)
    with pytest.raises(ModelfileError):
        quote(text)


_WORDS = st.sampled_from(["FROM", "from", "PARAMETER", "SYSTEM", "TEMPLATE", "MESSAGE", "LICENSE", "ADAPTER",
                          "FILE", "REQUIRES", "user", "stop", "temperature", "num_ctx", "use_mmap", "0.5", "-1",
                          "true", '"', '"""', "\\", "#", " ", "\t", "\n", "\r\n", "\ufeff", "1.2.3"])
modelfile_like = st.lists(st.one_of(_WORDS, any_text), max_size=25).map("".join)


@settings(max_examples=400)
@given(st.one_of(st.text(), modelfile_like))
def test_arbitrary_text_raises_nothing_but_modelfile_error(text: str) -> None:
    try:
        m = parse(text)
    except ModelfileError as err:
        assert err.line is not None and err.line >= 1 and err.column is not None and err.column >= 1
        return
    assert isinstance(m, Modelfile) and m.from_.strip()
