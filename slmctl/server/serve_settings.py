"""Resolving ``slmctl serve``'s settings: flags > environment > config file > defaults, with where each came from.

Owns the ONE schema of the serve settings (:class:`ServeSettings`, pydantic: a flat object whose fields are
the ``--config`` flat keys) that validates every layer once merged, the environment layer read by
pydantic-settings (``SLMCTL_*``, then Ollama's variable where :data:`slmctl.settings.SERVE_ENV` names one),
and ``--print-config``'s rendering. The config file's own schema and the seed's nested shapes are
:mod:`slmctl.server.deploy_config`'s. A bad value is an :class:`InvalidConfig` (exit 4) naming where it came
from: the flag, the variable, or the file's key path. Imported by the ``serve`` command only (pydantic-settings
is never imported when ``slmctl --help`` runs).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Optional

from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from slmctl.errors import InvalidConfig, UsageError
from slmctl.security.config import SECURITY_KEYS, SecurityConfig, parse_bool, parse_size
from slmctl.server import ops_config
from slmctl.server.config import CONFIG_KEYS, ServeConfig
from slmctl.server.deploy_config import closest, read_file
from slmctl.settings import SERVE_ENV, split_host

#: What ``--print-config`` shows, in order (``port`` comes from ``host`` or ``deployment.api.port``).
SHOWN = ("host", "port") + CONFIG_KEYS[1:]


def _split(value: Any) -> Any:
    return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value


def _flag(name: str) -> Any:
    return BeforeValidator(lambda v: parse_bool(v, name))


def _duration(value: Any) -> Any:
    from slmctl.units import parse_duration

    return parse_duration(value)


def _device(values: Any) -> tuple[str, ...]:
    from slmctl.devices import DEVICE_CLASSES, GGUF_DEVICES, ONNX_PROVIDERS

    known = list(DEVICE_CLASSES) + sorted((set(GGUF_DEVICES) | set(ONNX_PROVIDERS)) - set(DEVICE_CLASSES))
    out = []
    for name in _split(values) or ():
        key = str(name).strip().lower()
        if key not in known:
            near = closest(key, known)
            raise ValueError(f"unknown device {name!r}" + (f" (did you mean {near!r}?)" if near else "")
                             + f"; valid: {', '.join(known)}")
        out.append(key)
    return tuple(dict.fromkeys(out))


def _size(value: Any) -> int | None:
    size = parse_size(value)
    if size == 0:
        return None
    return size


class ServeSettings(BaseModel):
    """Every serve setting, typed; a field left unset keeps :class:`ServeConfig`'s default."""

    model_config = ConfigDict(extra="forbid")

    host: Optional[str] = None
    port: Optional[int] = Field(None, ge=0, le=65535)
    keep_alive: Annotated[Optional[float], BeforeValidator(_duration)] = None
    max_loaded: Optional[int] = Field(None, ge=0)
    parallel: Optional[int] = Field(None, ge=1)
    queue: Optional[int] = Field(None, ge=0)
    preload: Annotated[Optional[tuple[str, ...]], BeforeValidator(_split)] = None
    flash_attention: Annotated[Optional[bool], _flag("flash_attention")] = None
    grace: Optional[float] = Field(None, ge=0)
    max_body: Optional[int] = Field(None, ge=1)
    origins: Annotated[Optional[tuple[str, ...]], BeforeValidator(ops_config.origins)] = None
    max_predict: Annotated[Optional[int], BeforeValidator(lambda v: ops_config.positive_or_off("max_predict", v))] = None
    max_ctx: Annotated[Optional[int], BeforeValidator(lambda v: ops_config.positive_or_off("max_ctx", v))] = None
    rate_limit: Annotated[Optional[int], BeforeValidator(lambda v: ops_config.positive_or_off("rate_limit", v))] = None
    request_timeout: Annotated[Optional[float], BeforeValidator(ops_config.timeout)] = None
    log_format: Annotated[Optional[str], BeforeValidator(lambda v: ops_config.parse({"log_format": v})["log_format"])
                          ] = None
    metrics_auth: Annotated[Optional[bool], _flag("metrics_auth")] = None
    auth: Annotated[Optional[bool], _flag("auth")] = None
    tls_cert: Optional[Path] = None
    tls_key: Optional[Path] = None
    audit_log: Optional[str] = None
    audit_max_size: Annotated[Optional[int], BeforeValidator(parse_size)] = None
    log_prompts: Annotated[Optional[bool], _flag("log_prompts")] = None
    read_only_store: Annotated[Optional[bool], _flag("read_only_store")] = None
    pull_missing: Annotated[Optional[bool], _flag("pull_missing")] = None
    openai: Annotated[Optional[bool], _flag("openai")] = None
    device: Annotated[Optional[tuple[str, ...]], BeforeValidator(_device)] = None
    num_ctx: Optional[int] = Field(None, ge=0)
    kv_cache_size: Annotated[Optional[int], BeforeValidator(_size)] = None


#: Values that mean "unset" once validated (the default stays): ``max_loaded: 0``, and the "no limit" values.
_NONE_IS_SET = frozenset({"keep_alive", "max_predict", "max_ctx", "rate_limit", "request_timeout", "kv_cache_size"})


def env_layer(env: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The serve settings the environment sets (read by pydantic-settings), and which variable set each."""
    from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict
    from pydantic_settings.sources.utils import parse_env_vars

    fields = {key: (Optional[str], Field(None, validation_alias=AliasChoices(*[n for n in names if n])))
              for key, names in SERVE_ENV.items()}
    mapping = {name: value.strip() for name, value in env.items() if value.strip()}

    class MappedEnv(EnvSettingsSource):
        def _load_env_vars(self) -> Mapping[str, Optional[str]]:
            return parse_env_vars(mapping, True, True, None)

    from pydantic import create_model

    base = create_model("ServeEnv", __base__=BaseSettings, **fields)  # type: ignore[call-overload]

    class ServeEnv(base):  # type: ignore[misc, valid-type]
        model_config = SettingsConfigDict(case_sensitive=True, env_ignore_empty=True, extra="ignore")

        @classmethod
        def settings_customise_sources(cls, settings_cls: Any, **sources: Any) -> tuple[Any, ...]:
            return (MappedEnv(settings_cls),)

    values = {k: v for k, v in ServeEnv().model_dump().items() if v is not None}
    where = {key: next(name for name in SERVE_ENV[key] if name and name in mapping) for key in values}
    return values, {key: f"env {name}" for key, name in where.items()}


def _expand_host(layer: dict[str, Any], origin: dict[str, str], label: str) -> None:
    """``host: ADDR:PORT`` sets both host and port at its layer (a bare ADDR leaves the port to other keys)."""
    if layer.get("host") is None:
        return
    try:
        address, port = split_host(str(layer["host"]))
        explicit = split_host(str(layer["host"]), default_port=1)[1] == split_host(str(layer["host"]), 2)[1]
    except ValueError as exc:
        raise InvalidConfig(f"invalid serve setting {origin.get('host', label)}: {exc}",
                            "use ADDR:PORT, e.g. 0.0.0.0:11434") from None
    if explicit and "port" in layer and layer["port"] != port:
        raise InvalidConfig(f"{origin['host']} says port {port} but {origin['port']} says {layer['port']}",
                            "keep one of them")
    layer["host"] = address
    if explicit:
        layer["port"] = port
        origin["port"] = origin["host"]


def resolve_layers(flags: Mapping[str, Any], env: Mapping[str, str], config_file: Path | None
                   ) -> tuple[ServeConfig, dict[str, str]]:
    """The ServeConfig for flags > environment > file > defaults, and each setting's origin."""
    env_values, env_origin = env_layer(env)
    env_config = env_values.pop("config", None)
    path = config_file or (Path(env_config) if env_config else None)
    file_values: dict[str, Any] = {}
    file_origin: dict[str, str] = {}
    if path is not None:
        file_values, paths = read_file(path, CONFIG_KEYS)
        file_origin = {key: f"file {path}: {where}" for key, where in paths.items()}
    flag_values = {k: v for k, v in flags.items() if v is not None}
    flag_origin = {k: "flag --" + k.replace("_", "-") for k in flag_values}
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for values, where, label in ((file_values, file_origin, "file"), (env_values, env_origin, "env"),
                                 (flag_values, flag_origin, "flag")):
        values = {key: value for key, value in values.items() if value is not None}
        _expand_host(values, where, label)
        merged.update(values)
        origin.update({key: where.get(key, label) for key in values})
    try:
        typed = ServeSettings.model_validate(merged)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = str(first["loc"][0]) if first["loc"] else "?"
        message = str(first.get("ctx", {}).get("error") or first["msg"])
        raise InvalidConfig(f"invalid serve setting {origin.get(key, key)}: {message} (got {first.get('input')!r})",
                            "see 'slmctl serve --help'") from None
    values = {key: getattr(typed, key) for key in merged if key != "config"}
    values = {k: v for k, v in values.items() if v is not None or k in _NONE_IS_SET}
    if values.get("max_loaded") == 0:
        values.pop("max_loaded")
        origin.pop("max_loaded", None)
    security = {key: values.pop(key) for key in SECURITY_KEYS if key in values}
    values["security"] = _security(security)
    if values.get("read_only_store") and values.get("pull_missing"):
        values["pull_missing"] = False  # nothing is pulled into a read-only store: a missing model stops start-up
        origin["pull_missing"] = f"off: {origin.get('read_only_store', 'read_only_store')} (a read-only store)"
    return ServeConfig(**values), origin


def _security(raw: dict[str, Any]) -> SecurityConfig:
    from slmctl.security.config import security_config

    return security_config({k: v for k, v in raw.items() if v is not None})


def printable(config: ServeConfig, origin: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """``{setting: {"value": ..., "source": flag/env/file/default}}`` for ``--print-config --json``."""
    out: dict[str, dict[str, Any]] = {}
    for key in SHOWN:
        holder = config.security if key in SECURITY_KEYS else config
        value = getattr(holder, key)
        if isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, Path):
            value = str(value)
        out[key] = {"value": value, "source": origin.get(key, "default")}
    return out


_AUTO = {"parallel": "auto (4 on CPU, 8 on GPU)", "keep_alive": "forever", "auth": "auto (on unless loopback)",
         "device": "auto (npu, gpu, cpu)", "num_ctx": "4096 (capped at the model's)", "max_predict": "no cap",
         "max_ctx": "no cap", "rate_limit": "no limit", "request_timeout": "no limit", "kv_cache_size": "no budget",
         "audit_log": "$SLMCTL_HOME/audit.jsonl"}


def render(config: ServeConfig, origin: Mapping[str, str], as_json: bool) -> str:
    shown = printable(config, origin)
    if as_json:
        return json.dumps(shown, indent=2)
    width = max(len(key) for key in shown)
    lines = []
    for key, item in shown.items():
        value = item["value"]
        text = _AUTO.get(key, "-") if value is None or value == [] else ", ".join(map(str, value)) \
            if isinstance(value, list) else json.dumps(value) if isinstance(value, bool) else str(value)
        lines.append(f"{key:<{width}}  {text}  [{item['source']}]")
    return "\n".join(lines)


def check_store(config: ServeConfig, models_dir: Path) -> None:
    """Before anything starts: with a read-only store, every ``preload`` model must already be there."""
    from slmctl.names import parse_model_ref
    from slmctl.store import ModelStore

    if not config.read_only_store:
        return
    store = ModelStore(models_dir, read_only=True)
    for name in config.preload:
        try:
            present = store.exists(parse_model_ref(name))
        except (UsageError, ValueError):
            present = False
        if not present:
            from slmctl.errors import ModelNotFound

            raise ModelNotFound(f"model '{name}' is not in the read-only store {models_dir}",
                                f"pull it into the shared store first (the pull Job: 'slmctl pull {name}'), "
                                "or serve without --read-only-store")
