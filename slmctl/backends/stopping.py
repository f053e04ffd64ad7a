"""Stop-string matching on streamed text, shared by every backend.

Runtimes stop on end-of-sequence tokens; user stop strings are matched here on the decoded text.
Text that might be the beginning of a stop string is held back until it is decided, so a stop string
never leaks into the output, even when it arrives split across several tokens. Generation stops where
the first stop string completes, whatever the size of the pieces the text arrives in.
"""

from __future__ import annotations

from collections.abc import Sequence


class StopMatcher:
    """Feed decoded text pieces; get back the text that is safe to emit."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [s for s in stops if s]
        self._held = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        """Add ``piece``; return what can be emitted now. After a match, ``stopped`` is True."""
        if self.stopped:
            return ""
        if not self._stops:
            return piece
        text = self._held + piece
        # the stop string that completes first wins (on a tie, the longer one, which starts earlier)
        hits = [(i + len(s), i) for s in self._stops if (i := text.find(s)) >= 0]
        if hits:
            self.stopped = True
            self._held = ""
            return text[: min(hits)[1]]
        keep = self._longest_partial(text)
        self._held = text[len(text) - keep:] if keep else ""
        return text[: len(text) - keep]

    def flush(self) -> str:
        """End of generation: release the held-back text (it did not become a stop string)."""
        held, self._held = self._held, ""
        return "" if self.stopped else held

    def _longest_partial(self, text: str) -> int:
        """Length of the longest suffix of ``text`` that is a proper prefix of a stop string."""
        best = 0
        for stop in self._stops:
            for n in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:n]):
                    best = n
                    break
        return best
