"""``slmctl bench --concurrency``: N concurrent in-process requests per configuration.

The option as a matrix axis (parsing, validation, keys), the concurrent runner on the tiny models (the
requests really overlap on GGUF and queue on ONNX, checked structurally from the order of their first
and last tokens, not from timings), the JSON document, the reports, the gate against older baselines,
and that without the option (or with ``--concurrency 1``) every output reads as before.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import jsonschema
import pytest

from slmctl.engine import Engine
from slmctl.errors import UsageError
from slmctl.services.bench import concurrent, runner, workload
from slmctl.services.bench.gate import compare, load_document, matched, unmatched
from slmctl.services.bench.matrix import MAX_CONCURRENCY, expand, label, parse_list
from slmctl.services.bench.model import CONCURRENCY_FIGURES, FIGURES, BenchConfig, BenchDocument, ModelInfo, Sample
from slmctl.services.bench.report import build_document, csv_columns, document_schema, to_csv, to_json, to_markdown
from slmctl.services.bench.stats import percentile
from slmctl.services.bench.text import to_text
from slmctl.services.importer import import_path
from slmctl.store import ModelStore
from tests.cli_runner import run_cli

#: The fields of a configuration and of a sample in a document written before --concurrency existed.
OLD_CONFIG_FIELDS = {"model", "format", "device", "threads", "ctx", "prompt_tokens", "gen_tokens"}
OLD_SAMPLE_FIELDS = {"config", "repetition", "device", "load_ms", "ttft_ms", "prompt_tokens", "prompt_ms",
                     "prompt_tps", "gen_tokens", "gen_ms", "gen_tps", "peak_rss", "peak_gpu_memory"}
OLD_TEXT_HEADER = ["MODEL", "FORMAT", "DEVICE", "THREADS", "CTX", "P/G TOKENS", "LOAD MS", "TTFT MS",
                   "PROMPT TOK/S", "GEN TOK/S", "PEAK RSS"]

# -- the option ----------------------------------------------------------------------------------------


def test_expand_concurrency_axis() -> None:
    configs = expand([("tiny", "gguf")], gen_tokens=[8, 16], concurrency=[1, 4, 4, 8])
    assert [label(c) for c in configs] == ["tiny gguf auto p64 g8", "tiny gguf auto p64 g8 n4",
                                           "tiny gguf auto p64 g8 n8", "tiny gguf auto p64 g16",
                                           "tiny gguf auto p64 g16 n4", "tiny gguf auto p64 g16 n8"]
    assert configs[0].key == "tiny|gguf|auto|t0|c0|p64|g8"  # as before: old baselines match N = 1
    assert configs[1].key == "tiny|gguf|auto|t0|c0|p64|g8|n4"
    assert expand([("tiny", "gguf")]) == expand([("tiny", "gguf")], concurrency=[1])


def test_parse_and_validate_concurrency() -> None:
    assert parse_list("1,4, 8", int, flag="--concurrency", minimum=1, maximum=MAX_CONCURRENCY) == [1, 4, 8]
    with pytest.raises(UsageError, match="'0': must be at least 1"):
        parse_list("1,0", int, flag="--concurrency", minimum=1, maximum=MAX_CONCURRENCY)
    with pytest.raises(UsageError, match=f"'{MAX_CONCURRENCY + 1}': must be at most {MAX_CONCURRENCY}"):
        parse_list(str(MAX_CONCURRENCY + 1), int, flag="--concurrency", minimum=1, maximum=MAX_CONCURRENCY)
    with pytest.raises(UsageError, match="--concurrency"):
        expand([("tiny", "gguf")], concurrency=[0])
    with pytest.raises(UsageError, match="at most"):
        expand([("tiny", "gguf")], concurrency=[MAX_CONCURRENCY + 1])
    with pytest.raises(ValueError):
        BenchConfig(model="tiny", format="gguf", concurrency=0)


def test_percentile_known_values() -> None:
    assert percentile([10, 20, 30, 40], 50) == 25
    assert percentile([40, 10, 30, 20], 95) == pytest.approx(38.5)
    assert percentile([7], 95) == 7 and percentile([3, 1, 2], 0) == 1 and percentile([3, 1, 2], 100) == 3
    with pytest.raises(ValueError):
        percentile([], 50)


def test_peak_overlap() -> None:
    assert concurrent.peak_overlap([(0, 10), (1, 11), (2, 12)]) == 3           # decoded together
    assert concurrent.peak_overlap([(0, 10), (10, 20), (20, 30)]) == 1         # one after the other
    assert concurrent.peak_overlap([(0, 10), (5, 20), (15, 30)]) == 2


# -- the runner on the tiny models ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, tiny_gguf: Path, tiny_onnx: Path) -> Path:
    root = tmp_path_factory.mktemp("concurrency-home")
    store = ModelStore(root / "models")
    import_path(store, tiny_gguf, "tiny")
    import_path(store, tiny_onnx, "tiny-onnx")
    return root


@pytest.fixture(scope="module")
def engine(home: Path) -> Engine:
    return Engine(ModelStore(home / "models"))


def _check_streams(sample: Sample, config: BenchConfig) -> None:
    assert sample.config == config.key and sample.streams is not None
    assert len(sample.streams) == config.concurrency
    for stream in sample.streams:  # exact counts for every request, each prompt its own (no cache reuse)
        assert (stream.prompt_tokens, stream.gen_tokens, stream.prompt_cached) == (config.prompt_tokens,
                                                                                  config.gen_tokens, 0)
        assert stream.submitted_ms <= stream.first_token_ms <= stream.done_ms
        assert stream.ttft_ms == pytest.approx(stream.first_token_ms - stream.submitted_ms)
    assert (sample.prompt_tokens, sample.gen_tokens) == (config.prompt_tokens, config.gen_tokens)
    assert sample.wall_ms == pytest.approx(max(s.done_ms for s in sample.streams))  # from the first submission
    total = config.concurrency * config.gen_tokens
    assert sample.agg_tps == pytest.approx(total / (sample.wall_ms / 1000))
    assert sample.ttft_ms == pytest.approx(percentile([s.ttft_ms for s in sample.streams], 50))
    assert sample.ttft_p95_ms == pytest.approx(percentile([s.ttft_ms for s in sample.streams], 95))
    assert sample.gen_tps == pytest.approx(config.gen_tokens / (sample.gen_ms / 1000))
    assert sample.load_ms > 0 and sample.peak_rss > 1_000_000 and sample.device == "cpu"


def test_gguf_requests_are_decoded_together(engine: Engine) -> None:
    config = BenchConfig(model="tiny", format="gguf", device="cpu", prompt_tokens=16, gen_tokens=32, concurrency=4)
    sample = runner.run_sample(engine, config, 1)
    _check_streams(sample, config)
    assert sample.repetition == 1
    # Structural: every request had its first token before any request ended, so all 4 were in flight
    # together (one batch) — true however fast or slow the machine is.
    assert max(s.first_token_ms for s in sample.streams) < min(s.done_ms for s in sample.streams)
    assert sample.peak_streams == 4


def test_each_stream_has_a_prompt_of_its_own(engine: Engine) -> None:
    from slmctl.options import LoadOptions

    with engine.load(engine.manifest("tiny"), LoadOptions(), device="cpu") as model:
        prompts = [workload.synthetic_prompt(model, 16, offset=i * concurrent.STREAM_OFFSET) for i in range(8)]
        assert prompts[0] == workload.synthetic_prompt(model, 16)
        base = len(model.tokenize(workload.PARAGRAPH))
        assert workload.synthetic_prompt(model, 16, offset=base + 1) == prompts[1]  # the offset wraps around
    assert len(set(prompts)) == 8 and all(len(p) == 16 for p in prompts)
    assert len({p[0] for p in prompts}) > 1  # they differ from the first token on


def test_onnx_requests_queue(engine: Engine) -> None:
    config = BenchConfig(model="tiny-onnx", format="onnx", device="cpu", prompt_tokens=16, gen_tokens=8,
                         concurrency=3)
    sample = runner.run_sample(engine, config, 0)
    _check_streams(sample, config)
    # No batching: each request starts generating only after the one before ended.
    ordered = sorted(sample.streams, key=lambda s: s.first_token_ms)
    assert all(later.first_token_ms > earlier.done_ms for earlier, later in zip(ordered, ordered[1:]))
    assert sample.peak_streams == 1


def test_concurrent_sample_too_long_for_the_context(engine: Engine) -> None:
    config = BenchConfig(model="tiny", format="gguf", prompt_tokens=500, gen_tokens=32, concurrency=2)
    with pytest.raises(UsageError, match="do not fit the context of 512"):
        runner.run_sample(engine, config, 0)


def test_run_matrix_progress_of_a_concurrent_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake(engine: object, config: BenchConfig, repetition: int) -> Sample:
        return make_sample(config, repetition, agg_tps=90.06 if config.concurrency > 1 else None)

    monkeypatch.setattr(runner, "run_sample", fake)
    lines: list[str] = []
    configs = [BenchConfig(model="A", format="gguf"), BenchConfig(model="A", format="gguf", concurrency=4)]
    runner.run_matrix(object(), configs, repetitions=1, warmup=0, progress=lines.append)
    assert lines == ["[1/2] A gguf cpu p64 g32: 25.0 tok/s",
                     "[2/2] A gguf cpu p64 g32 n4: 90.1 tok/s aggregate, 25.0 tok/s per stream"]


# -- documents and reports (hand-made samples) ---------------------------------------------------------

MACHINE = {"cpu": {"model": "Test CPU 9000", "cores": 8}, "memory": {"total": 16_000_000_000}}
ONE = BenchConfig(model="tiny", format="gguf", threads=4)
FOUR = BenchConfig(model="tiny", format="gguf", threads=4, concurrency=4)


def make_sample(config: BenchConfig, repetition: int, *, agg_tps: float | None = None,
                gen_tps: float = 25.0) -> Sample:
    extra = {}
    if agg_tps is not None:
        extra = {"agg_tps": agg_tps, "ttft_p95_ms": 80.0, "wall_ms": 1000.0, "peak_streams": config.concurrency,
                 "streams": []}
    return Sample(config=config.key, repetition=repetition, device="cpu", load_ms=100, ttft_ms=40, prompt_tokens=64,
                  prompt_ms=64, prompt_tps=1000, gen_tokens=config.gen_tokens,
                  gen_ms=config.gen_tokens / gen_tps * 1000, gen_tps=gen_tps, peak_rss=300_000_000, **extra)


def make_doc(*runs: tuple[BenchConfig, list[float | None]]) -> BenchDocument:
    samples = [make_sample(config, i, agg_tps=agg) for config, aggs in runs for i, agg in enumerate(aggs)]
    return build_document(configs=[c for c, _ in runs], samples=samples,
                          models=[ModelInfo(name="tiny", digest="sha256:" + "0" * 64, format="gguf")],
                          machine=MACHINE, runtimes={"llama-cpp-python": "0.3.36"},
                          settings={"repetitions": 3}, slmctl_version="0.1.0")


def test_single_request_documents_read_as_before() -> None:
    doc = make_doc((ONE, [None, None, None]))
    data = json.loads(to_json(doc))
    assert set(data["configs"][0]) == set(data["summary"][0]["config"]) == OLD_CONFIG_FIELDS
    assert all(set(sample) == OLD_SAMPLE_FIELDS for sample in data["samples"])
    assert set(data["summary"][0]["figures"]) == set(FIGURES)
    assert "concurrency" not in to_csv(doc) and csv_columns() == csv_columns(False)
    assert next(line for line in to_text(doc).splitlines() if line.startswith("MODEL")).split() == \
        " ".join(OLD_TEXT_HEADER).split()
    assert "generation tokens/s (median)" in to_text(doc) and "concurrent" not in to_markdown(doc)


def test_concurrent_document_and_reports() -> None:
    doc = make_doc((ONE, [None, None, None]), (FOUR, [90.0, 91.0, 89.0]))
    one, four = doc.summary
    assert set(one.figures) == set(FIGURES) and set(four.figures) == {*FIGURES, *CONCURRENCY_FIGURES}
    assert four.figures["agg_tps"].median == 90.0 and four.key.endswith("|n4")
    schema = document_schema()
    jsonschema.Draft202012Validator(schema).validate(json.loads(to_json(doc)))
    assert BenchDocument.model_validate_json(to_json(doc)) == doc

    rows = list(csv.DictReader(io.StringIO(to_csv(doc))))
    assert list(rows[0]) == csv_columns(True) and [r["concurrency"] for r in rows] == ["1", "4"]
    assert rows[1]["agg_tps_median"] == "90" and rows[0]["agg_tps_median"] == ""

    text = to_text(doc, width=80)
    header = next(line for line in text.splitlines() if line.startswith("MODEL"))
    for column in ("N", "TTFT P50 MS", "TTFT P95 MS", "STREAM TOK/S", "AGG TOK/S"):
        assert column in header
    assert "aggregate generation tokens/s" in text
    one_row, four_row = [line.split() for line in text.splitlines() if line.startswith("tiny ") and "█" not in line]
    assert (one_row[6], four_row[6]) == ("1", "4")
    # A single request: TTFT p95 is its p50, and its aggregate is its own tokens over (TTFT + decode time).
    assert one_row[8:10] == ["40.0", "40.0"] and one_row[12] == f"{32 / 1.32:.1f}"
    assert four_row[8:13] == ["40.0", "80.0", "1000.0", "25.0", "90.0"]

    markdown = to_markdown(doc)
    assert "4 concurrent requests" in markdown and "at most 4 generating together" in markdown
    assert "| aggregate generation | 90.0 ± 1.0 tok/s |" in markdown
    assert "| generation per stream |" in markdown and "| time to first token p95 |" in markdown


def test_plot_of_a_concurrent_document(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from slmctl.services.bench.plot import write_plot

    target = tmp_path / "bench.png"
    write_plot(make_doc((ONE, [None, None, None]), (FOUR, [90.0, 91.0, 89.0])), target)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gate_matches_old_baselines_and_gates_concurrency_figures(tmp_path: Path) -> None:
    old = json.loads(to_json(make_doc((ONE, [None, None, None]))))  # as written before --concurrency
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    baseline = load_document(path)
    assert baseline.configs[0].concurrency == 1
    current = make_doc((ONE, [None, None, None]), (FOUR, [90.0, 91.0, 89.0]))
    assert matched(current, baseline) == [ONE.key]
    assert unmatched(current, baseline).only_current == [FOUR.key]
    slower = make_doc((FOUR, [60.0, 61.0, 59.0]))
    found = compare(slower, current, 0.05)
    assert [(r.key, r.figure, r.higher_is_better) for r in found] == [(FOUR.key, "agg_tps", True)]


# -- the command ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "-1", "x", "1.5", "4,zero", str(MAX_CONCURRENCY + 1)])
def test_cli_rejects_bad_values(home: Path, value: str) -> None:
    result = run_cli(home, "bench", "tiny", f"--concurrency={value}")
    assert result.code == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: invalid --concurrency value")
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_cli_help_shows_the_option(home: Path) -> None:
    result = run_cli(home, "bench", "--help")
    assert result.code == 0 and "--concurrency" in result.stdout
    assert "slmctl bench phi3 --concurrency 1,4,8" in result.stdout


RUN = ("bench", "--prompt-tokens", "16", "--gen-tokens", "16", "--repetitions", "2", "--warmup", "0")


def test_cli_concurrency_json_and_text(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    result = run_cli(home, *RUN, "tiny", "tiny-onnx", "--concurrency", "1,3", "--output", str(out))
    assert result.code == 0, result.stderr
    assert "up to 3 requests at once" in result.stderr and "tok/s aggregate" in result.stderr
    data = json.loads(out.read_text())
    jsonschema.Draft202012Validator(document_schema()).validate(data)
    doc = BenchDocument.model_validate(data)
    assert [(c.model, c.concurrency) for c in doc.configs] == [("tiny", 1), ("tiny", 3), ("tiny-onnx", 1),
                                                               ("tiny-onnx", 3)]
    assert "concurrency" not in data["configs"][0] and data["configs"][1]["concurrency"] == 3
    for config, summary in zip(doc.configs, doc.summary):
        own = [s for s in doc.samples if s.config == config.key]
        assert len(own) == 2
        if config.concurrency == 1:
            assert set(summary.figures) == set(FIGURES) and all(s.streams is None for s in own)
            continue
        assert set(summary.figures) == {*FIGURES, *CONCURRENCY_FIGURES}
        for sample in own:
            _check_streams(sample, config)
            assert sample.peak_streams == (3 if config.format == "gguf" else 1)  # batched vs queued
    header = next(line for line in result.stdout.splitlines() if line.startswith("MODEL"))
    assert "AGG TOK/S" in header and "TTFT P95 MS" in header


def test_cli_concurrency_1_is_unchanged(home: Path) -> None:
    plain = run_cli(home, *RUN, "tiny", "--json")
    one = run_cli(home, *RUN, "tiny", "--concurrency", "1", "--json")
    assert plain.code == one.code == 0, plain.stderr + one.stderr
    before, after = json.loads(plain.stdout), json.loads(one.stdout)
    assert before["configs"] == after["configs"] and set(before["configs"][0]) == OLD_CONFIG_FIELDS
    keys = [[s["key"] for s in doc["summary"]] for doc in (before, after)]
    assert keys == [["tiny|gguf|auto|t0|c0|p16|g16"]] * 2
    assert all(set(s) == OLD_SAMPLE_FIELDS for s in before["samples"] + after["samples"])
    assert set(before) == set(after) and before["settings"] == after["settings"]
    assert plain.stderr.splitlines()[0] == one.stderr.splitlines()[0] == \
        "benchmarking 1 configuration x 2 repetitions: 2 runs"
    text = run_cli(home, *RUN, "tiny", "--concurrency", "1")
    assert text.code == 0
    assert next(line for line in text.stdout.splitlines() if line.startswith("MODEL")).split() == \
        " ".join(OLD_TEXT_HEADER).split()
