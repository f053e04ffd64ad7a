"""``slmctl create NAME [-f MODELFILE] [--quantize Q]``: build a custom model from a Modelfile."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from slmctl.cli.usage import epilog

#: The examples of the help page, one command line each.
EXAMPLES = [
    'slmctl create enterprise-assistant -f modelfiles/enterprise-assistant/Modelfile',
    'slmctl create tiny-q8 -f Modelfile --quantize q8_0',
    "printf 'FROM qwen2.5:0.5b\\nSYSTEM You answer in one sentence.\\n' > Modelfile",
    'slmctl create brief -f Modelfile   (pulls qwen2.5:0.5b first if it is not in the store)',
    'slmctl show enterprise-assistant --modelfile > Modelfile   (rebuilds the same model)',
]

_NOTES = (
    'Modelfile instructions: FROM (required), PARAMETER, SYSTEM, TEMPLATE, MESSAGE, LICENSE, ADAPTER, FILE, '
    "REQUIRES. FROM is a stored model, a .gguf file or ONNX folder, a catalog name (see 'slmctl list "
    "--available') or a source reference (hf.co/..., hf://..., ollama://..., https://....gguf); a catalog "
    "name or reference that is not in the store is pulled first, as 'slmctl run' does (SLMCTL_OFFLINE=1: exit "
    '5). A bad Modelfile exits with code 4 and points at the line; an unknown FROM model exits with code 3.'
)

COMMAND = {
    "name": "create",
    "help": "Create a model from a Modelfile (base model, parameters, system prompt, template, files).",
    "epilog": epilog(EXAMPLES, _NOTES),
}


def command(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Name[:tag] of the new model.", show_default=False),
    file: Path = typer.Option(Path("Modelfile"), "--file", "-f", help="The Modelfile."),
    quantize: Optional[str] = typer.Option(
        None, "--quantize", "-q", help="Quantize an F16/BF16/F32 GGUF base: q8_0, q4_k_m, q4_k_s, q5_k_m, ..."),
    quiet: bool = typer.Option(False, "--quiet", help="Print nothing but errors and the result."),
    insecure: bool = typer.Option(False, "--insecure", help="Allow a plain http:// FROM source when it is pulled."),
) -> None:
    from slmctl.cli.output import human_size
    from slmctl.cli.progress import pull_progress
    from slmctl.services.create import BasePull, create_model

    app = ctx.obj

    def progress(message: str) -> None:
        if not quiet:
            app.stderr.write(f"{message}\n")
            app.stderr.flush()

    with pull_progress(app.stderr, quiet=quiet) as on_event:
        manifest = create_model(app.engine(), name, file, quantize=quantize, progress=progress,
                                pull=BasePull(app.settings, app.env, on_event, insecure))
    typer.echo(f"created {manifest.ref} ({manifest.format}, {human_size(manifest.total_size)}, "
               f"{manifest.digest().removeprefix('sha256:')[:12]})", file=ctx.obj.stdout)
