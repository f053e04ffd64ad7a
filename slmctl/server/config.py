"""The settings one ``slmctl serve`` runs with, resolved once (flags > environment > defaults)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 11434
    #: Seconds a model stays loaded after its last request (None = forever, 0 = unload at once).
    keep_alive: float | None = 300.0
    max_loaded: int = 3
    #: Requests one model serves at once (they queue in its runner until batching lands).
    parallel: int = 1
    #: Requests that may wait per model beyond ``parallel``; more get 503 + Retry-After.
    queue: int = 512
    preload: tuple[str, ...] = ()
    flash_attention: bool = False
    #: Largest request body accepted (bytes); blobs have their own limit.
    max_body: int = 64 * 1024 * 1024
    #: Seconds in-flight requests get to finish after SIGTERM/SIGINT.
    grace: float = 30.0
    #: Load each model in its own runner process (off only for tests of the in-process path).
    isolate: bool = True
    extra: dict[str, str] = field(default_factory=dict)
