"""A short run of ``benchmarks/load_serve.py`` (issue 14): 64 clients against ``--queue 16``.

Only 200s and 503s with Retry-After, the server alive, its RSS under the script's bound (512 MiB). The
full 30-second run is the script itself: ``python benchmarks/load_serve.py``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "load_serve.py"


@pytest.mark.slow
def test_load_64_clients_queue_16_only_200_and_503(tmp_path: Path) -> None:
    pytest.importorskip("psutil")
    spec = importlib.util.spec_from_file_location("load_serve", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    report = tmp_path / "load.json"
    assert module.main(["--clients", "64", "--seconds", "8", "--queue", "16", "--json", str(report)]) == 0
    import json

    data = json.loads(report.read_text())
    assert set(data["statuses"]) <= {"200", "503"} and data["statuses"].get("200")
    assert data["alive"] and data["problem_count"] == 0
