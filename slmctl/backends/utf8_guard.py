"""Keeping constrained output valid UTF-8 on llama.cpp, where tokens may be single bytes.

llama.cpp's grammar matches code points decoded leniently: byte tokens that spell an overlong form
(``E0 82 80``) or an encoded surrogate (``ED A0 80``) pass as one character, yet they are not UTF-8, so
the text decodes to several U+FFFD and a ``maxLength`` or ``pattern`` the grammar enforced no longer holds.
:class:`Utf8Guard` knows, for each of the eight states a UTF-8 decoder can be in, which tokens may come
next; a constrained generation masks the others out before sampling. Tokens that are complete UTF-8
text (nearly all of a vocabulary) are checked once; only the fragments run through the automaton.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

#: Decoder states: 0 between characters; 1-3 that many continuation bytes to go; 4-7 after the lead
#: bytes E0, ED, F0, F4, whose next byte has a narrower range (no overlong forms, surrogates or > U+10FFFF).
START, STATES = 0, 8
_NEXT_AFTER_NARROW = {4: 1, 5: 1, 6: 2, 7: 2}
_NARROW_RANGE = {4: (0xA0, 0xBF), 5: (0x80, 0x9F), 6: (0x90, 0xBF), 7: (0x80, 0x8F)}


def step(state: int, byte: int) -> int:
    """The decoder's state after ``byte`` (-1: invalid UTF-8)."""
    if state == START:
        if byte < 0x80:
            return START
        if 0xC2 <= byte <= 0xDF:
            return 1
        if 0xE1 <= byte <= 0xEF and byte != 0xED:
            return 2
        if 0xF1 <= byte <= 0xF3:
            return 3
        return {0xE0: 4, 0xED: 5, 0xF0: 6, 0xF4: 7}.get(byte, -1)
    if state in _NARROW_RANGE:
        low, high = _NARROW_RANGE[state]
        return _NEXT_AFTER_NARROW[state] if low <= byte <= high else -1
    return state - 1 if 0x80 <= byte <= 0xBF else -1


def run(state: int, data: bytes) -> int:
    for byte in data:
        state = step(state, byte)
        if state < 0:
            return -1
    return state


class Utf8Guard:
    """Which tokens keep the output valid UTF-8 in each decoder state, for one vocabulary."""

    def __init__(self, pieces: Sequence[bytes]) -> None:
        import numpy as np

        n = len(pieces)
        self.allowed = np.zeros((STATES, n), dtype=bool)
        self._moves: dict[int, list[int]] = {}
        for token, piece in enumerate(pieces):
            if not piece:
                self.allowed[:, token] = True  # adds no bytes: fine anywhere, changes nothing
                continue
            try:
                piece.decode("utf-8")
            except UnicodeDecodeError:
                moves = [run(state, piece) for state in range(STATES)]
                self._moves[token] = moves
                self.allowed[:, token] = [m >= 0 for m in moves]
            else:
                self.allowed[START, token] = True  # whole characters: only between characters
        self._empty = {t for t, piece in enumerate(pieces) if not piece}

    @classmethod
    def for_vocabulary(cls, size: int, piece: Callable[[int], bytes]) -> Utf8Guard:
        return cls([piece(token) for token in range(size)])

    def advance(self, state: int, token: int) -> int:
        """The state after ``token`` (which the mask allowed)."""
        if token in self._moves:
            return max(self._moves[token][state], START)
        return state if token in self._empty else START

    def mask(self, logits: Any, state: int) -> None:
        """Rule out, in place, every token that would make the bytes invalid after ``state``."""
        import numpy as np

        logits[~self.allowed[state]] = -np.inf
