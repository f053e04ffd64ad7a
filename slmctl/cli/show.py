"""``slmctl show NAME``: details of a stored model (or one part of it)."""

from __future__ import annotations

import typer

COMMAND = {
    "name": "show",
    "help": "Show a stored model's details, parameters, template, system prompt or license.",
    "epilog": "Examples:\n\n  slmctl show tiny\n\n  slmctl show tiny --json | jq .context_length\n\n"
    "  slmctl show tiny --modelfile > Modelfile",
}


def command(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Model name[:tag].", show_default=False),
    json_output: bool = typer.Option(False, "--json", help="Print everything as one JSON object."),
    modelfile: bool = typer.Option(False, "--modelfile", help="Print a Modelfile that recreates the model."),
    parameters: bool = typer.Option(False, "--parameters", help="Print the stored parameters."),
    template: bool = typer.Option(False, "--template", help="Print the prompt template."),
    system: bool = typer.Option(False, "--system", help="Print the system prompt."),
    license_: bool = typer.Option(False, "--license", help="Print the license."),
) -> None:
    from slmctl.errors import UsageError
    from slmctl.modelinfo import modelfile_text, parameters_text, show_info

    if sum([json_output, modelfile, parameters, template, system, license_]) > 1:
        raise UsageError("choose one of --json, --modelfile, --parameters, --template, --system, --license")
    engine = ctx.obj.engine()
    manifest = ctx.obj.manifest(engine, name)
    if modelfile:
        typer.echo(modelfile_text(engine, manifest), nl=False)
        return
    if parameters:
        text = parameters_text(engine.defaults(manifest))
        if text:
            typer.echo(text)
        return
    info = show_info(engine, manifest)
    for flag, key in ((template, "template"), (system, "system"), (license_, "license")):
        if flag:
            if info[key]:
                typer.echo(info[key])
            return
    if json_output:
        from slmctl.cli.output import print_json

        print_json(info)
        return
    _print_human(info)


def _print_human(info: dict) -> None:
    from slmctl.cli.output import human_size

    model = [("name", info["name"]), ("format", info["format"]), ("architecture", info["architecture"]),
             ("parameters", info["parameter_size"]), ("context length", info["context_length"]),
             ("quantization", info["quantization"]), ("size", human_size(info["size"])),
             ("digest", info["digest"]), ("source", f"{info['source']['type']}: {info['source']['ref']}")]
    typer.echo("  Model")
    for key, value in model:
        typer.echo(f"    {key:<20}{value if value is not None else '-'}")
    if info["parameters"]:
        typer.echo("\n  Parameters")
        for key, value in info["parameters"].items():
            typer.echo(f"    {key:<20}{value}")
    for title, key in (("System", "system"), ("License", "license")):
        if info[key]:
            typer.echo(f"\n  {title}")
            for line in str(info[key]).strip().splitlines()[:8]:
                typer.echo(f"    {line}")
    typer.echo("\n  Files")
    for f in info["files"]:
        typer.echo(f"    {f['path']:<40}{human_size(f['size']):>10}   {f['digest'].removeprefix('sha256:')[:12]}")
