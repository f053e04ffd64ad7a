"""``slmctl verify [NAME...]``: re-hash the files of stored models and report damage."""

from __future__ import annotations

import typer

COMMAND = {
    "name": "verify",
    "help": "Check stored models: re-hash every file and compare it with the model's manifest.",
    "epilog": "Examples:\n\n  slmctl verify\n\n  slmctl verify tiny tiny-onnx:latest\n\n"
    "  slmctl verify --json | jq -r '.[] | select(.status != \"ok\") | .name'\n\n"
    "Prints one line per model: 'ok', or 'DAMAGED:' naming each missing or corrupt file. "
    "Exits with code 6 when any model is damaged (repair it with 'slmctl rm NAME' and a new import), "
    "0 otherwise.",
}


def command(
    ctx: typer.Context,
    names: list[str] = typer.Argument(None, help="Model names[:tag] (default: every model).", show_default=False),
    json_output: bool = typer.Option(False, "--json", help="Print a JSON array, one object per model."),
) -> None:
    from typing import Any

    from slmctl.cli.output import print_json, table
    from slmctl.errors import IntegrityError
    from slmctl.names import parse_model_ref
    from slmctl.store.verify import verify_manifest

    store = ctx.obj.store()
    refs = list(dict.fromkeys(parse_model_ref(n) for n in names or []))
    problems = []
    if refs:
        manifests = [store.get(ref) for ref in refs]  # every name checked before hashing anything
    else:
        manifests, problems = store.list_with_problems()
    for problem in problems:
        typer.echo(f"warning: damaged manifest: {problem.path} ({problem.reason})", err=True)
    cache: dict[str, Any] = {}
    results = [verify_manifest(store, manifest, cache) for manifest in manifests]
    if json_output:
        print_json([result.to_dict() for result in results])
    elif results:
        table(["NAME", "STATUS"], [[str(r.ref), r.summary()] for r in results])
    elif not problems:
        typer.echo("no models in the store", err=True)
    damaged = [r for r in results if not r.ok]
    if damaged or problems:
        what = [f"'{r.ref}'" for r in damaged] + [f"{len(problems)} unreadable manifest(s)"] * bool(problems)
        raise IntegrityError(
            f"damaged: {', '.join(what)}",
            hint="remove damaged models with 'slmctl rm NAME' and import them again",
        )
