"""Human-readable units shared by every layer (sizes in decimal units, as Ollama prints them)."""

from __future__ import annotations


def human_size(size: int | None) -> str:
    """Bytes in decimal units, as Ollama prints them: ``397 MB``, ``1.9 GB``."""
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit in ("B", "KB", "MB") or value >= 100 else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"  # pragma: no cover


_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: str | float | int | None) -> float | None:
    """A keep-alive duration in seconds: a number of seconds, or a Go duration (``5m``, ``1h30m``,
    ``-1s``, ``250ms``). Negative means forever (``None``); ``0`` means at once. Raises ``ValueError``."""
    if value is None:
        raise ValueError("no duration given")
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        seconds = _parse_go_duration(value.strip())
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        raise ValueError(f"invalid duration {value!r}")
    return None if seconds < 0 else seconds


def _parse_go_duration(text: str) -> float:
    import re

    try:
        return float(text)
    except ValueError:
        pass
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    parts = re.findall(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)", body)
    if not body or "".join(n + u for n, u in parts) != body:
        raise ValueError(f"invalid duration {text!r}: use seconds or a duration such as 30s, 5m, 1h")
    return sign * sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
