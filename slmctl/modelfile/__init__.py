"""Modelfiles: the parsed form (:mod:`.model`), the parser (:mod:`.parser`) and the printer (:mod:`.printer`).

``parse_modelfile(text)`` reads Ollama's Modelfile format (plus ``FILE`` and ``REQUIRES``) into a
:class:`Modelfile`; ``format_modelfile(m)`` writes the canonical text back, and
``parse_modelfile(format_modelfile(m)) == m``. Errors are :class:`ModelfileError` (exit code 4).
"""

from __future__ import annotations

from slmctl.modelfile.model import INSTRUCTIONS, ROLES, Message, Modelfile, ModelfileError
from slmctl.modelfile.parser import parse_modelfile
from slmctl.modelfile.printer import format_modelfile, quote

__all__ = [
    "INSTRUCTIONS",
    "ROLES",
    "Message",
    "Modelfile",
    "ModelfileError",
    "format_modelfile",
    "parse_modelfile",
    "quote",
]
