"""``slmctl serve``: the Ollama-compatible API server (FastAPI + uvicorn, imported only here)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import typer

COMMAND = {
    "name": "serve",
    "help": "Serve the Ollama API on ADDR:PORT (default 127.0.0.1:11434); each model runs in its own process.",
    "epilog": "Examples:\n\n  slmctl serve\n\n  slmctl serve --host 0.0.0.0:8080 --keep-alive 30m --preload tiny\n\n"
    "  curl http://localhost:11434/api/generate -d '{\"model\": \"tiny\", \"prompt\": \"Hi\", \"stream\": false}'\n\n"
    "Environment (a flag wins over its variable; Ollama's variable is honoured when ours is unset): "
    "SLMCTL_HOST / OLLAMA_HOST, SLMCTL_KEEP_ALIVE / OLLAMA_KEEP_ALIVE, SLMCTL_MAX_LOADED_MODELS / "
    "OLLAMA_MAX_LOADED_MODELS, SLMCTL_NUM_PARALLEL / OLLAMA_NUM_PARALLEL, SLMCTL_MAX_QUEUE / OLLAMA_MAX_QUEUE, "
    "SLMCTL_FLASH_ATTENTION / OLLAMA_FLASH_ATTENTION, SLMCTL_PRELOAD (names separated by commas), "
    "SLMCTL_CONFIG.\n\n"
    "Health: GET /api/health and /livez (200 while serving), /readyz (200 once --preload models are loaded).",
}

#: ``--config`` file keys (a JSON object) -> ServeConfig fields.
CONFIG_KEYS = ("host", "keep_alive", "max_loaded", "parallel", "queue", "preload", "flash_attention", "grace",
               "max_body")


def command(
    ctx: typer.Context,
    host: Optional[str] = typer.Option(None, "--host", help="ADDR:PORT to listen on [default: 127.0.0.1:11434].",
                                       show_default=False),
    keep_alive: Optional[str] = typer.Option(None, "--keep-alive", help="How long a model stays loaded after its "
                                             "last request: 5m, 1h, 30 (seconds); negative = forever; 0 = unload at "
                                             "once [default: 5m].", show_default=False),
    max_loaded: Optional[int] = typer.Option(None, "--max-loaded", min=1, help="Models loaded at once; idle ones are "
                                             "evicted, least recently used first [default: 3].", show_default=False),
    parallel: Optional[int] = typer.Option(None, "--parallel", min=1, help="Requests a model serves at once "
                                           "[default: 1].", show_default=False),
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
) -> None:
    from slmctl.server.app import serve

    flags = {"host": host, "keep_alive": keep_alive, "max_loaded": max_loaded, "parallel": parallel,
             "queue": queue, "preload": preload or None, "grace": grace, "max_body": max_body}
    settings = ctx.obj.settings
    serve_config = resolve(flags, os.environ, config)
    _configure_logging(settings.debug)
    serve(serve_config, settings, os.environ, log_level="debug" if settings.debug else "info")


def resolve(flags: dict[str, Any], env: Any, config_file: Path | None) -> Any:
    """Flags > environment (``SLMCTL_*``, then ``OLLAMA_*``) > config file > defaults."""
    from slmctl.errors import UsageError
    from slmctl.server.config import ServeConfig
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
