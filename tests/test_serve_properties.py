"""Property tests: the serve parsers, and a real server that never answers arbitrary bodies with a 5xx."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serve_fixtures import Served
from slmctl.settings import split_host
from slmctl.units import parse_duration

UNITS = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}


@given(st.lists(st.tuples(st.integers(0, 500), st.sampled_from(sorted(UNITS))), min_size=1, max_size=4),
       st.booleans())
def test_go_durations_add_up(parts: list[tuple[int, str]], negative: bool) -> None:
    text = ("-" if negative else "") + "".join(f"{n}{unit}" for n, unit in parts)
    total = sum(n * UNITS[unit] for n, unit in parts)
    expected = None if negative and total > 0 else total
    result = parse_duration(text)
    assert result == pytest.approx(expected) if expected is not None else result is None


@given(st.text(max_size=12))
def test_durations_parse_or_raise_value_error(text: str) -> None:
    try:
        value = parse_duration(text)
    except ValueError:
        return
    assert value is None or value >= 0


@given(st.sampled_from(["127.0.0.1", "0.0.0.0", "example.com", "[::1]"]), st.integers(0, 65535))
def test_hosts_keep_their_port(addr: str, port: int) -> None:
    assert split_host(f"{addr}:{port}") == (addr.strip("[]"), port)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10**6) | st.floats(allow_nan=False, allow_infinity=False, width=32) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8)
FIELDS = ["model", "prompt", "messages", "options", "format", "stream", "keep_alive", "system", "template", "raw",
          "suffix", "images", "truncate", "input", "dimensions", "tools", "source", "destination", "name"]
models = st.sampled_from(["phi4:mini", "qwen2.5:3b", "nomic-embed-text", "nope", "", "bad name!"])
option_values = st.dictionaries(st.sampled_from(["num_predict", "temperature", "top_k", "num_ctx", "stop", "seed",
                                                 "mystery"]), json_values, max_size=3)
bodies = st.fixed_dictionaries(
    {"model": models | json_values},
    optional={**{name: json_values for name in FIELDS[1:]}, "options": option_values | json_values,
              "messages": st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "robot"]) | json_values},
                                                         optional={"content": json_values}), max_size=3)})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(st.sampled_from(["/api/generate", "/api/chat", "/api/embed", "/api/embeddings", "/api/show"]),
       bodies)
def test_arbitrary_bodies_never_get_a_5xx(server: Served, path: str, body: dict) -> None:
    options = body.get("options")
    if isinstance(options, dict) and isinstance(options.get("num_predict"), int):
        options["num_predict"] = min(options["num_predict"], 64)  # keep the suite fast; any value is legal
    if isinstance(options, dict) and isinstance(options.get("num_ctx"), int):
        options["num_ctx"] = min(options["num_ctx"], 512)  # one loaded copy per context size: keep it bounded
    response = httpx.post(server.url + path, json={"stream": False, **body, "keep_alive": 0}
                          if "keep_alive" not in body else body, timeout=120)
    assert response.status_code < 500, (path, body, response.text)
    if response.status_code >= 400:
        assert isinstance(response.json()["error"], str)
