"""Parsing and validation of local model names (``[namespace/]name[:tag]``).

Pure functions, no I/O. A name becomes a :class:`ModelRef`; anything that could escape the store
(``..``, absolute paths, backslashes, control characters) is rejected with a usage error (exit 2).
Catalog aliases and source references (``hf.co/...``, ``ollama://...``) belong to a later layer that
resolves them before a ``ModelRef`` is made.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from slmctl.errors import UsageError

DEFAULT_TAG = "latest"
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_MAX_SEGMENTS = 3


@dataclass(frozen=True, order=True)
class ModelRef:
    """A validated local model name. ``name`` may hold ``/``-separated segments."""

    name: str
    tag: str = DEFAULT_TAG

    def __str__(self) -> str:
        return f"{self.name}:{self.tag}"

    @property
    def display(self) -> str:
        """``name:tag`` (the form ``list`` prints)."""
        return str(self)


def _bad(text: str, why: str) -> UsageError:
    return UsageError(
        f"invalid model name {text!r}: {why}",
        "use [namespace/]name[:tag] with letters, digits, '.', '_' and '-' (e.g. my-model:v2)",
    )


def parse_model_ref(text: str) -> ModelRef:
    """Parse ``[namespace/]name[:tag]``; names compare case-insensitively (stored lower-case)."""
    if not isinstance(text, str) or not text.strip():
        raise _bad(str(text), "the name is empty")
    raw = text.strip()
    if any(ord(c) < 32 or ord(c) == 127 for c in raw):
        raise _bad(raw, "it contains control characters")
    if "\\" in raw or raw.startswith("/") or raw.startswith("~"):
        raise _bad(raw, "it looks like a path")
    name, sep, tag = raw.rpartition(":")
    if not sep:
        name, tag = raw, DEFAULT_TAG
    elif "/" in tag:
        # a ':' before the last '/' (e.g. 'host:port/model') is not a tag separator
        name, tag = raw, DEFAULT_TAG
    if not tag:
        raise _bad(raw, "the tag after ':' is empty")
    if not _TAG.match(tag):
        raise _bad(raw, f"bad tag {tag!r}")
    segments = name.split("/")
    if len(segments) > _MAX_SEGMENTS:
        raise _bad(raw, f"at most {_MAX_SEGMENTS} '/'-separated parts are allowed")
    for seg in segments:
        if seg in ("", ".", ".."):
            raise _bad(raw, "empty, '.' or '..' parts are not allowed")
        if not _SEGMENT.match(seg):
            raise _bad(raw, f"bad part {seg!r}")
    return ModelRef(name.lower(), tag.lower())
