"""``slmctl pull NAME``: download a catalog model or a source reference into the store."""

from __future__ import annotations

import os
from typing import Any, Optional

import typer

COMMAND = {
    "name": "pull",
    "help": "Download a model from the catalog, Hugging Face, an Ollama registry or a URL into the store.",
    "epilog": "Examples:\n\n  slmctl pull qwen2.5:0.5b\n\n"
    "  slmctl pull phi4-mini --format onnx --device gpu\n\n"
    "  slmctl pull hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q8_0\n\n"
    "  slmctl pull hf://onnx-community/Qwen2.5-0.5B-Instruct/onnx   (an ONNX GenAI folder)\n\n"
    "  slmctl pull ollama://qwen2.5:3b\n\n"
    "  slmctl pull https://example.com/models/model-Q4_K_M.gguf\n\n"
    "  slmctl pull qwen2.5:0.5b --json   (NDJSON events, like Ollama's /api/pull)\n\n"
    "A catalog name picks the variant for this machine (see 'slmctl list --available'); --format, --quant "
    "and --device override the choice. Every file is checked against its published sha256 digest (exit 6 on "
    "a mismatch, nothing is stored); an interrupted pull resumes where it stopped when run again. "
    "Environment: HF_ENDPOINT, HF_TOKEN (gated models), SLMCTL_OLLAMA_REGISTRY, HTTPS_PROXY, SSL_CERT_FILE; "
    "SLMCTL_OFFLINE=1 forbids downloads (exit 5).",
}


def command(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Catalog name, hf.co/..., hf://..., ollama://... or https://....gguf.",
                               show_default=False),
    format_: Optional[str] = typer.Option(None, "--format", help="gguf or onnx (catalog models)."),
    quant: Optional[str] = typer.Option(None, "--quant", help="Quantisation, e.g. Q4_K_M, Q8_0, INT4."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, gpu or npu: the device the variant is for."),
    insecure: bool = typer.Option(False, "--insecure", help="Allow plain http:// sources."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing but errors."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON progress event per line (NDJSON)."),
) -> None:
    from slmctl.pull import pull

    app = ctx.obj
    if json_output:
        import json

        def on_event(event: dict[str, Any]) -> None:
            app.stdout.write(json.dumps(event, ensure_ascii=False) + "\n")
            app.stdout.flush()

        pull(app.store(), app.settings, name, env=os.environ, format=format_, quant=quant, device=device,
             insecure=insecure, on_event=on_event)
        return
    if quiet:
        pull(app.store(), app.settings, name, env=os.environ, format=format_, quant=quant, device=device,
             insecure=insecure)
        return
    try:
        tty = app.stderr.isatty()
    except (AttributeError, ValueError):
        tty = False
    with (_RichProgress(app.stderr) if tty else _nullcontext()) as bars:
        handler = bars.handle if bars is not None else _plain(app.stderr)
        manifest = pull(app.store(), app.settings, name, env=os.environ, format=format_, quant=quant,
                        device=device, insecure=insecure, on_event=handler)
    from slmctl.cli.output import human_size

    typer.echo(f"pulled {manifest.ref} ({manifest.format}, {human_size(manifest.total_size)}, "
               f"{manifest.digest().removeprefix('sha256:')[:12]})")


def _plain(stream: Any) -> Any:
    from slmctl.pull import plain_progress

    def write(line: str) -> None:
        stream.write(line)
        stream.flush()

    return plain_progress(write)


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class _RichProgress:
    """One rich progress bar per file (bytes, speed, ETA) on a terminal."""

    def __init__(self, stream: Any) -> None:
        from rich.console import Console
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                   TransferSpeedColumn)

        self.console = Console(file=stream)
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), TimeRemainingColumn(), console=self.console)
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> _RichProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def handle(self, event: dict[str, Any]) -> None:
        status = event.get("status", "")
        if "completed" not in event:
            if status != "resolved":
                self.progress.console.print(status)
            return
        task = self.tasks.get(status)
        if task is None:
            task = self.tasks[status] = self.progress.add_task(status, total=event.get("total"))
        self.progress.update(task, completed=event.get("completed") or 0, total=event.get("total"))
