"""Statistics, reports, history, plot and regression gate of ``slmctl bench`` (pure, on hand-made samples)."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import statistics
from pathlib import Path

import jsonschema
import pytest

from slmctl.errors import InvalidModelFile, UsageError
from slmctl.services.bench.gate import Regression, compare, gate_text, load_document, parse_threshold, unmatched
from slmctl.services.bench.history import append_history, history_path, history_text, read_history
from slmctl.services.bench.model import FIGURES, BenchConfig, BenchDocument, ModelInfo, Sample
from slmctl.services.bench.report import build_document, csv_columns, document_schema, to_csv, to_json, to_markdown
from slmctl.services.bench.stats import is_unstable, summarize, summarize_all, summarize_config
from slmctl.services.bench.text import to_text

MACHINE = {"cpu": {"model": "Test CPU 9000", "cores": 8}, "memory": {"total": 16_000_000_000}}
RUNTIMES = {"llama-cpp-python": "0.3.36", "onnxruntime-genai": None}

CPU_GGUF = BenchConfig(model="tiny", format="gguf", threads=4, ctx=2048)
CPU_ONNX = BenchConfig(model="tiny", format="onnx", device="cpu")
OTHER = BenchConfig(model="other:q4", format="gguf", threads=8)


def make_samples(config: BenchConfig, gen_tps: list[float], *, load_ms: list[float] | None = None,
                 prompt_tps: float = 500.0, ttft_ms: float = 40.0, peak_rss: int = 300_000_000) -> list[Sample]:
    loads = load_ms or [1000.0] * len(gen_tps)
    return [Sample(config=config.key, repetition=i, device="cpu", load_ms=loads[i], ttft_ms=ttft_ms,
                   prompt_tokens=config.prompt_tokens, prompt_ms=config.prompt_tokens / prompt_tps * 1000,
                   prompt_tps=prompt_tps, gen_tokens=config.gen_tokens, gen_ms=config.gen_tokens / tps * 1000,
                   gen_tps=tps, peak_rss=peak_rss) for i, tps in enumerate(gen_tps)]


def make_doc(*runs: tuple[BenchConfig, list[Sample]]) -> BenchDocument:
    configs = [config for config, _ in runs]
    samples = [s for _, group in runs for s in group]
    models = [ModelInfo(name="tiny", digest="sha256:" + "0" * 64, format="gguf", quantization="F16")]
    return build_document(configs=configs, samples=samples, models=models, machine=MACHINE, runtimes=RUNTIMES,
                          settings={"repetitions": 3, "warmup": 1}, slmctl_version="0.1.0")


@pytest.fixture
def doc() -> BenchDocument:
    return make_doc((CPU_GGUF, make_samples(CPU_GGUF, [100.0, 101.0, 99.0])),
                     (CPU_ONNX, make_samples(CPU_ONNX, [60.0, 90.0, 40.0])))  # onnx gen_tps is unstable


# ----------------------------------------------------------------------------- stats

def test_summarize_known_values() -> None:
    stats = summarize([4.0, 1.0, 3.0, 2.0])
    assert (stats.median, stats.min, stats.max, stats.n) == (2.5, 1.0, 4.0, 4)
    assert stats.stdev == pytest.approx(math.sqrt(5 / 3))
    single = summarize([7])
    assert (single.median, single.stdev, single.n) == (7.0, 0.0, 1)
    with pytest.raises(ValueError):
        summarize([])


def test_unstable_rule_both_ways() -> None:
    assert not is_unstable([100, 101, 99])
    assert is_unstable([100, 130, 70])                       # coefficient of variation 30%
    values = [100.0] * 9 + [72.0]                            # CV ~9.1% but range 28% of the median
    assert statistics.stdev(values) / statistics.fmean(values) < 0.10
    assert is_unstable(values)
    assert not is_unstable([100, 150])                       # two samples are too few to judge


def test_summarize_config_and_all(doc: BenchDocument) -> None:
    gguf, onnx = doc.summary
    assert gguf.key == CPU_GGUF.key and set(gguf.figures) == set(FIGURES)
    assert gguf.figures["gen_tps"].median == 100.0 and gguf.unstable == []
    assert onnx.unstable == ["gen_tps"]
    assert summarize_config(OTHER, doc.samples).figures == {}  # no sample of its own
    assert [s.key for s in summarize_all([CPU_ONNX, CPU_GGUF], doc.samples)] == [CPU_ONNX.key, CPU_GGUF.key]


# ----------------------------------------------------------------------------- document and renderings

def test_document_validates_against_schema(doc: BenchDocument) -> None:
    schema = document_schema()
    assert schema["$schema"].startswith("https://json-schema.org/") and schema["$id"]
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(json.loads(to_json(doc)))
    broken = json.loads(to_json(doc))
    broken["samples"][0]["surprise"] = 1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_json_round_trip(doc: BenchDocument) -> None:
    assert doc.created_at.endswith("+00:00")
    assert BenchDocument.model_validate_json(to_json(doc)) == doc


def test_csv_columns_and_rows(doc: BenchDocument) -> None:
    rows = list(csv.DictReader(io.StringIO(to_csv(doc))))
    assert len(rows) == 2 and list(rows[0]) == csv_columns()
    for figure in FIGURES:
        assert {f"{figure}_median", f"{figure}_min", f"{figure}_max", f"{figure}_stdev",
                f"{figure}_unstable"} <= set(rows[0])
    gguf, onnx = rows
    assert (gguf["key"], gguf["model"], gguf["threads"], gguf["ctx"]) == (CPU_GGUF.key, "tiny", "4", "2048")
    assert float(gguf["gen_tps_median"]) == 100.0 and float(gguf["gen_tps_stdev"]) == 1.0
    assert gguf["gen_tps_unstable"] == "0" and onnx["gen_tps_unstable"] == "1"
    assert gguf["peak_rss_median"] == "300000000" and gguf["n"] == "3"


def test_markdown_tables(doc: BenchDocument) -> None:
    text = to_markdown(doc)
    assert text.startswith("## slmctl bench — ")
    assert "Test CPU 9000 (8 cores), 16.0 GB memory" in text and "llama-cpp-python 0.3.36" in text
    assert text.count("| figure | median ± stdev | min | max |") == 2
    assert "| generation | 100.0 ± 1.0 tok/s | 99.0 | 101.0 |" in text
    assert "Tokens: prompt 64, generated 32" in text
    assert "⚠️ Unstable: generation" in text


def test_text_table_and_bar_chart(doc: BenchDocument) -> None:
    text = to_text(doc, width=60)
    lines = text.splitlines()
    assert "Test CPU 9000" in lines[0]
    header = next(line for line in lines if line.startswith("MODEL"))
    assert "GEN TOK/S" in header and "PEAK RSS" in header
    assert "64/32" in text and "300 MB" in text and "60.0!" in text
    bars = [line for line in lines if "█" in line]
    assert len(bars) == 2 and all(len(line) <= 60 for line in bars)
    assert bars[0].count("█") > bars[1].count("█")  # 100 tok/s vs 60 tok/s
    assert bars[0].startswith("tiny gguf")
    assert "[" not in text  # plain: no markup
    coloured = to_text(doc, width=60, color=True)
    assert "\x1b[" in coloured and re.sub(r"\x1b\[[0-9;]*m", "", coloured) == text


def test_renderings_of_a_failed_configuration() -> None:
    failed = make_doc((CPU_GGUF, make_samples(CPU_GGUF, [100.0])), (OTHER, []))
    assert ",,," in to_csv(failed).splitlines()[2]
    assert "_No successful run._" in to_markdown(failed)
    text = to_text(failed)
    assert text.count("█") > 0 and text.splitlines()[-1].startswith("other:q4") and text.endswith("  -\n")


# ----------------------------------------------------------------------------- history

def test_history_append_and_read_with_damaged_lines(tmp_path: Path, doc: BenchDocument) -> None:
    assert read_history(tmp_path) == [] and "no benchmark" in history_text([])
    path = append_history(tmp_path, doc)
    assert path == history_path(tmp_path) == tmp_path / "bench" / "history.jsonl"
    with open(path, "ab") as handle:
        handle.write(b"not json\n\xff\xfe\n[1, 2]\n{\"created_at\": \"2026-")  # junk, then a torn line
    append_history(tmp_path, doc)
    lines = path.read_bytes().splitlines()
    assert len(lines) == 6 and json.loads(lines[-1])["configs"][0]["key"] == CPU_GGUF.key
    entries = read_history(tmp_path)
    assert len(entries) == 2
    entry = entries[0]
    assert entry["cpu"] == "Test CPU 9000" and entry["slmctl_version"] == "0.1.0"
    assert entry["configs"][0]["medians"]["gen_tps"] == 100.0
    listing = history_text(entries)
    assert CPU_GGUF.key in listing and "gen 100.0 tok/s" in listing and "gen 60.0 tok/s!" in listing


# ----------------------------------------------------------------------------- plot

def test_plot_writes_png(tmp_path: Path, doc: BenchDocument) -> None:
    pytest.importorskip("matplotlib")
    from slmctl.services.bench.plot import write_plot

    target = tmp_path / "bench.png"
    write_plot(doc, target)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib(tmp_path: Path, doc: BenchDocument, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from slmctl.services.bench.plot import write_plot

    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(UsageError) as info:
        write_plot(doc, tmp_path / "x.png")
    assert info.value.message == "--plot needs matplotlib" and "slmctl[plot]" in (info.value.hint or "")


# ----------------------------------------------------------------------------- gate

BASE = make_doc((CPU_GGUF, make_samples(CPU_GGUF, [100.0, 101.0, 99.0])))


def test_gate_drop_beyond_noise_is_a_regression() -> None:
    current = make_doc((CPU_GGUF, make_samples(CPU_GGUF, [80.0, 81.0, 79.0])))
    found = compare(current, BASE, 0.05)
    assert len(found) == 1
    r = found[0]
    assert isinstance(r, Regression) and (r.key, r.figure) == (CPU_GGUF.key, "gen_tps")
    assert (r.baseline_median, r.current_median) == (100.0, 80.0)
    assert r.change == pytest.approx(-0.2) and r.noise == pytest.approx(2 * math.sqrt(2))
    text = gate_text(found)
    assert "gen_tps" in text and "generation" in text and "-20.0%" in text


def test_gate_drop_within_noise_is_not() -> None:
    noisy_base = make_doc((CPU_GGUF, make_samples(CPU_GGUF, [100.0, 130.0, 70.0])))
    current = make_doc((CPU_GGUF, make_samples(CPU_GGUF, [80.0, 110.0, 50.0])))
    assert compare(current, noisy_base, 0.05) == []


def test_gate_small_drop_and_improvement_are_not() -> None:
    small = make_doc((CPU_GGUF, make_samples(CPU_GGUF, [97.0, 97.1, 96.9])))  # -3%, beyond noise
    assert compare(small, BASE, 0.05) == []
    assert len(compare(small, BASE, 0.02)) == 1
    better = make_doc((CPU_GGUF, make_samples(CPU_GGUF, [130.0, 131.0, 129.0])))
    assert compare(better, BASE, 0.05) == [] and "no regression" in gate_text([])


def test_gate_lower_is_better_figure() -> None:
    slower_load = make_doc((CPU_GGUF, make_samples(CPU_GGUF, [100.0, 101.0, 99.0],
                                                   load_ms=[1300.0, 1310.0, 1290.0])))
    found = compare(slower_load, BASE, 0.05)
    assert [(r.figure, round(r.change, 3)) for r in found] == [("load_ms", 0.3)]
    assert "load time" in gate_text(found) and "+30.0%" in gate_text(found)
    faster_load = make_doc((CPU_GGUF, make_samples(CPU_GGUF, [100.0, 101.0, 99.0], load_ms=[700.0] * 3)))
    assert compare(faster_load, BASE, 0.05) == []


def test_gate_unmatched_configurations() -> None:
    current = make_doc((CPU_GGUF, make_samples(CPU_GGUF, [100.0, 101.0, 99.0])),
                        (OTHER, make_samples(OTHER, [10.0, 10.0, 10.0])))
    base = make_doc((CPU_GGUF, make_samples(CPU_GGUF, [100.0, 101.0, 99.0])),
                     (CPU_ONNX, make_samples(CPU_ONNX, [50.0, 50.0, 50.0])))
    assert compare(current, base, 0.05) == []
    missing = unmatched(current, base)
    assert missing.only_current == [OTHER.key] and missing.only_baseline == [CPU_ONNX.key]
    text = gate_text([], missing)
    assert OTHER.key in text and CPU_ONNX.key in text
    assert not unmatched(BASE, BASE)


@pytest.mark.parametrize(("text", "value"), [("5%", 0.05), ("0.05", 0.05), (" 12.5 % ", 0.125), ("0", 0.0),
                                             ("1", 1.0), ("150%", 1.5)])
def test_parse_threshold(text: str, value: float) -> None:
    assert parse_threshold(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["", "abc", "-5%", "5", "5%%", "nan", "1e-2", "%"])
def test_parse_threshold_rejects(text: str) -> None:
    with pytest.raises(UsageError):
        parse_threshold(text)


def test_load_document(tmp_path: Path, doc: BenchDocument) -> None:
    good = tmp_path / "base.json"
    good.write_text(to_json(doc))
    assert load_document(good) == doc
    with pytest.raises(UsageError, match="not found"):
        load_document(tmp_path / "missing.json")
    with pytest.raises(UsageError, match="folder"):
        load_document(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InvalidModelFile, match="invalid JSON"):
        load_document(bad)
    bad.write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(InvalidModelFile, match="schema version 99"):
        load_document(bad)
    data = json.loads(to_json(doc))
    del data["samples"]
    bad.write_text(json.dumps(data))
    with pytest.raises(InvalidModelFile, match="samples"):
        load_document(bad)
