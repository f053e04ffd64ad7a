"""``slmctl list [--json]``: the models in the store; ``--available``: the catalog, with the variant
this machine would use."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import typer

from slmctl.cli.params import VariantDevice
from slmctl.cli.usage import epilog

if TYPE_CHECKING:
    from slmctl.catalog import Catalog
    from slmctl.store.manifest import Manifest

#: The examples of the help page, one command line each.
EXAMPLES = [
    'slmctl list',
    "slmctl list --json | jq -r '.[].name'",
    'slmctl list --available --size small --type code',
]

_NOTES = (
    'With --available, INSTALLED says whether the files of the variant shown are in the store (by digest, or '
    "as pulled from that variant's source), whatever the stored models are named."
)

COMMAND = {
    "name": "list",
    "help": "List the models in the store (--available: the catalog of models that can be pulled).",
    "epilog": epilog(EXAMPLES, _NOTES),
}

_FILTERS = {"size": ("tiny", "small", "medium", "large"), "type": ("chat", "code", "reasoning", "embedding"),
            "format": ("gguf", "onnx"), "device": ("cpu", "gpu", "npu")}


def command(
    ctx: typer.Context,
    json_output: bool = typer.Option(False, "--json", help="Print a JSON array."),
    available: bool = typer.Option(False, "--available", help="List the catalog instead of the store."),
    size: Optional[str] = typer.Option(None, "--size", help="With --available: tiny, small, medium or large."),
    type_: Optional[str] = typer.Option(None, "--type", help="With --available: chat, code, reasoning or embedding."),
    format_: Optional[str] = typer.Option(None, "--format", help="With --available: gguf or onnx."),
    device: VariantDevice = None,
) -> None:
    from slmctl.errors import UsageError

    filters = {"size": size, "type": type_, "format": format_, "device": device}
    if not available:
        given = [f"--{k}" for k, v in filters.items() if v is not None]
        if given:
            raise UsageError(f"{', '.join(given)} only applies to the catalog", hint="add --available")
        _list_store(ctx, json_output)
        return
    wanted: dict[str, str | None] = {}
    for key, value in filters.items():
        if value is not None and value.strip().lower() not in _FILTERS[key]:
            raise UsageError(f"invalid value for --{key}: {value!r}", hint=f"valid: {', '.join(_FILTERS[key])}")
        wanted[key] = value.strip().lower() if value is not None else None
    _list_available(ctx, json_output, wanted)


def _list_store(ctx: typer.Context, json_output: bool) -> None:
    from datetime import datetime

    from slmctl.cli.output import human_size, print_json, table, time_ago
    from slmctl.services.modelinfo import list_entry

    store = ctx.obj.store()
    manifests, problems = store.list_with_problems()
    for problem in problems:
        typer.echo(f"warning: skipped a damaged manifest: {problem.path} ({problem.reason})", file=ctx.obj.stderr)
    entries = [list_entry(m) for m in manifests]
    if json_output:
        print_json(entries, ctx.obj.stdout)
        return
    rows = [[e["name"], e["digest"].removeprefix("sha256:")[:12], e["format"], e["parameter_size"] or "-",
             e["quantization"] or "-", human_size(e["size"]), time_ago(datetime.fromisoformat(e["modified_at"]))]
            for e in entries]
    table(["NAME", "ID", "FORMAT", "PARAMS", "QUANT", "SIZE", "MODIFIED"], rows, ctx.obj.stdout)


def available_entries(catalog: Catalog, manifests: list[Manifest], *, usable_gguf: list[str],
                      usable_onnx: list[str], size: str | None = None, type: str | None = None,
                      format: str | None = None, device: str | None = None) -> list[dict[str, Any]]:
    """The ``list --available --json`` items (pure: the store's manifests and usable devices are passed in).

    ``installed`` goes by content, never by name (:mod:`slmctl.catalog.installed`): each variant says
    whether its own files are stored, and the item is installed when the variant it shows (``selected``;
    without one, any variant of the asked ``format``) is.
    """
    from slmctl.catalog import StoredContent, choose_variant, variant_installed
    from slmctl.errors import DeviceUnavailable, ModelNotFound

    stored = StoredContent.of(manifests)
    items = []
    for entry in catalog:
        if size and entry.size_class != size:
            continue
        if type and entry.task != type:
            continue
        installed = {v.source for v in entry.variants if variant_installed(v, stored)}
        try:
            chosen = choose_variant(entry, usable_gguf=usable_gguf, usable_onnx=usable_onnx, format=format,
                                    device=device, installed=installed)
        except ModelNotFound:
            continue  # no variant of the asked format/device in the catalog
        except DeviceUnavailable:
            chosen = None  # there is one, but this machine cannot run it
        selected = None
        if chosen is not None:
            selected = {**chosen.variant.public(), "run_device": chosen.device,
                        "installed": chosen.variant.source in installed}
            is_installed = chosen.variant.source in installed
        else:
            is_installed = any(v.source in installed for v in entry.variants if not format or v.format == format)
        items.append({
            "name": entry.name,
            "aliases": entry.alias_names,
            "task": entry.task,
            "parameter_size": entry.parameter_size,
            "size_class": entry.size_class,
            "context_length": entry.context_length,
            "license": entry.license,
            "ollama": entry.ollama,
            "variants": [{**v.public(), "installed": v.source in installed} for v in entry.variants],
            "selected": selected,
            "installed": is_installed,
        })
    return items


def _list_available(ctx: typer.Context, json_output: bool, wanted: dict[str, str | None]) -> None:
    from slmctl.catalog import load_catalog
    from slmctl.cli.output import human_size, print_json, table
    from slmctl.engine.devices import usable_devices

    catalog = load_catalog(ctx.obj.settings.home)
    manifests, _ = ctx.obj.store().list_with_problems()
    items = available_entries(catalog, manifests, usable_gguf=usable_devices("gguf"),
                              usable_onnx=usable_devices("onnx"), size=wanted["size"], type=wanted["type"],
                              format=wanted["format"], device=wanted["device"])
    if json_output:
        print_json(items, ctx.obj.stdout)
        return
    rows = []
    for item in items:
        sel = item["selected"] or {}
        rows.append([item["name"], item["task"], item["parameter_size"],
                     human_size(sel["size"]) if sel.get("size") else "-", sel.get("format", "-"),
                     sel.get("run_device", "-"), sel.get("quant", "-"), "yes" if item["installed"] else "no"])
    table(["NAME", "TASK", "PARAMS", "SIZE", "FORMAT", "DEVICE", "QUANT", "INSTALLED"], rows, ctx.obj.stdout)
