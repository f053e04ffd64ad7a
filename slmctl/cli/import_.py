"""``slmctl import PATH [--name NAME]``: add a local .gguf file, ONNX model folder or bundle to the store."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from slmctl.cli.usage import epilog

#: The examples of the help page, one command line each.
EXAMPLES = [
    'slmctl import ./qwen2.5-0.5b-instruct-q4_k_m.gguf',
    'slmctl import ~/models/tiny.gguf --name tiny:v1',
    'slmctl import ./Phi-4-mini-instruct-onnx/cpu-int4-rtn-block-32 --name phi4-mini-onnx',
    'slmctl import ./models.tar',
]

_NOTES = (
    'A GGUF file is checked (header, metadata, every tensor inside the file) and an ONNX GenAI folder for '
    'genai_config.json, its model files, tokenizer.json and tokenizer_config.json, before anything enters the '
    "store; a corrupt, truncated or incomplete model exits with code 4.\n\nA bundle written by 'slmctl "
    "export' brings every model it holds, under their original names (--name only for a bundle of one model); "
    'every file is checked against its sha256 digest before anything enters the store: a damaged bundle exits '
    'with code 6, a truncated one with code 4. With --json, a bundle of several models prints an array.\n\nA '
    'name that already belongs to a different model is refused (exit 2) unless --force; importing the same '
    'model again is always fine and repairs a damaged stored copy of its files (the damaged copy is moved to '
    "the store's quarantine/ folder). Ctrl-C leaves either the model stored (exit 0) or nothing (exit 130)."
)

COMMAND = {
    "name": "import",
    "help": "Import a local .gguf file, ONNX model folder or bundle (from 'slmctl export') into the store.",
    "epilog": epilog(EXAMPLES, _NOTES),
}


def command(
    ctx: typer.Context,
    path: Path = typer.Argument(..., help="A .gguf file, an ONNX GenAI folder, an ONNX encoder folder or a bundle.",
                                show_default=False),
    name: Optional[str] = typer.Option(None, "--name", "-n", help="Model name[:tag] (default: from the file name)."),
    json_output: bool = typer.Option(False, "--json", help="Print the stored model as JSON."),
    force: bool = typer.Option(False, "--force", help="Replace a different model that has the same name."),
) -> None:
    from slmctl.cli.output import human_size, print_json
    from slmctl.services.importer import import_path
    from slmctl.services.modelinfo import list_entry
    from slmctl.store.bundle import import_bundle, is_bundle
    from slmctl.store.interrupts import hold_after_commit

    def notice(message: str) -> None:
        typer.echo(f"warning: {message}", file=ctx.obj.stderr)

    with hold_after_commit() as hold:  # once stored, Ctrl-C no longer turns success into exit 130
        if is_bundle(path.expanduser()):
            from slmctl.names import parse_model_ref

            ref = parse_model_ref(name) if name else None
            manifests = import_bundle(ctx.obj.store(), path, name=ref, force=force, on_notice=notice)
        else:
            manifests = [import_path(ctx.obj.store(), path, name, force=force, on_notice=notice)]
        entries = [list_entry(manifest) for manifest in manifests]
        if json_output:
            print_json(entries[0] if len(entries) == 1 else entries, ctx.obj.stdout)
        else:
            for manifest, entry in zip(manifests, entries):
                typer.echo(f"imported {entry['name']} ({manifest.format}, {human_size(entry['size'])}, "
                           f"{entry['digest'].removeprefix('sha256:')[:12]})", file=ctx.obj.stdout)
        if hold.interrupted_late:
            notice("interrupted after the model was stored: it was kept")
