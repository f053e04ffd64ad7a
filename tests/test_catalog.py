"""The model catalog, variant selection, source references and ``list --available``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slmctl.catalog import (
    CatalogEntry,
    CatalogFile,
    choose_variant,
    load_catalog,
    normalize_quant,
    select_variant,
    size_class_of,
)
from slmctl.catalog.catalog import shipped_catalog_text
from slmctl.errors import DeviceUnavailable, InvalidModelFile, ModelNotFound, UsageError
from slmctl.refs import HfPathRef, HfRepoRef, OllamaRef, UrlRef, parse_source
from tests.cli_runner import run_cli

SEED_ALIASES = {
    "qwen2.5:3b": ("qwen2.5-3b", None),
    "phi4:mini": ("phi4-mini", None),
    "phi4-mini": ("phi4-mini", None),
    "phi4:mini-f16": ("phi4-mini", "BF16"),  # the only confirmed 16-bit Phi-4-mini GGUF is BF16
    "phi4:mini-q8_0": ("phi4-mini", "Q8_0"),
    "phi4:mini-q4_k_m": ("phi4-mini", "Q4_K_M"),
    "phi4-mini:q8_0": ("phi4-mini", "Q8_0"),
    "microsoft/phi-4-mini": ("phi4-mini", None),
    "deepseek/r1-distill-qwen-1.5b": ("deepseek-r1-1.5b", None),
    "nomic-embed-text": ("nomic-embed-text", None),
}
SPEC_FIELDS = {"name", "aliases", "task", "parameter_size", "size_class", "context_length", "license", "variants",
               "selected", "installed"}
VARIANT_FIELDS = {"format", "quant", "device", "source", "size"}


@pytest.fixture(scope="module")
def catalog():
    return load_catalog(None)


def _entry(**extra) -> CatalogEntry:
    """A synthetic entry with a variant for every kind of hardware."""
    variants = [
        {"format": "gguf", "quant": "Q4_K_M", "device": "any", "source": "hf://o/m-GGUF/m-Q4_K_M.gguf", "size": 10},
        {"format": "gguf", "quant": "Q8_0", "device": "any", "source": "hf://o/m-GGUF/m-Q8_0.gguf", "size": 20},
        {"format": "gguf", "quant": "F16", "device": "any", "source": "hf://o/m-GGUF/m-f16.gguf"},
        {"format": "onnx", "quant": "INT4", "device": "cpu", "source": "hf://o/m-onnx/cpu-int4"},
        {"format": "onnx", "quant": "INT4", "device": "gpu", "provider": "cuda", "source": "hf://o/m-onnx/cuda"},
        {"format": "onnx", "quant": "INT4", "device": "gpu", "provider": "dml", "source": "hf://o/m-onnx/dml"},
        {"format": "onnx", "quant": "INT4", "device": "npu", "provider": "qnn", "source": "hf://o/m-onnx/qnn"},
    ]
    data = {"name": "m", "aliases": ["m:1b"], "task": "chat", "parameter_size": "1B", "variants": variants}
    return CatalogEntry.model_validate({**data, **extra})


# -- the shipped catalog ----------------------------------------------------------------------------
def test_shipped_catalog_validates(catalog) -> None:
    parsed = CatalogFile.model_validate(json.loads(shipped_catalog_text()))
    assert len(parsed.models) >= 20
    names = [e.name for e in catalog]
    assert len(names) == len(set(names))
    keys = [k for e in catalog for k, _ in e.keys()]
    assert len(keys) == len(set(keys)), "an alias belongs to two entries"
    for entry in catalog:
        assert entry.size_class == size_class_of(entry.parameter_size)
        assert entry.context_length and entry.license
        formats = {v.format for v in entry.variants}
        assert "gguf" in formats or entry.task == "embedding"
        for variant in entry.variants:
            assert parse_source(variant.source) is not None
            if variant.format == "gguf":
                assert variant.source.lower().endswith(".gguf") and variant.device == "any"
        sources = [(v.source, v.provider) for v in entry.variants]
        assert len(sources) == len(set(sources))
    assert {e.task for e in catalog} == {"chat", "code", "reasoning", "embedding"}
    assert any(v.format == "onnx" and e.task == "embedding" for e in catalog for v in e.variants)


@pytest.mark.parametrize("alias", sorted(SEED_ALIASES))
def test_seed_aliases_resolve(catalog, alias: str) -> None:
    found = catalog.resolve(alias)
    assert found is not None
    entry, pinned = found
    assert (entry.name, pinned) == SEED_ALIASES[alias]
    assert catalog.resolve(alias.upper()) == found
    if pinned:
        assert select_variant(entry, usable_gguf=["cpu"], usable_onnx=["cpu"], pinned=pinned).quant == pinned


def test_resolve_tags_and_misses(catalog) -> None:
    assert catalog.resolve("phi4-mini:latest")[1] is None
    assert catalog.resolve("qwen2.5:3b:q8_0")[1] == "Q8_0"
    assert catalog.resolve("qwen2.5-3b-Q8_0")[1] == "Q8_0"
    assert catalog.resolve("phi4-mini:banana") is None
    assert catalog.resolve("no-such-model") is None
    assert catalog.resolve("") is None
    assert "phi4-mini" in catalog.closest("phi4-mni")
    assert catalog.closest("qwen2.5:3") and all(n.startswith("qwen") for n in catalog.closest("qwen2.5:3"))
    assert catalog.closest("zzzzzzzz") == []


# -- the user catalog -------------------------------------------------------------------------------
def test_user_catalog_extends_and_overrides(tmp_path: Path) -> None:
    gguf = {"format": "gguf", "quant": "q4_k_m", "device": "any", "source": "hf://me/mine-GGUF/mine-Q4_K_M.gguf"}
    user = {"version": 1, "models": [
        {"name": "my-model", "aliases": ["mine"], "task": "code", "parameter_size": "12B", "variants": [gguf]},
        {"name": "phi4-mini", "aliases": ["phi4:mini"], "task": "reasoning", "parameter_size": "3.8B",
         "variants": [gguf]},
    ]}
    (tmp_path / "catalog.json").write_text(json.dumps(user), encoding="utf-8")
    cat = load_catalog(tmp_path)
    assert len(cat) == len(load_catalog(None)) + 1
    mine, pinned = cat.resolve("MINE")
    assert (mine.name, mine.size_class, mine.variants[0].quant, pinned) == ("my-model", "large", "Q4_K_M", None)
    assert cat.resolve("phi4:mini")[0].task == "reasoning"
    assert cat.resolve("phi-4-mini") is None  # the override replaced the whole entry


@pytest.mark.parametrize("content, needle", [
    ("{not json", "catalog.json"),
    ('{"version": 1, "models": [{"name": "x"}]}', "models.0"),
    ('{"version": 1, "models": [], "extra": 1}', "extra"),
    ('{"models": [{"name": "x", "task": "chat", "parameter_size": "1B", "variants": [{"format": "gguf", '
     '"quant": "Q4_K_M", "device": "any", "source": "hf://o/r/x.bin"}]}]}', ".gguf"),
])
def test_broken_user_catalog(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "catalog.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InvalidModelFile) as info:
        load_catalog(tmp_path)
    assert str(path) in info.value.message and needle in info.value.message
    assert info.value.exit_code == 4


# -- variant selection ------------------------------------------------------------------------------
@pytest.mark.parametrize("gguf, onnx, expected, device", [
    (["cpu"], ["cpu"], ("gguf", "Q4_K_M", "any", None), "cpu"),
    (["cpu"], [], ("gguf", "Q4_K_M", "any", None), "cpu"),
    (["cuda", "cpu"], ["cuda", "cpu"], ("gguf", "Q4_K_M", "any", None), "cuda"),
    (["metal", "cpu"], ["cpu"], ("gguf", "Q4_K_M", "any", None), "metal"),
    (["cpu"], ["qnn", "cpu"], ("onnx", "INT4", "npu", "qnn"), "qnn"),
    (["cuda", "cpu"], ["qnn", "cuda", "cpu"], ("onnx", "INT4", "npu", "qnn"), "qnn"),
    (["cpu"], ["dml", "cpu"], ("onnx", "INT4", "gpu", "dml"), "dml"),
    (["vulkan", "cpu"], ["dml", "cpu"], ("onnx", "INT4", "gpu", "dml"), "dml"),
    (["cpu"], ["cuda", "cpu"], ("onnx", "INT4", "gpu", "cuda"), "cuda"),
])
def test_automatic_selection(gguf, onnx, expected, device) -> None:
    chosen = choose_variant(_entry(), usable_gguf=gguf, usable_onnx=onnx)
    v = chosen.variant
    assert (v.format, v.quant, v.device, v.provider) == expected
    assert chosen.device == device
    if v.format == "gguf":
        assert chosen.gpu_layers == (-1 if device != "cpu" else 0)  # full offload on a GPU


def test_selection_overrides() -> None:
    e = _entry()
    pick = lambda **kw: select_variant(e, usable_gguf=["cuda", "cpu"], usable_onnx=["dml", "cpu"], **kw)  # noqa: E731
    assert pick(format="onnx").provider == "dml"
    assert pick(format="onnx", device="cpu").device == "cpu"
    assert pick(quant="q8_0").quant == "Q8_0"
    assert pick(quant="fp16").quant == "F16"
    assert pick(device="cpu").format == "gguf"
    assert pick(device="dml").provider == "dml"
    assert pick(device="gpu").format == "gguf"
    assert pick(pinned="Q8_0").quant == "Q8_0"
    assert pick(pinned="Q8_0", quant="Q8_0").quant == "Q8_0"
    with pytest.raises(UsageError):
        pick(pinned="Q8_0", quant="Q4_K_M")
    with pytest.raises(UsageError):
        pick(format="safetensors")
    with pytest.raises(UsageError):
        pick(device="tpu")


def test_selection_prefers_installed_when_equally_good() -> None:
    e = _entry()
    twin = {"format": "gguf", "quant": "Q4_K_M", "device": "any", "source": "hf://other/m-GGUF/m-Q4_K_M.gguf"}
    e2 = CatalogEntry.model_validate({**e.model_dump(), "variants": [*e.model_dump()["variants"], twin]})
    assert select_variant(e2, usable_gguf=["cpu"], usable_onnx=["cpu"]).source == "hf://o/m-GGUF/m-Q4_K_M.gguf"
    chosen = choose_variant(e2, usable_gguf=["cpu"], usable_onnx=["cpu"], installed={twin["source"]})
    assert chosen.variant.source == twin["source"] and chosen.installed
    # an installed Q8_0 is not as good as the default quant
    assert select_variant(e, usable_gguf=["cpu"], usable_onnx=[], installed={"hf://o/m-GGUF/m-Q8_0.gguf"}).quant == "Q4_K_M"


def test_nothing_fits() -> None:
    e = _entry()
    with pytest.raises(ModelNotFound) as info:
        select_variant(e, usable_gguf=["cpu"], usable_onnx=["cpu"], quant="Q5_K_M")
    assert "Q5_K_M" in info.value.message and "Q4_K_M" in (info.value.hint or "")
    with pytest.raises(DeviceUnavailable) as unavailable:
        select_variant(e, usable_gguf=["cpu"], usable_onnx=["cpu"], device="npu")
    assert unavailable.value.exit_code == 7
    with pytest.raises(DeviceUnavailable):
        select_variant(e, usable_gguf=["cpu"], usable_onnx=["cpu"], device="cuda")
    with pytest.raises(DeviceUnavailable):
        select_variant(e, usable_gguf=[], usable_onnx=[])
    gguf_only = _entry(variants=[e.variants[0].model_dump()])
    with pytest.raises(ModelNotFound):
        select_variant(gguf_only, usable_gguf=["cpu"], usable_onnx=["cpu"], format="onnx")
    with pytest.raises(ModelNotFound):
        select_variant(gguf_only, usable_gguf=["cpu"], usable_onnx=["qnn"], device="npu")


def test_shipped_catalog_selection(catalog) -> None:
    phi35, _ = catalog.resolve("phi3.5")
    assert select_variant(phi35, usable_gguf=["cpu"], usable_onnx=["dml", "cpu"]).provider == "dml"
    for entry in catalog:
        v = select_variant(entry, usable_gguf=["cpu"], usable_onnx=["cpu"])
        assert v.format == "gguf" and v.quant == "Q4_K_M"
        assert select_variant(entry, usable_gguf=["cuda", "cpu"], usable_onnx=["cpu"]).format == "gguf"


def test_quant_and_size_helpers() -> None:
    assert normalize_quant("q4_k_m") == normalize_quant("Q4-K-M") == "Q4_K_M"
    assert normalize_quant("fp16") == "F16"
    assert [size_class_of(s) for s in ("135M", "1B", "3.8B", "4B", "7.6B", "14B")] == [
        "tiny", "small", "small", "small", "medium", "large"]


# -- source references ------------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF", HfRepoRef("bartowski", "Llama-3.2-1B-Instruct-GGUF")),
    ("hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M",
     HfRepoRef("bartowski", "Llama-3.2-1B-Instruct-GGUF", "Q4_K_M")),
    ("hf://Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q4_k_m.gguf",
     HfPathRef("Qwen", "Qwen2.5-0.5B-Instruct-GGUF", "qwen2.5-0.5b-instruct-q4_k_m.gguf")),
    ("hf://microsoft/Phi-4-mini-instruct-onnx/cpu_and_mobile/cpu-int4-rtn-block-32-acc-level-4/",
     HfPathRef("microsoft", "Phi-4-mini-instruct-onnx", "cpu_and_mobile/cpu-int4-rtn-block-32-acc-level-4")),
    ("hf://amd/Qwen2.5-0.5B", HfPathRef("amd", "Qwen2.5-0.5B")),
    ("ollama://qwen2.5:3b", OllamaRef("qwen2.5", "3b")),
    ("ollama://phi4-mini", OllamaRef("phi4-mini", "latest", "library", "registry.ollama.ai")),
    ("ollama://someone/model:v2", OllamaRef("model", "v2", "someone")),
    ("ollama://localhost:11434/library/tiny:q4", OllamaRef("tiny", "q4", "library", "localhost:11434")),
    ("ollama://my.registry.io/tiny", OllamaRef("tiny", "latest", "library", "my.registry.io")),
    ("https://example.com/models/tiny.gguf", UrlRef("https://example.com/models/tiny.gguf")),
])
def test_source_examples(text: str, expected) -> None:
    ref = parse_source(text)
    assert ref == expected
    assert parse_source(str(ref)) == ref


@pytest.mark.parametrize("text", ["phi4-mini", "qwen2.5:3b", "microsoft/phi-4-mini", "./model.gguf", "/abs/x.gguf",
                                  "", "my-model:v2"])
def test_not_a_source(text: str) -> None:
    assert parse_source(text) is None


@pytest.mark.parametrize("text", ["hf://owner", "hf://owner/", "hf://", "hf.co/owner", "hf.co/a/b/c", "hf.co/a/b:",
                                  "hf://a/../x", "hf://a/b/../c", "http://example.com/x.gguf",
                                  "https://example.com/x.bin", "https:///x.gguf", "ollama://", "ollama://a/b/c/d",
                                  "ollama://m:", "ftp://example.com/x.gguf"])
def test_bad_sources(text: str) -> None:
    with pytest.raises(UsageError):
        parse_source(text)


def test_http_needs_opt_in() -> None:
    assert parse_source("http://example.com/x.gguf", allow_http=True) == UrlRef("http://example.com/x.gguf")


_name = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_-]{0,20}(\.[A-Za-z0-9_-]{1,5})?\Z")
_tag = st.from_regex(r"\A[A-Za-z0-9_][A-Za-z0-9._-]{0,15}\Z")
_segment = st.from_regex(r"\A[A-Za-z0-9_][A-Za-z0-9._-]{0,15}\Z").filter(lambda s: s not in (".", ".."))
_host = st.from_regex(r"\A[a-z0-9]{1,10}\.[a-z]{2,5}(:[1-9][0-9]{1,3})?\Z")
_refs = st.one_of(
    st.builds(HfRepoRef, _name, _name, st.none() | _tag),
    st.builds(HfPathRef, _name, _name, st.none() | st.lists(_segment, min_size=1, max_size=4).map("/".join)),
    st.builds(OllamaRef, _name, _tag, _name, _host),
    st.builds(lambda h, p: UrlRef(f"https://{h}/{p}.gguf"), _host, st.lists(_segment, min_size=1, max_size=3)
              .map("/".join)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_refs)
def test_sources_round_trip(ref) -> None:
    assert parse_source(str(ref)) == ref


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=60),
                 st.sampled_from(["hf://", "hf.co/", "ollama://", "https://", "http://"]).flatmap(
                     lambda p: st.text(max_size=40).map(lambda t: p + t))))
def test_sources_never_crash(text: str) -> None:
    try:
        parse_source(text)
    except UsageError:
        pass


# -- list --available through the CLI ---------------------------------------------------------------
def test_list_available_json(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "list", "--available", "--json")
    assert result.code == 0, result.stderr
    items = json.loads(result.stdout)
    assert len(items) == len(load_catalog(None))
    for item in items:
        assert SPEC_FIELDS <= set(item)
        assert item["installed"] is False
        assert all(VARIANT_FIELDS <= set(v) for v in item["variants"])
        assert item["selected"] is None or VARIANT_FIELDS <= set(item["selected"])
    by_name = {i["name"]: i for i in items}
    assert "phi4:mini-q8_0" in by_name["phi4-mini"]["aliases"]
    assert by_name["qwen2.5-3b"]["selected"]["format"] == "gguf"

    small_code = json.loads(run_cli(tmp_path, "list", "--available", "--json", "--size", "small",
                                    "--type", "code").stdout)
    assert small_code and all(i["size_class"] == "small" and i["task"] == "code" for i in small_code)
    onnx = json.loads(run_cli(tmp_path, "list", "--available", "--json", "--format", "onnx").stdout)
    assert onnx and all(any(v["format"] == "onnx" for v in i["variants"]) for i in onnx)
    assert all(i["selected"] is None or i["selected"]["format"] == "onnx" for i in onnx)
    assert len(onnx) < len(items)


def test_list_available_table_and_errors(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "list", "--available", "--type", "embedding")
    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "TASK", "PARAMS", "SIZE", "FORMAT", "DEVICE", "QUANT", "INSTALLED"]
    assert any(line.startswith("nomic-embed-text ") for line in lines)
    assert all(" embedding " in line for line in lines[1:])
    bad = run_cli(tmp_path, "list", "--available", "--size", "huge")
    assert bad.code == 2 and "--size" in bad.stderr
    assert run_cli(tmp_path, "list", "--type", "chat").code == 2
    (tmp_path / "catalog.json").write_text("{broken", encoding="utf-8")
    broken = run_cli(tmp_path, "list", "--available")
    assert broken.code == 4 and "catalog.json" in broken.stderr
    assert run_cli(tmp_path, "list").code == 0  # the plain store listing ignores the catalog


def test_list_available_installed_is_by_content_not_by_name(tmp_path: Path, tiny_gguf: Path) -> None:
    """A different file stored under a catalog alias's name is not that catalog model."""
    assert run_cli(tmp_path, "import", str(tiny_gguf), "--name", "qwen2.5:3b").code == 0
    items = json.loads(run_cli(tmp_path, "list", "--available", "--json", "--type", "chat").stdout)
    assert {i["name"] for i in items if i["installed"]} == set()
