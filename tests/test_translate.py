"""Tests for compiler.translate: DSL AST -> Python source, scopes and semantic problems."""

from __future__ import annotations

import ast
import io
import keyword
import operator
import random
import re
import tokenize
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import runtime as rt
from compiler.dsl import (
    BinOp,
    Call,
    Comprehension,
    DslSyntaxError,
    Field,
    Index,
    ListExpr,
    Literal,
    Name,
    Node,
    ObjectExpr,
    Root,
    Ternary,
    Unary,
    children,
    parse,
)
from compiler.pipeline import compile_descriptor
from compiler.translate import (
    BUILTINS,
    RESERVED,
    Constants,
    Problem,
    Scope,
    Translator,
    uses_name,
    valid_variable_name,
)


def message_scope(*, safe: bool = False, variables: dict[str, str] | None = None) -> Scope:
    """The scope of expressions that read a message ``m`` (bare names are its fields)."""
    return Scope(variables=dict(variables or {}), root="m", fields=True, safe=safe, has_ctx=True)


def topic_scope() -> Scope:
    """The scope of a channel's ``topic``: only ``raw`` and ``symbol``, no message."""
    return Scope(variables={"raw": "raw", "symbol": "symbol"})


def translate(
    text: str, scope: Scope | None = None, constants: Constants | None = None
) -> tuple[str, list[Problem]]:
    translator = Translator(scope or message_scope(), constants or Constants())
    code = translator.translate(parse(text))
    return code, translator.problems


def code_of(text: str, scope: Scope | None = None) -> str:
    code, problems = translate(text, scope)
    assert problems == []
    return code


# -- translation of each construct -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("'x'", "'x'"),
        ('"it\'s"', '"it\'s"'),
        ("42", "42"),
        ("1.5", "1.5"),
        ("1e3", "1000.0"),
        ("-2", "-2"),
        ("true", "True"),
        ("false", "False"),
        ("null", "None"),
        ("$", "m"),
        ("a", "m['a']"),
        ("$.a", "m['a']"),
        ("a.b.c", "m['a']['b']['c']"),
        ("a[0]", "m['a'][0]"),
        ("a[-1]", "m['a'][-1]"),
        ("a['k']", "m['a']['k']"),
        ("a[i]", "m['a'][m['i']]"),
        ("a[i + 1].b", "m['a'][m['i'] + 1]['b']"),
        ("a?.b", "rt.get(m['a'], 'b')"),
        ("a?.b.c", "rt.get(m['a'], 'b')['c']"),
        ("a.b?.c", "rt.get(m['a']['b'], 'c')"),
        ("[1, a,]", "[1, m['a']]"),
        ("[]", "[]"),
        ("{a: 1, \"b c\": x, 'd': [y]}", "{'a': 1, 'b c': m['x'], 'd': [m['y']]}"),
        ("{}", "{}"),
        ("-a", "-m['a']"),
        ("not a", "not m['a']"),
        ("a + b", "m['a'] + m['b']"),
        ("a % b", "m['a'] % m['b']"),
        ("a in [1, 2]", "m['a'] in [1, 2]"),
        ("a not in b", "m['a'] not in m['b']"),
        ("a and b or c", "m['a'] and m['b'] or m['c']"),
        ("a if b else c", "m['a'] if m['b'] else m['c']"),
        ("a == null", "m['a'] is None"),
        ("a != null", "m['a'] is not None"),
        ("a + 1 == null", "m['a'] + 1 is None"),
        ("(a == b) == null", "(m['a'] == m['b']) is None"),
        ("a == 'x'", "m['a'] == 'x'"),
        # ``??`` reads its left side safely (missing -> null) and its right side as usual
        ("a ?? 0", "rt.get(m, 'a') if rt.get(m, 'a') is not None else 0"),
        (
            "a.b[0] ?? c.d",
            "rt.path(m, 'a', 'b', 0) if rt.path(m, 'a', 'b', 0) is not None else m['c']['d']",
        ),
        (
            "a ?? b ?? c",
            "rt.get(m, 'a') if rt.get(m, 'a') is not None "
            "else rt.get(m, 'b') if rt.get(m, 'b') is not None else m['c']",
        ),
        ("(a ?? 0) + 1", "(rt.get(m, 'a') if rt.get(m, 'a') is not None else 0) + 1"),
        ("[x * 2 for x in xs]", "[x * 2 for x in m['xs']]"),
        ("[x.p for x in rows if x.q]", "[x['p'] for x in m['rows'] if x['q']]"),
        ("[x for x in xs if (a if x else b)]", "[x for x in m['xs'] if (m['a'] if x else m['b'])]"),
        # the iterable is outside the comprehension: ``x`` there is still a field
        ("[x for x in x]", "[x for x in m['x']]"),
        ("[[y for y in x] for x in xs]", "[[y for y in x] for x in m['xs']]"),
    ],
)
def test_strict_message_scope(text: str, code: str) -> None:
    assert code_of(text) == code


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("a", "rt.get(m, 'a')"),
        ("$", "m"),
        ("a.b.c", "rt.path(m, 'a', 'b', 'c')"),
        ("$.a[0]", "rt.path(m, 'a', 0)"),
        ("a?.b", "rt.path(m, 'a', 'b')"),
        ("a[-1]", "rt.path(m, 'a', -1)"),
        ("a['k'].b", "rt.path(m, 'a', 'k', 'b')"),
        ("a[b]", "rt.get(rt.get(m, 'a'), rt.get(m, 'b'))"),
        ("a[b].c", "rt.path(rt.get(rt.get(m, 'a'), rt.get(m, 'b')), 'c')"),
        ("a == 'x' and has($, 'b')", "rt.get(m, 'a') == 'x' and rt.has(m, 'b')"),
        ("a == null", "rt.get(m, 'a') is None"),
        ("a ?? b", "rt.get(m, 'a') if rt.get(m, 'a') is not None else rt.get(m, 'b')"),
        ("[x.a for x in xs]", "[rt.path(x, 'a') for x in rt.get(m, 'xs')]"),
        ("ends_with(stream, '@t')", "rt.ends_with(rt.get(m, 'stream'), '@t')"),
    ],
)
def test_safe_message_scope(text: str, code: str) -> None:
    assert code_of(text, message_scope(safe=True)) == code


def test_variables_shadow_message_fields() -> None:
    scope = message_scope(variables={"d": "d", "it": "item"})
    assert code_of("d.s", scope) == "d['s']"
    assert code_of("it.p + e", scope) == "item['p'] + m['e']"
    assert code_of("$.d", scope) == "m['d']"
    safe = message_scope(safe=True, variables={"d": "d"})
    assert code_of("d.x.y", safe) == "rt.path(d, 'x', 'y')"
    assert code_of("d", safe) == "d"


def test_comprehension_variable_shadows_scope_variable() -> None:
    assert code_of("[raw for raw in symbol]", topic_scope()) == "[raw for raw in symbol]"
    # once the comprehension ends, the name means the scope variable again
    assert code_of("[x for x in raw] + [x]", Scope(variables={"raw": "raw", "x": "xv"})) == (
        "[x for x in raw] + [xv]"
    )


def test_used_names_are_recorded() -> None:
    translator = Translator(topic_scope(), Constants())
    translator.translate(parse("lower(raw) + '@' + [s for s in raw]"))
    assert translator.used_names == {"raw", "s"}


# -- names --------------------------------------------------------------------------------------


def test_variables_scope() -> None:
    assert code_of("raw", topic_scope()) == "raw"
    assert code_of("lower(raw) + '@trade'", topic_scope()) == "raw.lower() + '@trade'"
    assert code_of("symbol.x[0]", topic_scope()) == "symbol['x'][0]"


def test_unknown_name_with_suggestion() -> None:
    code, problems = translate("lower(rw)", topic_scope())
    assert code == "None.lower()"
    assert problems == [
        Problem(
            "E300",
            "unknown name 'rw' (names defined here: raw, symbol); did you mean 'raw'?",
            6,
            8,
        )
    ]


def test_unknown_name_without_suggestion() -> None:
    _, problems = translate("zzz + raw", topic_scope())
    assert problems == [
        Problem("E300", "unknown name 'zzz' (names defined here: raw, symbol)", 0, 3)
    ]


def test_unknown_name_where_nothing_is_defined() -> None:
    _, problems = translate("channel", Scope(variables={}))
    assert problems == [Problem("E300", "unknown name 'channel' (names defined here: none)", 0, 7)]


def test_unknown_name_lists_comprehension_locals() -> None:
    _, problems = translate("[y for row in raw]", topic_scope())
    assert problems == [
        Problem("E300", "unknown name 'y' (names defined here: raw, row, symbol)", 1, 2)
    ]
    _, problems = translate("[rows for row in raw]", topic_scope())
    assert [p.message for p in problems] == [
        "unknown name 'rows' (names defined here: raw, row, symbol); did you mean 'row'?"
    ]


def test_root_outside_a_message() -> None:
    code, problems = translate("$.a + raw", topic_scope())
    assert code == "None['a'] + raw"
    assert problems == [Problem("E300", "'$' (the message) does not exist here", 0, 1)]


def test_every_problem_of_an_expression_is_reported() -> None:
    _, problems = translate("x + [y] + frob(1) + len() + z[*]", topic_scope())
    assert [(p.code, p.start, p.end) for p in problems] == [
        ("E300", 0, 1),
        ("E300", 5, 6),
        ("E301", 10, 17),
        ("E302", 20, 25),
        ("E303", 28, 32),
        ("E300", 28, 29),
    ]


# -- builtins ----------------------------------------------------------------------------------

ALL_ALLOWED = Scope(
    variables={"x": "x", "y": "y"}, root="m", fields=True, has_ctx=True, generator=True
)

BUILTIN_CASES: dict[str, list[tuple[str, str]]] = {
    "dec": [("dec(x)", "rt.dec(x)")],
    "dec_abs": [("dec_abs(x)", "rt.dec_abs(x)")],
    "dec_add": [("dec_add(x, y)", "rt.dec_add(x, y)")],
    "flatten": [("flatten(x)", "rt.flatten(x)")],
    "is_negative": [("is_negative(x)", "rt.is_negative(x)")],
    "side_sign": [("side_sign(x)", "rt.side_from_sign(x)")],
    "ts_s": [("ts_s(x)", "rt.ts_s(x)")],
    "ts_ms": [("ts_ms(x + 1)", "rt.ts_ms(x + 1)")],
    "ts_us": [("ts_us(x)", "rt.ts_us(x)")],
    "ts_ns": [("ts_ns(x)", "rt.ts_ns(x)")],
    "ts_iso": [("ts_iso(x)", "rt.ts_iso(x)")],
    "ymd": [("ymd(ts_ms(x))", "rt.ymd(rt.ts_ms(x))")],
    "int": [("int(x)", "int(x)")],
    "str": [("str(x)", "str(x)")],
    "float": [("float(x)", "float(x)")],
    "len": [("len(x)", "len(x)")],
    "lower": [("lower(x)", "x.lower()"), ("lower(x + y)", "(x + y).lower()")],
    "upper": [
        ("upper(x.s)", "x['s'].upper()"),
        ("upper(x ?? 'a')", "(x if x is not None else 'a').upper()"),
    ],
    "join": [
        ("join(x, ',')", "','.join(x)"),
        ("join(x, y if x else ',')", "(y if x else ',').join(x)"),
    ],
    "split": [("split(x, ',')", "x.split(',')"), ("split(x + y, ',')", "(x + y).split(',')")],
    "merge": [
        ("merge(x, {a: 1})", "{**x, **{'a': 1}}"),
        ("merge({op: 'sub'}, x[0])", "{**{'op': 'sub'}, **x[0]}"),
        ("merge(x if y else {}, x)", "{**(x if y else {}), **x}"),
    ],
    "replace": [
        ("replace(x, 'a', 'b')", "x.replace('a', 'b')"),
        ("replace(x + y, ':', '')", "(x + y).replace(':', '')"),
    ],
    "starts_with": [("starts_with(x, 'a')", "rt.starts_with(x, 'a')")],
    "ends_with": [("ends_with(x, 'a')", "rt.ends_with(x, 'a')")],
    "has": [("has($, 'k')", "rt.has(m, 'k')")],
    "lookup": [("lookup(x, {'a': 1})", "rt.lookup(x, _TABLE_1)")],
    "levels": [("levels(x)", "rt.levels(x)"), ("levels(x, 5)", "rt.levels(x, 5)")],
    "sym": [("sym(x)", "SYMBOLS.canonical(x)")],
    "raw_symbol": [("raw_symbol(x)", "SYMBOLS.raw(x)")],
    "bound": [("bound(x)", "ctx.bound.get(x)")],
    "now_ms": [("now_ms()", "rt.now_ms()")],
    "json": [("json({a: x})", "rt.json_text({'a': x})")],
}


def test_every_builtin_has_a_translation_case() -> None:
    assert set(BUILTIN_CASES) == set(BUILTINS)


@pytest.mark.parametrize(
    ("text", "code"), [case for cases in BUILTIN_CASES.values() for case in cases]
)
def test_builtin_translation(text: str, code: str) -> None:
    assert code_of(text, ALL_ALLOWED) == code
    ast.parse(code, mode="eval")


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_builtin_targets_exist_in_the_runtime(name: str) -> None:
    template = BUILTINS[name].template
    for attr in re.findall(r"\brt\.(\w+)", template):
        assert hasattr(rt, attr), f"{name}: runtime has no {attr}"
    for attr in re.findall(r"\bSYMBOLS\.(\w+)", template):
        assert hasattr(rt.SymbolMapper, attr), f"{name}: SymbolMapper has no {attr}"
    if "ctx.bound" in template:
        assert "bound" in rt.Context.__dataclass_fields__


def _arity_cases() -> Iterator[Any]:
    for name in sorted(BUILTINS):
        b = BUILTINS[name]
        counts = ([b.min_args - 1] if b.min_args > 0 else []) + [b.max_args + 1]
        for n in counts:
            yield pytest.param(name, n, id=f"{name}-{n}")


@pytest.mark.parametrize(("name", "n"), list(_arity_cases()))
def test_builtin_arity(name: str, n: int) -> None:
    b = BUILTINS[name]
    want = str(b.min_args) if b.min_args == b.max_args else f"{b.min_args} to {b.max_args}"
    text = f"{name}({', '.join(['x'] * n)})"
    code, problems = translate(text, ALL_ALLOWED)
    assert code == "None"
    assert problems == [
        Problem("E302", f"'{name}' takes {want} argument(s), got {n}", 0, len(text))
    ]


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_builtin_accepts_its_arities(name: str) -> None:
    b = BUILTINS[name]
    for n in range(b.min_args, b.max_args + 1):
        args = ["x"] * n
        if name == "lookup":
            args[1] = "{'k': 1}"
        problems = translate(f"{name}({', '.join(args)})", ALL_ALLOWED)[1]
        assert problems == []


def test_arguments_trailing_comma() -> None:
    assert code_of("join(x, ',',)", ALL_ALLOWED) == "','.join(x)"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("foo(a)", "unknown function 'foo'"),
        ("lenn(a)", "unknown function 'lenn'; did you mean 'len'?"),
        ("Lower(a)", "unknown function 'Lower'; did you mean 'lower'?"),
        ("ts_msec(a)", "unknown function 'ts_msec'; did you mean 'ts_ms'?"),
    ],
)
def test_unknown_function(text: str, message: str) -> None:
    code, problems = translate(text)
    assert code == "None"
    assert problems == [Problem("E301", message, 0, len(text))]


@pytest.mark.parametrize("text", ["frob(rw)", "lower(rw, symbol)"])
def test_arguments_of_a_bad_call_are_still_checked(text: str) -> None:
    # every error in one run: the unknown name inside is reported too
    _, problems = translate(text, topic_scope())
    assert "E300" in [p.code for p in problems]


def test_unknown_function_inside_an_expression() -> None:
    _, problems = translate("1 + decimal(p)")
    assert problems == [Problem("E301", "unknown function 'decimal'; did you mean 'dec'?", 4, 14)]


# -- constructs allowed only in some places ----------------------------------------------------

SPREAD_MESSAGE = "'[*]' is only allowed as the whole of an 'each' source"


@pytest.mark.parametrize(
    ("text", "span"),
    [
        ("a[*]", (0, 4)),
        ("len(a[*])", (4, 8)),
        ("[x for x in rows[*]]", (12, 19)),
        ("a.b[*].c", (0, 6)),
        ("{k: $[*]}", (4, 8)),
    ],
)
def test_spread_outside_each(text: str, span: tuple[int, int]) -> None:
    _, problems = translate(text)
    assert problems == [Problem("E303", SPREAD_MESSAGE, *span)]


LOOKUP_MESSAGE = "the table of 'lookup' must be an object of constants"


@pytest.mark.parametrize(
    ("text", "span"),
    [
        ("lookup(a, b)", (10, 11)),
        ("lookup(a, {x: c})", (10, 16)),
        ("lookup(a, {x: 1, y: -b})", (10, 23)),
        ("lookup(a, {x: [1]})", (10, 18)),
        ("lookup(a, ['x'])", (10, 15)),
        ("lookup(a, $.table)", (10, 17)),
    ],
)
def test_lookup_needs_a_constant_table(text: str, span: tuple[int, int]) -> None:
    code, problems = translate(text)
    assert code == "None"
    assert problems == [Problem("E303", LOOKUP_MESSAGE, *span)]


def test_lookup_table_of_every_constant_kind() -> None:
    constants = Constants()
    code, problems = translate(
        "lookup(a, {s: 'x', i: -1, f: 2.5, t: true, n: null})", constants=constants
    )
    assert problems == []
    assert code == "rt.lookup(m['a'], _TABLE_1)"
    assert list(constants.items()) == [
        ("_TABLE_1", "{'s': 'x', 'i': -1, 'f': 2.5, 't': True, 'n': None}")
    ]


def test_bound_needs_connection_state() -> None:
    code, problems = translate("bound(raw)", topic_scope())
    assert code == "ctx.bound.get(raw)"
    assert problems == [
        Problem("E303", "'bound' reads connection state and is not allowed here", 0, 10)
    ]
    assert translate("bound(k)", message_scope())[1] == []


def test_now_ms_only_in_outgoing_messages() -> None:
    message = "'now_ms' is only allowed in outgoing messages"
    assert translate("now_ms()")[1] == [Problem("E303", message, 0, 8)]
    assert translate("1 + now_ms()", topic_scope())[1] == [Problem("E303", message, 4, 12)]
    generator = Scope(variables={"req_id": "req_id"}, generator=True)
    assert code_of("{id: req_id, ts: now_ms()}", generator) == "{'id': req_id, 'ts': rt.now_ms()}"


def test_bound_in_outgoing_message_without_connection_state() -> None:
    generator = Scope(variables={"req_id": "req_id"}, generator=True)
    _, problems = translate("bound(req_id)", generator)
    assert [p.code for p in problems] == ["E303"]


# -- variable names -----------------------------------------------------------------------------

BAD_VARIABLES = sorted(RESERVED) + [
    "if",
    "not",
    "for",
    "None",
    "True",
    "lambda",
    "_x",
    "__class__",
    "len",
    "dec",
    "lookup",
    "bound",
]


@pytest.mark.parametrize("var", BAD_VARIABLES)
def test_comprehension_variable_may_not_shadow_reserved_names(var: str) -> None:
    text = f"[1 for {var} in xs]"
    code, problems = translate(text)
    assert problems == [
        Problem("E307", f"'{var}' cannot be used as a variable name", 7, 7 + len(var))
    ]
    assert not valid_variable_name(var)


def test_reserved_names_are_the_generated_code_locals() -> None:
    assert {"m", "ctx", "out", "rt", "SYMBOLS", "EXCHANGE", "ts_recv", "query"} <= RESERVED
    assert all(not keyword.iskeyword(n) for n in RESERVED)


@pytest.mark.parametrize("var", ["x", "row", "it", "level2", "symbolRaw"])
def test_ordinary_comprehension_variables(var: str) -> None:
    assert valid_variable_name(var)
    assert code_of(f"[{var} for {var} in xs]") == f"[{var} for {var} in m['xs']]"


def test_nested_comprehension_variable_error_position() -> None:
    _, problems = translate("[[1 for m in r] for r in rows]")
    assert problems == [Problem("E307", "'m' cannot be used as a variable name", 8, 9)]


def test_uses_name() -> None:
    assert uses_name(parse("it.p + 1"), "it")
    assert not uses_name(parse("$.it"), "it")
    assert not uses_name(parse("[it for it in xs]"), "it")
    assert uses_name(parse("[x for it in it]"), "it")
    assert uses_name(parse("lookup(k, {a: 1}) ?? f(it)"), "it")


# -- lookup tables ------------------------------------------------------------------------------


def test_lookup_tables_are_hoisted_and_shared() -> None:
    constants = Constants()
    first, _ = translate("lookup(a, {x: 1, y: 2})", constants=constants)
    second, _ = translate("lookup(b, {'x': 1, \"y\": 2}) + lookup(c, {z: 3})", constants=constants)
    third, _ = translate("lookup(d, {y: 2, x: 1})", constants=constants)
    assert first == "rt.lookup(m['a'], _TABLE_1)"
    assert second == "rt.lookup(m['b'], _TABLE_1) + rt.lookup(m['c'], _TABLE_2)"
    assert third == "rt.lookup(m['d'], _TABLE_3)"
    assert list(constants.items()) == [
        ("_TABLE_1", "{'x': 1, 'y': 2}"),
        ("_TABLE_2", "{'z': 3}"),
        ("_TABLE_3", "{'y': 2, 'x': 1}"),
    ]


def test_lookup_table_numbering_is_deterministic() -> None:
    text = "lookup(lookup(a, {x: 'y'}), {y: 1}) + lookup(b, {x: 'y'})"
    runs = []
    for _ in range(3):
        constants = Constants()
        code, _ = translate(text, constants=constants)
        runs.append((code, list(constants.items())))
    assert runs[0] == runs[1] == runs[2]
    # the table is translated before the key, so the outer table comes first
    assert runs[0] == (
        "rt.lookup(rt.lookup(m['a'], _TABLE_2), _TABLE_1) + rt.lookup(m['b'], _TABLE_2)",
        [("_TABLE_1", "{'y': 1}"), ("_TABLE_2", "{'x': 'y'}")],
    )


DESCRIPTOR = """\
schema = "1.4"

[exchange]
id = "tables"
name = "Tables"

[websocket.endpoints.public]
urls = ["wss://example.com/ws"]

[websocket.subscribe]
message = '{"op": "subscribe", "args": topics}'

[channels.trades]
kind = "trades"
topic = '"trades." + raw'
match = 'topic == "trades"'

[channels.trades.fields]
symbol = 's'
price = 'dec(p)'
size = 'dec(q)'
side = 'lookup(S, {"b": "buy", "s": "sell"})'

[channels.liq]
kind = "liquidations"
topic = '"liq." + raw'
match = 'topic == "liq"'

[channels.liq.fields]
symbol = 's'
price = 'dec(p)'
size = 'dec(q)'
side = 'lookup(S, {b: "buy", s: "sell"})'
order_id = 'lookup(k, {"x": 1})'
"""


def test_lookup_tables_become_module_constants() -> None:
    exchange_id, module, diagnostics = compile_descriptor("d/tables.toml", DESCRIPTOR, Path("."))
    assert exchange_id == "tables"
    assert diagnostics == []
    assert module is not None
    lines = module.splitlines()
    assert '_TABLE_1 = {"b": "buy", "s": "sell"}' in lines
    assert '_TABLE_2 = {"x": 1}' in lines
    assert not any(line.startswith("_TABLE_3") for line in lines)
    first_def = next(i for i, line in enumerate(lines) if line.startswith("def "))
    assert lines.index('_TABLE_2 = {"x": 1}') < first_def
    assert module.count("rt.lookup(") == 3
    again = compile_descriptor("d/tables.toml", DESCRIPTOR, Path("."))[1]
    assert again == module


# -- semantics: generated Python vs. a direct evaluation of the DSL -----------------------------

_CMP_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "in": lambda a, b: a in b,
    "not in": lambda a, b: a not in b,
}
_ARITH_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "%": operator.mod,
}


def _nav(obj: Any, key: Any, safe: bool) -> Any:
    if not safe:
        return obj[key]
    if isinstance(obj, dict):
        return obj.get(key)
    if isinstance(obj, list) and type(key) is int and -len(obj) <= key < len(obj):
        return obj[key]
    return None


def _has(obj: Any, key: Any) -> bool:
    if isinstance(obj, dict):
        return key in obj
    return isinstance(obj, list) and type(key) is int and -len(obj) <= key < len(obj)


_REF_BUILTINS: dict[str, Callable[..., Any]] = {
    "len": len,
    "str": str,
    "int": int,
    "lower": lambda s: s.lower(),
    "upper": lambda s: s.upper(),
    "join": lambda items, sep: sep.join(items),
    "split": lambda s, sep: s.split(sep),
    "has": _has,
    "starts_with": lambda s, p: isinstance(s, str) and s.startswith(p),
    "lookup": lambda v, table: table[v],
}


def evaluate(  # noqa: C901 - one case per node type
    node: Node,
    message: Any,
    variables: dict[str, Any],
    safe: bool = False,
    lazy_coalesce: bool = True,
) -> Any:
    """The DSL's meaning, computed directly from the AST (an independent reference).

    ``a ?? b`` evaluates ``b`` only when ``a`` is null (as ``??`` does in JavaScript and C#);
    with ``lazy_coalesce`` false both sides are always evaluated.
    """

    def ev(n: Node, s: bool = safe, inner: dict[str, Any] = variables) -> Any:
        return evaluate(n, message, inner, s, lazy_coalesce)

    match node:
        case Literal(value=value):
            return value
        case Root():
            return message
        case Name(ident=ident):
            if ident in variables:
                return variables[ident]
            return _nav(message, ident, safe)
        case Field(obj=obj, name=name, safe=field_safe):
            return _nav(ev(obj), name, safe or field_safe)
        case Index(obj=obj, index=index):
            return _nav(ev(obj), ev(index), safe)
        case Call(func=func, args=args):
            return _REF_BUILTINS[func](*[ev(a) for a in args])
        case ListExpr(items=items):
            return [ev(i) for i in items]
        case ObjectExpr(pairs=pairs):
            return {k: ev(v) for k, v in pairs}
        case Comprehension(elt=elt, var=var, iterable=iterable, cond=cond):
            out = []
            for item in ev(iterable):
                inner = {**variables, var: item}
                if cond is None or ev(cond, safe, inner):
                    out.append(ev(elt, safe, inner))
            return out
        case Unary(op="-", operand=operand):
            return -ev(operand)
        case Unary(op="not", operand=operand):
            return not ev(operand)
        case BinOp(op="??", left=left, right=right):
            value = ev(left, True)
            if not lazy_coalesce:
                default = ev(right)
                return default if value is None else value
            return ev(right) if value is None else value
        case BinOp(op="and", left=left, right=right):
            value = ev(left)
            return ev(right) if value else value
        case BinOp(op="or", left=left, right=right):
            value = ev(left)
            return value if value else ev(right)
        case BinOp(op=op, left=left, right=right) if op in _CMP_OPS:
            return _CMP_OPS[op](ev(left), ev(right))
        case BinOp(op=op, left=left, right=right):
            return _ARITH_OPS[op](ev(left), ev(right))
        case Ternary(then=then, cond=cond, other=other):
            return ev(then) if ev(cond) else ev(other)
    raise AssertionError(f"unexpected node {node!r}")


def _outcome(fn: Callable[[], Any]) -> tuple[str, Any]:
    try:
        value = fn()
    except Exception as exc:  # noqa: BLE001 - the exception type is the outcome
        return ("raises", type(exc).__name__)
    return (type(value).__name__, value)


def run_both(
    text: str,
    message: dict[str, Any],
    variables: dict[str, Any],
    safe: bool = False,
    lazy_coalesce: bool = True,
) -> tuple[str, tuple[str, Any], tuple[str, Any]]:
    """(generated code, its outcome, the reference outcome) for ``text`` on ``message``."""
    scope = message_scope(safe=safe, variables={name: name for name in variables})
    constants = Constants()
    translator = Translator(scope, constants)
    node = parse(text)
    code = translator.translate(node)
    assert translator.problems == []
    env: dict[str, Any] = {"rt": rt, "m": message, **variables}
    for name, source in constants.items():
        env[name] = eval(source, {})  # noqa: S307 - our own generated constant
    with warnings.catch_warnings():
        # `1 == null` becomes `1 is None`, which Python compiles with a SyntaxWarning
        warnings.simplefilter("ignore", SyntaxWarning)
        python = compile(code, "<generated>", "eval")
    generated = _outcome(lambda: eval(python, env))  # noqa: S307 - generated code under test
    reference = _outcome(lambda: evaluate(node, message, variables, safe, lazy_coalesce))
    return code, generated, reference


ENVIRONMENTS: list[dict[str, Any]] = [
    {
        "a": 2,
        "b": 3,
        "c": 5,
        "t": True,
        "f": False,
        "n": None,
        "s": "Ab",
        "u": "Cd",
        "k": "x",
        "xs": [1, 2, 3],
        "words": ["p", "q"],
        "sep": "-",
        "d": {"e": 7, "g": {"h": [10, 20]}},
    },
    {
        "a": 0,
        "b": -1,
        "c": 2,
        "t": False,
        "f": True,
        "n": None,
        "s": "",
        "u": "x,y",
        "k": "y",
        "xs": [],
        "words": [],
        "sep": ",",
        "d": {"e": 0, "g": {"h": []}},
    },
    {
        "a": 1,
        "b": 1,
        "c": 1,
        "t": True,
        "f": True,
        "n": 0,
        "s": "a",
        "u": "a",
        "k": "x",
        "xs": [1],
        "words": ["z"],
        "sep": "",
        "d": {"e": 1, "g": {"h": [1, 1]}},
    },
]
VARIABLES = {"v": 4}

SEMANTIC_CASES = [
    "a + b * c",
    "(a + b) * c",
    "a - b - c",
    "a - (b - c)",
    "a * (b - c) % 7",
    "a / (b + c + 10)",
    "(a - b) / (c + 10)",
    "a % (b + 5) * c",
    "-a * b",
    "-(a * b)",
    "-(a - b)",
    "a - -b",
    "- -a",
    "-d.e",
    "not t and f",
    "not (t and f)",
    "t or f and f",
    "(t or f) and f",
    "t and (f or t)",
    "not a == b",
    "(not a) == b",
    "not (a < b)",
    "a == (b == c)",
    "a < (b + c)",
    "a if t else b",
    "a if f else b if t else c",
    "(a if f else b) if t else c",
    "a if (t if f else n) else c",
    "(a if t else b) + 1",
    "(a if t else b) * (b if f else c)",
    "-(a if t else b)",
    "not (a if t else b)",
    "a or b if c or f else n",
    "n ?? a",
    "a ?? n",
    "n ?? n ?? b",
    "(n ?? a) * b",
    "a + (n ?? b)",
    "missing ?? a",
    "d.zz.yy ?? d.e",
    "d.g.h[1] ?? -1",
    "d.g.h[5] ?? -1",
    "xs[-1] ?? 0",
    "(t ?? f) and a",
    "n == null",
    "a != null",
    "(n ?? a) == null",
    "a + b == null",
    "a in xs",
    "a not in xs",
    "not a in xs",
    "(not a) in [true, false]",
    "a + 1 in [b, c]",
    "[x * a for x in xs]",
    "[x for x in xs if x > a]",
    "[x for x in xs if not (x > a)]",
    "[x for x in xs if x > a or x < b]",
    "[x if x > a else -x for x in xs]",
    "len([x for x in xs if x != b]) + a",
    "[x + v for x in xs]",
    "[[x, v] for x in xs if x]",
    "{a: a + 1, 'k': b, \"z\": [c]}",
    "xs[0] + xs[-1]",
    "$.a + d.e",
    "d['g'].h[0] + d.e",
    "d?.zz",
    "d.g?.x ?? 'none'",
    "lookup(k, {x: 1, y: 2}) * a",
    "lower(s + u)",
    "upper(s) + lower(u)",
    "join(words, sep)",
    "split(s + ',' + u, ',')",
    "len(xs) % 2 == 1",
    "str(a) + s",
    "int(str(a) + '1') - 1",
    "has(d, 'e') and not has(d, 'q')",
    "starts_with(s, 'A') or starts_with(u, 'x')",
    "v * 2 + a",
]

# Python chains comparisons: ``(a == b) == c`` must not become ``a == b == c``.
# ``[x for x in a if b else c]`` is a Python syntax error (and would change meaning).


@pytest.mark.parametrize(
    "text",
    SEMANTIC_CASES
    + [
        text
        for text in [
            "(a < b) == (c > a)",
            "(a == b) == t",
            "(n == null) == t",
            "(a in xs) == f",
            "(a != b) != (b != c)",
        ]
    ]
    + ["[x for x in (xs if t else [a])]"],
)
@pytest.mark.parametrize("safe", [False, True], ids=["strict", "safe"])
def test_generated_code_means_what_the_dsl_means(text: str, safe: bool) -> None:
    outcomes = []
    for env in ENVIRONMENTS:
        code, generated, reference = run_both(text, env, VARIABLES, safe)
        ast.parse(code, mode="eval")  # SyntaxError here is a translation bug too
        assert generated == reference, f"{text!r} -> {code!r} with {env!r}"
        outcomes.append(generated)
    assert any(kind != "raises" for kind, _ in outcomes), f"{text!r} always raises"


@pytest.mark.parametrize("text", ["a ?? lower(a)", "d.e ?? int('x')", "s ?? xs[9]"])
def test_coalesce_is_short_circuit(text: str) -> None:
    for env in ENVIRONMENTS:
        code, generated, reference = run_both(text, env, VARIABLES)
        assert generated == reference, f"{text!r} -> {code!r} with {env!r}"


def test_safe_navigation_returns_null_where_strict_raises() -> None:
    env = {"a": {"b": [1]}}
    assert run_both("a.b[3]", env, {}, safe=True)[1] == ("NoneType", None)
    assert run_both("a.x.y", env, {}, safe=True)[1] == ("NoneType", None)
    assert run_both("a.b[3]", env, {}, safe=False)[1] == ("raises", "IndexError")
    assert run_both("a.x.y", env, {}, safe=False)[1] == ("raises", "KeyError")
    assert run_both("a?.x", env, {}, safe=False)[1] == ("NoneType", None)
    assert run_both("a.x ?? 5", env, {}, safe=False)[1] == ("int", 5)


# -- randomized precedence check ---------------------------------------------------------------

_LEAVES = ["a", "b", "c", "n", "t", "f", "v", "0", "1", "2", "true", "false", "null"]
_BINARY = ["+", "-", "*", "%", "==", "!=", "<", "<=", ">", ">=", "and", "or", "??"]


def _random_expression(rng: random.Random, depth: int) -> str:
    """A random, fully parenthesized DSL expression (so the parser fixes the tree)."""
    if depth == 0 or rng.random() < 0.2:
        return rng.choice(_LEAVES)
    kind = rng.choice(["binary"] * 8 + ["not", "neg", "ternary", "in", "not in", "compare_null"])
    sub = lambda: _random_expression(rng, depth - 1)  # noqa: E731
    if kind == "binary":
        return f"({sub()} {rng.choice(_BINARY)} {sub()})"
    if kind == "not":
        return f"(not {sub()})"
    if kind == "neg":
        return f"(-{sub()})"
    if kind == "ternary":
        return f"({sub()} if {sub()} else {sub()})"
    if kind == "compare_null":
        return f"({sub()} {rng.choice(['==', '!='])} null)"
    return f"({sub()} {kind} [{sub()}, {sub()}])"


def _comparison_in_comparison_left(node: Node) -> bool:
    if (
        isinstance(node, BinOp)
        and node.op in _CMP_OPS
        and isinstance(node.left, BinOp)
        and node.left.op in _CMP_OPS
    ):
        return True
    return any(_comparison_in_comparison_left(c) for c in children(node))


def _random_cases() -> tuple[list[str], list[str]]:
    rng = random.Random(20240611)
    plain: list[str] = []
    chained: list[str] = []
    while len(plain) < 300:
        text = _random_expression(rng, 4)
        (chained if _comparison_in_comparison_left(parse(text)) else plain).append(text)
    return plain, chained


RANDOM_PLAIN, RANDOM_CHAINED = _random_cases()
RANDOM_ENVIRONMENTS = [
    {"a": 2, "b": 3, "c": -1, "n": None, "t": True, "f": False},
    {"a": 0, "b": 0, "c": 1, "n": None, "t": False, "f": True},
    {"a": 1, "b": -2, "c": 1, "n": 5, "t": True, "f": True},
]


def _mismatches(texts: list[str], safe: bool) -> list[str]:
    bad = []
    for text in texts:
        for env in RANDOM_ENVIRONMENTS:
            code, generated, reference = run_both(text, env, {"v": 4}, safe)
            if generated != reference:
                bad.append(f"{text} -> {code}: {generated} != {reference} with {env}")
                break
    return bad


@pytest.mark.parametrize("safe", [False, True], ids=["strict", "safe"])
def test_random_expressions_keep_their_meaning(safe: bool) -> None:
    assert _mismatches(RANDOM_PLAIN, safe) == []


def test_random_expressions_with_nested_comparisons_keep_their_meaning() -> None:
    assert RANDOM_CHAINED, "the generator should produce some nested comparisons"
    assert _mismatches(RANDOM_CHAINED, False) == []


def _grouping_parens(code: str) -> Iterator[tuple[int, int]]:
    """(open, close) offsets of parentheses that group (not those of calls)."""
    tokens = list(tokenize.generate_tokens(io.StringIO(code).readline))
    stack: list[tuple[int, bool]] = []
    prev: tokenize.TokenInfo | None = None
    for tok in tokens:
        if tok.type == tokenize.OP and tok.string == "(":
            is_call = prev is not None and (
                (prev.type == tokenize.NAME and not keyword.iskeyword(prev.string))
                or prev.string in (")", "]")
                or prev.type == tokenize.STRING
            )
            stack.append((tok.start[1], not is_call))
        elif tok.type == tokenize.OP and tok.string == ")":
            start, grouping = stack.pop()
            if grouping:
                yield start, tok.start[1]
        if tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.ENDMARKER):
            prev = tok


def redundant_parens(code: str) -> list[str]:
    """Grouping parentheses whose removal leaves the Python AST unchanged."""
    tree = ast.dump(ast.parse(code, mode="eval"))
    found = []
    for start, end in _grouping_parens(code):
        candidate = code[:start] + code[start + 1 : end] + code[end + 1 :]
        try:
            same = ast.dump(ast.parse(candidate, mode="eval")) == tree
        except SyntaxError:
            same = False
        if same:
            found.append(code[start : end + 1])
    return found


def test_redundant_parens_detector() -> None:
    assert redundant_parens("(a + b) * c") == []
    assert redundant_parens("(a * b) + c") == ["(a * b)"]
    assert redundant_parens("f((a))") == ["(a)"]
    assert redundant_parens("not (a)") == ["(a)"]
    assert redundant_parens("rt.get(m, 'a')") == []


@pytest.mark.parametrize("safe", [False, True], ids=["strict", "safe"])
def test_parentheses_are_minimal(safe: bool) -> None:
    scope_vars = {"v": "v"}
    bad = {}
    for text in RANDOM_PLAIN + RANDOM_CHAINED + SEMANTIC_CASES:
        translator = Translator(message_scope(safe=safe, variables=scope_vars), Constants())
        code = translator.translate(parse(text))
        extra = redundant_parens(code)
        if extra:
            bad[text] = (code, extra)
    assert bad == {}


# -- generated code that is not valid or not correct Python ------------------------------------


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("upper(1)", "(1).upper()"),
        ("lower(-1)", "(-1).lower()"),
        ("upper(1.5)", "(1.5).upper()"),
        ("split(1, ',')", "(1).split(',')"),
        ("join(x, 2)", "(2).join(x)"),
        ("lower(-x)", "(-x).lower()"),
        ("upper('a')", "'a'.upper()"),
    ],
)
def test_method_style_builtins_on_number_literals_are_valid_python(text: str, code: str) -> None:
    # Nonsense at run time, but it must be valid Python (`1.upper()` is a syntax error).
    assert code_of(text, ALL_ALLOWED) == code
    ast.parse(code, mode="eval")


def test_float_literal_overflow() -> None:
    with pytest.raises(DslSyntaxError, match="out of range"):
        translate("1e400")


# -- lowering: names the generated functions define ---------------------------------------------

_BASE = """\
schema = "1.4"

[exchange]
id = "x"
name = "X"

[websocket.endpoints.public]
urls = ["wss://example.com/ws"]

[websocket.subscribe]
message = '{"op": "subscribe", "args": topics}'
"""

_TRADES = """
[channels.trades]
kind = "trades"
topic = '"trades." + raw'
match = 'topic == "trades"'

[channels.trades.fields]
symbol = 's'
price = 'dec(p)'
size = 'dec(q)'
"""


def test_generated_code_that_does_not_parse_is_a_diagnostic_not_a_crash() -> None:
    # Today `[v for v in (a if b else c)]` is emitted without the parentheses (see
    # a ternary comprehension source); black then rejects the module, which must become E900.
    text = _BASE + _TRADES.replace("size = 'dec(q)'", "size = 'len([v for v in (a if b else c)])'")
    _, module, diagnostics = compile_descriptor("d/x.toml", text, Path("."))
    assert [d.code for d in diagnostics] in ([], ["E900"])
    assert (module is None) == bool(diagnostics)


def _functions_using_undefined_ctx(module: str) -> list[str]:
    bad = []
    for fn in ast.parse(module).body:
        if not isinstance(fn, ast.FunctionDef):
            continue
        params = {a.arg for a in fn.args.args}
        used = {n.id for n in ast.walk(fn) if isinstance(n, ast.Name)}
        if "ctx" in used and "ctx" not in params:
            bad.append(fn.name)
    return bad


def test_bound_in_a_parser_and_a_route_is_fine() -> None:
    text = _BASE + _TRADES.replace(
        "match = 'topic == \"trades\"'", "match = 'topic == \"trades\" and bound(k) != null'"
    ).replace("size = 'dec(q)'", "size = 'dec(q)'\nside = 'bound(s)'")
    _, module, diagnostics = compile_descriptor("d/x.toml", text, Path("."))
    assert diagnostics == []
    assert module is not None
    assert module.count("ctx.bound.get(") == 2
    assert _functions_using_undefined_ctx(module) == []


@pytest.mark.parametrize(
    "section",
    [
        "[websocket.ack]\nmatch = 'op == \"ack\"'\nid = 'bound(arg)'",
        "[websocket.error]\nmatch = 'op == \"error\"'\nreason = 'bound(msg)'",
        "[websocket.keepalive.server_ping]\nmatch = 'op == \"ping\"'\nreply = 'bound(x)'",
    ],
    ids=["ack", "error", "server_ping_reply"],
)
def test_bound_only_where_the_function_has_ctx(section: str) -> None:
    _, module, diagnostics = compile_descriptor(
        "d/x.toml", _BASE + "\n" + section + "\n" + _TRADES, Path(".")
    )
    if module is None:
        assert [d.code for d in diagnostics] == ["E303"]
    else:
        assert _functions_using_undefined_ctx(module) == []


def test_let_may_not_reuse_the_generated_symbol_raw_local() -> None:
    text = _BASE + _TRADES.replace(
        "[channels.trades.fields]", "let = { symbol_raw = 'data.s' }\n\n[channels.trades.fields]"
    ).replace("size = 'dec(q)'", "size = 'dec(q)'\ntrade_id = 'symbol_raw'")
    _, module, diagnostics = compile_descriptor("d/x.toml", text, Path("."))
    # `symbol_raw` is the local the generated parser stores the symbol in; a `let` of that
    # name is clobbered, so trade_id silently becomes the symbol.
    assert [(d.code, d.toml_path) for d in diagnostics] == [
        ("E307", "channels.trades.let.symbol_raw")
    ]


def test_route_hoisting_does_not_capture_comprehension_variables() -> None:
    text = (
        _BASE
        + "\n[websocket.error]\nmatch = 'topic == \"error\"'\n"
        + _TRADES.replace(
            "match = 'topic == \"trades\"'",
            "match = 'topic == \"trades\" and len([v1 for v1 in xs if v1 == topic]) > 0'",
        )
    )
    _, module, diagnostics = compile_descriptor("d/x.toml", text, Path("."))
    assert diagnostics == []
    assert module is not None
    namespace: dict[str, Any] = {}
    exec(compile(module, "x.py", "exec"), namespace)  # noqa: S102 - generated module under test
    route = namespace["route"]
    ctx = rt.Context()
    assert route({"topic": "trades", "xs": ["trades"]}, ctx) == 1
    # no element of xs equals the topic, so nothing matches
    assert route({"topic": "trades", "xs": ["other"]}, ctx) == -1
