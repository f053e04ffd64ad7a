"""Static checks of a parsed template against the types of the values it will be given (API:
``Template.check`` in :mod:`.gotemplate`).

Owns the small type vocabulary (:class:`Struct`, :class:`ListOf`, :class:`MapOf`, scalars and
:data:`ANY`) and the walk that follows the dot, ``$`` and every variable through ``with``, ``range``,
declarations and the builtins' results, so that a field that cannot exist is refused before the
template ever runs: ``{{ .Sytem }}`` renders as the empty string (the data are dicts, a missing key is
None), which silently drops text. Refused, with the position and the closest valid name:

- a field a struct does not have (names are case-sensitive, as in Go);
- a field of a list (``.Messages.Content``) or of a scalar (``.System.Text``);
- ``range`` over a scalar or a struct.

The check never refuses what could be valid: a map's fields are its keys (any name), and where a type
is not known statically (``nil``, ``and``/``or`` of different types, a value of type :data:`ANY`,
a variable assigned values of different types) nothing below it is checked. Which values exist is
the caller's business (Ollama's: :mod:`.prompting`); this module knows no field names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from slmctl.modelfile.gotemplate_lexer import Source, TemplateError, closest
from slmctl.modelfile.gotemplate_nodes import (
    Action, Chain, Field, Ident, If, Literal, Node, Pipe, Range, Variable,
)

__all__ = ["ANY", "BOOL", "FLOAT", "INT", "STRING", "ListOf", "MapOf", "Scalar", "Struct", "Type", "check_nodes"]


@dataclass(frozen=True)
class Scalar:
    """A string, bool or number: it has no fields and cannot be ranged over (ints excepted)."""
    name: str


@dataclass(frozen=True)
class Unknown:
    """A value whose type is not known statically: nothing below it is checked."""


@dataclass(eq=False)
class Struct:
    """A Go struct: exactly these fields (filled after creation for recursive types)."""
    name: str
    fields: dict[str, Type] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class ListOf:
    elem: Type


@dataclass(frozen=True, eq=False)
class MapOf:
    """A map with string keys: ``.key`` is a lookup, so any field name is valid."""
    value: Type


Type = Union[Scalar, Unknown, Struct, ListOf, MapOf]

STRING, BOOL, INT, FLOAT = Scalar("string"), Scalar("bool"), Scalar("int"), Scalar("float64")
ANY = Unknown()

_RESULTS: dict[str, Type] = {
    "not": BOOL, "eq": BOOL, "ne": BOOL, "lt": BOOL, "le": BOOL, "gt": BOOL, "ge": BOOL, "len": INT,
    "print": STRING, "printf": STRING, "println": STRING, "json": STRING, "currentDate": STRING,
    "yesterdayDate": STRING, "toTypeScriptType": STRING,
}


def describe_type(t: Type) -> str:
    if isinstance(t, Struct):
        return t.name
    if isinstance(t, ListOf):
        return f"a list of {describe_type(t.elem)}"
    if isinstance(t, MapOf):
        return "a map"
    if isinstance(t, Scalar):
        return f"a {t.name}" if t.name != "int" else "an int"
    return "a value"


def check_nodes(src: Source, nodes: list[Node], root: Struct) -> None:
    """Raise :class:`TemplateError` at the first field or range that cannot work on ``root``'s values."""
    _Checker(src, root).walk(nodes, root)


class _Checker:
    """One walk: the variable stack (``[name, type]``, innermost last), scoped as the parser scopes it."""

    def __init__(self, src: Source, root: Struct) -> None:
        self.src, self.root = src, root
        self.vars: list[list[object]] = [["$", root]]

    def error(self, pos: int, reason: str, hint: str) -> TemplateError:
        return self.src.error(pos, reason, hint)

    def walk(self, nodes: list[Node], dot: Type) -> None:
        for node in nodes:
            if isinstance(node, Action):
                self.pipe(node.pipe, dot)
            elif isinstance(node, If):
                mark = len(self.vars)
                for cond, body in node.branches:
                    value = self.pipe(cond, dot)
                    self.body(body, value if node.kind == "with" else dot)
                if node.else_body is not None:
                    self.body(node.else_body, dot)
                del self.vars[mark:]
            elif isinstance(node, Range):
                self.walk_range(node, dot)

    def body(self, nodes: list[Node], dot: Type) -> None:
        mark = len(self.vars)
        self.walk(nodes, dot)
        del self.vars[mark:]

    def walk_range(self, node: Range, dot: Type) -> None:
        mark = len(self.vars)
        pipe = node.pipe
        value = self.pipe(pipe, dot)
        if isinstance(value, ListOf):
            key, elem = INT, value.elem
        elif isinstance(value, MapOf):
            key, elem = STRING, value.value
        elif value == INT:
            key, elem = INT, INT
        elif isinstance(value, (Scalar, Struct)):
            raise self.error(pipe.pos, f"range can't iterate over {describe_type(value)}",
                             "range over a list or a map, such as .Messages or .Tools")
        else:
            key, elem = ANY, ANY
        names = pipe.decl
        if names:
            self.bind(names[-1], elem, pipe.is_assign)
            if len(names) == 2:
                self.bind(names[0], key, pipe.is_assign)
        self.body(node.body, elem)
        if node.else_body is not None:
            self.body(node.else_body, dot)
        del self.vars[mark:]

    def bind(self, name: str, t: Type, assign: bool) -> None:
        """Give variable ``name`` the type ``t``; an assignment of another type makes it unknown."""
        for var in reversed(self.vars):
            if var[0] == name:
                var[1] = t if not assign or var[1] is t else ANY
                return

    def pipe(self, pipe: Pipe, dot: Type) -> Type:
        value: Type = ANY
        for i, cmd in enumerate(pipe.cmds):
            first = cmd.args[0]
            if isinstance(first, Ident):
                value = self.call(first.name, cmd.args[1:], dot, value if i else None)
            else:
                value = self.arg(first, dot)
        for name in pipe.decl:
            if pipe.is_assign:
                self.bind(name, value, True)
            else:
                self.vars.append([name, value])
        return value

    def call(self, name: str, args: list[Node], dot: Type, piped: Type | None) -> Type:
        values = [self.arg(node, dot) for node in args] + ([piped] if piped is not None else [])
        if name in ("and", "or"):
            return values[0] if values and all(v is values[0] for v in values) else ANY
        if name == "index" and values:
            t = values[0]
            for _ in values[1:]:
                t = t.elem if isinstance(t, ListOf) else t.value if isinstance(t, MapOf) else INT if t == STRING \
                    else ANY
            return t
        if name == "slice" and values:
            return values[0]
        return _RESULTS.get(name, ANY)

    def arg(self, node: Node, dot: Type) -> Type:
        if isinstance(node, Literal):
            if node.is_dot:
                return dot
            value = node.value
            return (ANY if value is None else BOOL if isinstance(value, bool) else INT if isinstance(value, int)
                    else FLOAT if isinstance(value, float) else STRING)
        if isinstance(node, Field):
            return self.fields(dot, node.names, node.pos, "")
        if isinstance(node, Variable):
            for name, t in reversed(self.vars):
                if name == node.name:
                    return self.fields(t, node.names, node.pos + len(node.name), node.name)  # type: ignore[arg-type]
            return ANY
        if isinstance(node, Chain):
            return self.fields(self.arg(node.node, dot), node.names, node.at, "(...)")
        if isinstance(node, Pipe):
            return self.pipe(node, dot)
        if isinstance(node, Ident):
            return self.call(node.name, [], dot, None)
        return ANY

    def fields(self, t: Type, names: tuple[str, ...], pos: int, written: str) -> Type:
        """``t.A.B...``: ``pos`` is where the first ``.A`` starts, ``written`` what comes before it."""
        for name in names:
            shown = f"{written or ''}.{name}"
            t = self.field(t, name, pos, written, shown)
            written, pos = shown, pos + 1 + len(name)
        return t

    def field(self, t: Type, name: str, pos: int, owner: str, shown: str) -> Type:
        if isinstance(t, Struct):
            if name in t.fields:
                return t.fields[name]
            known = ", ".join("." + f for f in t.fields)
            where = (f"{t.name} has" if t is self.root else f"'{owner}' ({t.name}) has" if owner
                     else f"the dot ({t.name}) has")
            guess = closest(name, list(t.fields))
            hint = (f"did you mean '{owner}.{guess}'? " if guess else "") + f"{where} the fields {known}"
            raise self.error(pos, f"unknown field '{shown}'", hint)
        if isinstance(t, MapOf):
            return t.value
        if isinstance(t, (ListOf, Scalar)):
            what = f"'{owner}'" if owner else "the dot"
            hint = ("range over it: {{ range " + (owner or ".") + " }}{{ ." + name + " }}{{ end }}"
                    if isinstance(t, ListOf) else f"remove '.{name}'")
            raise self.error(pos, f"{what} is {describe_type(t)}: it has no field '{name}'", hint)
        return ANY
