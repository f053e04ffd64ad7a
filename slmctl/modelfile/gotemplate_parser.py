"""Parser of slmctl's Go ``text/template`` subset: tokens -> a small tree (API: :mod:`.gotemplate`).

Owns every check that can be made before rendering, following Go's
``text/template/parse``: block structure (``if``/``with`` with ``else if``/``else with`` chains,
``range`` with ``else``, each closed by ``{{ end }}``), declared variables and their scopes, known
functions and their number of arguments, ``{{ break }}`` / ``{{ continue }}`` only inside a ``range``
body (not its ``else``), and the rejection of what the subset leaves out (``define``, ``template``,
``block``, method calls with arguments, unknown functions: with the closest known name). Variables
declared in a block body live until the end of that body, as in Go. The node classes are in
:mod:`.gotemplate_nodes`; the checks that need the types of the values are in :mod:`.gotemplate_check`.
"""

from __future__ import annotations

from slmctl.modelfile.gotemplate_funcs import ARITY
from slmctl.modelfile.gotemplate_lexer import (
    ASSIGN, BOOL, CHAR, DECLARE, DOT, EOF, FIELD, IDENT, KEYWORD, LPAREN, NIL, NUMBER, PIPE, RIGHT, RPAREN, SPACE,
    STRING, SUPPORTED_HINT, TEXT, VARIABLE, Source, TemplateError, Token, closest,
)

MAX_DEPTH = 100
#: Go's builtins that the subset leaves out: refused as they are, without a did-you-mean.
GO_ONLY = frozenset({"call", "html", "js", "urlquery"})
_TERM_START = (BOOL, DOT, FIELD, IDENT, LPAREN, NIL, NUMBER, STRING, VARIABLE)


from slmctl.modelfile.gotemplate_nodes import (
    Action, Chain, Command, Field, Ident, If, Literal, Loop, Node, Pipe, Range, Text, Variable, describe,
)


class Parser:
    """Recursive descent over the token list; ``fields`` collects every field name referenced."""

    def __init__(self, src: Source, tokens: list[Token]) -> None:
        self.src, self.toks, self.i = src, tokens, 0
        self.vars: list[str] = ["$"]
        self.depth = 0
        self.range_depth = 0
        self.fields: set[str] = set()

    def error(self, pos: int, reason: str, hint: str | None = None) -> TemplateError:
        return self.src.error(pos, reason, hint) if hint else self.src.error(pos, reason)

    def peek(self) -> Token:
        return self.toks[self.i]

    def next(self) -> Token:
        tok = self.toks[self.i]
        if tok.kind != EOF:
            self.i += 1
        return tok

    def peek_ns(self) -> Token:
        while self.toks[self.i].kind == SPACE:
            self.i += 1
        return self.toks[self.i]

    def next_ns(self) -> Token:
        self.peek_ns()
        return self.next()

    def unexpected(self, tok: Token, context: str) -> TemplateError:
        return self.error(tok.pos, f"unexpected {tok.describe()} in {context}")

    def enter(self, tok: Token) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(tok.pos, f"template nested too deeply (more than {MAX_DEPTH} levels)")

    # --- lists and blocks -------------------------------------------------------------------------

    def parse(self) -> list[Node]:
        nodes, end = self.item_list()
        if end.kind != EOF:
            raise self.error(end.pos, f"unexpected {{{{ {end.value} }}}} outside of an if, range or with block")
        return nodes

    def item_list(self) -> tuple[list[Node], Token]:
        """Nodes up to ``{{ end }}``/``{{ else`` (whose keyword token is returned) or the end."""
        nodes: list[Node] = []
        while True:
            tok = self.next()
            if tok.kind == TEXT:
                nodes.append(Text(tok.value))
                continue
            if tok.kind == EOF:
                return nodes, tok
            word = self.peek_ns()
            if word.kind != KEYWORD:
                nodes.append(Action(self.pipeline("command", RIGHT)))
            elif word.value in ("end", "else"):
                return nodes, self.next()
            elif word.value in ("if", "with", "range"):
                self.next()
                nodes.append(self.range_block(word) if word.value == "range" else self.if_block(word))
            elif word.value in ("break", "continue"):
                self.next()
                self.expect_right(word.value)
                if not self.range_depth:
                    raise self.error(word.pos, f"{{{{ {word.value} }}}} outside of a range block")
                nodes.append(Loop(word.pos, word.value))
            else:
                raise self.error(word.pos, f"unsupported action '{word.value}'", SUPPORTED_HINT)

    def scoped_list(self, opener: Token) -> tuple[list[Node], Token]:
        mark = len(self.vars)
        nodes, end = self.item_list()
        del self.vars[mark:]
        if end.kind == EOF:
            raise self.error(opener.pos, f"'{opener.value}' block is not closed: missing {{{{ end }}}}")
        return nodes, end

    def expect_right(self, context: str) -> None:
        tok = self.next_ns()
        if tok.kind != RIGHT:
            raise self.unexpected(tok, context)

    def else_body(self, opener: Token) -> list[Node]:
        self.expect_right("else")
        body, end = self.scoped_list(opener)
        if end.value == "else":
            raise self.error(end.pos, f"a second {{{{ else }}}} in '{opener.value}': expected {{{{ end }}}}")
        self.expect_right("end")
        return body

    def if_block(self, opener: Token) -> If:
        self.enter(opener)
        mark = len(self.vars)
        branches: list[tuple[Pipe, list[Node]]] = []
        cond = self.pipeline(opener.value, RIGHT)
        else_body = None
        while True:
            body, end = self.scoped_list(opener)
            branches.append((cond, body))
            if end.value == "end":
                self.expect_right("end")
                break
            chained = self.peek_ns()
            if chained.kind == KEYWORD and chained.value in ("if", "with"):
                if chained.value != opener.value:
                    raise self.error(chained.pos, f"{{{{ else {chained.value} }}}} is not allowed in "
                                                 f"a {{{{ {opener.value} }}}} block")
                self.next()
                cond = self.pipeline(opener.value, RIGHT)
                continue
            else_body = self.else_body(opener)
            break
        del self.vars[mark:]
        self.depth -= 1
        return If(opener.pos, opener.value, branches, else_body)

    def range_block(self, opener: Token) -> Range:
        self.enter(opener)
        mark = len(self.vars)
        pipe = self.pipeline("range", RIGHT)
        self.range_depth += 1
        body, end = self.scoped_list(opener)
        self.range_depth -= 1
        else_body = None
        if end.value == "else":
            chained = self.peek_ns()
            if chained.kind == KEYWORD and chained.value in ("if", "with"):
                raise self.error(chained.pos,
                                 f"{{{{ else {chained.value} }}}} is not allowed in a {{{{ range }}}} block")
            else_body = self.else_body(opener)
        else:
            self.expect_right("end")
        del self.vars[mark:]
        self.depth -= 1
        return Range(opener.pos, pipe, body, else_body)

    # --- pipelines --------------------------------------------------------------------------------

    def declarations(self, context: str) -> tuple[list[Token], bool]:
        """``$x :=``, ``$x =`` or (in range) ``$i, $x :=`` at the start of a pipeline."""
        save = self.i
        first = self.next_ns()
        after = self.peek_ns()
        if after.kind in (DECLARE, ASSIGN):
            self.next()
            return [first], after.kind == ASSIGN
        if after.kind != CHAR or after.value != ",":
            self.i = save
            return [], False
        if context != "range":
            raise self.error(after.pos, f"too many declarations in {context}")
        self.next()
        second = self.next_ns()
        if second.kind != VARIABLE:
            raise self.error(second.pos, "range can only initialize variables")
        op = self.next_ns()
        if op.kind not in (DECLARE, ASSIGN):
            raise self.error(op.pos, f"expected := or = after {first.value}, {second.value}")
        return [first, second], op.kind == ASSIGN

    def pipeline(self, context: str, end: str) -> Pipe:
        start = self.peek_ns()
        decl, is_assign = self.declarations(context) if start.kind == VARIABLE else ([], False)
        cmds: list[Command] = []
        while True:
            tok = self.peek_ns()
            if tok.kind == end:
                if not cmds:
                    raise self.error(tok.pos, f"missing value for {context}")
                self.next()
                break
            if tok.kind not in _TERM_START:
                raise self.unexpected(tok, context)
            cmds.append(self.command(len(cmds) + 1))
            tok = self.peek_ns()
            if tok.kind == PIPE:
                self.next()
                if self.peek_ns().kind == end:
                    raise self.error(tok.pos, "missing command after '|'")
        for var in decl:
            if not is_assign:
                self.vars.append(var.value)
            elif var.value not in self.vars:
                raise self.error(var.pos, f"undefined variable {var.value}")
        return Pipe(start.pos, tuple(v.value for v in decl), is_assign, cmds)

    def command(self, stage: int) -> Command:
        args: list[Node] = []
        while True:
            tok = self.peek_ns()
            if tok.kind in (RIGHT, RPAREN, PIPE):
                break
            node = self.operand()
            if node is None:
                raise self.unexpected(tok, "command")
            args.append(node)
            after = self.peek()
            if after.kind not in (SPACE, RIGHT, RPAREN, PIPE):
                raise self.unexpected(after, "operand")
        first = args[0]
        count = len(args) - 1 + (stage > 1)
        for arg in args[1:]:
            if isinstance(arg, Ident):
                self.check_arity(arg, 0)
        if isinstance(first, Ident):
            self.check_arity(first, count)
        elif count and (isinstance(first, (Field, Chain)) or isinstance(first, Variable) and first.names):
            raise self.error(first.pos, f"unsupported method call: '{describe(first)}' with arguments",
                             SUPPORTED_HINT)
        elif count and stage > 1:
            raise self.error(first.pos, f"non executable command in pipeline stage {stage}: "
                                        f"'{describe(first)}' cannot take the piped value")
        elif count:
            raise self.error(args[1].pos, f"can't give argument to non-function '{describe(first)}'")
        elif isinstance(first, Literal) and first.value is None and not first.is_dot:
            raise self.error(first.pos, "nil is not a command")
        return Command(first.pos, args)

    def check_arity(self, ident: Ident, count: int) -> None:
        low, high = ARITY[ident.name]
        if low <= count and (high is None or count <= high):
            return
        want = f"at least {low}" if high is None else str(low) if low == high else f"{low} to {high}"
        raise self.error(ident.pos, f"wrong number of args for {ident.name}: want {want} got {count}")

    def operand(self) -> Node | None:
        node = self.term()
        if node is None or self.peek().kind != FIELD:
            return node
        pos = self.peek().pos
        names: list[str] = []
        while self.peek().kind == FIELD:
            names.append(self.next().value)
        self.fields.update(names)
        if isinstance(node, Field):
            return Field(node.pos, node.names + tuple(names))
        if isinstance(node, Variable):
            return Variable(node.pos, node.name, tuple(names))
        if isinstance(node, Literal):
            raise self.error(pos, f"unexpected . after term '{describe(node)}'")
        if isinstance(node, Ident):
            self.check_arity(node, 0)
        return Chain(node.pos, node, tuple(names), pos)

    def term(self) -> Node | None:
        tok = self.peek()
        kind = tok.kind
        if kind not in _TERM_START:
            return None
        self.next()
        if kind == IDENT:
            if tok.value not in ARITY:
                guess = None if tok.value in GO_ONLY else closest(tok.value, list(ARITY))
                raise self.error(tok.pos, f"unsupported function '{tok.value}'",
                                 (f"did you mean '{guess}'? " if guess else "") + SUPPORTED_HINT)
            return Ident(tok.pos, tok.value)
        if kind == FIELD:
            self.fields.add(tok.value)
            return Field(tok.pos, (tok.value,))
        if kind == VARIABLE:
            if tok.value not in self.vars:
                raise self.error(tok.pos, f"undefined variable {tok.value}")
            return Variable(tok.pos, tok.value)
        if kind == LPAREN:
            self.enter(tok)
            pipe = self.pipeline("parenthesized pipeline", RPAREN)
            self.depth -= 1
            return pipe
        return Literal(tok.pos, tok.value, is_dot=kind == DOT)
