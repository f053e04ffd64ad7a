"""The tree of slmctl's Go ``text/template`` subset: the node classes the parser builds and the
executor walks, and how a node reads in messages (API: :mod:`.gotemplate`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

from slmctl.modelfile.gotemplate_funcs import format_value, go_quote
from slmctl.modelfile.gotemplate_lexer import show


@dataclass(slots=True)
class Text:
    text: str


@dataclass(slots=True)
class Field:
    """``.A.B`` on the dot."""
    pos: int
    names: tuple[str, ...]


@dataclass(slots=True)
class Variable:
    """``$x`` or ``$x.A.B`` (``$`` is the data passed to render)."""
    pos: int
    name: str
    names: tuple[str, ...] = ()


@dataclass(slots=True)
class Chain:
    """``(pipeline).A.B``; ``at`` is where ``.A`` starts."""
    pos: int
    node: Node
    names: tuple[str, ...]
    at: int = -1


@dataclass(slots=True)
class Literal:
    """A string, number or boolean; also ``.`` (``is_dot``) and ``nil`` (value None)."""
    pos: int
    value: Any
    is_dot: bool = False


@dataclass(slots=True)
class Ident:
    """A function name."""
    pos: int
    name: str


@dataclass(slots=True)
class Command:
    pos: int
    args: list[Node]


@dataclass(slots=True)
class Pipe:
    """``[$a[, $b] :=|=] command | command ...``; also a parenthesised operand."""
    pos: int
    decl: tuple[str, ...]
    is_assign: bool
    cmds: list[Command]


@dataclass(slots=True)
class Action:
    pipe: Pipe


@dataclass(slots=True)
class If:
    """``if``/``with`` (``kind``) with its ``else if``/``else with`` branches and ``else`` body."""
    pos: int
    kind: str
    branches: list[tuple[Pipe, list[Node]]]
    else_body: list[Node] | None


@dataclass(slots=True)
class Range:
    pos: int
    pipe: Pipe
    body: list[Node]
    else_body: list[Node] | None


@dataclass(slots=True)
class Loop:
    """``{{ break }}`` or ``{{ continue }}`` (``kind``) in a range body."""
    pos: int
    kind: str


Node = Union[Text, Field, Variable, Chain, Literal, Ident, Pipe, Action, If, Range, Loop]


def describe(node: Node) -> str:
    """A node as it could be written in the template, for messages."""
    if isinstance(node, Field):
        return "." + ".".join(node.names)
    if isinstance(node, Variable):
        return node.name + "".join("." + n for n in node.names)
    if isinstance(node, Chain):
        return "(...)." + ".".join(node.names)
    if isinstance(node, Literal):
        if node.is_dot:
            return "."
        return "nil" if node.value is None else show(go_quote(node.value) if isinstance(node.value, str)
                                                     else format_value(node.value))
    if isinstance(node, Ident):
        return node.name
    return "(...)"
