"""``slmctl run NAME [PROMPT]``: answer one prompt (arguments and/or piped stdin) or chat in a REPL."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import typer

from slmctl.cli.params import ModelName, Params, RunDevice, parse_format, parse_pairs
from slmctl.cli.usage import epilog

if TYPE_CHECKING:
    from slmctl.chat import ChatSession
    from slmctl.cli.context import AppContext
    from slmctl.engine import Engine
    from slmctl.store import Manifest

#: The examples of the help page, one command line each.
EXAMPLES = [
    'slmctl run tiny "Explain quantum computing"',
    'cat report.txt | slmctl run tiny "Summarise this in 3 bullet points"',
    'echo hi | slmctl run tiny --json --max-tokens 16',
    'slmctl run tiny "List 3 colours" --format json --seed 42 --param temperature=0.2',
    'slmctl run tiny            (interactive chat; /? for help)',
]

_NOTES = (
    'Parameters (--param KEY=VALUE): temperature, top_k, top_p, min_p, typical_p, repeat_penalty, '
    'repeat_last_n, presence_penalty, frequency_penalty, seed, num_predict, stop, num_ctx, num_batch, '
    'num_gpu, main_gpu, num_thread, use_mmap, flash_attn.'
)

COMMAND = {
    "name": "run",
    "help": "Run a model: answer PROMPT (and/or piped stdin), or chat interactively.",
    "epilog": epilog(EXAMPLES, _NOTES),
}


def command(
    ctx: typer.Context,
    name: ModelName,
    prompt: Optional[list[str]] = typer.Argument(None, help="The prompt (words are joined).", show_default=False),
    system: Optional[str] = typer.Option(None, "--system", help="System prompt (replaces the model's)."),
    param: Params = [],
    format_: Optional[str] = typer.Option(None, "--format", help="'json' (or a JSON schema) to constrain the answer."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="Maximum tokens to generate (num_predict)."),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="Sampling temperature."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed, for reproducible answers."),
    backend: Optional[str] = typer.Option(None, "--backend", help="gguf or onnx (must match the model's format)."),
    device: RunDevice = None,
    provider_option: list[str] = typer.Option(
        [], "--provider-option", help="KEY=VALUE passed to the ONNX execution provider; repeatable."),
    verbose: bool = typer.Option(False, "--verbose", help="Print timing statistics to stderr."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object instead of streaming text."),
    insecure: bool = typer.Option(False, "--insecure", help="Allow a plain http:// source when the model is pulled "
                                  "on first use."),
) -> None:
    from slmctl.chat import ChatSession
    from slmctl.cli import repl
    from slmctl.errors import UsageError
    from slmctl.options import add_value, parse_param_pairs

    app = ctx.obj
    params = parse_param_pairs(param)
    for key, value in (("num_predict", max_tokens), ("temperature", temperature), ("seed", seed)):
        if value is not None:
            add_value(params, key, value)
    json_format = parse_format(format_)
    text = read_prompt(app, prompt)
    engine = app.engine()
    manifest = pull_if_missing(app, engine, name, insecure=insecure)
    if backend is not None and backend != manifest.format:
        raise UsageError(f"model '{manifest.ref}' is a {manifest.format} model; the {backend} backend cannot run it",
                         f"drop --backend, or use --backend {manifest.format}")
    if provider_option and manifest.format != "onnx":  # silently ignored before: say so
        app.stderr.write(f"warning: --provider-option applies to ONNX models only; '{manifest.ref}' is a "
                         f"{manifest.format} model, so it is ignored\n")
    with ChatSession(engine, manifest, params=params, system=system, json_format=json_format,
                     device=device, provider_options=parse_pairs(provider_option, "--provider-option")) as session:
        for warning in session.warnings():
            app.stderr.write(f"warning: {warning}\n")
        if text is None:
            repl.Repl(app, session, verbose=verbose).loop()
        else:
            answer(app, session, text, verbose=verbose, json_output=json_output)


def pull_if_missing(app: AppContext, engine: Engine, name: str, *, insecure: bool = False) -> Manifest:
    """The stored model; a .gguf file or ONNX folder given by path is imported, and a catalog alias or
    source reference not in the store is pulled, on first use (:mod:`slmctl.services.resolve`)."""
    from slmctl.cli.progress import pull_progress
    from slmctl.services.resolve import resolve_model

    def note(text: str) -> None:
        app.stderr.write(f"{text}\n")
        app.stderr.flush()

    with pull_progress(app.stderr) as on_event:
        return resolve_model(engine.store, app.settings, name, env=app.env, on_event=on_event, on_note=note,
                             insecure=insecure)


def read_prompt(app: AppContext, words: list[str] | None) -> str | None:
    """PROMPT from the arguments, with piped stdin prepended; None means: start the REPL."""
    from slmctl.errors import UsageError

    text = " ".join(words) if words else None
    if app.stdin_is_tty:
        return text
    piped = app.stdin.read()
    if piped.strip():
        return piped.rstrip("\n") + ("\n\n" + text if text else "")
    if text is None:
        raise UsageError("no prompt: give PROMPT or pipe text into stdin")
    return text


def answer(app: AppContext, session: ChatSession, text: str, *, verbose: bool, json_output: bool) -> None:
    """Answer one prompt: stream it (or print one JSON object), then the statistics with --verbose."""
    from slmctl.cli.output import print_json, result_object, stats_lines

    if app.settings.debug:
        app.stderr.write(f"debug: prompt as the model reads it:\n{session.prompt_preview(text)}\n")
    generation = session.ask(text)
    out = app.stdout
    if json_output:
        generation.complete()
        print_json(result_object(str(session.manifest.ref), generation.text, generation.stats), out)
    else:
        try:
            for chunk in generation:
                out.write(chunk)
                out.flush()
        finally:
            generation.close()
            out.write("\n")
            out.flush()
    if verbose and generation.stats is not None:
        app.stderr.write("\n".join(stats_lines(generation.stats)) + "\n")
    problem = session.format_problem(generation)
    if problem is not None:
        from slmctl.errors import ExitCode

        app.stderr.write(f"warning: {problem}\n")
        raise typer.Exit(int(ExitCode.INCOMPLETE))

