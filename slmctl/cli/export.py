"""``slmctl export NAME... -o FILE``: write models into one bundle file for another machine."""

from __future__ import annotations

from pathlib import Path

import typer

from slmctl.cli.params import ModelNames
from slmctl.cli.usage import epilog

#: The examples of the help page, one command line each.
EXAMPLES = [
    'slmctl export tiny -o tiny.slmctl.tar',
    'slmctl export tiny tiny-onnx -o models.tar',
    "slmctl export tiny -o - | ssh airgapped 'cat > tiny.tar'",
]

_NOTES = (
    "Then, on the other machine: slmctl import tiny.slmctl.tar\n\nThe bundle holds the models' manifests "
    '(bundle.json) and every file they use, each once; it is written to FILE.partial and renamed when '
    'complete. Files are re-hashed while written: a damaged model in the store exits with code 6.'
)

COMMAND = {
    "name": "export",
    "help": "Export models into one bundle file (a tar archive) to import on another machine.",
    "epilog": epilog(EXAMPLES, _NOTES),
}


def command(
    ctx: typer.Context,
    names: ModelNames,
    output: str = typer.Option(..., "--output", "-o", help="The bundle file to write ('-' for stdout).",
                               show_default=False),
) -> None:
    import os

    from slmctl.cli.output import human_size
    from slmctl.errors import OperationFailed, UsageError
    from slmctl.names import parse_model_ref
    from slmctl.store.bundle import export_bundle

    refs = [parse_model_ref(n) for n in names]
    store = ctx.obj.store()
    if output == "-":
        if ctx.obj.stdout_is_tty:
            raise UsageError("refusing to write a binary bundle to a terminal",
                             hint="redirect stdout to a file or a pipe, or use -o FILE")
        out = ctx.obj.binary_stdout
        export_bundle(store, refs, out)
        out.flush()
        return
    target = Path(output).expanduser()
    if target.is_dir():
        raise UsageError(f"'{target}' is a folder", hint="give the bundle a file name, e.g. -o models.tar")
    partial = target.with_name(target.name + ".partial")
    try:
        fh = open(partial, "wb")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise OperationFailed(f"cannot write '{partial}': {exc.strerror or exc}") from exc
    try:
        with fh:
            manifests = export_bundle(store, refs, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(partial, target)
    except BaseException as exc:
        partial.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OperationFailed(f"cannot write '{target}': {exc.strerror or exc}",
                                  hint="check free space and permissions") from exc
        raise
    sizes = {item.digest: item.size for m in manifests for item in [*m.files, *m.layers]}
    models = ", ".join(str(m.ref) for m in manifests)
    files = f"{len(sizes)} file{'s' if len(sizes) != 1 else ''}"
    typer.echo(f"exported {models} to {target} ({files}, {human_size(sum(sizes.values()))})", file=ctx.obj.stdout)
