"""Translate DSL ASTs into Python source for generated modules, checking names as it goes."""

from __future__ import annotations

import difflib
import keyword
from collections.abc import Iterator
from dataclasses import dataclass, field

from compiler.dsl import (
    BinOp,
    Call,
    Comprehension,
    Field,
    Index,
    ListExpr,
    Literal,
    Name,
    Node,
    ObjectExpr,
    Root,
    Spread,
    Ternary,
    Unary,
)

# Python operator precedence, low to high.
_TERNARY, _OR, _AND, _NOT, _CMP, _ADD, _MUL, _UNARY, _ATOM = range(1, 10)
_BINOP_PREC = {
    "or": _OR,
    "and": _AND,
    "==": _CMP,
    "!=": _CMP,
    "<": _CMP,
    "<=": _CMP,
    ">": _CMP,
    ">=": _CMP,
    "in": _CMP,
    "not in": _CMP,
    "+": _ADD,
    "-": _ADD,
    "*": _MUL,
    "/": _MUL,
    "%": _MUL,
}

# Names the generated code uses for its own locals; DSL variables may not shadow them.
RESERVED = frozenset(
    {
        "m",
        "ctx",
        "out",
        "rt",
        "ts_recv",
        "query",
        "records",
        "rec",
        "symbol_raw",
        "SYMBOLS",
        "EXCHANGE",
        "ROUTES",
        "SPEC",
    }
)


@dataclass(frozen=True)
class Builtin:
    """A DSL function: arity and the Python it becomes (``{0}``, ``{1}`` are arguments)."""

    min_args: int
    max_args: int
    template: str
    prec: int = _ATOM
    needs: str = ""  # "ctx" when it reads connection state, "gen" for generator-only


BUILTINS: dict[str, Builtin] = {
    "dec": Builtin(1, 1, "rt.dec({0})"),
    "dec_abs": Builtin(1, 1, "rt.dec_abs({0})"),
    "dec_add": Builtin(2, 2, "rt.dec_add({0}, {1})"),
    "is_negative": Builtin(1, 1, "rt.is_negative({0})"),
    "side_sign": Builtin(1, 1, "rt.side_from_sign({0})"),
    "ts_s": Builtin(1, 1, "rt.ts_s({0})"),
    "ts_ms": Builtin(1, 1, "rt.ts_ms({0})"),
    "ts_us": Builtin(1, 1, "rt.ts_us({0})"),
    "ts_ns": Builtin(1, 1, "rt.ts_ns({0})"),
    "ts_iso": Builtin(1, 1, "rt.ts_iso({0})"),
    "ymd": Builtin(1, 1, "rt.ymd({0})"),
    "int": Builtin(1, 1, "int({0})"),
    "str": Builtin(1, 1, "str({0})"),
    "float": Builtin(1, 1, "float({0})"),
    "len": Builtin(1, 1, "len({0})"),
    "lower": Builtin(1, 1, "{0:atom}.lower()"),
    "upper": Builtin(1, 1, "{0:atom}.upper()"),
    "join": Builtin(2, 2, "{1:atom}.join({0})"),
    "split": Builtin(2, 2, "{0:atom}.split({1})"),
    "replace": Builtin(3, 3, "{0:atom}.replace({1}, {2})"),
    "merge": Builtin(2, 2, "{**{0:atom}, **{1:atom}}"),
    "starts_with": Builtin(2, 2, "rt.starts_with({0}, {1})"),
    "ends_with": Builtin(2, 2, "rt.ends_with({0}, {1})"),
    "has": Builtin(2, 2, "rt.has({0}, {1})"),
    "flatten": Builtin(1, 1, "rt.flatten({0})"),
    "lookup": Builtin(2, 2, "rt.lookup({0}, {1})"),
    "levels": Builtin(1, 2, "rt.levels({0})"),
    "sym": Builtin(1, 1, "SYMBOLS.canonical({0})"),
    "raw_symbol": Builtin(1, 1, "SYMBOLS.raw({0})"),
    "bound": Builtin(1, 1, "ctx.bound.get({0})", needs="ctx"),
    "now_ms": Builtin(0, 0, "rt.now_ms()", needs="gen"),
    "json": Builtin(1, 1, "rt.json_text({0})"),
}


@dataclass(frozen=True)
class Problem:
    """A semantic error at ``start..end`` of one DSL string."""

    code: str
    message: str
    start: int
    end: int


@dataclass
class Scope:
    """What a DSL string may refer to where it appears.

    ``root`` is the Python name of ``$`` (None where there is no message); with ``fields``
    true, unknown bare names are fields of ``$``. ``safe`` makes navigation return null
    instead of failing (used for routing, where most messages do not have the fields).
    """

    variables: dict[str, str]
    root: str | None = None
    fields: bool = False
    safe: bool = False
    has_ctx: bool = False
    generator: bool = False
    allow_spread: bool = False


@dataclass
class Constants:
    """Module-level constants hoisted out of expressions (lookup tables), in creation order."""

    tables: dict[str, str] = field(default_factory=dict)  # source -> name

    def table(self, source: str) -> str:
        name = self.tables.get(source)
        if name is None:
            name = f"_TABLE_{len(self.tables) + 1}"
            self.tables[source] = name
        return name

    def items(self) -> Iterator[tuple[str, str]]:
        for source, name in self.tables.items():
            yield name, source


class Translator:
    """Turns one DSL AST into a Python expression string, collecting :class:`Problem`s."""

    def __init__(self, scope: Scope, constants: Constants) -> None:
        self.scope = scope
        self.constants = constants
        self.problems: list[Problem] = []
        self.used_names: set[str] = set()
        self._locals: list[dict[str, str]] = []

    def translate(self, node: Node) -> str:
        """Python source for ``node`` (a full expression)."""
        return self._expr(node)[0]

    # -- helpers -------------------------------------------------------------------------
    def _error(self, node: Node, code: str, message: str) -> None:
        self.problems.append(Problem(code, message, node.start, node.end))

    def _wrap(self, node: Node, prec: int) -> str:
        code, own = self._expr(node)
        return f"({code})" if own < prec else code

    def _lookup_var(self, name: str) -> str | None:
        for frame in reversed(self._locals):
            if name in frame:
                return frame[name]
        return self.scope.variables.get(name)

    def _path(self, node: Node) -> tuple[Node, list[str | int]] | None:
        """Split a navigation chain with constant keys into (base, keys)."""
        keys: list[str | int] = []
        while True:
            if isinstance(node, Field):
                keys.append(node.name)
                node = node.obj
            elif (
                isinstance(node, Index)
                and isinstance(node.index, Literal)
                and isinstance(node.index.value, str | int)
                and not isinstance(node.index.value, bool)
            ):
                keys.append(node.index.value)
                node = node.obj
            else:
                break
        if not keys:
            return None
        keys.reverse()
        return node, keys

    # -- translation ---------------------------------------------------------------------
    def _expr(self, node: Node) -> tuple[str, int]:  # noqa: C901 - one case per node type
        match node:
            case Literal(value=value):
                return repr(value), _ATOM
            case Root():
                if self.scope.root is None:
                    self._error(node, "E300", "'$' (the message) does not exist here")
                    return "None", _ATOM
                return self.scope.root, _ATOM
            case Name(ident=ident):
                return self._name(node, ident), _ATOM
            case Field() | Index():
                return self._navigate(node), _ATOM
            case Spread():
                self._error(node, "E303", "'[*]' is only allowed as the whole of an 'each' source")
                return self._wrap(node.obj, _ATOM), _ATOM
            case Call():
                return self._call(node)
            case ListExpr(items=items):
                return "[" + ", ".join(self._expr(i)[0] for i in items) + "]", _ATOM
            case ObjectExpr(pairs=pairs):
                inner = ", ".join(f"{k!r}: {self._expr(v)[0]}" for k, v in pairs)
                return "{" + inner + "}", _ATOM
            case Comprehension():
                return self._comprehension(node), _ATOM
            case Unary(op="-", operand=operand):
                return "-" + self._wrap(operand, _UNARY), _UNARY
            case Unary(op="not", operand=operand):
                return "not " + self._wrap(operand, _NOT), _NOT
            case BinOp(op="??"):
                return self._coalesce(node), _TERNARY
            case BinOp(op="==" | "!=" as op, left=left, right=Literal(value=None)):
                word = "is" if op == "==" else "is not"
                return f"{self._wrap(left, _CMP + 1)} {word} None", _CMP
            case BinOp(op=op, left=left, right=right):
                prec = _BINOP_PREC[op]
                # Left-associative: the right operand needs strictly higher precedence.
                # Comparisons never chain (Python would read a == b == c as a chain).
                left_prec = _CMP + 1 if prec == _CMP else prec
                return f"{self._wrap(left, left_prec)} {op} {self._wrap(right, prec + 1)}", prec
            case Ternary(then=then, cond=cond, other=other):
                code = (
                    f"{self._wrap(then, _OR)} if {self._wrap(cond, _OR)} "
                    f"else {self._wrap(other, _TERNARY)}"
                )
                return code, _TERNARY
        raise AssertionError(f"unhandled node {node!r}")

    def _coalesce(self, node: BinOp) -> str:
        """``a ?? b ?? c``: the first operand that is not null, evaluated left to right.

        Every operand but the last is navigated safely and, being pure, appears twice (test and
        value); later operands are evaluated only when the earlier ones are null. The chain is
        flattened so the code grows linearly with its length.
        """
        operands: list[Node] = []
        current: Node = node
        while isinstance(current, BinOp) and current.op == "??":
            operands.insert(0, current.right)
            current = current.left
        operands.insert(0, current)
        code = self._wrap(operands[-1], _TERNARY)
        saved = self.scope.safe
        self.scope.safe = True
        try:
            for operand in reversed(operands[:-1]):
                value = self._wrap(operand, _OR)
                test = self._wrap(operand, _CMP + 1)
                code = f"{value} if {test} is not None else {code}"
        finally:
            self.scope.safe = saved
        return code

    def _name(self, node: Node, ident: str) -> str:
        var = self._lookup_var(ident)
        if var is not None:
            self.used_names.add(ident)
            return var
        if self.scope.fields and self.scope.root is not None:
            if self.scope.safe:
                return f"rt.get({self.scope.root}, {ident!r})"
            return f"{self.scope.root}[{ident!r}]"
        known = sorted(set(self.scope.variables) | {k for f in self._locals for k in f})
        hint = _suggest(ident, known)
        where = ", ".join(known) if known else "none"
        self._error(node, "E300", f"unknown name '{ident}' (names defined here: {where}){hint}")
        return "None"

    def _navigate(self, node: Node) -> str:
        split = self._path(node)
        if self.scope.safe and split is not None:
            base_node, keys = split
            free = isinstance(base_node, Name) and self._lookup_var(base_node.ident) is None
            if free and self.scope.fields and self.scope.root is not None:
                assert isinstance(base_node, Name)
                keys.insert(0, base_node.ident)
                base_node = Root(base_node.start, base_node.end)
            base = self._wrap(base_node, _ATOM)
            return f"rt.path({base}, {', '.join(repr(k) for k in keys)})"
        if isinstance(node, Field):
            obj = self._wrap(node.obj, _ATOM)
            if node.safe or self.scope.safe:
                return f"rt.get({obj}, {node.name!r})"
            return f"{obj}[{node.name!r}]"
        assert isinstance(node, Index)
        obj = self._wrap(node.obj, _ATOM)
        index = self._expr(node.index)[0]
        if self.scope.safe:
            return f"rt.get({obj}, {index})"
        return f"{obj}[{index}]"

    def _call(self, node: Call) -> tuple[str, int]:
        builtin = BUILTINS.get(node.func)
        if builtin is None:
            hint = _suggest(node.func, sorted(BUILTINS))
            self._error(node, "E301", f"unknown function '{node.func}'{hint}")
            for arg in node.args:  # report problems inside the arguments too
                self._expr(arg)
            return "None", _ATOM
        n = len(node.args)
        if not builtin.min_args <= n <= builtin.max_args:
            want = (
                str(builtin.min_args)
                if builtin.min_args == builtin.max_args
                else f"{builtin.min_args} to {builtin.max_args}"
            )
            self._error(node, "E302", f"'{node.func}' takes {want} argument(s), got {n}")
            for arg in node.args:
                self._expr(arg)
            return "None", _ATOM
        if builtin.needs == "ctx" and not self.scope.has_ctx:
            self._error(
                node, "E303", f"'{node.func}' reads connection state and is not allowed here"
            )
        if builtin.needs == "gen" and not self.scope.generator:
            self._error(node, "E303", f"'{node.func}' is only allowed in outgoing messages")
        if node.func == "lookup":
            return self._lookup(node), _ATOM
        translated = [self._expr(a) for a in node.args]
        plain = [code for code, _ in translated]
        atoms = [
            code if prec >= _ATOM and not _is_number(arg) else f"({code})"
            for (code, prec), arg in zip(translated, node.args, strict=True)
        ]
        template = builtin.template
        if node.func == "levels" and n == 2:
            template = "rt.levels({0}, {1})"
        code = template
        for i in range(n):
            code = code.replace(f"{{{i}:atom}}", atoms[i]).replace(f"{{{i}}}", plain[i])
        return code, builtin.prec

    def _lookup(self, node: Call) -> str:
        table = node.args[1]
        if not isinstance(table, ObjectExpr) or not all(
            isinstance(v, Literal) for _, v in table.pairs
        ):
            self._error(table, "E303", "the table of 'lookup' must be an object of constants")
            return "None"
        source = self._expr(table)[0]
        name = self.constants.table(source)
        return f"rt.lookup({self._expr(node.args[0])[0]}, {name})"

    def _comprehension(self, node: Comprehension) -> str:
        iterable = self._wrap(node.iterable, _OR)
        if not _valid_local(node.var):
            self.problems.append(
                Problem(
                    "E307",
                    f"'{node.var}' cannot be used as a variable name",
                    node.var_start,
                    node.var_start + len(node.var),
                )
            )
        self._locals.append({node.var: node.var})
        elt = self._expr(node.elt)[0]
        cond = f" if {self._wrap(node.cond, _OR)}" if node.cond is not None else ""
        self._locals.pop()
        return f"[{elt} for {node.var} in {iterable}{cond}]"


def _is_number(node: Node) -> bool:
    return isinstance(node, Literal) and isinstance(node.value, int | float)


def _valid_local(name: str) -> bool:
    return (
        name.isidentifier()
        and not keyword.iskeyword(name)
        and name not in RESERVED
        and not name.startswith("_")
        and name not in BUILTINS
    )


def valid_variable_name(name: str) -> bool:
    """True when ``name`` may be bound by ``let`` or a comprehension."""
    return _valid_local(name)


def _suggest(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def uses_name(node: Node, name: str) -> bool:
    """True when ``node`` refers to the bare name ``name`` anywhere (comprehension-aware)."""
    from compiler.dsl import children

    if isinstance(node, Name):
        return node.ident == name
    if isinstance(node, Comprehension) and node.var == name:
        return uses_name(node.iterable, name)
    return any(uses_name(c, name) for c in children(node))
