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
