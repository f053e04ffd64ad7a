"""``slmctl doctor [--json]``: what this machine has and which device ``run`` would use.

Renders :func:`slmctl.services.diagnostics.collect`; the gathering lives there. With ``--debug`` the report
also shows why each ONNX provider is or is not usable, llama.cpp's build details and the probe
problems; without it, a probe that failed just reads "unknown". Each runtime is probed in a child
process (llama.cpp and ONNX Runtime must not share one; see :mod:`slmctl.backends.probes`): when
that child crashes or times out, its runtime reads "probe failed: <why>" instead of doctor dying.
"""

from __future__ import annotations

from typing import Any

import typer

from slmctl.cli.usage import epilog

#: The examples of the help page, one command line each.
EXAMPLES = [
    'slmctl doctor',
    'slmctl --debug doctor',
    'slmctl doctor --json | jq -r .selection.onnx',
]

COMMAND = {
    "name": "doctor",
    "help": "Check the hardware, runtimes and devices.\n\nShows CPU, memory, GPUs and NPUs, which devices and "
            "execution providers each runtime can really use here, and the device 'run' would pick.",
    "epilog": epilog(EXAMPLES),
}

_UNKNOWN = "unknown"


def _value(value: Any) -> str:
    if value is None or value == "" or value == []:
        return _UNKNOWN
    return str(value)


def _section(title: str, rows: list[tuple[str, str]]) -> list[str]:
    width = max((len(label) for label, _ in rows), default=0)
    return [title, *(f"  {label.ljust(width)}   {text}".rstrip() for label, text in rows), ""]


def _gpu_line(gpu: dict[str, Any]) -> str:
    from slmctl.cli.output import human_size

    parts = [gpu["name"], f"vendor {gpu['vendor']}", f"api {gpu['api']}"]
    if gpu.get("memory_total"):
        parts.append(human_size(gpu["memory_total"]))
    if gpu.get("driver"):
        parts.append(f"driver {gpu['driver']}")
    return ", ".join(parts)


def _missing(section: dict[str, Any]) -> str:
    error = section.get("error")
    return f"probe failed: {error}" if error else "not installed"


def render(report: dict[str, Any], *, debug: bool = False) -> str:
    """The plain-text report (aligned sections, one ``run would use`` line at the end)."""
    from slmctl.cli.output import human_size

    cpu, memory = report["cpu"], report["memory"]
    cores = (f"{_value(cpu['cores_physical'])} physical, {_value(cpu['cores_logical'])} logical"
             if cpu["cores_physical"] or cpu["cores_logical"] else _UNKNOWN)
    lines = [f"slmctl {report['slmctl_version']}   Python {report['python']}   {report['platform']}", ""]
    lines += _section("CPU", [("model", _value(cpu["model"])), ("arch", _value(cpu["arch"])), ("cores", cores),
                              ("features", " ".join(cpu["features"]) or _UNKNOWN)])
    size = {k: human_size(v) if v else _UNKNOWN for k, v in memory.items()}
    lines += _section("Memory", [("total", size["total"]), ("available", size["available"])])
    gpus = [(f"gpu {i}", _gpu_line(g)) for i, g in enumerate(report["gpus"])]
    lines += _section("GPUs", gpus or [("none found", "")])
    npus = [(f"npu {i}", f"{n['name']}, vendor {n['vendor']}" + (f", driver {n['driver']}" if n["driver"] else ""))
            for i, n in enumerate(report["npus"])]
    lines += _section("NPUs", npus or [("none found", "")])
    gguf, onnx = report["backends"]["gguf"], report["backends"]["onnx"]
    gguf_text = (f"llama-cpp-python {_value(gguf['version'])}, devices: {', '.join(gguf['devices']) or 'none'}"
                 if gguf["installed"] else _missing(gguf))
    onnx_text = (f"onnxruntime-genai {_value(onnx['version'])} (onnxruntime {_value(onnx['onnxruntime_version'])}), "
                 f"providers: {', '.join(onnx['providers']) or 'none'}" if onnx["installed"] else _missing(onnx))
    lines += _section("Runtimes", [("gguf", gguf_text), ("onnx", onnx_text)])
    if debug:
        status = onnx["provider_status"]
        lines += _section("ONNX providers", [(name, ("usable" if s["usable"] else "not usable") + f": {s['reason']}")
                                             for name, s in status.items()] or [("unknown", "")])
        lines += _section("llama.cpp", [("gpu offload", "yes" if gguf["gpu_offload"] else "no"),
                                        ("system info", _value(gguf["system_info"])),
                                        *[("ggml device", d) for d in gguf["ggml_devices"]]])
        lines += _section("Problems", [(p, "") for p in report["problems"]] or [("none", "")])
    elif report["problems"]:
        lines += [f"note: {len(report['problems'])} probe(s) failed; 'slmctl --debug doctor' shows why", ""]
    selection = report["selection"]
    lines.append(f"run would use: gguf -> {selection['gguf'] or 'none'}, onnx -> {selection['onnx'] or 'none'}")
    return "\n".join(lines)


def command(
    ctx: typer.Context,
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    from slmctl.cli.output import print_json
    from slmctl.services.diagnostics import collect

    report = collect()
    if json_output:
        print_json(report, ctx.obj.stdout)
        return
    typer.echo(render(report, debug=ctx.obj.settings.debug), file=ctx.obj.stdout)
