"""Tests for compiler.tomlpos: TOML path -> source position mapping."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from compiler.tomlpos import Pos, TomlIndex

Path = tuple[str | int, ...]


def _get(data: Any, path: Path) -> Any:
    for part in path:
        data = data[part]
    return data


def _index(doc: str, *paths: Path) -> TomlIndex:
    """Index ``doc`` after checking with tomllib that it parses and that ``paths`` exist."""
    data = tomllib.loads(doc)
    for path in paths:
        _get(data, path)
    return TomlIndex(doc)


def _walk(data: Any, path: Path = ()) -> list[tuple[Path, Any]]:
    """Every (path, value) in parsed TOML data."""
    items: list[tuple[Path, Any]] = []
    children: list[tuple[str | int, Any]] = []
    if isinstance(data, dict):
        children = list(data.items())
    elif isinstance(data, list):
        children = list(enumerate(data))
    for part, child in children:
        items.append((path + (part,), child))
        items.extend(_walk(child, path + (part,)))
    return items


def _char_at(doc: str, pos: Pos) -> str:
    """The source character at ``pos`` ("\\n" for a line's end)."""
    line = doc.split("\n")[pos.line - 1]
    return line[pos.col - 1] if pos.col <= len(line) else "\n"


PRICE = ("channels", "trades", "parse", "price")


@pytest.mark.parametrize(
    ("doc", "value", "key"),
    [
        pytest.param('[channels.trades.parse]\nprice = "p"\n', Pos(2, 9), Pos(2, 1), id="header"),
        pytest.param('[channels]\ntrades.parse.price = "p"\n', Pos(2, 22), Pos(2, 14), id="dotted"),
        pytest.param(
            '[channels.trades]\nparse = { price = "p" }\n', Pos(2, 19), Pos(2, 11), id="inline"
        ),
        pytest.param(
            "channels . trades = { parse.price = 'p' }\n", Pos(1, 37), Pos(1, 29), id="mixed"
        ),
        pytest.param(
            '# leading comment\n\n[channels]\n\n[ "channels" . trades ]  # c\n'
            "'parse'.price = \"p\"\n",
            Pos(6, 17),
            Pos(6, 9),
            id="header-then-quoted-dotted",
        ),
    ],
)
def test_spellings_of_the_same_path(doc: str, value: Pos, key: Pos) -> None:
    idx = _index(doc, PRICE)
    assert idx.value(PRICE) == value
    assert idx.key(PRICE) == key
    assert idx.string_char(PRICE, 0) == Pos(value.line, value.col + 1)


def test_header_tables_point_at_bracket() -> None:
    doc = '[channels.trades.parse]\nprice = "p"\n\n  [ channels . "book" ]\ndepth = 10\n'
    idx = _index(doc, PRICE, ("channels", "book", "depth"))
    assert idx.value(("channels", "trades", "parse")) == Pos(1, 1)
    assert idx.key(("channels", "trades", "parse")) == Pos(1, 1)
    assert idx.value(("channels", "book")) == Pos(4, 3)
    assert idx.key(("channels", "book")) == Pos(4, 3)
    # Implicit super-tables: key at its first mention in a header, value at that header's '['.
    assert idx.key(("channels",)) == Pos(1, 2)
    assert idx.value(("channels",)) == Pos(1, 1)
    assert idx.key(("channels", "trades")) == Pos(1, 11)
    assert idx.value(("channels", "book", "depth")) == Pos(5, 9)


def test_explicit_table_after_implicit_one() -> None:
    doc = "[a.b]\nx = 1\n[a]\ny = 2\n"
    idx = _index(doc, ("a", "b", "x"), ("a", "y"))
    assert idx.value(("a",)) == Pos(3, 1)
    assert idx.key(("a",)) == Pos(3, 1)
    assert idx.value(("a", "y")) == Pos(4, 5)


def test_dotted_key_intermediate_tables() -> None:
    doc = "[channels]\ntrades.parse.price = 1\ntrades.parse.size = 2\n"
    idx = _index(doc, PRICE, ("channels", "trades", "parse", "size"))
    assert idx.key(("channels", "trades")) == Pos(2, 1)
    assert idx.value(("channels", "trades")) == Pos(2, 1)
    assert idx.key(("channels", "trades", "parse")) == Pos(2, 8)
    assert idx.key(("channels", "trades", "parse", "size")) == Pos(3, 14)
    assert idx.value(("channels", "trades", "parse", "size")) == Pos(3, 21)


def test_quoted_keys_are_single_names() -> None:
    doc = (
        '"a.b" = 1\n'  # 1
        "'x' = 2\n"  # 2
        "[tbl.\"quoted key\".'lit']\n"  # 3
        '"esc\\u0041" = "v"\n'  # 4
    )
    idx = _index(doc, ("a.b",), ("x",), ("tbl", "quoted key", "lit", "escA"))
    assert idx.key(("a.b",)) == Pos(1, 1)
    assert idx.value(("a.b",)) == Pos(1, 9)
    assert idx.value(("a", "b")) is None
    assert idx.key(("x",)) == Pos(2, 1)
    assert idx.value(("x",)) == Pos(2, 7)
    assert idx.value(("tbl", "quoted key", "lit")) == Pos(3, 1)
    assert idx.key(("tbl", "quoted key")) == Pos(3, 6)
    assert idx.key(("tbl", "quoted key", "lit", "escA")) == Pos(4, 1)
    assert idx.value(("tbl", "quoted key", "lit", "escA")) == Pos(4, 15)


def test_quoted_key_with_empty_name() -> None:
    doc = '"" = 3\n'
    idx = _index(doc, ("",))
    assert idx.value(("",)) == Pos(1, 6)


def test_arrays_of_tables() -> None:
    doc = (
        "[[endpoints]]\n"
        'url = "wss://a"\n'
        "\n"
        "[[endpoints]]  # second\n"
        'name = "b"\n'
        'url = "wss://b"\n'
    )
    idx = _index(doc, ("endpoints", 1, "url"))
    assert idx.value(("endpoints", 0, "url")) == Pos(2, 7)
    assert idx.value(("endpoints", 1, "url")) == Pos(6, 7)
    assert idx.key(("endpoints", 1, "url")) == Pos(6, 1)
    assert idx.value(("endpoints", 1)) == Pos(4, 1)
    assert idx.key(("endpoints", 1)) == Pos(4, 1)
    assert idx.value(("endpoints",)) == Pos(1, 1)
    assert idx.value(("endpoints", 2)) is None
    assert idx.value(("endpoints", 2, "url")) is None


def test_nested_arrays_of_tables() -> None:
    doc = (
        "[[a]]\n"  # 1
        "x = 1\n"  # 2
        "[[a.b]]\n"  # 3
        "y = 1\n"  # 4
        "[[a]]\n"  # 5
        "[[a.b]]\n"  # 6
        "y = 2\n"  # 7
        "[[a.b]]\n"  # 8
        "y = 3\n"  # 9
        "[a.c]\n"  # 10
        "z = 4\n"  # 11
        "[[a.c.d]]\n"  # 12
        "w = 5\n"  # 13
    )
    idx = _index(doc, ("a", 1, "b", 1, "y"), ("a", 1, "c", "d", 0, "w"))
    assert idx.value(("a", 0, "x")) == Pos(2, 5)
    assert idx.value(("a", 0, "b", 0, "y")) == Pos(4, 5)
    assert idx.value(("a", 0, "b", 1)) is None
    assert idx.value(("a", 1)) == Pos(5, 1)
    assert idx.value(("a", 1, "b", 0)) == Pos(6, 1)
    assert idx.value(("a", 1, "b", 0, "y")) == Pos(7, 5)
    assert idx.value(("a", 1, "b", 1, "y")) == Pos(9, 5)
    assert idx.value(("a", 1, "b")) == Pos(6, 1)
    assert idx.value(("a", 1, "c")) == Pos(10, 1)
    assert idx.value(("a", 1, "c", "z")) == Pos(11, 5)
    assert idx.value(("a", 1, "c", "d", 0, "w")) == Pos(13, 5)


def test_array_of_tables_inside_a_table() -> None:
    doc = "[svc]\nname = 'x'\n[[svc.ports]]\nn = 1\n[[svc.ports]]\nn = 2\n"
    idx = _index(doc, ("svc", "ports", 1, "n"))
    assert idx.value(("svc", "ports", 1, "n")) == Pos(6, 5)
    assert idx.value(("svc", "ports", 0)) == Pos(3, 1)
    assert idx.key(("svc", "ports")) == Pos(3, 1)


def test_inline_array_across_lines_with_comments() -> None:
    doc = (
        "urls = [  # opening\n"  # 1
        '  "x]#",  # first, with ] and #\n'  # 2
        "  # a comment, with ] bracket\n"  # 3
        "\n"  # 4
        "  'y', [1, 2],\n"  # 5
        '  { k = "v" },\n'  # 6
        "]\n"  # 7
        "after = 1\n"  # 8
    )
    idx = _index(doc, ("urls", 3, "k"), ("after",))
    assert idx.value(("urls",)) == Pos(1, 8)
    assert idx.value(("urls", 0)) == Pos(2, 3)
    assert idx.value(("urls", 1)) == Pos(5, 3)
    assert idx.key(("urls", 1)) == Pos(5, 3)
    assert idx.value(("urls", 2)) == Pos(5, 8)
    assert idx.value(("urls", 2, 1)) == Pos(5, 12)
    assert idx.value(("urls", 3)) == Pos(6, 3)
    assert idx.value(("urls", 3, "k")) == Pos(6, 9)
    assert idx.value(("urls", 4)) is None
    assert idx.value(("after",)) == Pos(8, 9)
    assert idx.string_char(("urls", 0), 1) == Pos(2, 5)


def test_single_line_arrays_and_array_of_inline_tables() -> None:
    doc = 'urls = ["x", "y",]\npoints = [{x = 1}, {x = 2, y = [3]}]\nempty = []\n'
    idx = _index(doc, ("urls", 1), ("points", 1, "y", 0))
    assert idx.value(("urls", 1)) == Pos(1, 14)
    assert idx.value(("points", 1)) == Pos(2, 20)
    assert idx.value(("points", 1, "x")) == Pos(2, 25)
    assert idx.key(("points", 1, "y")) == Pos(2, 28)
    assert idx.value(("points", 1, "y", 0)) == Pos(2, 33)
    assert idx.value(("empty",)) == Pos(3, 9)
    assert idx.value(("empty", 0)) is None


def test_scalars() -> None:
    doc = (
        "d = 1979-05-27 07:32:00Z # a datetime with a space\n"
        "e = [1979-05-27 07:32:00, -1_000, +inf, true, 0x1F]\n"
        "t = { a = 07:32:00, b = false }\n"
    )
    idx = _index(doc, ("e", 4), ("t", "b"))
    assert idx.value(("d",)) == Pos(1, 5)
    assert idx.value(("e", 1)) == Pos(2, 27)
    assert idx.value(("e", 2)) == Pos(2, 35)
    assert idx.value(("e", 3)) == Pos(2, 41)
    assert idx.value(("e", 4)) == Pos(2, 47)
    assert idx.value(("t", "b")) == Pos(3, 25)


def test_basic_string_escapes() -> None:
    doc = 's = "a\\tb\\u00e9c\\U0001F600d\\\\"\n'
    idx = _index(doc)
    decoded = tomllib.loads(doc)["s"]
    assert decoded == "a\tb\u00e9c\U0001f600d\\"
    expected = {
        0: ("a", Pos(1, 6)),
        1: ("\t", Pos(1, 7)),
        2: ("b", Pos(1, 9)),
        3: ("\u00e9", Pos(1, 10)),
        4: ("c", Pos(1, 16)),
        5: ("\U0001f600", Pos(1, 17)),
        6: ("d", Pos(1, 27)),
        7: ("\\", Pos(1, 28)),
    }
    for offset, (char, pos) in expected.items():
        assert decoded[offset] == char
        assert idx.string_char(("s",), offset) == pos
    assert idx.string_char(("s",), len(decoded)) == Pos(1, 30)  # closing quote
    assert idx.string_char(("s",), len(decoded) + 1) is None
    assert idx.string_char(("s",), -1) is None


def test_all_simple_escapes() -> None:
    doc = 's = "\\b\\t\\n\\f\\r\\"\\\\x"\n'
    idx = _index(doc)
    assert tomllib.loads(doc)["s"] == '\b\t\n\f\r"\\x'
    assert [idx.string_char(("s",), k) for k in range(8)] == [Pos(1, 6 + 2 * k) for k in range(8)]


def test_literal_string() -> None:
    doc = "lit = 'C:\\path\\x'\n"
    idx = _index(doc)
    decoded = tomllib.loads(doc)["lit"]
    assert decoded == "C:\\path\\x"
    assert idx.string_char(("lit",), 0) == Pos(1, 8)
    assert idx.string_char(("lit",), 2) == Pos(1, 10)
    assert idx.string_char(("lit",), 8) == Pos(1, 16)
    assert idx.string_char(("lit",), 9) == Pos(1, 17)


def test_multiline_basic_string() -> None:
    doc = 'ml = """\nfirst\\tline\n  second \\\n      third"""\n'
    idx = _index(doc)
    decoded = tomllib.loads(doc)["ml"]
    assert decoded == "first\tline\n  second third"
    expected = {
        0: ("f", Pos(2, 1)),
        5: ("\t", Pos(2, 6)),
        6: ("l", Pos(2, 8)),
        10: ("\n", Pos(2, 12)),
        11: (" ", Pos(3, 1)),
        13: ("s", Pos(3, 3)),
        19: (" ", Pos(3, 9)),
        20: ("t", Pos(4, 7)),
        24: ("d", Pos(4, 11)),
    }
    for offset, (char, pos) in expected.items():
        assert decoded[offset] == char
        assert idx.string_char(("ml",), offset) == pos
    assert idx.string_char(("ml",), 25) == Pos(4, 12)
    assert idx.value(("ml",)) == Pos(1, 6)


def test_multiline_basic_string_without_leading_newline_and_trailing_quotes() -> None:
    doc = 'q = """x "" y"""""\nr = """\\\n   a"""\n'
    idx = _index(doc)
    data = tomllib.loads(doc)
    assert data["q"] == 'x "" y""'
    assert idx.string_char(("q",), 0) == Pos(1, 8)
    assert idx.string_char(("q",), 2) == Pos(1, 10)
    assert idx.string_char(("q",), 5) == Pos(1, 13)
    assert idx.string_char(("q",), 6) == Pos(1, 14)
    assert idx.string_char(("q",), 7) == Pos(1, 15)
    assert idx.string_char(("q",), 8) == Pos(1, 16)
    assert data["r"] == "a"
    assert idx.string_char(("r",), 0) == Pos(3, 4)
    assert idx.value(("r",)) == Pos(2, 5)


def test_multiline_literal_string() -> None:
    doc = "ml = '''\nraw \\n ''two''\nx'''\nnext = 1\n"
    idx = _index(doc, ("next",))
    decoded = tomllib.loads(doc)["ml"]
    assert decoded == "raw \\n ''two''\nx"
    expected = {
        0: ("r", Pos(2, 1)),
        4: ("\\", Pos(2, 5)),
        7: ("'", Pos(2, 8)),
        14: ("\n", Pos(2, 15)),
        15: ("x", Pos(3, 1)),
    }
    for offset, (char, pos) in expected.items():
        assert decoded[offset] == char
        assert idx.string_char(("ml",), offset) == pos
    assert idx.string_char(("ml",), 16) == Pos(3, 2)
    assert idx.value(("next",)) == Pos(4, 8)


def test_crlf_line_endings() -> None:
    doc = (
        "[t]\r\n"  # 1
        "a = 1\r\n"  # 2
        's = """\r\n'  # 3
        "one\r\n"  # 4
        "two \\\r\n"  # 5
        '   three"""\r\n'  # 6
        "arr = [\r\n"  # 7
        "  1, # c\r\n"  # 8
        '  "z",\r\n'  # 9
        "]\r\n"  # 10
        "m = '''\r\nl1\r\nl2'''\r\n"  # 11-13
    )
    idx = _index(doc, ("t", "arr", 1), ("t", "m"))
    assert idx.key(("t", "a")) == Pos(2, 1)
    assert idx.value(("t", "a")) == Pos(2, 5)
    decoded = tomllib.loads(doc)["t"]["s"]
    assert decoded == "one\ntwo three"
    assert idx.string_char(("t", "s"), 0) == Pos(4, 1)
    assert idx.string_char(("t", "s"), 3) == Pos(4, 4)  # the newline (its '\r')
    assert idx.string_char(("t", "s"), 4) == Pos(5, 1)
    assert idx.string_char(("t", "s"), 7) == Pos(5, 4)
    assert idx.string_char(("t", "s"), 8) == Pos(6, 4)
    assert idx.string_char(("t", "s"), 13) == Pos(6, 9)
    assert idx.value(("t", "arr", 1)) == Pos(9, 3)
    assert tomllib.loads(doc)["t"]["m"] == "l1\nl2"
    assert idx.string_char(("t", "m"), 3) == Pos(13, 1)
    assert idx.string_char(("t", "m"), 5) == Pos(13, 3)


def test_unicode_before_the_spot() -> None:
    doc = '"ключ" = "日本😀 {price}"\n["é"]\n"ü" = "ß{x}"\n'
    idx = _index(doc, ("ключ",), ("é", "ü"))
    assert idx.value(("ключ",)) == Pos(1, 10)
    assert idx.string_char(("ключ",), 5) == Pos(1, 16)
    assert _char_at(doc, Pos(1, 16)) == "p"
    assert idx.string_char(("é", "ü"), 2) == Pos(3, 10)


def test_missing_paths_return_none() -> None:
    doc = 'a = 1\n[t]\ns = "x"\n'
    idx = _index(doc, ("a",), ("t", "s"))
    assert idx.value(("nope",)) is None
    assert idx.key(("nope",)) is None
    assert idx.value(("t", "nope")) is None
    assert idx.value(("a", 0)) is None
    assert idx.value(()) is None
    assert idx.string_char(("a",), 0) is None  # not a string
    assert idx.string_char(("t",), 0) is None
    assert idx.string_char(("nope",), 0) is None


def test_nearest() -> None:
    doc = '[channels.trades.parse]\nprice = "p"\n'
    idx = _index(doc, PRICE)
    assert idx.nearest(PRICE) == Pos(2, 9)
    assert idx.nearest(PRICE + ("deeper", 3)) == Pos(2, 9)
    assert idx.nearest(("channels", "trades", "parse", "nope")) == Pos(1, 1)
    assert idx.nearest(("channels", "book", "depth")) == Pos(1, 1)
    assert idx.nearest(("zzz",)) == Pos(1, 1)
    assert idx.nearest(()) == Pos(1, 1)
    doc2 = "x = 1\n[b]\nc = 2\n"
    assert _index(doc2).nearest(("b", "c", "d")) == Pos(3, 5)
    assert _index(doc2).nearest(("b", "zz")) == Pos(2, 1)


BIG_DOC = """\
# descriptor
schema = "1.4"
name = 'binance'

[connection]
urls = [
  "wss://a.example/ws",   # primary
  'wss://b.example/ws',
]
ping = { interval = 20, payload = \"\"\"{"op": "ping"}\"\"\" }
retry.backoff.max = 30.5

[channels.trades]
subscribe = { op = "sub", args = ["trades:{symbol}", 'x'] }
parse.price = "float(msg[\\"p\\"]) * 1e-8"
parse.size = '''
  int(msg["q"])'''

[channels.book.parse]
bids = \"\"\"
map(msg.b, \\
    [float(x[0]), float(x[1])])\"\"\"

[[endpoints]]
url = "https://a"
headers = {"X-Key" = "k", 'x.y' = "z"}

[[endpoints]]
url = "https://b"
[[endpoints.routes]]
path = "/v1"
[[endpoints.routes]]
path = "/v2"
[endpoints.limits]
rps = 10
"""


def test_every_path_of_a_mixed_document_is_found() -> None:
    data = tomllib.loads(BIG_DOC)
    idx = TomlIndex(BIG_DOC)
    items = _walk(data)
    assert len(items) >= 40
    for path, value in items:
        assert idx.value(path) is not None, path
        if isinstance(path[-1], str):
            assert idx.key(path) is not None, path
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            pos = idx.value(path)
            assert pos is not None
            assert _char_at(BIG_DOC, pos) in "\"'0123456789", path


@pytest.mark.parametrize("doc", [BIG_DOC, BIG_DOC.replace("\n", "\r\n")], ids=["lf", "crlf"])
def test_every_string_char_maps_back_to_its_source(doc: str) -> None:
    data = tomllib.loads(doc)
    idx = TomlIndex(doc)
    strings = [(p, v) for p, v in _walk(data) if isinstance(v, str)]
    assert len(strings) > 10
    for path, decoded in strings:
        for offset, char in enumerate(decoded):
            pos = idx.string_char(path, offset)
            assert pos is not None, (path, offset)
            source = _char_at(doc, pos)
            if char == "\n":
                assert source in "\r\n", (path, offset)
            else:
                assert source in (char, "\\"), (path, offset)
        closing = idx.string_char(path, len(decoded))
        assert closing is not None
        assert _char_at(doc, closing) == _char_at(doc, idx.value(path) or Pos(1, 1))


def test_spot_checks_in_mixed_document() -> None:
    idx = TomlIndex(BIG_DOC)
    assert idx.value(("connection", "urls", 1)) == Pos(8, 3)
    assert idx.value(("connection", "ping", "payload")) == Pos(10, 35)
    assert idx.key(("connection", "retry", "backoff", "max")) == Pos(11, 15)
    assert idx.value(("channels", "trades", "subscribe", "args", 1)) == Pos(14, 54)
    price = ("channels", "trades", "parse", "price")
    assert idx.string_char(price, 10) == Pos(15, 26)  # the escaped quote before 'p'
    assert idx.string_char(price, 11) == Pos(15, 28)
    assert idx.string_char(("channels", "trades", "parse", "size"), 2) == Pos(17, 3)
    bids = ("channels", "book", "parse", "bids")
    assert tomllib.loads(BIG_DOC)["channels"]["book"]["parse"]["bids"].startswith("map(msg.b, [")
    assert idx.string_char(bids, 11) == Pos(22, 5)
    assert idx.key(("endpoints", 0, "headers", "x.y")) == Pos(26, 27)
    assert idx.value(("endpoints", 1, "routes", 1, "path")) == Pos(33, 8)
    assert idx.value(("endpoints", 1, "limits")) == Pos(34, 1)
    assert idx.value(("endpoints", 1, "limits", "rps")) == Pos(35, 7)


def test_large_document() -> None:
    doc = "".join(f'[[items]]\nid = {n}\nexpr = "a + b{n}"\n' for n in range(3000))
    idx = _index(doc, ("items", 2999, "expr"))
    assert idx.value(("items", 2999, "expr")) == Pos(3 * 2999 + 3, 8)
    assert idx.string_char(("items", 2999, "expr"), 5) == Pos(3 * 2999 + 3, 14)


@pytest.mark.parametrize(
    "doc",
    [
        "",
        "\n\n  \n",
        "[",
        "[[",
        "[a",
        "[[a]",
        "a",
        "a = ",
        "a =",
        'a = "unterminated',
        'a = "bad \\q escape"',
        'a = "\\u12"',
        'a = "\\UFFFFFFFF"',
        "a = '''never closed",
        'a = """never closed\\',
        "a = [1, 2",
        "a = [1 2]",
        "a = {b = ",
        "a = {b = 1 c = 2}",
        "a = {= 1}",
        "= = =",
        "\\",
        '"""',
        "a.=1",
        "a. = 1\n[.]\n[[ ]]",
        "[a\nb = 1",
        "\ufeffa = 1",
        "\r\r\r",
        "x = " + "[" * 5000 + "]" * 5000,
        "x = " + "{a = " * 2000,
    ],
)
def test_odd_input_never_raises(doc: str) -> None:
    idx = TomlIndex(doc)
    for path in [("a",), ("a", "b"), ("a", 0), ("x",), ("x", 0, 0), ()]:
        idx.value(path)
        idx.key(path)
        idx.string_char(path, 0)
        assert isinstance(idx.nearest(path), Pos)


def test_partial_index_survives_garbage() -> None:
    idx = TomlIndex('a = 1\nb = "oops\nc = [1,\n  2]\n')
    assert idx.value(("a",)) == Pos(1, 5)
    assert idx.value(("c", 1)) == Pos(4, 3)
    assert idx.value(("x",)) is None
    deep = TomlIndex("x = " + "[" * 5000 + "]" * 5000 + "\ny = 2\n")
    assert deep.value(("x",)) == Pos(1, 5)
    assert deep.value(("x", 0, 0)) == Pos(1, 7)
    assert deep.value(("y",)) == Pos(2, 5)


def test_bom_is_not_counted() -> None:
    idx = TomlIndex("\ufeffa = 1\nb = 2\n")
    assert idx.value(("a",)) == Pos(1, 5)
    assert idx.value(("b",)) == Pos(2, 5)
