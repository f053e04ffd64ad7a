"""The command-line parameters several commands share, declared once (``Annotated`` types for Typer),
and the parsing of their values: ``KEY=VALUE`` pairs and ``--format``.

A shared option means the same thing, with the same help text, in every command that takes it:
``--device`` here is the device a model runs on (``run``, ``embed``); the catalog's per-device variant
(``list --available``, ``pull``) is :data:`VariantDevice`. ``--json`` and ``--insecure`` keep a help
text per command, since what they print or allow differs.
"""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

__all__ = ["ModelName", "ModelNames", "Params", "RunDevice", "VariantDevice",
           "parse_format", "parse_pairs"]

#: One stored model (``NAME[:TAG]``).
ModelName = Annotated[str, typer.Argument(help="Model name[:tag].", show_default=False)]
#: One or more stored models.
ModelNames = Annotated[list[str], typer.Argument(help="Model names[:tag].", show_default=False)]
#: ``--param KEY=VALUE``: a generation or load option from :mod:`slmctl.options`.
Params = Annotated[list[str], typer.Option("--param", "-p", help="KEY=VALUE model parameter; repeatable.")]
#: ``--device``: where the model runs.
RunDevice = Annotated[Optional[str], typer.Option(
    "--device", help="npu, gpu, cpu or a name: cuda, metal, vulkan, rocm, dml, qnn, openvino, webgpu "
    "(default: the best usable, npu > gpu > cpu).")]
#: ``--device`` of the catalog: which variant of a model (the one for that device).
VariantDevice = Annotated[Optional[str], typer.Option(
    "--device", help="cpu, gpu or npu: the device the variant is for.")]


def parse_pairs(pairs: list[str], flag: str) -> dict[str, str]:
    """``KEY=VALUE`` strings into a dict (for flags without a typed table; ``--param`` is parsed
    against the option table by :func:`slmctl.options.parse_param_pairs`)."""
    from slmctl.errors import UsageError

    values = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"invalid {flag} {pair!r}: expected KEY=VALUE")
        values[key.strip()] = value
    return values


def parse_format(value: str | None) -> str | dict[str, Any] | None:
    """``--format``: ``json`` or a JSON schema object given inline."""
    if value is None:
        return None
    if value.strip().lower() == "json":
        return "json"
    import json

    from slmctl.errors import UsageError

    try:
        schema = json.loads(value)
    except ValueError:
        schema = None
    if not isinstance(schema, dict):
        raise UsageError(f"invalid --format {value!r}", "use --format json, or a JSON schema object")
    return schema
