"""The settings one ``slmctl serve`` runs with, resolved once (flags > environment > config file > defaults;
see :mod:`slmctl.server.serve_settings`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from slmctl.security.config import SECURITY_KEYS, SecurityConfig
from slmctl.server.ops_config import OPS_KEYS


#: The flat ``--config`` keys of the core and deployment settings (the ops and security ones are
#: ``slmctl.server.ops_config.OPS_KEYS`` and ``slmctl.security.config.SECURITY_KEYS``).
CORE_KEYS = ("host", "keep_alive", "max_loaded", "parallel", "queue", "preload", "flash_attention", "grace",
             "max_body")
DEPLOY_KEYS = ("read_only_store", "pull_missing", "openai", "device", "num_ctx", "kv_cache_size")
#: Every flat key of a ``--config`` file (the ServeConfig fields they set; ``host`` sets host and port).
CONFIG_KEYS = CORE_KEYS + OPS_KEYS + SECURITY_KEYS + DEPLOY_KEYS

#: ``--parallel`` when it is not set: slots per model on a CPU and on a GPU.
AUTO_PARALLEL_CPU, AUTO_PARALLEL_GPU = 4, 8


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 11434
    #: Seconds a model stays loaded after its last request (None = forever, 0 = unload at once).
    keep_alive: float | None = 300.0
    max_loaded: int = 3
    #: Requests one model decodes together (continuous batching on GGUF models; ONNX models take them one at a
    #: time); None: 4 on a CPU, 8 for a model on a GPU.
    parallel: int | None = None
    #: Requests that may wait per model beyond ``parallel``; more get 503 + Retry-After.
    queue: int = 512
    preload: tuple[str, ...] = ()
    flash_attention: bool = False
    #: Largest request body accepted (bytes); blobs have their own limit.
    max_body: int = 64 * 1024 * 1024
    #: Seconds in-flight requests get to finish after SIGTERM/SIGINT.
    grace: float = 30.0
    # -- guards, limits, metrics and logs (parsed by slmctl.server.ops_config) --
    #: Browser origins CORS allows besides the loopback ones (globs; "*" = any).
    origins: tuple[str, ...] = ()
    #: Most tokens a request may ask to generate / the largest context it may ask for (None = no cap).
    max_predict: int | None = None
    max_ctx: int | None = None
    #: Requests per minute per API key (per client address without one); None = no limit.
    rate_limit: int | None = None
    #: Seconds a generation or embedding request may take (None = no limit).
    request_timeout: float | None = None
    #: The access log's (and the server log's) format: "plain" or "json".
    log_format: str = "plain"
    #: /metrics asks for an API key.
    metrics_auth: bool = False
    #: API keys, TLS, the audit log (parsed by slmctl.security.config).
    security: SecurityConfig = field(default_factory=SecurityConfig)
    # -- deployment (a --config file's "deployment"/"performance" shapes map here, see deploy_config) --
    #: Never write to or lock the model store: pull, create, copy, delete and blob uploads answer 403, and
    #: loading a model only reads (replicas sharing one volume that a pull Job fills).
    read_only_store: bool = False
    #: Pull the ``preload`` models the store lacks before loading them (needs a writable store).
    pull_missing: bool = False
    #: Serve the OpenAI API under /v1 (off: /v1 answers 404).
    openai: bool = True
    #: Device preference, the first usable wins: classes (npu, gpu, cpu) or names (cuda, qnn, ...); empty: npu,
    #: gpu, cpu. A preferred device that is unavailable falls back to the next (logged once per model format).
    device: tuple[str, ...] = ()
    #: The context (num_ctx) models load with unless their Modelfile or the request says otherwise (None: 4096).
    num_ctx: int | None = None
    #: KV cache budget in bytes per loaded model: a load's context is cut so that slots x num_ctx tokens of KV
    #: cache fit (None: no budget).
    kv_cache_size: int | None = None
    #: Load each model in its own runner process (off only for tests of the in-process path).
    isolate: bool = True
    extra: dict[str, str] = field(default_factory=dict)

    def slots(self, device: str) -> int:
        """Generations a model on ``device`` decodes together."""
        if self.parallel is not None:
            return self.parallel
        return AUTO_PARALLEL_CPU if device == "cpu" else AUTO_PARALLEL_GPU
