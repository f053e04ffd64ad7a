"""``slmctl rm NAME...``: remove models; blobs no other model uses are deleted."""

from __future__ import annotations

import typer

from slmctl.cli.usage import epilog

from slmctl.cli.params import ModelNames

#: The examples of the help page, one command line each.
EXAMPLES = [
    'slmctl rm tiny',
    'slmctl rm tiny:v1 tiny:v2',
]

COMMAND = {
    "name": "rm",
    "help": "Remove models from the store (files shared with other models are kept).",
    "epilog": epilog(EXAMPLES),
}


def command(
    ctx: typer.Context,
    names: ModelNames,
) -> None:
    """Remove every model that exists; the names that do not are reported once, together, at the end
    (exit 3), after the others were removed."""
    from slmctl.cli.output import human_size
    from slmctl.errors import ModelNotFound, SlmctlError
    from slmctl.names import parse_model_ref

    store = ctx.obj.store()
    refs = [(name, parse_model_ref(name)) for name in names]  # validate all names before removing anything
    missing: list[tuple[str, str]] = []
    failures: list[SlmctlError] = []
    for name, ref in dict((str(ref), (name, ref)) for name, ref in refs).values():
        try:
            result = store.remove(ref)
        except ModelNotFound:
            missing.append((name, str(ref)))
            continue
        except SlmctlError as exc:
            failures.append(exc)
            continue
        typer.echo(f"deleted '{ref}' (freed {human_size(result.freed_bytes)})", file=ctx.obj.stdout)
    if missing:
        shown = [f"'{ref}'" for _, ref in missing]
        what = f"model {shown[0]}" if len(shown) == 1 else f"models {', '.join(shown[:-1])} and {shown[-1]}"
        failures.append(ctx.obj.with_suggestions(ModelNotFound(f"{what} not found"), [n for n, _ in missing], store))
    if failures:
        for other in failures[1:]:  # several different failures: each is reported once
            ctx.obj.stderr.write(f"error: {other.message}\n")
        raise failures[0]
