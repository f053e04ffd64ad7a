"""``slmctl stop MODEL``: unload a model from the running server (as ``ollama stop``)."""

from __future__ import annotations

import typer

from slmctl.cli.usage import epilog

from slmctl.cli.params import ModelName

#: The examples of the help page, one command line each.
EXAMPLES = [
    'slmctl stop tiny',
    'SLMCTL_HOST=10.0.0.5:11434 slmctl stop qwen2.5:0.5b',
]

COMMAND = {
    "name": "stop",
    "help": "Unload MODEL from the server at SLMCTL_HOST (default 127.0.0.1:11434).",
    "epilog": epilog(EXAMPLES),
}


def command(
    ctx: typer.Context,
    name: ModelName,
) -> None:
    from slmctl.errors import ModelNotFound
    from slmctl.names import parse_model_ref
    from slmctl.services.server_client import ServerClient

    client = ServerClient.from_env(ctx.obj.env)
    wanted = str(parse_model_ref(name))
    loaded = [m["name"] for m in client.get("/api/ps")["models"]]
    if wanted not in loaded:
        raise ModelNotFound(f"model '{wanted}' is not running", "see the loaded models with 'slmctl ps'")
    client.post("/api/generate", {"model": wanted, "prompt": "", "keep_alive": 0, "stream": False})
    ctx.obj.stderr.write(f"stopped '{wanted}'\n")
