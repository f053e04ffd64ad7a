"""``slmctl show NAME``: details of a stored model (or one part of it)."""

from __future__ import annotations

import typer

from slmctl.cli.usage import epilog

from slmctl.cli.params import ModelName

#: The examples of the help page, one command line each.
EXAMPLES = [
    'slmctl show tiny',
    'slmctl show tiny --json | jq .context_length',
    'slmctl show tiny --modelfile > Modelfile',
]

COMMAND = {
    "name": "show",
    "help": "Show a stored model's details, parameters, template, system prompt or license.",
    "epilog": epilog(EXAMPLES),
}


def command(
    ctx: typer.Context,
    name: ModelName,
    json_output: bool = typer.Option(False, "--json", help="Print everything as one JSON object."),
    modelfile: bool = typer.Option(False, "--modelfile", help="Print a Modelfile that recreates the model."),
    parameters: bool = typer.Option(False, "--parameters", help="Print the stored parameters."),
    template: bool = typer.Option(False, "--template", help="Print the prompt template."),
    system: bool = typer.Option(False, "--system", help="Print the system prompt."),
    license_: bool = typer.Option(False, "--license", help="Print the license."),
) -> None:
    from slmctl.errors import UsageError
    from slmctl.services.modelinfo import modelfile_text, parameters_text, show_info

    if sum([json_output, modelfile, parameters, template, system, license_]) > 1:
        raise UsageError("choose one of --json, --modelfile, --parameters, --template, --system, --license")
    engine = ctx.obj.engine()
    manifest = ctx.obj.manifest(engine, name)
    if modelfile:
        typer.echo(modelfile_text(engine, manifest), nl=False, file=ctx.obj.stdout)
        return
    if parameters:
        text = parameters_text(engine.defaults(manifest))
        if text:
            typer.echo(text, file=ctx.obj.stdout)
        return
    info = show_info(engine, manifest)
    for flag, key in ((template, "template"), (system, "system"), (license_, "license")):
        if flag:
            if info[key]:
                typer.echo(info[key], file=ctx.obj.stdout)
            return
    if json_output:
        from slmctl.cli.output import print_json

        print_json(info, ctx.obj.stdout)
        return
    _print_human(info, ctx)


def _print_human(info: dict, ctx: typer.Context) -> None:
    from slmctl.cli.output import human_size

    model = [("name", info["name"]), ("format", info["format"]), ("architecture", info["architecture"]),
             ("parameters", info["parameter_size"]), ("context length", info["context_length"]),
             ("quantization", info["quantization"]), ("size", human_size(info["size"])),
             ("digest", info["digest"]), ("source", f"{info['source']['type']}: {info['source']['ref']}")]
    typer.echo("  Model", file=ctx.obj.stdout)
    for key, value in model:
        typer.echo(f"    {key:<20}{value if value is not None else '-'}", file=ctx.obj.stdout)
    if info["parameters"]:
        typer.echo("\n  Parameters", file=ctx.obj.stdout)
        for key, value in info["parameters"].items():
            typer.echo(f"    {key:<20}{value}", file=ctx.obj.stdout)
    for title, key in (("System", "system"), ("License", "license")):
        if info[key]:
            typer.echo(f"\n  {title}", file=ctx.obj.stdout)
            for line in str(info[key]).strip().splitlines()[:8]:
                typer.echo(f"    {line}", file=ctx.obj.stdout)
    typer.echo("\n  Files", file=ctx.obj.stdout)
    for f in info["files"]:
        typer.echo(f"    {f['path']:<40}{human_size(f['size']):>10}   {f['digest'].removeprefix('sha256:')[:12]}",
                   file=ctx.obj.stdout)
