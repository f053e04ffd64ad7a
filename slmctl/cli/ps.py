"""``slmctl ps``: the models a running ``slmctl serve`` has loaded (as ``ollama ps``)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import typer

from slmctl.cli.usage import epilog

#: The examples of the help page, one command line each.
EXAMPLES = [
    'slmctl ps',
    "slmctl ps --json | jq -r '.[].name'",
    'SLMCTL_HOST=10.0.0.5:11434 slmctl ps',
]

COMMAND = {
    "name": "ps",
    "help": "List the models loaded by the server at SLMCTL_HOST (default 127.0.0.1:11434).",
    "epilog": epilog(EXAMPLES),
}


def command(
    ctx: typer.Context,
    json_output: bool = typer.Option(False, "--json", help="Print a JSON array (the server's /api/ps models)."),
) -> None:
    from slmctl.cli.output import human_size, print_json, table
    from slmctl.services.server_client import ServerClient

    models = ServerClient.from_env(ctx.obj.env).get("/api/ps")["models"]
    if json_output:
        print_json(models, ctx.obj.stdout)
        return
    rows = [[m["name"], m["digest"][:12], human_size(m["size"]), processor(m), str(m.get("context_length", "")),
             until(m["expires_at"])] for m in models]
    table(["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"], rows, ctx.obj.stdout)


def processor(model: dict[str, Any]) -> str:
    """``100% CPU``, ``100% GPU`` or ``48%/52% CPU/GPU``, as Ollama prints it."""
    size, vram = model.get("size") or 0, model.get("size_vram") or 0
    if vram <= 0 or size <= 0:
        return "100% CPU"
    if vram >= size:
        return "100% GPU"
    gpu = round(100 * vram / size)
    return f"{100 - gpu}%/{gpu}% CPU/GPU"


def until(expires_at: str, now: datetime | None = None) -> str:
    """``Forever``, ``4 minutes from now``, ``Stopping...``."""
    when = datetime.fromisoformat(expires_at.replace("Z", "+00:00"))
    now = now or datetime.now(timezone.utc)
    if when.year >= 2300:
        return "Forever"
    seconds = int((when - now).total_seconds())
    if seconds <= 0:
        return "Stopping..."
    for unit, span in (("hour", 3600), ("minute", 60)):
        if seconds >= span:
            n = seconds // span
            return f"{n} {unit}{'s' if n > 1 else ''} from now"
    return f"{seconds} second{'s' if seconds > 1 else ''} from now"
