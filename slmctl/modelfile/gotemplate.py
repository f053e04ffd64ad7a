"""Modelfile ``TEMPLATE`` rendering: the subset of Go ``text/template`` that real Modelfiles use.

``parse_template(text)`` compiles once (raising :class:`TemplateError`, exit code 4, whose message
names the line, column and construct); ``Template.check(root)`` refuses fields the values cannot have
(:mod:`.gotemplate_check`); ``Template.render(data)`` fills it in; ``render_template`` parses and
renders. The lexer, parser, tree, values and builtins live in ``gotemplate_lexer``, ``gotemplate_parser``,
``gotemplate_nodes``, ``gotemplate_funcs`` and ``gotemplate_builtins``; this module owns the public API
and the executor.

The subset: text and ``{{ pipeline }}`` actions, ``{{- ``/`` -}}`` trim markers, ``{{/* comments */}}``;
fields ``.A.B``, ``$``, ``$x.A``, ``(pipeline).A``; ``if``/``else if``/``else``, ``with``/``else with``/
``else``, ``range`` (over lists, maps in key order and ints, with ``$i, $x :=``) with ``else``;
``break``/``continue`` in a range body; ``$x := ...`` and ``$x = ...`` scoped like Go; pipes; the
functions ``and or not eq ne lt le gt ge len index slice print printf println`` and Ollama's ``json
currentDate yesterdayDate toTypeScriptType``; string (Go escapes and raw), number, boolean, character
and ``nil`` literals. Everything else (``define``, ``template``, ``block``, method calls with
arguments, other functions) is refused when the template is parsed.

Two tree operations serve Ollama's prompt building (:mod:`.prompting`): ``identifiers`` (Ollama's
``Vars``) and ``with_response`` / ``cut_at_response`` (its ``{{ .Response }}`` touch-up and cut).

Values, and where slmctl departs from Go: the data are plain dicts and lists; a field that is not in
the data (at any depth) is None, never an error, and None is Ollama's "zero value": false, length 0,
ranges zero times, equal only to None and printed as the empty string (Go prints ``<no value>``).
Other values print as Go's ``fmt`` does: ``true``/``false``, ints, floats (``1.5``, ``1e+06``), lists
``[a b]`` and dicts ``map[k:v]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from slmctl.modelfile.gotemplate_builtins import FUNCS
from slmctl.modelfile.gotemplate_check import Struct, check_nodes
from slmctl.modelfile.gotemplate_funcs import FuncError, format_value, go_type, print_value, truth
from slmctl.modelfile.gotemplate_lexer import RENDER_HINT, Source, TemplateError, lex, show
from slmctl.modelfile.gotemplate_nodes import (
    Action, Chain, Command, Field, Ident, If, Literal, Loop, Node, Pipe, Range, Text, Variable,
)
from slmctl.modelfile.gotemplate_parser import Parser

__all__ = ["Template", "TemplateError", "parse_template", "render_template"]


class Template:
    """A compiled template; render it as often as needed."""

    __slots__ = ("_fields", "_nodes", "_src", "source")

    def __init__(self, src: Source, nodes: list[Node], fields: frozenset[str]) -> None:
        self._src, self._nodes, self._fields = src, nodes, fields
        self.source = src.text

    @property
    def uses_messages(self) -> bool:
        """True when the template refers to ``.Messages`` anywhere (``$.Messages`` included)."""
        return "Messages" in self._fields

    @property
    def fields(self) -> frozenset[str]:
        """Every field name the template refers to (``{"System", "Prompt"}`` for ``{{ .System }} {{ .Prompt }}``)."""
        return self._fields

    @property
    def identifiers(self) -> frozenset[str]:
        """Ollama's ``Vars``: lower-cased field names and variable names of fields (``.A.B``) and
        variables (``$x.C``, ``$``) in actions and block pipelines; ``(pipeline).D`` is not looked into."""
        names: set[str] = set()
        _identifiers(self._nodes, names)
        return frozenset(names)

    def with_response(self) -> Template:
        """This template with ``{{ .Response }}`` appended (Ollama's touch-up of templates that
        name neither ``.Messages`` nor ``.Response``)."""
        end = len(self._src.text)
        pipe = Pipe(end, (), False, [Command(end, [Field(end, ("Response",))])])
        return Template(self._src, [*self._nodes, Action(pipe)], self._fields | {"Response"})

    def cut_at_response(self) -> Template:
        """This template up to and including its first ``.Response`` field in an action (Ollama's
        ``deleteNode``): everything after that field goes (the pipelines of ``if``/``with``/``range``
        are not looked into; a command left without arguments drops its whole pipeline)."""
        return Template(self._src, _cut_list(self._nodes, _Cut()), self._fields)

    def check(self, root: Struct) -> None:
        """Refuse fields the values of type ``root`` cannot have (:mod:`.gotemplate_check`)."""
        check_nodes(self._src, self._nodes, root)

    def render(self, data: Mapping[str, Any]) -> str:
        """The text for ``data`` (which is also ``$``). Raises :class:`TemplateError` when an action fails."""
        run = _Run(self._src, data)
        run.walk(self._nodes, data)
        return "".join(run.out)

    def __repr__(self) -> str:
        return f"Template({show(self.source, 60)!r})"


def parse_template(text: str) -> Template:
    """Compile ``text``; raises :class:`TemplateError` for malformed or unsupported templates."""
    src = Source(text)
    parser = Parser(src, lex(src))
    nodes = parser.parse()
    return Template(src, nodes, frozenset(parser.fields))


def render_template(text: str, data: Mapping[str, Any]) -> str:
    """``parse_template(text).render(data)``."""
    return parse_template(text).render(data)


def _identifiers(nodes: list[Node], names: set[str]) -> None:
    for node in nodes:
        if isinstance(node, Action):
            _pipe_identifiers(node.pipe, names)
        elif isinstance(node, If):
            for cond, body in node.branches:
                _pipe_identifiers(cond, names)
                _identifiers(body, names)
            _identifiers(node.else_body or [], names)
        elif isinstance(node, Range):
            _pipe_identifiers(node.pipe, names)
            _identifiers(node.body, names)
            _identifiers(node.else_body or [], names)


def _pipe_identifiers(pipe: Pipe, names: set[str]) -> None:
    for cmd in pipe.cmds:
        for arg in cmd.args:
            if isinstance(arg, Field):
                names.update(n.lower() for n in arg.names)
            elif isinstance(arg, Variable):
                names.update(n.lower() for n in (arg.name, *arg.names))
            elif isinstance(arg, Pipe):
                _pipe_identifiers(arg, names)


class _Cut:
    """Whether the walk of ``cut_at_response`` has passed the ``.Response`` field."""
    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = False


def _cut_list(nodes: list[Node], cut: _Cut) -> list[Node]:
    out: list[Node] = []
    for node in nodes:
        if cut.done:
            break
        if isinstance(node, Action):
            pipe = _cut_pipe(node.pipe, cut)
            if pipe is not None:
                out.append(Action(pipe))
        elif isinstance(node, If):
            branches = []
            for cond, body in node.branches:  # Ollama fails on branches after a cut: left out here
                if not cut.done:
                    branches.append((cond, _cut_list(body, cut)))
            else_body = _cut_list(node.else_body, cut) if node.else_body is not None and not cut.done else None
            out.append(If(node.pos, node.kind, branches, else_body))
        elif isinstance(node, Range):
            body = _cut_list(node.body, cut)
            else_body = _cut_list(node.else_body, cut) if node.else_body is not None and not cut.done else None
            out.append(Range(node.pos, node.pipe, body, else_body))
        else:
            out.append(node)
    return out


def _cut_pipe(pipe: Pipe, cut: _Cut) -> Pipe | None:
    cmds: list[Command] = []
    for cmd in pipe.cmds:
        args: list[Node] = []
        for arg in cmd.args:
            if cut.done:
                break
            if isinstance(arg, Field) and "Response" in arg.names:
                cut.done = True
                args.append(arg)
            elif isinstance(arg, Pipe):
                inner = _cut_pipe(arg, cut)
                if inner is not None:
                    args.append(inner)
            else:
                args.append(arg)
        if not args:
            return None
        cmds.append(Command(cmd.pos, args))
    return Pipe(pipe.pos, pipe.decl, pipe.is_assign, cmds)


class _Break(Exception):
    """``{{ break }}``: ends the innermost range."""


class _Continue(Exception):
    """``{{ continue }}``: goes on with the next element of the innermost range."""


def _field(value: Any, name: str) -> Any:
    """``value.name``: a dict key or a public attribute; missing (or on None) gives None."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        return value.get(name)
    if isinstance(value, (str, bytes, int, float, list, tuple)):
        raise FuncError(f"can't evaluate field {name} in type {go_type(value)}")
    attr = getattr(value, name, None) if not name.startswith("_") else None
    if callable(attr):
        raise FuncError(f"can't evaluate field {name}: it is a method (method calls are not supported)")
    return attr


class _Run:
    """One rendering: the output, and the variable stack (``[name, value]``, innermost last)."""

    def __init__(self, src: Source, root: Any) -> None:
        self.src = src
        self.vars: list[list[Any]] = [["$", root]]
        self.out: list[str] = []

    def error(self, pos: int, reason: str) -> TemplateError:
        return self.src.error(pos, reason, RENDER_HINT)

    def walk(self, nodes: list[Node], dot: Any) -> None:
        for node in nodes:
            if isinstance(node, Text):
                self.out.append(node.text)
            elif isinstance(node, Action):
                value = self.pipe(node.pipe, dot)
                if not node.pipe.decl:
                    self.out.append(print_value(value))
            elif isinstance(node, If):
                self.walk_if(node, dot)
            elif isinstance(node, Range):
                self.walk_range(node, dot)
            elif isinstance(node, Loop):
                raise _Break() if node.kind == "break" else _Continue()

    def walk_if(self, node: If, dot: Any) -> None:
        mark = len(self.vars)
        for cond, body in node.branches:
            value = self.pipe(cond, dot)
            if truth(value):
                self.walk(body, value if node.kind == "with" else dot)
                break
        else:
            if node.else_body is not None:
                self.walk(node.else_body, dot)
        del self.vars[mark:]

    def walk_range(self, node: Range, dot: Any) -> None:
        mark = len(self.vars)
        pipe = node.pipe
        value = self.pipe(pipe, dot)
        items = self.range_items(node, value)
        top = len(self.vars)
        for key, elem in items:
            if pipe.is_assign:
                if len(pipe.decl) == 2:
                    self.set_var(pipe.decl[0], key, pipe.pos)
                self.set_var(pipe.decl[-1], elem, pipe.pos)
            elif pipe.decl:
                self.vars[top - 1][1] = elem
                if len(pipe.decl) == 2:
                    self.vars[top - 2][1] = key
            try:
                self.walk(node.body, elem)
            except _Continue:
                pass
            except _Break:
                break
            finally:
                del self.vars[top:]
        if not items and node.else_body is not None:
            self.walk(node.else_body, dot)
        del self.vars[mark:]

    def range_items(self, node: Range, value: Any) -> list[tuple[Any, Any]]:
        if value is None:
            return []
        if isinstance(value, (list, tuple)):
            return list(enumerate(value))
        if isinstance(value, Mapping):
            try:
                return [(k, value[k]) for k in sorted(value)]
            except TypeError:
                return list(value.items())
        if isinstance(value, int) and not isinstance(value, bool):
            if len(node.pipe.decl) > 1:
                raise self.error(node.pos, f"can't use {value} to iterate over more than one variable")
            return [(i, i) for i in range(value)]
        raise self.error(node.pos, f"range can't iterate over {show(format_value(value))}")

    def set_var(self, name: str, value: Any, pos: int) -> None:
        for var in reversed(self.vars):
            if var[0] == name:
                var[1] = value
                return
        raise self.error(pos, f"undefined variable {name}")

    def pipe(self, pipe: Pipe, dot: Any) -> Any:
        value: Any = None
        for i, cmd in enumerate(pipe.cmds):
            first = cmd.args[0]
            if isinstance(first, Ident):
                value = self.call(first, cmd.args[1:], dot, (value,) if i else ())
            else:
                value = self.arg(first, dot)
        for name in pipe.decl:
            if pipe.is_assign:
                self.set_var(name, value, pipe.pos)
            else:
                self.vars.append([name, value])
        return value

    def arg(self, node: Node, dot: Any) -> Any:
        if isinstance(node, Literal):
            return dot if node.is_dot else node.value
        if isinstance(node, Field):
            return self.fields(dot, node.names, node.pos)
        if isinstance(node, Variable):
            for name, value in reversed(self.vars):
                if name == node.name:
                    return self.fields(value, node.names, node.pos)
            raise self.error(node.pos, f"undefined variable {node.name}")
        if isinstance(node, Chain):
            return self.fields(self.arg(node.node, dot), node.names, node.pos)
        if isinstance(node, Pipe):
            return self.pipe(node, dot)
        if isinstance(node, Ident):
            return self.call(node, [], dot, ())
        raise AssertionError(f"unexpected node {node!r}")  # pragma: no cover

    def fields(self, value: Any, names: tuple[str, ...], pos: int) -> Any:
        try:
            for name in names:
                value = _field(value, name)
        except FuncError as exc:
            raise self.error(pos, str(exc)) from None
        return value

    def call(self, ident: Ident, args: list[Node], dot: Any, final: tuple[Any, ...]) -> Any:
        name = ident.name
        if name in ("and", "or"):
            value: Any = None
            for node in args:
                value = self.arg(node, dot)
                if truth(value) == (name == "or"):
                    return value
            return final[0] if final else value
        values = [self.arg(node, dot) for node in args]
        try:
            return FUNCS[name](*values, *final)
        except FuncError as exc:
            raise self.error(ident.pos, f"error calling {name}: {exc}") from None
        except TypeError:  # a call that cut_at_response left with too few arguments
            raise self.error(ident.pos, f"wrong number of args for {name}: got {len(values) + len(final)}") from None
