"""JSON pointers in messages, and local ``$ref`` resolution (``#``, ``#/$defs/name``, ``#/a~1b``)."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from slmctl.errors import UsageError


def where(pointer: str) -> str:
    return pointer or "/"


def join(pointer: str, *tokens: str | int) -> str:
    return pointer + "".join("/" + str(t).replace("~", "~0").replace("/", "~1") for t in tokens)


def refuse(keyword: str, pointer: str, hint: str | None = None, why: str = "") -> UsageError:
    return UsageError(f"unsupported JSON schema keyword '{keyword}' at {where(pointer)}{why}", hint)


def resolve_ref(root: Any, ref: str, pointer: str = "") -> tuple[str, Any]:
    """The JSON pointer and the schema a local ``$ref`` (``#``, ``#/$defs/x``, ...) points to."""
    if not ref.startswith("#"):
        raise refuse("$ref", pointer, "only local references such as #/$defs/name are supported",
                     f": '{ref}' points outside this schema")
    fragment = unquote(ref[1:])
    if fragment and not fragment.startswith("/"):
        raise refuse("$ref", pointer, "use a JSON pointer such as #/$defs/name", f": '{ref}' is an anchor")
    node = root
    for token in fragment.split("/")[1:]:
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            raise UsageError(f"JSON schema '$ref' at {where(pointer)} points to nothing: '{ref}'")
    return fragment, node
