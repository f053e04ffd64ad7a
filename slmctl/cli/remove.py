"""``slmctl rm NAME...``: remove models; blobs no other model uses are deleted."""

from __future__ import annotations

import typer

COMMAND = {
    "name": "rm",
    "help": "Remove models from the store (files shared with other models are kept).",
    "epilog": "Examples:\n\n  slmctl rm tiny\n\n  slmctl rm tiny:v1 tiny:v2",
}


def command(
    ctx: typer.Context,
    names: list[str] = typer.Argument(..., help="Model names[:tag].", show_default=False),
) -> None:
    from slmctl.cli.output import human_size
    from slmctl.errors import SlmctlError
    from slmctl.names import parse_model_ref

    store = ctx.obj.store()
    refs = [parse_model_ref(n) for n in names]  # validate all names before removing anything
    failure: SlmctlError | None = None
    for ref in refs:
        try:
            result = store.remove(ref)
        except SlmctlError as exc:
            failure = failure or exc
            if len(refs) > 1:
                typer.echo(f"error: {exc.message}", err=True)
            continue
        typer.echo(f"deleted '{ref}' (freed {human_size(result.freed_bytes)})")
    if failure is not None:
        raise failure
