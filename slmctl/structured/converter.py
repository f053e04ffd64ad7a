"""llama-cpp-python's JSON-schema converter, corrected to admit only documents that validate.

:class:`SchemaGrammar` subclasses ``llama_cpp.llama_grammar.SchemaConverter`` and keeps its rule
bookkeeping, primitives and repetition builder, but replaces the parts that let invalid documents
through (see the module docstring of :mod:`slmctl.structured` for the list): literals escape
backslashes, strings never hold raw control characters or surrogate escapes, numbers honour their
bounds, objects never repeat a declared key as an "additional" one, ``$ref`` rules are named by
their target, arrays honour their counts without ``items``, ``format`` dates are calendar-exact and
``pattern`` follows :mod:`slmctl.structured.patterns`. It expects a schema that passed
:func:`slmctl.structured.schema.check_json_format`. Importing it imports ``llama_cpp``.
"""

from __future__ import annotations

import json
from typing import Any

from llama_cpp.llama_grammar import (
    INVALID_RULE_CHARS_RE,
    PRIMITIVE_RULES,
    RESERVED_NAMES,
    BuiltinRule,
    SchemaConverter,
    _build_repetition,
)

from slmctl.structured.bounds import integer_bounds, number_bounds
from slmctl.structured.keywords import ANNOTATIONS, FAMILY_KEYWORDS, declared_types, has_type
from slmctl.structured.patterns import pattern_gbnf
from slmctl.structured.ranges import decimal_range, integer_range
from slmctl.structured.pointers import resolve_ref
from slmctl.structured.strings import CHAR_RULE, FORMAT_RULES, SAFE_CHAR, key_not_in, literal

#: llama.cpp's primitives with a JSON-exact ``char``.
_PRIMITIVES = {**PRIMITIVE_RULES, "char": BuiltinRule(CHAR_RULE, [])}
_RESERVED = RESERVED_NAMES | {"space"}
_QUOTE = '"\\""'
_COMMA = '"," space'


class SchemaGrammar(SchemaConverter):
    """Turns one checked JSON schema into GBNF; call :meth:`grammar`."""

    def __init__(self, root: dict[str, Any]) -> None:
        super().__init__(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
        self._root = root
        self._ref_rules: dict[str, str] = {}

    def grammar(self) -> str:
        self.visit(self._root, "")
        return self.format_grammar()

    # -- llama.cpp's helpers, corrected --------------------------------------------------------
    def _format_literal(self, literal_text: str) -> str:
        return literal(literal_text)  # the parent leaves backslashes unescaped: "a\\b" became "a\b"

    def _add_primitive(self, name: str, rule: BuiltinRule) -> str:
        key = self._add_rule(name, rule.content)
        for dep in rule.deps:
            if dep not in self._rules:
                self._add_primitive(dep, _PRIMITIVES[dep])
        return key

    def _resolve_ref(self, ref: str) -> str:
        """One rule per target (the parent names them by the last path segment, so #/$defs/a and a
        property "a" shared one rule, and recursion reused whatever rule had that name)."""
        pointer, target = resolve_ref(self._root, ref)
        if pointer not in self._ref_rules:
            base = "ref-" + INVALID_RULE_CHARS_RE.sub("-", pointer.rsplit("/", 1)[-1] or "root")
            name, i = base, 0
            while name in self._rules:
                name, i = f"{base}{i}", i + 1
            self._rules[name] = '""'  # reserved while the target is visited (it may refer back)
            self._ref_rules[pointer] = name
            self._rules[name] = self.visit(target, f"{name}-def")
        return self._ref_rules[pointer]

    # -- schemas -------------------------------------------------------------------------------
    def visit(self, schema: Any, name: str) -> str:
        rule_name = name + "-" if name in _RESERVED else name or "root"
        if schema is True:
            schema = {}
        if not isinstance(schema, dict):
            raise ValueError(f"not a checked schema: {schema!r}")
        node = {k: v for k, v in schema.items()
                if k not in ANNOTATIONS and not k.startswith("x-") and k not in ("$defs", "definitions")}
        if "$ref" in node:
            return self._add_rule(rule_name, self._resolve_ref(node["$ref"]))
        for union in ("anyOf", "oneOf"):
            if union in node:
                return self._add_rule(rule_name, self._generate_union_rule(name, node[union]))
        types = declared_types(node)
        if "const" in node or "enum" in node:
            found = [node["const"]] if "const" in node else node["enum"]
            found = [v for v in found if types is None or any(has_type(v, t) for t in types)]
            return self._add_rule(rule_name, " | ".join(self._generate_constant_rule(v) for v in found))
        if types is None:
            return self._add_rule(rule_name, self._add_primitive("value", _PRIMITIVES["value"]))
        if len(types) > 1:
            branches = [{"type": t, **{k: v for k, v in node.items() if k in FAMILY_KEYWORDS.get(_family(t), ())}}
                        for t in types]
            return self._add_rule(rule_name, self._generate_union_rule(name, branches))
        kind = types[0]
        if kind == "object":
            return self._object(node, name, rule_name)
        if kind == "array":
            return self._array(node, name, rule_name)
        if kind == "string":
            return self._string(node, rule_name)
        if kind in ("integer", "number") and any(k in node for k in FAMILY_KEYWORDS["number"]):
            return self._number(node, kind, rule_name)
        return self._add_primitive("root" if rule_name == "root" else kind, _PRIMITIVES[kind])

    def _string(self, node: dict[str, Any], rule_name: str) -> str:
        if "pattern" in node:
            body = pattern_gbnf(node["pattern"])
        elif "format" in node:
            body = self._add_rule(f"{node['format']}-exact", FORMAT_RULES[node["format"]])
        elif "minLength" in node or "maxLength" in node:
            char = self._add_primitive("char", _PRIMITIVES["char"])
            body = _build_repetition(char, node.get("minLength", 0), node.get("maxLength"))
        else:
            return self._add_primitive("root" if rule_name == "root" else "string", _PRIMITIVES["string"])
        return self._add_rule(rule_name, " ".join(filter(None, [_QUOTE, body, _QUOTE, "space"])))

    def _number(self, node: dict[str, Any], kind: str, rule_name: str) -> str:
        expr = integer_range(*integer_bounds(node)) if kind == "integer" else decimal_range(*number_bounds(node))
        if expr is None:
            raise ValueError("empty numeric range (the schema check refuses these)")
        return self._add_rule(rule_name, f"{expr.gbnf()} space")

    def _object(self, node: dict[str, Any], name: str, rule_name: str) -> str:
        properties: dict[str, Any] = node.get("properties", {})
        extra = node.get("additionalProperties", False if properties else True)
        if not properties and extra is True:
            return self._add_primitive("root" if rule_name == "root" else "object", _PRIMITIVES["object"])
        prefix = f"{name}-" if name else ""
        pairs: dict[str, str] = {}
        for key, sub in properties.items():
            value = self.visit(sub, f"{prefix}{key}" or "property")
            pairs[key] = self._add_rule(f"{prefix}{key}-kv",
                                        f'{literal(json.dumps(key))} space ":" space {value}')
        required = [k for k in properties if k in set(node.get("required", ()))]
        optional = [pairs[k] for k in properties if k not in required]
        if extra is not False:
            if properties:  # never a declared name (a repeated key would override the declared value)
                safe_char = self._add_rule("safe-char", SAFE_CHAR)
                key_rule = self._add_rule(f"{prefix}additional-k", key_not_in(properties, safe_char))
            else:
                key_rule = self._add_primitive("string", _PRIMITIVES["string"])
            value = self.visit(extra, f"{prefix}additional-value")
            pair = self._add_rule(f"{prefix}additional-kv", f'{key_rule} ":" space {value}')
            optional.append(self._add_rule(f"{prefix}additional-kvs", f"{pair} ( {_COMMA} {pair} )*"))
        body = [f" {_COMMA} ".join(pairs[k] for k in required)]
        if optional:  # any subset, in order: "o_i rest_i+1" where rest_j is "(, o_j)? rest_j+1"
            rests = [""] * (len(optional) + 1)
            for j in reversed(range(1, len(optional))):
                rests[j] = self._add_rule(f"{prefix}rest-{j}", f"( {_COMMA} {optional[j]} )? {rests[j + 1]}".strip())
            chains = " | ".join(f"{kv} {rests[i + 1]}".strip() for i, kv in enumerate(optional))
            body.append(f"( {_COMMA} ( {chains} ) )?" if required else f"( {chains} )?")
        return self._add_rule(rule_name, " ".join(['"{" space', *filter(None, body), '"}" space']))

    def _array(self, node: dict[str, Any], name: str, rule_name: str) -> str:
        prefix = f"{name}-" if name else ""
        elements = [self.visit(sub, f"{prefix}tuple-{i}") for i, sub in enumerate(node.get("prefixItems", []))]
        items = node.get("items", True)
        extra = None if items is False else self.visit(items, f"{prefix}item")
        n, low, high = len(elements), node.get("minItems", 0), node.get("maxItems")
        if extra is None:
            high = n if high is None else min(high, n)
        pieces = [f" {_COMMA} ".join(elements[:low])]
        if extra is not None and low > n:  # required elements past the tuple
            pieces.append(f"( {_COMMA} {extra} ){{{low - n}}}" if n else
                          f"{extra} " + _times(f"{_COMMA} {extra}", low - 1, low - 1))
        pieces.append(_array_tail(elements, extra, low, high))
        return self._add_rule(rule_name, " ".join(['"[" space', *filter(None, pieces), '"]" space']))


def _times(unit: str, least: int, most: int | None) -> str:
    """``unit`` repeated least..most times (most None: unbounded), as GBNF."""
    if most is None:
        return f"( {unit} )*" if least == 0 else f"( {unit} ){{{least},}}"
    if most == 0:
        return ""
    return f"( {unit} ){{{least}}}" if least == most else f"( {unit} ){{{least},{most}}}"


def _array_tail(elements: list[str], extra: str | None, start: int, high: int | None) -> str:
    """The optional elements from position ``start`` on: the rest of the tuple, then extra items."""
    n = len(elements)
    first_extra = max(start, n)
    text = ""
    if extra is not None and (high is None or high > first_extra):
        most = None if high is None else high - first_extra
        if first_extra:
            text = _times(f"{_COMMA} {extra}", 0, most)
        else:
            text = f"( {extra} {_times(f'{_COMMA} {extra}', 0, None if most is None else most - 1)} )?"
    for i in reversed(range(start, min(n, high) if high is not None else n)):
        element = f"{_COMMA} {elements[i]}" if i else elements[i]
        text = f"( {element} {text} )?" if text else f"( {element} )?"
    return text.replace("  ", " ")


def _family(kind: str) -> str:
    return "number" if kind == "integer" else kind
