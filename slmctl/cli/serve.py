"""``slmctl serve``: the Ollama- and OpenAI-compatible API server (FastAPI + uvicorn, imported only here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from slmctl.cli.usage import epilog
from slmctl.server.config import CONFIG_KEYS

#: The examples of the help page, one command line each.
EXAMPLES = [
    'slmctl serve',
    'slmctl serve --host 0.0.0.0:8080 --keep-alive 30m --preload tiny',
    'curl http://localhost:11434/api/generate -d \'{"model": "tiny", "prompt": "Hi", "stream": false}\'',
    'curl http://localhost:11434/v1/chat/completions -H \'Content-Type: application/json\' '
    '-d \'{"model": "tiny", "messages": [{"role": "user", "content": "Hi"}]}\'',
    'slmctl serve --config configs/production.json --print-config',
    'slmctl serve --host 0.0.0.0:11434 --read-only-store --config /etc/slmctl/config.json',
    'slmctl serve --host 0.0.0.0:11434 --tls-cert server.pem --tls-key server-key.pem',
    'OpenAI SDKs: base_url="http://localhost:11434/v1" (any api_key while auth is off).',
]

_NOTES = (
    "Environment (a flag wins over its variable; Ollama's variable is honoured when ours is unset): "
    'SLMCTL_HOST / OLLAMA_HOST, SLMCTL_KEEP_ALIVE / OLLAMA_KEEP_ALIVE, SLMCTL_MAX_LOADED_MODELS / '
    'OLLAMA_MAX_LOADED_MODELS, SLMCTL_NUM_PARALLEL / OLLAMA_NUM_PARALLEL, SLMCTL_MAX_QUEUE / '
    'OLLAMA_MAX_QUEUE, SLMCTL_FLASH_ATTENTION / OLLAMA_FLASH_ATTENTION, SLMCTL_PRELOAD (names separated by '
    'commas), SLMCTL_CONFIG.\n\nGuards, limits and logs: SLMCTL_ORIGINS / OLLAMA_ORIGINS, SLMCTL_MAX_PREDICT, '
    'SLMCTL_MAX_CTX, SLMCTL_RATE_LIMIT, SLMCTL_REQUEST_TIMEOUT, SLMCTL_LOG_FORMAT, SLMCTL_METRICS_AUTH. '
    'Metrics: GET /metrics and /api/metrics (Prometheus text format).\n\nAPI keys, TLS and the audit log: '
    'SLMCTL_AUTH, SLMCTL_TLS_CERT, SLMCTL_TLS_KEY, SLMCTL_AUDIT_LOG, SLMCTL_AUDIT_MAX_SIZE, '
    'SLMCTL_LOG_PROMPTS, SLMCTL_KEYS_FILE (the key file, default $SLMCTL_HOME/keys.json). Auth is on unless '
    "the address is loopback: create keys with 'slmctl keys create NAME --role user|admin'; clients send "
    "'Authorization: Bearer KEY' or 'x-api-key: KEY'.\n\nHealth: GET /api/health and /livez (200 while "
    'serving), /readyz (200 once --preload models are loaded).'
)

COMMAND = {
    "name": "serve",
    "help": "Serve the Ollama API (/api) and the OpenAI API (/v1) on ADDR:PORT (default 127.0.0.1:11434); "
    "each model runs in its own process.",
    "epilog": epilog(EXAMPLES, _NOTES),
}

_DEPLOY_HELP = (
    "Deployment: --config FILE (JSON) takes the flat keys above and the seed's two shapes, "
    "{\"deployment\": {model, hardware: {preferred, fallback}, optimization: {quantization, batch_size, "
    "max_context}, api: {port, openai_compatible}}} and {\"performance\": {batch_processing, parallel_requests, "
    "memory_optimization: {enable_kv_cache, max_cache_size}, hardware_scheduling: {enable_dynamic_batching, "
    "max_batch_size}}}. They map to: model -> --preload + --pull-missing (quantization: dynamic = the catalog's "
    "choice, or a quant such as q4_k_m = MODEL:q4_k_m); hardware -> --device PREFERRED,FALLBACK...; batch_size, "
    "parallel_requests, max_batch_size -> --parallel (the smallest wins; batch_processing or "
    "enable_dynamic_batching false -> 1); max_context -> --num-ctx; max_cache_size -> --kv-cache-size; "
    "enable_kv_cache false is refused (decoding needs one); api.port -> the port; openai_compatible false -> "
    "--no-openai. An unknown key or a bad value exits 4 naming the key path and the closest valid key. "
    "Precedence: flags > environment > file > defaults; --print-config shows each value and where it came from. "
    "Variables: SLMCTL_READ_ONLY_STORE, SLMCTL_PULL_MISSING, SLMCTL_OPENAI, SLMCTL_DEVICE, SLMCTL_NUM_CTX / "
    "OLLAMA_CONTEXT_LENGTH, SLMCTL_KV_CACHE_SIZE.\n\n"
    "Replicas sharing one store: --read-only-store never writes or locks the store (pull, create, copy, delete "
    "and blob uploads answer 403; a --preload model missing from it stops start-up); a Job runs 'slmctl pull "
    "MODEL' into the shared volume once.")
COMMAND["epilog"] += "\n\n" + _DEPLOY_HELP


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
                                           "(GGUF: continuous batching, the KV cache holds N x num_ctx tokens; ONNX: static "
                                           "batches on models with GroupQueryAttention, else one at a time) "
                                           "[default: 4 on CPU, 8 on GPU].", show_default=False),
    queue: Optional[int] = typer.Option(None, "--queue", min=0, help="Requests that may wait per model; beyond, "
                                        "503 with Retry-After [default: 512].", show_default=False),
    preload: list[str] = typer.Option([], "--preload", help="Load MODEL at start-up; repeatable."),
    config: Optional[Path] = typer.Option(None, "--config", help="A JSON file with any of: " + ", ".join(CONFIG_KEYS)
                                          + ", and the seed's 'deployment' and 'performance' shapes (see below; "
                                          "flags and environment win).", show_default=False),
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
    read_only_store: Optional[bool] = typer.Option(None, "--read-only-store/--writable-store", help="Never write "
                                                   "to or lock the model store (replicas on a shared volume): pull, "
                                                   "create, copy, delete and blob uploads answer 403 [default: "
                                                   "writable].", show_default=False),
    pull_missing: Optional[bool] = typer.Option(None, "--pull-missing/--no-pull-missing", help="Pull the --preload "
                                                "models the store lacks at start-up (a config file's "
                                                "deployment.model turns it on) [default: off].", show_default=False),
    openai: Optional[bool] = typer.Option(None, "--openai/--no-openai", help="Serve the OpenAI API under /v1 "
                                          "[default: on].", show_default=False),
    device: Optional[str] = typer.Option(None, "--device", metavar="DEVICE[,FALLBACK...]", help="Device "
                                         "preference, first usable wins: npu, gpu, cpu or names (cuda, qnn...); an "
                                         "unavailable one falls back, logged once [default: npu,gpu,cpu].",
                                         show_default=False),
    num_ctx: Optional[int] = typer.Option(None, "--num-ctx", min=0, help="The context models load with unless "
                                          "their Modelfile or the request says otherwise; 0 = the model's own "
                                          "[default: 4096].", show_default=False),
    kv_cache_size: Optional[str] = typer.Option(None, "--kv-cache-size", metavar="SIZE", help="KV cache budget "
                                                "per loaded model (4GB, 512MiB): a model's context is cut so "
                                                "parallel x num_ctx tokens fit [default: no budget].",
                                                show_default=False),
    print_config: bool = typer.Option(False, "--print-config", help="Print the resolved settings and where each "
                                      "came from (flag, env, file, default), then exit without serving."),
    json_: bool = typer.Option(False, "--json", help="With --print-config: print JSON."),
) -> None:

    flags = {"host": host, "keep_alive": keep_alive, "max_loaded": max_loaded, "parallel": parallel,
             "queue": queue, "preload": preload or None, "grace": grace, "max_body": max_body}
    flags.update({"origins": origins or None, "max_predict": max_predict, "max_ctx": max_ctx,
                  "rate_limit": rate_limit, "request_timeout": request_timeout, "log_format": log_format,
                  "metrics_auth": metrics_auth})
    flags.update({"auth": auth, "tls_cert": tls_cert, "tls_key": tls_key, "audit_log": audit_log,
                  "audit_max_size": audit_max_size, "log_prompts": log_prompts or None})
    flags.update({"read_only_store": read_only_store, "pull_missing": pull_missing, "openai": openai,
                  "device": device, "num_ctx": num_ctx, "kv_cache_size": kv_cache_size})
    settings = ctx.obj.settings
    from slmctl.server.serve_settings import check_store, render, resolve_layers

    serve_config, origin = resolve_layers(flags, ctx.obj.env, config)
    if print_config:
        typer.echo(render(serve_config, origin, json_), file=ctx.obj.stdout)
        return
    check_store(serve_config, settings.models_dir)
    _configure_logging(settings.debug)
    from slmctl.server.app import serve

    serve(serve_config, settings, ctx.obj.env, log_level="debug" if settings.debug else "info")


def resolve(flags: dict[str, Any], env: Any, config_file: Path | None) -> Any:
    """Flags > environment (``SLMCTL_*``, then ``OLLAMA_*``) > config file > defaults (a ServeConfig)."""
    from slmctl.server.serve_settings import resolve_layers

    return resolve_layers(flags, env, config_file)[0]


def _configure_logging(debug: bool) -> None:
    import logging

    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
