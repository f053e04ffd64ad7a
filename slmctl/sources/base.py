"""What a transport answers: the files of a remote model, where to download them, and their digests.

Transports (``hf``, ``ollama``, ``url``) turn a source reference into a :class:`RemoteModel`; the pull
service downloads its files with the downloader, verifies them, and commits one manifest.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

import httpx

#: Makes the HTTP client a transport uses (tests inject loopback-only clients).
ClientFactory = Callable[[], httpx.Client]


@dataclass(frozen=True)
class RemoteFile:
    """One file of a remote model."""

    path: str                 # relative path inside the model ("model.gguf", "genai_config.json", ...)
    url: str
    size: int | None = None
    sha256: str | None = None  # "sha256:<hex>" when the source publishes it (LFS, registry digests)


@dataclass(frozen=True)
class RemoteModel:
    """A resolved remote model: ready to be downloaded."""

    source: str               # canonical source reference (stored as the manifest's source.ref)
    source_type: Literal["hf", "ollama", "url"]
    format: Literal["gguf", "onnx"]
    files: list[RemoteFile]   # for a split GGUF: every part, in order (the first is the one llama.cpp opens)
    revision: str | None = None
    #: Modelfile layers the source ships (Ollama registry): kind -> text ("template", "system",
    #: "license"; "params" as a JSON object text).
    layers: dict[str, list[str]] = field(default_factory=dict)
    #: Headers every download of these files needs (authorisation).
    headers: Mapping[str, str] = field(default_factory=dict)
    #: What to tell the user when a download is refused (401/403); None: the Hugging Face token hint.
    auth_hint: str | None = None
    #: What the user should know about this model as resolved (parts of it left out, ...).
    notes: list[str] = field(default_factory=list)

    @property
    def total_size(self) -> int | None:
        sizes = [f.size for f in self.files]
        return None if any(s is None for s in sizes) else sum(s for s in sizes if s is not None)


class Transport(Protocol):
    """Resolves one kind of source reference."""

    def resolve(self, ref: object, *, quant: str | None = None) -> RemoteModel:
        """The remote model for ``ref`` (raises ModelNotFound for 404, NetworkError otherwise)."""
        ...
