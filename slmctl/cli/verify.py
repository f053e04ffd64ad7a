"""``slmctl verify [NAME...] [--repair]``: re-hash the files of stored models, report damage, repair it."""

from __future__ import annotations

from typing import Any

import typer

from slmctl.cli.usage import epilog

#: The examples of the help page, one command line each.
EXAMPLES = [
    'slmctl verify',
    'slmctl verify tiny tiny-onnx:latest',
    'slmctl verify --repair',
    'slmctl verify --json | jq -r \'.[] | select(.status != "ok") | .name\'',
]

_NOTES = (
    "Prints one line per model: 'ok', or 'DAMAGED:' naming each missing or corrupt file. Exits with code 6 "
    'when any model is damaged, 0 otherwise; the hint says how to repair it.\n\n--repair moves each corrupt '
    "file to the store's quarantine/ folder (it is never deleted; the path is printed) and fetches a good "
    'copy from the source of a model that uses it: the file or folder it was imported from, if unchanged, or '
    'the Hugging Face, Ollama or URL source it was pulled from (at the recorded revision, checked against the '
    "manifest's digest). A file shared by several models is repaired once. Exit 0 when every model is whole "
    'again; 6 otherwise, naming the exact file to import again.'
)

COMMAND = {
    "name": "verify",
    "help": "Check stored models: re-hash every file and compare it with the model's manifest (--repair: fix it).",
    "epilog": epilog(EXAMPLES, _NOTES),
}


def command(
    ctx: typer.Context,
    names: list[str] = typer.Argument(None, help="Model names[:tag] (default: every model).", show_default=False),
    json_output: bool = typer.Option(False, "--json", help="Print a JSON array, one object per model."),
    repair: bool = typer.Option(False, "--repair", help="Move damaged files aside and fetch them again from "
                                "each model's source."),
) -> None:
    from slmctl.errors import IntegrityError
    from slmctl.names import parse_model_ref
    from slmctl.services.repair import advice_before_repair
    from slmctl.store.verify import verify_manifest

    store = ctx.obj.store()
    refs = list(dict.fromkeys(parse_model_ref(n) for n in names or []))
    problems = []
    if refs:
        manifests = [store.get(ref) for ref in refs]  # every name checked before hashing anything
    else:
        manifests, problems = store.list_with_problems()
    for problem in problems:
        typer.echo(f"warning: damaged manifest: {problem.path} ({problem.reason})", file=ctx.obj.stderr)
    cache: dict[str, Any] = {}
    results = [verify_manifest(store, manifest, cache) for manifest in manifests]
    if repair:
        _repair(ctx, results, json_output, bool(problems))
        return
    _show(ctx, [(result, result.summary(), result.to_dict()) for result in results], json_output, bool(problems))
    damaged = [r for r in results if not r.ok]
    if damaged or problems:
        what = [f"'{r.ref}'" for r in damaged] + [f"{len(problems)} unreadable manifest(s)"] * bool(problems)
        hint = (advice_before_repair(damaged, manifests) if damaged
                else "remove the unreadable manifest files named above, then import those models again")
        raise IntegrityError(f"damaged: {', '.join(what)}", hint=hint)


def _repair(ctx: typer.Context, results: list[Any], json_output: bool, problems: bool) -> None:
    from slmctl.cli.progress import pull_progress
    from slmctl.errors import IntegrityError
    from slmctl.services.repair import repair_models

    app = ctx.obj
    with pull_progress(app.stderr) as on_event:
        report = repair_models(app.store(), app.settings, results, env=app.env, on_event=on_event)
    for blob in report.blobs:
        if blob.quarantined is not None:
            typer.echo(f"moved the damaged copy of {blob.digest} to {blob.quarantined}", file=ctx.obj.stderr)
        if blob.restored_from is not None:
            typer.echo(f"restored {blob.digest} ({blob.restored_from})", file=ctx.obj.stderr)
    rows = [(m.result, "repaired" if m.repaired else m.result.summary(), m.to_dict()) for m in report.models]
    _show(ctx, rows, json_output, problems)
    left = [m for m in report.models if not m.result.ok]
    if left:
        raise IntegrityError(f"still damaged: {', '.join(repr(str(m.result.ref)) for m in left)}",
                             hint=report.hint)
    if problems:
        raise IntegrityError("some manifests are unreadable",
                             hint="remove the unreadable manifest files named above, then import those models again")


def _show(ctx: typer.Context, rows: list[tuple[Any, str, dict[str, Any]]], json_output: bool, problems: bool) -> None:
    from slmctl.cli.output import print_json, table

    if json_output:
        print_json([data for _, _, data in rows], ctx.obj.stdout)
    elif rows:
        table(["NAME", "STATUS"], [[str(result.ref), status] for result, status, _ in rows], ctx.obj.stdout)
    elif not problems:
        typer.echo("no models in the store", file=ctx.obj.stderr)
