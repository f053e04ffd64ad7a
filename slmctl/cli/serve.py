"""``slmctl serve``: the Ollama- and OpenAI-compatible API server (FastAPI + uvicorn, imported only here)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import typer

from slmctl.security.config import SECURITY_KEYS
from slmctl.server.ops_config import OPS_KEYS

COMMAND = {
    "name": "serve",
    "help": "Serve the Ollama API (/api) and the OpenAI API (/v1) on ADDR:PORT (default 127.0.0.1:11434); "
    "each model runs in its own process.",
    "epilog": "Examples:\n\n  slmctl serve\n\n  slmctl serve --host 0.0.0.0:8080 --keep-alive 30m --preload tiny\n\n"
    "  curl http://localhost:11434/api/generate -d '{\"model\": \"tiny\", \"prompt\": \"Hi\", \"stream\": false}'\n\n"
    "  curl http://localhost:11434/v1/chat/completions -H 'Content-Type: application/json' "
    "-d '{\"model\": \"tiny\", \"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}]}'\n\n"
    "  slmctl serve --host 0.0.0.0:11434 --tls-cert server.pem --tls-key server-key.pem\n\n"
    "  OpenAI SDKs: base_url=\"http://localhost:11434/v1\" (any api_key while auth is off).\n\n"
    "Environment (a flag wins over its variable; Ollama's variable is honoured when ours is unset): "
    "SLMCTL_HOST / OLLAMA_HOST, SLMCTL_KEEP_ALIVE / OLLAMA_KEEP_ALIVE, SLMCTL_MAX_LOADED_MODELS / "
    "OLLAMA_MAX_LOADED_MODELS, SLMCTL_NUM_PARALLEL / OLLAMA_NUM_PARALLEL, SLMCTL_MAX_QUEUE / OLLAMA_MAX_QUEUE, "
    "SLMCTL_FLASH_ATTENTION / OLLAMA_FLASH_ATTENTION, SLMCTL_PRELOAD (names separated by commas), "
    "SLMCTL_CONFIG.\n\n"
    "Guards, limits and logs: SLMCTL_ORIGINS / OLLAMA_ORIGINS, SLMCTL_MAX_PREDICT, SLMCTL_MAX_CTX, SLMCTL_RATE_LIMIT, "
    "SLMCTL_REQUEST_TIMEOUT, SLMCTL_LOG_FORMAT, SLMCTL_METRICS_AUTH. Metrics: GET /metrics and /api/metrics "
    "(Prometheus text format).\n\n"
    "API keys, TLS and the audit log: SLMCTL_AUTH, SLMCTL_TLS_CERT, SLMCTL_TLS_KEY, SLMCTL_AUDIT_LOG, "
    "SLMCTL_AUDIT_MAX_SIZE, SLMCTL_LOG_PROMPTS. Auth is on unless the address is loopback: create keys with "
    "'slmctl keys create NAME --role user|admin'; clients send 'Authorization: Bearer KEY' or 'x-api-key: KEY'.\n\n"
    "Health: GET /api/health and /livez (200 while serving), /readyz (200 once --preload models are loaded).",
}

#: ``--config`` file keys (a JSON object) -> ServeConfig fields.
CONFIG_KEYS = ("host", "keep_alive", "max_loaded", "parallel", "queue", "preload", "flash_attention", "grace",
               "max_body") + OPS_KEYS + SECURITY_KEYS


def command(
    ctx: typer.Context,
    host: Optional[str] = typer.Option(None, "--host", help="ADDR:PORT to listen on [default: 127.0.0.1:11434].",
                                       show_default=False),
    keep_alive: Optional[str] = typer.Option(None, "--keep-alive", help="How long a model stays loaded after its "
                                             "last request: 5m, 1h, 30 (seconds); negative = forever; 0 = unload at "
                                             "once [default: 5m].", show_default=False),
    max_loaded: Optional[int] = typer.Option(None, "--max-loaded", min=1, help="Models loaded at once; idle ones are "
                                             "evicted, least recently used first [default: 3].", show_default=False),
    parallel: Optional[int] = typer.Option(None, "--parallel", min=1, help="Requests a model decodes together "
                                           "(continuous batching on GGUF; the KV cache holds N x num_ctx tokens) "
                                           "[default: 4 on CPU, 8 on GPU].", show_default=False),
    queue: Optional[int] = typer.Option(None, "--queue", min=0, help="Requests that may wait per model; beyond, "
                                        "503 with Retry-After [default: 512].", show_default=False),
    preload: list[str] = typer.Option([], "--preload", help="Load MODEL at start-up; repeatable."),
    config: Optional[Path] = typer.Option(None, "--config", help="A JSON file with any of: " + ", ".join(CONFIG_KEYS)
                                          + " (flags and environment win).", show_default=False),
    max_body: Optional[int] = typer.Option(None, "--max-body", min=1, help="Largest request body in bytes; larger "
                                           "ones get 413 (blob uploads excepted) [default: 64 MiB].",
                                           show_default=False),
    grace: Optional[float] = typer.Option(None, "--grace", help="Seconds in-flight requests get to finish on "
                                          "SIGTERM/SIGINT [default: 30].", show_default=False),
    origins: list[str] = typer.Option([], "--origins", metavar="ORIGIN[,ORIGIN...]",
                                      help="Browser origins CORS allows besides the loopback ones: comma-separated "
                                      "or repeated, * = any, globs like https://*.example.com."),
    max_predict: Optional[int] = typer.Option(None, "--max-predict", min=0, help="Most tokens a request may ask "
                                              "to generate (num_predict, max_tokens); more is a 400, and requests "
                                              "asking for no limit get this one [default: no cap].",
                                              show_default=False),
    max_ctx: Optional[int] = typer.Option(None, "--max-ctx", min=0, help="Largest context (num_ctx) a request "
                                          "may ask for; more is a 400, and models run with at most this one "
                                          "[default: no cap].", show_default=False),
    rate_limit: Optional[int] = typer.Option(None, "--rate-limit", min=0, help="Requests per minute per API key "
                                             "(per client address without keys); beyond, 429 with Retry-After "
                                             "[default: no limit].", show_default=False),
    request_timeout: Optional[str] = typer.Option(None, "--request-timeout", metavar="DURATION",
                                                  help="Longest a generation or embedding request may take (30s, "
                                                  "5m); then 504, or an error ending its stream [default: no "
                                                  "limit].", show_default=False),
    log_format: Optional[str] = typer.Option(None, "--log-format", metavar="plain|json",
                                             help="The access log's format (one line per request), and the "
                                             "server's other log lines' [default: plain].", show_default=False),
    metrics_auth: Optional[bool] = typer.Option(None, "--metrics-auth/--no-metrics-auth", help="Ask for an API "
                                                "key on /metrics and /api/metrics [default: no key needed].",
                                                show_default=False),
    auth: Optional[bool] = typer.Option(None, "--auth/--no-auth", help="Require an API key ('slmctl keys') on "
                                        "every route but health and metrics. [default: on, except on a loopback "
                                        "address; with it on and no key, serve refuses to start]",
                                        show_default=False),
    tls_cert: Optional[Path] = typer.Option(None, "--tls-cert", metavar="FILE", help="Serve HTTPS with this PEM "
                                            "certificate (chain); needs --tls-key.", show_default=False),
    tls_key: Optional[Path] = typer.Option(None, "--tls-key", metavar="FILE", help="The PEM private key of "
                                           "--tls-cert (unencrypted).", show_default=False),
    audit_log: Optional[str] = typer.Option(None, "--audit-log", metavar="FILE", help="Where the audit log "
                                            "goes (JSON lines); - for standard output [default: "
                                            "$SLMCTL_HOME/audit.jsonl].", show_default=False),
    audit_max_size: Optional[str] = typer.Option(None, "--audit-max-size", metavar="SIZE", help="Rotate the "
                                                 "audit file at this size (10MB, 1GiB; 0 = never); 5 old files "
                                                 "are kept [default: 10MB].", show_default=False),
    log_prompts: bool = typer.Option(False, "--log-prompts", help="Also audit every generation with its "
                                     "prompt and answer (sensitive: off by default)."),
) -> None:
    from slmctl.server.app import serve

    flags = {"host": host, "keep_alive": keep_alive, "max_loaded": max_loaded, "parallel": parallel,
             "queue": queue, "preload": preload or None, "grace": grace, "max_body": max_body}
    flags.update({"origins": origins or None, "max_predict": max_predict, "max_ctx": max_ctx,
                  "rate_limit": rate_limit, "request_timeout": request_timeout, "log_format": log_format,
                  "metrics_auth": metrics_auth})
    flags.update({"auth": auth, "tls_cert": tls_cert, "tls_key": tls_key, "audit_log": audit_log,
                  "audit_max_size": audit_max_size, "log_prompts": log_prompts or None})
    settings = ctx.obj.settings
    serve_config = resolve(flags, os.environ, config)
    _configure_logging(settings.debug)
    serve(serve_config, settings, os.environ, log_level="debug" if settings.debug else "info")


def resolve(flags: dict[str, Any], env: Any, config_file: Path | None) -> Any:
    """Flags > environment (``SLMCTL_*``, then ``OLLAMA_*``) > config file > defaults."""
    from slmctl.errors import UsageError
    from slmctl.server.config import ServeConfig
    from slmctl.security.config import security_config
    from slmctl.server.ops_config import parse as parse_ops
    from slmctl.settings import SERVE_ENV, env_flag, serve_env, split_host
    from slmctl.units import parse_duration

    path = config_file or (Path(serve_env(env, "config")) if serve_env(env, "config") else None)
    values: dict[str, Any] = _read_config(path) if path else {}
    for key in CONFIG_KEYS:
        raw = serve_env(env, key) if key in SERVE_ENV else None
        if raw is not None:
            values[key] = raw.split(",") if key == "preload" else raw
        if flags.get(key) is not None:
            values[key] = flags[key]
    if "flash_attention" in values:
        values["flash_attention"] = env_flag({"v": str(values["flash_attention"])}, "v")
    try:
        address, port = split_host(values.pop("host", None))
        if "keep_alive" in values:
            values["keep_alive"] = parse_duration(values["keep_alive"])
        for key in ("max_loaded", "parallel", "queue", "max_body"):
            if key in values:
                values[key] = int(values[key])
                if values[key] < (0 if key in ("queue", "max_loaded") else 1):
                    raise ValueError(f"{key} must be at least {0 if key in ('queue', 'max_loaded') else 1}")
        if values.get("max_loaded") == 0:
            values.pop("max_loaded")
        if "grace" in values:
            values["grace"] = float(values["grace"])
        values["preload"] = tuple(name.strip() for name in values.get("preload") or () if name.strip())
        values.update(parse_ops(values))
        values["security"] = security_config(values)
    except ValueError as exc:
        raise UsageError(f"invalid serve setting: {exc}", "see 'slmctl serve --help'") from None
    return ServeConfig(host=address, port=port, **values)


def _read_config(path: Path) -> dict[str, Any]:
    import json

    from slmctl.errors import UsageError

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read --config {path}: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"--config {path} must hold a JSON object")
    unknown = sorted(set(data) - set(CONFIG_KEYS))
    if unknown:
        raise UsageError(f"unknown key(s) in {path}: {', '.join(unknown)}", f"valid keys: {', '.join(CONFIG_KEYS)}")
    return dict(data)


def _configure_logging(debug: bool) -> None:
    import logging

    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
