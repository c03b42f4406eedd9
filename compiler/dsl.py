"""Parse DSL strings into a small typed AST with source offsets."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import (
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
    VisitError,
)
from lark.tree import Meta

__all__ = [
    "BinOp",
    "Call",
    "Comprehension",
    "DslSyntaxError",
    "Field",
    "Index",
    "ListExpr",
    "Literal",
    "Name",
    "Node",
    "ObjectExpr",
    "Root",
    "Spread",
    "Ternary",
    "Unary",
    "children",
    "parse",
]


@dataclass(frozen=True)
class Node:
    """Base of every AST node; ``start``/``end`` are character offsets in the DSL string."""

    start: int
    end: int


@dataclass(frozen=True)
class Root(Node):
    """``$``: the message (or REST body) being handled."""


@dataclass(frozen=True)
class Name(Node):
    ident: str


@dataclass(frozen=True)
class Literal(Node):
    value: str | int | float | bool | None


@dataclass(frozen=True)
class Field(Node):
    obj: Node
    name: str
    safe: bool


@dataclass(frozen=True)
class Index(Node):
    obj: Node
    index: Node


@dataclass(frozen=True)
class Spread(Node):
    """``x[*]``: every element of ``x`` (only meaningful as a fan-out source)."""

    obj: Node


@dataclass(frozen=True)
class Call(Node):
    func: str
    args: tuple[Node, ...]


@dataclass(frozen=True)
class ListExpr(Node):
    items: tuple[Node, ...]


@dataclass(frozen=True)
class ObjectExpr(Node):
    pairs: tuple[tuple[str, Node], ...]


@dataclass(frozen=True)
class Comprehension(Node):
    elt: Node
    var: str
    var_start: int
    iterable: Node
    cond: Node | None


@dataclass(frozen=True)
class Unary(Node):
    op: str  # "-" or "not"
    operand: Node


@dataclass(frozen=True)
class BinOp(Node):
    op: str  # + - * / % == != < <= > >= in "not in" and or ??
    left: Node
    right: Node


@dataclass(frozen=True)
class Ternary(Node):
    then: Node
    cond: Node
    other: Node


class DslSyntaxError(Exception):
    """A DSL string that does not parse; ``offset`` points at the offending character."""

    def __init__(self, offset: int, message: str) -> None:
        super().__init__(message)
        self.offset = offset
        self.message = message


def children(node: Node) -> tuple[Node, ...]:
    """Direct sub-expressions of ``node`` in source order."""
    match node:
        case Field(obj=o) | Spread(obj=o):
            return (o,)
        case Index(obj=o, index=i):
            return (o, i)
        case Call(args=args) | ListExpr(items=args):
            return args
        case ObjectExpr(pairs=pairs):
            return tuple(v for _, v in pairs)
        case Comprehension(elt=e, iterable=it, cond=c):
            return (it, e) if c is None else (it, e, c)
        case Unary(operand=o):
            return (o,)
        case BinOp(left=left, right=right):
            return (left, right)
        case Ternary(then=t, cond=c, other=o):
            return (c, t, o)
    return ()


def _single_to_double(text: str) -> tuple[str, list[int]]:
    """A single-quoted DSL string as the equivalent double-quoted (JSON) string, and for each
    character of the result the offset of the character in ``text`` it came from."""
    out = ['"']
    origin = [0]
    i, body = 0, text[1:-1]
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            piece = "'" if nxt == "'" else c + nxt
            i += 2
        else:
            piece = '\\"' if c == '"' else c
            i += 1
        out.append(piece)
        origin.extend([i - (2 if c == "\\" else 1) + 1] * len(piece))
    out.append('"')
    origin.append(len(text) - 1)
    return "".join(out), origin


def _string_value(tok: Token) -> str:
    text = str(tok)
    origin = list(range(len(text)))
    if text[0] == "'":
        text, origin = _single_to_double(text)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        offset = (tok.start_pos or 0) + origin[min(exc.pos, len(origin) - 1)]
        message = exc.msg.lower().removesuffix(" at").replace("\\escape", "escape sequence")
        raise DslSyntaxError(offset, f"invalid string: {message}") from None
    assert isinstance(value, str)
    return value


def _span(meta: Meta) -> tuple[int, int]:
    return meta.start_pos, meta.end_pos


@v_args(meta=True)
class _ToAst(Transformer[Token, Node]):
    def root(self, meta: Meta, _: list[Any]) -> Node:
        return Root(*_span(meta))

    def name(self, meta: Meta, items: list[Token]) -> Node:
        return Name(*_span(meta), str(items[0]))

    def string(self, meta: Meta, items: list[Token]) -> Node:
        return Literal(*_span(meta), _string_value(items[0]))

    def number(self, meta: Meta, items: list[Token]) -> Node:
        text = str(items[0])
        value: int | float = float(text) if any(c in text for c in ".eE") else int(text)
        if isinstance(value, float) and not math.isfinite(value):
            raise DslSyntaxError(meta.start_pos, f"number {text} is out of range")
        return Literal(*_span(meta), value)

    def true(self, meta: Meta, _: list[Any]) -> Node:
        return Literal(*_span(meta), True)

    def false(self, meta: Meta, _: list[Any]) -> Node:
        return Literal(*_span(meta), False)

    def null(self, meta: Meta, _: list[Any]) -> Node:
        return Literal(*_span(meta), None)

    def field(self, meta: Meta, items: list[Any]) -> Node:
        return Field(*_span(meta), items[0], str(items[1]), False)

    def safe_field(self, meta: Meta, items: list[Any]) -> Node:
        return Field(*_span(meta), items[0], str(items[1]), True)

    def index(self, meta: Meta, items: list[Any]) -> Node:
        return Index(*_span(meta), items[0], items[1])

    def spread(self, meta: Meta, items: list[Any]) -> Node:
        return Spread(*_span(meta), items[0])

    def call(self, meta: Meta, items: list[Any]) -> Node:
        args = tuple(a for a in items[1:] if a is not None)
        return Call(*_span(meta), str(items[0]), args)

    def list_expr(self, meta: Meta, items: list[Any]) -> Node:
        return ListExpr(*_span(meta), tuple(i for i in items if i is not None))

    def comprehension(self, meta: Meta, items: list[Any]) -> Node:
        elt, var, iterable, cond = items
        return Comprehension(*_span(meta), elt, str(var), var.start_pos, iterable, cond)

    def pair(self, meta: Meta, items: list[Any]) -> tuple[str, Node]:
        key: Token = items[0]
        return (_string_value(key) if key.type == "STRING" else str(key)), items[1]

    def object(self, meta: Meta, items: list[Any]) -> Node:
        return ObjectExpr(*_span(meta), tuple(p for p in items if p is not None))

    def neg(self, meta: Meta, items: list[Any]) -> Node:
        operand = items[0]
        value = operand.value if isinstance(operand, Literal) else None
        if isinstance(value, int | float) and not isinstance(value, bool):
            return Literal(*_span(meta), -value)
        return Unary(*_span(meta), "-", operand)

    def not_(self, meta: Meta, items: list[Any]) -> Node:
        return Unary(*_span(meta), "not", items[0])

    def binop(self, meta: Meta, items: list[Any]) -> Node:
        return BinOp(*_span(meta), str(items[1]), items[0], items[2])

    compare = binop

    def in_(self, meta: Meta, items: list[Any]) -> Node:
        return BinOp(*_span(meta), "in", items[0], items[1])

    def not_in(self, meta: Meta, items: list[Any]) -> Node:
        return BinOp(*_span(meta), "not in", items[0], items[1])

    def and_(self, meta: Meta, items: list[Any]) -> Node:
        return BinOp(*_span(meta), "and", items[0], items[1])

    def or_(self, meta: Meta, items: list[Any]) -> Node:
        return BinOp(*_span(meta), "or", items[0], items[1])

    def coalesce(self, meta: Meta, items: list[Any]) -> Node:
        return BinOp(*_span(meta), "??", items[0], items[1])

    def ternary(self, meta: Meta, items: list[Any]) -> Node:
        return Ternary(*_span(meta), items[0], items[1], items[2])


_TERMINAL_NAMES = {
    "NAME": "a name",
    "STRING": "a string",
    "NUMBER": "a number",
    "COMP_OP": "a comparison",
    "ADD_OP": "'+' or '-'",
    "MUL_OP": "'*', '/' or '%'",
    "DOLLAR": "'$'",
    "LPAR": "'('",
    "RPAR": "')'",
    "LSQB": "'['",
    "RSQB": "']'",
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "COMMA": "','",
    "COLON": "':'",
    "DOT": "'.'",
    "STAR": "'*'",
    "MINUS": "'-'",
}


@cache
def _parser() -> Lark:
    grammar = (Path(__file__).parent / "dsl.lark").read_text(encoding="utf-8")
    return Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=True)


def _describe_expected(expected: set[str]) -> str:
    names = sorted({_TERMINAL_NAMES.get(t, _keyword(t)) for t in expected})
    if not names:
        return ""
    if len(names) > 6:
        names = names[:6] + ["..."]
    return "; expected " + ", ".join(names)


def _keyword(terminal: str) -> str:
    if terminal == "$END":
        return "end of expression"
    return f"'{_parser().get_terminal(terminal).pattern.value}'"


def parse(text: str) -> Node:
    """Parse one DSL expression; raise :class:`DslSyntaxError` with the exact offset."""
    if not text.strip():
        raise DslSyntaxError(0, "empty expression") from None
    try:
        tree = _parser().parse(text)
    except UnexpectedCharacters as exc:
        at = exc.pos_in_stream or 0
        raise DslSyntaxError(at, f"unexpected character {text[at]!r}") from None
    except UnexpectedEOF as exc:
        raise DslSyntaxError(
            len(text), "unexpected end of expression" + _describe_expected(set(exc.expected))
        ) from None
    except UnexpectedToken as exc:
        tok = exc.token
        if tok.type == "$END":
            raise DslSyntaxError(
                len(text), "unexpected end of expression" + _describe_expected(exc.expected)
            ) from None
        raise DslSyntaxError(
            tok.start_pos or 0, f"unexpected {str(tok)!r}" + _describe_expected(exc.expected)
        ) from None
    except UnexpectedInput as exc:  # any other lark input error
        raise DslSyntaxError(exc.pos_in_stream or 0, str(exc).splitlines()[0]) from None
    try:
        node = _ToAst().transform(tree)
    except VisitError as exc:
        if isinstance(exc.orig_exc, DslSyntaxError):
            raise exc.orig_exc from None
        raise
    assert isinstance(node, Node)
    return node
