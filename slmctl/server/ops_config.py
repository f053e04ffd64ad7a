"""The serve settings of the guards, limits, metrics and logs: their ``--config`` keys and how a raw value
(a flag, an environment string, a config file's JSON value) becomes a :class:`ServeConfig` field.

No web framework here: ``slmctl serve`` resolves its settings before the server is imported.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

#: ``--config`` keys (and ServeConfig fields) owned here.
OPS_KEYS = ("origins", "max_predict", "max_ctx", "rate_limit", "request_timeout", "log_format", "metrics_auth")
LOG_FORMATS = ("plain", "json")
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


def parse(values: dict[str, Any]) -> dict[str, Any]:
    """The typed values of the keys of ``values`` that are :data:`OPS_KEYS`; ``ValueError`` names a bad one."""
    out: dict[str, Any] = {}
    if "origins" in values:
        out["origins"] = origins(values["origins"])
    for key in ("max_predict", "max_ctx", "rate_limit"):
        if key in values:
            out[key] = positive_or_off(key, values[key])
    if "request_timeout" in values:
        out["request_timeout"] = timeout(values["request_timeout"])
    if "log_format" in values:
        fmt = str(values["log_format"]).strip().lower()
        if fmt not in LOG_FORMATS:
            raise ValueError(f"log_format must be one of {', '.join(LOG_FORMATS)}, not {values['log_format']!r}")
        out["log_format"] = fmt
    if "metrics_auth" in values:
        out["metrics_auth"] = flag("metrics_auth", values["metrics_auth"])
    return out


def origins(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """Origins given as one comma-separated string (``OLLAMA_ORIGINS``) or a list of such strings."""
    items = [value] if isinstance(value, str) else list(value or ())
    found: list[str] = []
    for item in items:
        for origin in str(item).split(","):
            origin = origin.strip().rstrip("/")
            if origin and origin not in found:
                found.append(origin)
    return tuple(found)


def positive_or_off(key: str, value: Any) -> int | None:
    """A whole number >= 1, or None for 0 (no limit)."""
    if isinstance(value, bool):
        raise ValueError(f"{key} must be a whole number, not {value!r}")
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ValueError(f"{key} must be a whole number, not {value!r}") from None
    if number < 0:
        raise ValueError(f"{key} must be at least 0 (0 = no limit)")
    return number or None


def timeout(value: Any) -> float | None:
    """A duration (``30s``, ``5m``, seconds); 0 or negative = no limit."""
    from slmctl.units import parse_duration

    seconds = parse_duration(value)
    return seconds if seconds else None


def flag(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE | _FALSE:
        return text in _TRUE
    raise ValueError(f"{key} must be true or false, not {value!r}")
