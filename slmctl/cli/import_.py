"""``slmctl import PATH [--name NAME]``: add a local .gguf file or ONNX model folder to the store."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

COMMAND = {
    "name": "import",
    "help": "Import a local .gguf file or ONNX model folder into the store.",
    "epilog": "Examples:\n\n  slmctl import ./qwen2.5-0.5b-instruct-q4_k_m.gguf\n\n"
    "  slmctl import ~/models/tiny.gguf --name tiny:v1\n\n"
    "  slmctl import ./Phi-4-mini-instruct-onnx/cpu-int4-rtn-block-32 --name phi4-mini-onnx\n\n"
    "A GGUF file is checked (header, metadata, every tensor inside the file) and an ONNX GenAI folder "
    "for genai_config.json, its model files, tokenizer.json and tokenizer_config.json, before anything "
    "enters the store; a corrupt, truncated or incomplete model exits with code 4.",
}


def command(
    ctx: typer.Context,
    path: Path = typer.Argument(..., help="A .gguf file, an ONNX GenAI folder or an ONNX encoder folder.",
                                show_default=False),
    name: Optional[str] = typer.Option(None, "--name", "-n", help="Model name[:tag] (default: from the file name)."),
    json_output: bool = typer.Option(False, "--json", help="Print the stored model as JSON."),
) -> None:
    from slmctl.cli.output import human_size, print_json
    from slmctl.importer import import_path
    from slmctl.modelinfo import list_entry

    manifest = import_path(ctx.obj.store(), path, name)
    entry = list_entry(manifest)
    if json_output:
        print_json(entry)
    else:
        typer.echo(f"imported {entry['name']} ({manifest.format}, {human_size(entry['size'])}, "
                   f"{entry['digest'].removeprefix('sha256:')[:12]})")
