"""``slmctl pull NAME``: download a catalog model or a source reference into the store."""

from __future__ import annotations

from typing import Any, Optional

import typer

from slmctl.cli.params import VariantDevice
from slmctl.cli.usage import epilog

#: The examples of the help page, one command line each.
EXAMPLES = [
    'slmctl pull qwen2.5:0.5b',
    'slmctl pull phi4-mini --format onnx --device gpu',
    'slmctl pull hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q8_0',
    'slmctl pull hf://onnx-community/Qwen2.5-0.5B-Instruct/onnx   (an ONNX GenAI folder)',
    'slmctl pull ollama://qwen2.5:3b',
    'slmctl pull https://example.com/models/model-Q4_K_M.gguf --sha256 <hex>',
    "slmctl pull qwen2.5:0.5b --json   (NDJSON events, like Ollama's /api/pull)",
]

_NOTES = (
    "A catalog name picks the variant for this machine (see 'slmctl list --available'); --format, --quant and "
    '--device override the choice. Every file is checked against its published sha256 digest (exit 6 on a '
    'mismatch, nothing is stored); an interrupted pull resumes where it stopped when run again. With --json a '
    'failed pull ends the stream with {"status": "error", "error": "..."} (the error line and the exit code '
    'are as without it). Environment: HF_ENDPOINT, HF_TOKEN (gated models), SLMCTL_OLLAMA_REGISTRY, '
    'HTTPS_PROXY, SSL_CERT_FILE; SLMCTL_OFFLINE=1 forbids downloads (exit 5).'
)

COMMAND = {
    "name": "pull",
    "help": "Download a model from the catalog, Hugging Face, an Ollama registry or a URL into the store.",
    "epilog": epilog(EXAMPLES, _NOTES),
}


def command(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Catalog name, hf.co/..., hf://..., ollama://... or https://....gguf.",
                               show_default=False),
    format_: Optional[str] = typer.Option(None, "--format", help="gguf or onnx (catalog models)."),
    quant: Optional[str] = typer.Option(None, "--quant", help="Quantisation, e.g. Q4_K_M, Q8_0, INT4."),
    device: VariantDevice = None,
    insecure: bool = typer.Option(False, "--insecure", help="Allow plain http:// sources."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing but errors."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON progress event per line (NDJSON)."),
    sha256: Optional[str] = typer.Option(
        None, "--sha256", help="Expected sha256 of a URL's file (hex or sha256:<hex>); exit 6 on a mismatch."),
) -> None:
    from slmctl.services.pull import pull

    app = ctx.obj
    if json_output:
        import json

        def print_event(event: dict[str, Any]) -> None:
            app.stdout.write(json.dumps(event, ensure_ascii=False) + "\n")
            app.stdout.flush()

        from slmctl.events import wire_handler

        try:
            pull(app.store(), app.settings, name, env=app.env, format=format_, quant=quant, device=device,
                 insecure=insecure, on_event=wire_handler(print_event),
                 sha256=_expected_digest(name, sha256, insecure))
        except BaseException as error:  # the stream ends with an error event, then the usual error and exit code
            print_event({"status": "error", "error": _error_text(error)})
            raise
        return
    digest = _expected_digest(name, sha256, insecure)
    from slmctl.cli.progress import pull_progress

    with pull_progress(app.stderr, quiet=quiet) as on_event:
        manifest = pull(app.store(), app.settings, name, env=app.env, format=format_, quant=quant,
                        device=device, insecure=insecure, on_event=on_event, sha256=digest)
    if quiet:
        return
    from slmctl.cli.output import human_size

    typer.echo(f"pulled {manifest.ref} ({manifest.format}, {human_size(manifest.total_size)}, "
               f"{manifest.digest().removeprefix('sha256:')[:12]})", file=ctx.obj.stdout)


def _error_text(error: BaseException) -> str:
    """The ``error`` of the last ``--json`` event: what the ``error:`` line on stderr says."""
    from slmctl.errors import SlmctlError

    if isinstance(error, SlmctlError):
        return error.message
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    return f"unexpected failure: {type(error).__name__}: {error}"


def _expected_digest(name: str, sha256: str | None, insecure: bool) -> str | None:
    """``--sha256`` as ``sha256:<hex>``; it applies to URL sources only (the others publish digests)."""
    if sha256 is None:
        return None
    from slmctl.errors import UsageError
    from slmctl.refs import UrlRef, parse_source
    from slmctl.sources.url import normalise_sha256

    if not isinstance(parse_source(name, allow_http=insecure), UrlRef):
        raise UsageError("--sha256 applies to URL sources (https://.../<file>.gguf) only",
                         hint="Hugging Face, Ollama and catalog models are checked against the digests they publish")
    return normalise_sha256(sha256)
