"""Every Hugging Face variant of the shipped catalog is pinned to a commit or says why not (issue 11, item 10).

An unpinned variant pulls whatever ``main`` holds that day; the catalog may only ship one with its reason
(``unpinned``), and ``list --available --json`` shows each variant's ``revision``.
"""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from slmctl.catalog import Variant, load_catalog

COMMIT = re.compile(r"^[0-9a-f]{40}$")


def test_shipped_variants_are_pinned_or_say_why() -> None:
    variants = [v for entry in load_catalog(None) for v in entry.variants if v.source.startswith("hf://")]
    unexplained = [v.source for v in variants if not (v.revision and COMMIT.match(v.revision)) and not v.unpinned]
    assert unexplained == []
    pinned = [v for v in variants if v.revision]
    assert len(pinned) >= 58 and all(COMMIT.match(v.revision or "") for v in pinned)
    assert all(v.public()["revision"] == v.revision for v in variants)
    # pinned from the research notes' commits (shared/notes/catalog.md), not from 'main'
    by_source = {v.source: v.revision for v in variants}
    assert by_source["hf://sentence-transformers/all-MiniLM-L6-v2"] == "1110a243fdf4706b3f48f1d95db1a4f5529b4d41"
    assert by_source["hf://onnx-community/Llama-3.2-3B-Instruct-ONNX/cuda/cuda-fp16"] == (
        "0f90e93312b312a55d652c0f0c33c47188a1e8f4")


def test_a_variant_is_pinned_or_unpinned_not_both() -> None:
    base = {"format": "gguf", "quant": "Q4_K_M", "device": "any", "source": "hf://o/r/m-Q4_K_M.gguf"}
    assert Variant.model_validate({**base, "unpinned": "no commit known"}).revision is None
    with pytest.raises(ValidationError, match="drop 'unpinned'"):
        Variant.model_validate({**base, "revision": "0" * 40, "unpinned": "no commit known"})
