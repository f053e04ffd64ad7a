"""JSON format -> llama.cpp GBNF grammar text (``llama_cpp`` is imported only when called).

``"json"`` gets llama.cpp's generic JSON grammar (an object); a schema is checked against the
supported subset (:func:`slmctl.structured.schema.check_json_format`, which refuses the rest with a
UsageError) and converted by :class:`slmctl.structured.converter.SchemaGrammar`.
"""

from __future__ import annotations

from typing import Any

from slmctl.errors import UsageError
from slmctl.structured.schema import check_json_format


def grammar_for(json_format: str | dict[str, Any]) -> str:
    """GBNF text that admits only JSON documents ``json_format`` allows ("json": any JSON object)."""
    if not isinstance(json_format, dict):
        from llama_cpp.llama_grammar import JSON_GBNF

        check_json_format(json_format)
        return JSON_GBNF
    check_json_format(json_format)
    from slmctl.structured.converter import SchemaGrammar

    try:
        return SchemaGrammar(json_format).grammar()
    except RecursionError:
        raise UsageError("the JSON schema is nested too deeply", "flatten it, or use $defs and $ref") from None
