"""The Modelfile printer: :class:`~slmctl.modelfile.model.Modelfile` -> canonical text.

Owns :func:`quote` (how a value is written) and :func:`format_modelfile` (instruction order and
layout). The output parses back to an equal object: ``parse_modelfile(format_modelfile(m)) == m``.

Order: ``FROM``, ``PARAMETER`` lines sorted by name (``stop`` values one line each, in order),
``TEMPLATE``, ``SYSTEM``, ``MESSAGE``, ``LICENSE``, ``ADAPTER``, ``FILE``, ``REQUIRES``; one instruction
per line, LF line endings, a final newline, no comments. Floats are written with ``repr`` so they read
back to the same value; booleans as ``true``/``false``.
"""

from __future__ import annotations

from typing import Any

from slmctl.errors import UsageError
from slmctl.modelfile.model import ROLES, VERSION_RE, Modelfile, ModelfileError
from slmctl.options import REPEATABLE_KEYS, canonical_key

_TRIPLE = '"""'


def quote(text: str) -> str:
    """Write ``text`` as a Modelfile value that the parser reads back unchanged.

    * bare when that is unambiguous: non-empty, one line, no surrounding whitespace, no ``"``;
    * ``"..."`` for other one-line text (``\\`` and ``"`` escaped as ``\\\\`` and ``\\"``);
    * ``\"\"\"...\"\"\"`` for text with a newline, written verbatim (it may end with ``"``).

    Multi-line values have no escapes, so two cases cannot be written and raise
    :class:`ModelfileError`: a multi-line text containing ``\"\"\"``, and one containing ``\\r\\n``
    (the parser reads CRLF as LF). Every string without a newline can be written.
    """
    if "\n" in text:
        if _TRIPLE in text:
            raise ModelfileError('a value over several lines cannot contain """',
                                 'Modelfile """ values have no escapes; change the """ in the text')
        if "\r\n" in text:
            raise ModelfileError("a value over several lines cannot contain CRLF line breaks",
                                 "the parser reads CRLF as LF; use LF line breaks in the text")
        return _TRIPLE + text + _TRIPLE
    if text and text == text.strip() and '"' not in text:
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    return quote(str(value))


def _parameter_lines(parameters: dict[str, Any]) -> list[str]:
    canonical: dict[str, Any] = {}
    for key, value in parameters.items():
        try:
            canonical[canonical_key(key)] = value
        except UsageError as exc:
            raise ModelfileError(exc.message, exc.hint) from None
    lines = []
    for key in sorted(canonical):
        value = canonical[key]
        if key in REPEATABLE_KEYS and isinstance(value, (list, tuple)):
            lines.extend(f"PARAMETER {key} {quote(str(item))}" for item in value)
        else:
            lines.append(f"PARAMETER {key} {_scalar(value)}")
    return lines


def _path(name: str, value: str) -> str:
    if not value.strip():
        raise ModelfileError(f"{name} needs a non-empty value")
    return f"{name} {quote(value)}"


def format_modelfile(modelfile: Modelfile) -> str:
    """The canonical text of ``modelfile`` (see the module docstring for the layout).

    Raises :class:`ModelfileError` for what cannot be written so that it parses back: a blank
    ``from_``/adapter/file path, an unknown parameter name or message role, a ``requires`` that is not a
    version, or a value :func:`quote` rejects. An empty ``stop`` list writes nothing.
    """
    lines = [_path("FROM", modelfile.from_)]
    lines += _parameter_lines(modelfile.parameters)
    if modelfile.template is not None:
        lines.append(f"TEMPLATE {quote(modelfile.template)}")
    if modelfile.system is not None:
        lines.append(f"SYSTEM {quote(modelfile.system)}")
    for message in modelfile.messages:
        if message.role not in ROLES:
            raise ModelfileError(f"unknown MESSAGE role {message.role!r}", f"expected one of: {', '.join(ROLES)}")
        lines.append(f"MESSAGE {message.role} {quote(message.content)}")
    lines += [f"LICENSE {quote(text)}" for text in modelfile.licenses]
    lines += [_path("ADAPTER", path) for path in modelfile.adapters]
    lines += [_path("FILE", path) for path in modelfile.files]
    if modelfile.requires is not None:
        if not VERSION_RE.fullmatch(modelfile.requires):
            raise ModelfileError(f"invalid REQUIRES version {modelfile.requires!r}", "expected a version such as 0.1.0")
        lines.append(f"REQUIRES {modelfile.requires}")
    return "\n".join(lines) + "\n"
