"""``slmctl list [--json]``: the models in the store."""

from __future__ import annotations

import typer

COMMAND = {
    "name": "list",
    "help": "List the models in the store.",
    "epilog": "Examples:\n\n  slmctl list\n\n  slmctl list --json | jq -r '.[].name'",
}


def command(
    ctx: typer.Context,
    json_output: bool = typer.Option(False, "--json", help="Print a JSON array."),
) -> None:
    from datetime import datetime

    from slmctl.cli.output import human_size, print_json, table, time_ago
    from slmctl.modelinfo import list_entry

    store = ctx.obj.store()
    manifests, problems = store.list_with_problems()
    for problem in problems:
        typer.echo(f"warning: skipped a damaged manifest: {problem.path} ({problem.reason})", err=True)
    entries = [list_entry(m) for m in manifests]
    if json_output:
        print_json(entries)
        return
    rows = [[e["name"], e["digest"].removeprefix("sha256:")[:12], e["format"], e["parameter_size"] or "-",
             e["quantization"] or "-", human_size(e["size"]), time_ago(datetime.fromisoformat(e["modified_at"]))]
            for e in entries]
    table(["NAME", "ID", "FORMAT", "PARAMS", "QUANT", "SIZE", "MODIFIED"], rows)
