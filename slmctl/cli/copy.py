"""``slmctl cp SOURCE DESTINATION``: a new name for a stored model, sharing its files."""

from __future__ import annotations

import typer

from slmctl.cli.usage import epilog

#: The examples of the help page, one command line each.
EXAMPLES = [
    'slmctl cp tiny tiny:backup',
    'slmctl cp qwen2.5:0.5b team/assistant:v1',
]

COMMAND = {
    "name": "cp",
    "help": "Copy a model to a new name (no data is copied: the files are shared).",
    "epilog": epilog(EXAMPLES),
}


def command(
    ctx: typer.Context,
    source: str = typer.Argument(..., help="Existing model name[:tag].", show_default=False),
    destination: str = typer.Argument(..., help="New model name[:tag].", show_default=False),
) -> None:
    from slmctl.errors import ModelNotFound
    from slmctl.names import parse_model_ref

    src, dst = parse_model_ref(source), parse_model_ref(destination)
    store = ctx.obj.store()
    try:
        store.copy(src, dst)
    except ModelNotFound as error:
        ctx.obj.with_suggestions(error, [source], store)
        raise
    typer.echo(f"copied '{src}' to '{dst}'", file=ctx.obj.stdout)
