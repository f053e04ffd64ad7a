"""Settings: where slmctl keeps its data and which global switches are on.

Everything comes from an injected environment mapping (``os.environ`` by default) and explicit
overrides from the command line, so a test isolates itself completely by pointing ``SLMCTL_HOME`` at a
temporary directory. Nothing here is global or mutable. This module imports nothing of ours.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

_TRUE = {"1", "true", "yes", "on"}


def env_flag(env: Mapping[str, str], name: str) -> bool:
    """True when the environment variable is set to 1/true/yes/on (case-insensitive)."""
    return env.get(name, "").strip().lower() in _TRUE


def default_home() -> Path:
    """The platform's user data directory for slmctl (``~/.local/share/slmctl`` on Linux)."""
    from platformdirs import user_data_dir

    return Path(user_data_dir("slmctl", appauthor=False))


@dataclass(frozen=True)
class Settings:
    """Resolved global settings, passed down explicitly to the services that need them."""

    home: Path
    offline: bool = False
    debug: bool = False
    #: ``SLMCTL_KEYS_FILE``: the API key file when it is not ``$SLMCTL_HOME/keys.json`` (a replica whose
    #: store is a read-only shared volume keeps its keys elsewhere).
    keys_file: Path | None = None

    @property
    def models_dir(self) -> Path:
        """Root of the model store (blobs, manifests)."""
        return self.home / "models"

    @property
    def repl_history_file(self) -> Path:
        """Line history of the interactive ``run`` REPL."""
        return self.home / "repl_history"

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        home: Path | None = None,
        debug: bool = False,
    ) -> Settings:
        """Build settings from ``env`` (default ``os.environ``) and command-line overrides."""
        env = os.environ if env is None else env
        if home is None:
            raw = env.get("SLMCTL_HOME", "").strip()
            home = Path(raw).expanduser() if raw else default_home()
        keys_file = env.get("SLMCTL_KEYS_FILE", "").strip()
        return cls(
            home=home.absolute(),
            offline=env_flag(env, "SLMCTL_OFFLINE"),
            debug=debug or env_flag(env, "SLMCTL_DEBUG"),
            keys_file=Path(keys_file).expanduser().absolute() if keys_file else None,
        )


#: Serve settings: (our variable, Ollama's variable honoured when ours is unset).
SERVE_ENV: dict[str, tuple[str, str | None]] = {
    "host": ("SLMCTL_HOST", "OLLAMA_HOST"),
    "keep_alive": ("SLMCTL_KEEP_ALIVE", "OLLAMA_KEEP_ALIVE"),
    "max_loaded": ("SLMCTL_MAX_LOADED_MODELS", "OLLAMA_MAX_LOADED_MODELS"),
    "parallel": ("SLMCTL_NUM_PARALLEL", "OLLAMA_NUM_PARALLEL"),
    "queue": ("SLMCTL_MAX_QUEUE", "OLLAMA_MAX_QUEUE"),
    "flash_attention": ("SLMCTL_FLASH_ATTENTION", "OLLAMA_FLASH_ATTENTION"),
    "preload": ("SLMCTL_PRELOAD", None),
    "config": ("SLMCTL_CONFIG", None),
    # guards, limits, metrics and logs (slmctl.server.ops_config)
    "origins": ("SLMCTL_ORIGINS", "OLLAMA_ORIGINS"),
    "max_predict": ("SLMCTL_MAX_PREDICT", None),
    "max_ctx": ("SLMCTL_MAX_CTX", None),
    "rate_limit": ("SLMCTL_RATE_LIMIT", None),
    "request_timeout": ("SLMCTL_REQUEST_TIMEOUT", None),
    "log_format": ("SLMCTL_LOG_FORMAT", None),
    "metrics_auth": ("SLMCTL_METRICS_AUTH", None),
    # API keys, TLS, the audit log (slmctl.security.config)
    "auth": ("SLMCTL_AUTH", None),
    "tls_cert": ("SLMCTL_TLS_CERT", None),
    "tls_key": ("SLMCTL_TLS_KEY", None),
    "audit_log": ("SLMCTL_AUDIT_LOG", None),
    "audit_max_size": ("SLMCTL_AUDIT_MAX_SIZE", None),
    "log_prompts": ("SLMCTL_LOG_PROMPTS", None),
    # deployment (slmctl.server.serve_settings, slmctl.server.deploy_config)
    "read_only_store": ("SLMCTL_READ_ONLY_STORE", None),
    "pull_missing": ("SLMCTL_PULL_MISSING", None),
    "openai": ("SLMCTL_OPENAI", None),
    "device": ("SLMCTL_DEVICE", None),
    "num_ctx": ("SLMCTL_NUM_CTX", "OLLAMA_CONTEXT_LENGTH"),
    "kv_cache_size": ("SLMCTL_KV_CACHE_SIZE", None),
}
DEFAULT_HOST = "127.0.0.1:11434"


def serve_env(env: Mapping[str, str], key: str) -> str | None:
    """The environment's value for a serve setting: ``SLMCTL_*`` first, then Ollama's name."""
    ours, theirs = SERVE_ENV[key]
    for name in (ours, theirs):
        if name and env.get(name, "").strip():
            return env[name].strip()
    return None


def split_host(value: str | None, default_port: int = 11434) -> tuple[str, int]:
    """``ADDR:PORT``, ``ADDR``, ``:PORT``, ``http://ADDR:PORT`` or ``[v6]:PORT`` -> (address, port)."""
    text = (value or DEFAULT_HOST).strip()
    for scheme in ("http://", "https://"):
        if text.startswith(scheme):
            text = text[len(scheme):]
    text = text.rstrip("/")
    if text.startswith("["):
        addr, _, rest = text[1:].partition("]")
        port = rest.lstrip(":")
    elif text.count(":") == 1:
        addr, port = text.split(":")
    elif text.count(":") > 1:
        addr, port = text, ""
    else:
        addr, port = text, ""
    addr = addr or "127.0.0.1"
    if port and not port.isdigit():
        raise ValueError(f"invalid port in {value!r}")
    number = int(port) if port else default_port
    if not 0 <= number <= 65535:
        raise ValueError(f"invalid port in {value!r}")
    return addr, number


def client_base_url(env: Mapping[str, str]) -> str:
    """Where ``ps``/``stop`` find the server: ``SLMCTL_HOST`` (or ``OLLAMA_HOST``), default loopback."""
    raw = serve_env(env, "host")
    scheme = "https" if raw and raw.startswith("https://") else "http"
    addr, port = split_host(raw)
    if addr in ("0.0.0.0", "::", ""):
        addr = "127.0.0.1"
    host = f"[{addr}]" if ":" in addr else addr
    return f"{scheme}://{host}:{port}"
