"""``slmctl embed NAME [TEXT]...``: embedding vectors as JSON (GGUF or ONNX encoder models).

A model that cannot embed (an ONNX GenAI text generator) is a usage error (exit 2), checked before it
is loaded: the same rule as ``run`` with an embedding model.
"""

from __future__ import annotations

from typing import Optional

import typer

from slmctl.cli.params import ModelName, RunDevice
from slmctl.cli.usage import epilog

#: The examples of the help page, one command line each.
EXAMPLES = [
    'slmctl embed nomic-embed-text "The sky is blue" "Grass is green"',
    "cat doc.txt | slmctl embed my-encoder | jq '.embeddings[0] | length'",
]

_NOTES = (
    'Output: {"model", "embeddings": [[...], ...]} with L2-normalised vectors, as Ollama\'s '
    "/api/embed.\n\nExit codes: 2 when the model cannot embed (an ONNX text generator), as 'slmctl run' with "
    'an embedding model; 3 when the model is not stored.'
)

COMMAND = {
    "name": "embed",
    "help": "Print embedding vectors of texts as JSON (one per TEXT, or stdin as one text).",
    "epilog": epilog(EXAMPLES, _NOTES),
}


def command(
    ctx: typer.Context,
    name: ModelName,
    texts: Optional[list[str]] = typer.Argument(None, help="Texts to embed.", show_default=False),
    device: RunDevice = None,
) -> None:
    import time

    from slmctl.cli.output import print_json
    from slmctl.errors import UsageError
    from slmctl.options import build_options
    from slmctl.services.modelinfo import capabilities

    app = ctx.obj
    inputs = list(texts or [])
    if not inputs and not app.stdin_is_tty:
        piped = app.stdin.read()
        if piped.strip():
            inputs = [piped]
    if not inputs:
        raise UsageError("nothing to embed: give TEXT arguments or pipe text into stdin")
    engine = app.engine()
    manifest = app.manifest(engine, name)
    if "embedding" not in capabilities(manifest):  # the wrong kind of model is a usage error, as for run
        raise UsageError(f"model '{manifest.ref}' is a text generator: it cannot embed",
                         "use an embedding model: a GGUF model, or an ONNX sentence-embedding export "
                         "(model.onnx + tokenizer.json)")
    load, _ = build_options(engine.defaults(manifest).params)
    start = time.perf_counter_ns()
    vectors = engine.embed(manifest, inputs, load, device=device)
    print_json({"model": str(manifest.ref), "embeddings": vectors,
                "total_duration": time.perf_counter_ns() - start}, app.stdout)
