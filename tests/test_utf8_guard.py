"""The UTF-8 guard: whatever tokens a constrained GGUF generation picks among those it allows, the bytes
stay valid UTF-8 (llama.cpp's grammar alone lets overlong forms and encoded surrogates through)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
from hypothesis import given, settings
from hypothesis import strategies as st

from slmctl.backends.utf8_guard import START, Utf8Guard, run

#: Pieces as vocabularies have them: ASCII words, whole characters, and lone or partial byte sequences,
#: valid and invalid (E0 82 80 is overlong, ED A0 80 a surrogate, F4 90 80 80 past U+10FFFF).
PIECES = [b"a", b"hi", b" ", "é".encode(), "€".encode(), "😀".encode(), b"", b"\xc3", b"\xa9", b"\xe2\x82",
          b"\xac", b"\xe0", b"\x82", b"\x80", b"\xed", b"\xa0", b"\xf4", b"\x90", b"\xf0\x9f", b"\x98\x80",
          b"\xc0", b"\xff", b"\xe2", b"\x82\xac", b"\x80\x80"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.integers(0, len(PIECES) - 1), max_size=12), st.data())
def test_allowed_tokens_only_ever_make_valid_utf8(wanted: list[int], data: st.DataObject) -> None:
    guard = Utf8Guard(PIECES)
    state, out = START, b""
    for want in wanted:
        allowed = [t for t in range(len(PIECES)) if guard.allowed[state, t]]
        token = want if want in allowed else data.draw(st.sampled_from(allowed))
        out += PIECES[token]
        state = guard.advance(state, token)
        assert run(START, out) == state  # the guard's state is the decoder's
    if state == START:
        out.decode("utf-8")  # strict: raises on anything invalid


def test_invalid_sequences_are_ruled_out_at_their_first_bad_byte() -> None:
    guard = Utf8Guard(PIECES)
    index = {piece: i for i, piece in enumerate(PIECES)}
    after_e0 = guard.advance(START, index[b"\xe0"])
    assert not guard.allowed[after_e0, index[b"\x82"]] and guard.allowed[after_e0, index[b"\xa0"]]
    after_ed = guard.advance(START, index[b"\xed"])
    assert not guard.allowed[after_ed, index[b"\xa0"]] and guard.allowed[after_ed, index[b"\x80"]]
    after_f4 = guard.advance(START, index[b"\xf4"])
    assert not guard.allowed[after_f4, index[b"\x90"]]
    for never in (b"\xc0", b"\xff"):
        assert not guard.allowed[:, index[never]].any()
    assert not guard.allowed[START, index[b"\x80\x80"]]  # continuation bytes cannot start a character
    assert not guard.allowed[1, index[b"a"]]  # a whole character cannot finish a started one


def test_constrained_gguf_answers_decode_and_validate(tmp_path: Path) -> None:
    """The tiny model writes byte tokens freely: with the guard, every finished answer validates."""
    from slmctl.backends.base import ChatMessage, GenerateRequest
    from slmctl.backends.gguf import LlamaCppBackend
    from slmctl.options import LoadOptions, SamplingOptions
    from slmctl.testing.tiny_gguf import TinyGGUFSpec, write_tiny_gguf

    path = write_tiny_gguf(tmp_path / "t.gguf", TinyGGUFSpec(eos_reachable=True))
    schema = {"type": "object", "properties": {"w": {"type": "string", "maxLength": 6}}, "required": ["w"],
              "additionalProperties": False}
    with LlamaCppBackend().load(path, LoadOptions(num_ctx=512, num_thread=1)) as model:
        finished = 0
        for seed in range(30):
            generation = model.generate(GenerateRequest(SamplingOptions(num_predict=80, seed=seed, top_k=0,
                                                                        top_p=1.0), json_format=schema,
                                                        messages=(ChatMessage("user", "hi"),)))
            text = generation.complete()
            if generation.stats.done_reason == "stop":
                jsonschema.validate(json.loads(text), schema)
                assert "\ufffd" not in text
                finished += 1
    assert finished >= 20
