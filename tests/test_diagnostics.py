"""Diagnostics of broken descriptors: codes, positions, carets, sorting, and the CLI around them.

Each folder in ``tests/fixtures/broken/`` is one compile run. The full rendered output of each
is pinned with syrupy (``tests/__snapshots__/test_diagnostics.ambr``); every snapshot was checked
by hand for line, column and caret. Two fixtures (``toml_syntax``, ``bad_key_name``) show a
known compiler bug: their hand-written correct output is in CORRECT_OUTPUT and their tests are
strict xfails (remove the marks once the bug is fixed, and move them to the snapshots).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from compiler.cli import GENERATED_MARK, app
from compiler.diagnostics import CODES, Diagnostic, format_path
from compiler.pipeline import CompileResult, compile_descriptor, compile_tree

TESTS = Path(__file__).resolve().parent
BROKEN = TESTS / "fixtures" / "broken"
VALID = TESTS / "fixtures" / "valid" / "mini"
MDGEN = Path(sys.executable).parent / "mdgen"

FIXTURES = sorted(p.name for p in BROKEN.iterdir() if p.is_dir())

# Fixtures that make the compiler raise (fixture name -> xfail reason); none today.
CRASHES: dict[str, str] = {}
MISLOCATED: dict[str, str] = {}


def _xfail(names: dict[str, str]) -> list[object]:
    """Every fixture, with a strict xfail mark on those in ``names``."""
    return [
        pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=names[n])) if n in names else n
        for n in FIXTURES
    ]


@pytest.fixture
def in_broken(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run from the fixtures folder, so paths in messages (W001) are short and stable."""
    monkeypatch.chdir(BROKEN)
    return BROKEN


def compile_fixture(name: str) -> CompileResult:
    return compile_tree(Path(name))


def render(result: CompileResult) -> str:
    return "\n".join(d.render() for d in result.diagnostics)


def test_fixture_folders() -> None:
    assert set(CRASHES) | set(MISLOCATED) <= set(FIXTURES)
    for name in FIXTURES:
        assert list((BROKEN / name).glob("*.toml")), name


# -- the rendered output of each fixture -------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in FIXTURES if n not in CRASHES | MISLOCATED])
def test_rendered_diagnostics(name: str, snapshot: object, in_broken: Path) -> None:
    assert render(compile_fixture(name)) == snapshot


# The correct output of the MISLOCATED fixtures, written by hand. (Not syrupy snapshots, so that
# `pytest --snapshot-update` cannot overwrite them with today's wrong output.)
CORRECT_OUTPUT = {
    "toml_syntax": (
        "toml_syntax/toml_syntax.toml:5:6: error[E100]: invalid TOML: Expected '=' after a key "
        "in a key/value pair\n"
        '    5 | name "TOML syntax"\n'
        "      |      ^"
    ),
    "bad_key_name": (
        "bad_key_name/bad_key_name.toml:7:1: error[E103]: "
        "String should match pattern '^[a-z][a-z0-9_]*$'\n"
        "  at websocket.endpoints.Public\n"
        "    7 | [websocket.endpoints.Public]\n"
        "      | ^\n"
        "bad_key_name/bad_key_name.toml:17:21: error[E103]: "
        "String should match pattern '^[a-z][a-z0-9_]*$'\n"
        "  at channels.trades.let._tmp\n"
        "   17 | let = { d = 'data', _tmp = 'x' }\n"
        "      |                     ^"
    ),
}


@pytest.mark.parametrize("name", sorted(CORRECT_OUTPUT))
def test_rendered_diagnostics_of_formerly_mislocated_fixtures(name: str, in_broken: Path) -> None:
    assert render(compile_fixture(name)) == CORRECT_OUTPUT[name]


EXPECTED_CODES = {
    "bad_calls": ["E302", "E303", "E307", "E307", "E302", "E303", "E307"]
    + ["E303", "E303", "E303", "E302", "E302"],
    "bad_escape": ["E200"] * 3,
    "chained_compare": ["E200"] * 3,
    "bad_enum": ["E103"] * 6,
    "bad_key_name": ["E103", "E103"],
    "dsl_syntax": ["E200"] * 11,
    "id_mismatch": ["E309"],
    "inconsistent": ["E308"] * 10,
    "many": ["E103", "E103", "E102", "W001", "E200", "E306", "E304", "E309", "E300"]
    + ["E102", "E102", "E104"],
    "missing_field": ["E305"] * 3,
    "missing_key": ["E102"] * 3,
    "schema_version": ["E104"],
    "session_setup": ["E304", "E304", "E308", "E308", "E308", "E308"],
    "symbol_map": ["W001"],
    "toml_syntax": ["E100"],
    "undefined_ref": ["E304"] * 5,
    "unknown_field": ["E306"] * 3,
    "unknown_key": ["E101"] * 5,
    "unknown_name": ["E300"] * 4 + ["E301", "E301", "E300"],
}


def test_every_fixture_has_expected_codes() -> None:
    assert set(EXPECTED_CODES) == set(FIXTURES) - set(CRASHES)


@pytest.mark.parametrize("name", sorted(EXPECTED_CODES))
def test_codes_and_outputs(name: str, in_broken: Path) -> None:
    result = compile_fixture(name)
    assert [d.code for d in result.diagnostics] == EXPECTED_CODES[name]
    assert all(d.code in CODES for d in result.diagnostics)
    if result.errors:
        assert "__init__.py" not in result.files
    else:
        assert sorted(result.files) == ["__init__.py", f"{name}.py"]
    for d in result.diagnostics:
        assert d.severity == ("warning" if d.code.startswith("W") else "error")


# -- positions, checked independently of the snapshots ------------------------------------------


def test_dsl_syntax_carets_point_at_the_offending_character(in_broken: Path) -> None:
    result = compile_fixture("dsl_syntax")
    assert len(result.diagnostics) == 11
    for d in result.diagnostics:
        at = d.source_line[d.col - 1 :]
        if m := re.match(r"unexpected character '(.)'", d.message):
            assert at[0] == m.group(1), d.render()
        elif m := re.match(r"unexpected '(.+?)'", d.message):
            assert at.startswith(m.group(1)), d.render()
        else:
            assert d.message.startswith("unexpected end of expression")
            assert at[0] in "'\"", d.render()  # the closing quote of the string
        assert d.width == 1


@pytest.mark.parametrize(
    ("toml_path", "line", "col", "underlined"),
    [
        # multi-line basic string whose first newline is trimmed
        ("websocket.subscribe.message", 14, 19, ","),
        # basic string with \" escapes before the error
        ("websocket.ack.match", 18, 61, "$"),
        # multi-line basic string with line-ending backslashes and \u escapes
        ("websocket.error.match", 24, 26, "!"),
        # end of expression: the closing quote
        ("channels.trades.match", 29, 31, "'"),
        # a string inside an inline table
        ("channels.trades.let.d", 30, 19, "'"),
        # multi-line literal string
        ("channels.trades.fields.side", 38, 11, "@"),
        # \u0061 and \t escapes before the error
        ("channels.trades.fields.trade_id", 39, 29, "#"),
        ("channels.trades.fields.ts_exchange", 40, 28, "~"),
    ],
)
def test_dsl_syntax_positions(
    toml_path: str, line: int, col: int, underlined: str, in_broken: Path
) -> None:
    (d,) = [d for d in compile_fixture("dsl_syntax").diagnostics if d.toml_path == toml_path]
    assert (d.line, d.col) == (line, col)
    assert d.source_line[col - 1 : col - 1 + d.width] == underlined


@pytest.mark.parametrize(
    ("name", "toml_path", "underlined"),
    [
        ("unknown_name", "websocket.subscribe.message", "topic"),
        ("unknown_name", "rest.endpoints.ticker.params", "sym"),
        ("unknown_name", "channels.trades.topic", "rw"),
        ("unknown_name", "channels.trades.key", "channel"),
        ("unknown_name", "channels.trades.fields.price", "decimal(p)"),
        ("unknown_name", "channels.candles.topic", "$"),
        ("bad_calls", "channels.trades.fields.price", "dec(p, 2)"),
        ("bad_calls", "channels.book.fields.type", "types"),
        ("bad_calls", "channels.trades.topic", "bound(symbol)"),
    ],
)
def test_semantic_errors_underline_the_whole_expression(
    name: str, toml_path: str, underlined: str, in_broken: Path
) -> None:
    (d,) = [d for d in compile_fixture(name).diagnostics if d.toml_path == toml_path]
    assert d.source_line[d.col - 1 : d.col - 1 + d.width] == underlined


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("unknown_key", "colour"),
        ("unknown_key", "compresion"),
        ("unknown_key", "sequnce"),
        ("unknown_key", "websocket"),
        ("unknown_field", "volume"),
        ("unknown_field", "last_price"),
        ("unknown_field", "next_rate"),
        ("bad_calls", "it"),
        ("bad_calls", "m"),
    ],
)
def test_key_errors_point_at_the_key(name: str, key: str, in_broken: Path) -> None:
    found = [
        d
        for d in compile_fixture(name).diagnostics
        if d.toml_path.endswith("." + key) and d.code in ("E101", "E306", "E307")
    ]
    assert found
    for d in found:
        assert re.match(re.escape(key) + r"[ .]", d.source_line[d.col - 1 :]), d.render()


def test_unknown_header_table_points_at_its_header(in_broken: Path) -> None:
    # tomlpos puts the key of a [table] header at the header's '['
    (d,) = [d for d in compile_fixture("unknown_key").diagnostics if "keepalve" in d.message]
    assert (d.line, d.col, d.source_line) == (15, 1, "[websocket.keepalve]")


def test_toml_syntax_error_position(in_broken: Path) -> None:
    (d,) = compile_fixture("toml_syntax").diagnostics
    assert (d.code, d.line, d.col) == ("E100", 5, 6)
    assert d.source_line == 'name "TOML syntax"'


def test_invalid_key_name_position(in_broken: Path) -> None:
    diagnostics = compile_fixture("bad_key_name").diagnostics
    assert [(d.toml_path, d.line, d.col) for d in diagnostics] == [
        ("websocket.endpoints.Public", 7, 1),
        ("channels.trades.let._tmp", 17, 21),
    ]


def test_crlf_descriptor_reports_the_same_positions(tmp_path: Path, in_broken: Path) -> None:
    lf = render(compile_fixture("dsl_syntax"))
    folder = tmp_path / "dsl_syntax"
    folder.mkdir()
    text = (BROKEN / "dsl_syntax" / "dsl_syntax.toml").read_text(encoding="utf-8")
    (folder / "dsl_syntax.toml").write_bytes(text.replace("\n", "\r\n").encode())
    assert render(compile_tree(folder)) == lf


def test_unreadable_descriptor(tmp_path: Path) -> None:
    folder = tmp_path / "enc"
    folder.mkdir()
    (folder / "enc.toml").write_bytes(b'\xffschema = "1.4"\n')
    result = compile_tree(folder)
    (d,) = result.diagnostics
    assert (d.code, d.file, d.line, d.col) == ("E105", "enc/enc.toml", 1, 1)
    assert d.message.startswith("cannot read: ")
    assert result.files == {}


# -- every error of every descriptor, in one run, sorted ----------------------------------------


def test_all_errors_of_all_descriptors_in_one_run(in_broken: Path) -> None:
    result = compile_fixture("many")
    keys = [d.sort_key for d in result.diagnostics]
    assert keys == sorted(keys)
    files = [d.file for d in result.diagnostics]
    assert sorted(set(files)) == ["many/alpha.toml", "many/beta.toml", "many/delta.toml"] + [
        "many/epsilon.toml"
    ]
    # gamma.toml is valid and compiles, but without a registry: the CLI writes nothing
    assert sorted(result.files) == ["gamma.py"]
    # nothing is lost: the run holds exactly what each descriptor reports on its own
    alone = []
    for path in sorted((BROKEN / "many").glob("*.toml")):
        _, module, diagnostics = compile_descriptor(
            f"many/{path.name}", path.read_text(encoding="utf-8"), Path("many")
        )
        alone += diagnostics
        assert (module is None) == any(d.severity == "error" for d in diagnostics)
    assert sorted(alone, key=lambda d: d.sort_key) == result.diagnostics


def test_diagnostics_of_one_descriptor_need_sorting(in_broken: Path) -> None:
    # pydantic reports in model order and lowering in check order; the run sorts by position
    for name in ("alpha", "beta"):
        path = BROKEN / "many" / f"{name}.toml"
        _, _, diagnostics = compile_descriptor(
            f"many/{path.name}", path.read_text(encoding="utf-8"), Path("many")
        )
        lines = [d.line for d in diagnostics]
        assert lines != sorted(lines)


# -- Diagnostic.render and format_path ----------------------------------------------------------


def test_render_full() -> None:
    d = Diagnostic(
        "E300",
        "unknown name 'rw'",
        "x/a.toml",
        12,
        10,
        "channels.t.topic",
        "topic = 'rw + 1'",
        width=2,
    )
    assert d.render() == (
        "x/a.toml:12:10: error[E300]: unknown name 'rw'\n"
        "  at channels.t.topic\n"
        "   12 | topic = 'rw + 1'\n"
        "      |          ^^"
    )


def test_render_without_path_or_source() -> None:
    assert Diagnostic("E105", "cannot read", "x/a.toml", 1, 1).render() == (
        "x/a.toml:1:1: error[E105]: cannot read"
    )


def test_render_warning_and_wide_line_numbers() -> None:
    d = Diagnostic("W001", "missing", "a.toml", 123456, 3, "", "a = 'b'", severity="warning")
    assert d.render() == "a.toml:123456:3: warning[W001]: missing\n123456 | a = 'b'\n       |   ^"


def test_render_clips_the_caret_to_the_line() -> None:
    d = Diagnostic("E200", "m", "a.toml", 1, 5, "k", "k = 'ab'", width=40)
    assert d.render().splitlines()[-1] == "      |     ^^^^"
    # a position just past the end of the line still gets one caret
    d = Diagnostic("E200", "m", "a.toml", 1, 9, "k", "k = 'ab'", width=1)
    assert d.render().splitlines()[-1] == "      |         ^"


def test_render_tabs_keep_the_caret_under_its_character() -> None:
    d = Diagnostic("E200", "m", "a.toml", 3, 6, "k", "\tk = 'x'", width=1)
    *_, source, caret = d.render().splitlines()
    assert source == "    3 |  k = 'x'"
    assert caret.index("^") - len("      | ") == 5
    assert source[caret.index("^")] == "'"


def test_sort_key() -> None:
    a = Diagnostic("E300", "m", "a.toml", 2, 1)
    b = Diagnostic("E200", "m", "a.toml", 10, 1)
    c = Diagnostic("E100", "m", "b.toml", 1, 1)
    d = Diagnostic("E200", "m", "a.toml", 2, 1)
    assert sorted([c, b, a, d], key=lambda x: x.sort_key) == [d, a, b, c]


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ((), ""),
        (("schema",), "schema"),
        (("channels", "trades", "fields", "price"), "channels.trades.fields.price"),
        (("websocket", "endpoints", "public", "urls", 1), "websocket.endpoints.public.urls[1]"),
        (("a", 0, "b", 2, 3), "a[0].b[2][3]"),
        (("rest", "with-dash_and_under"), "rest.with-dash_and_under"),
        (("headers", "x.y"), 'headers."x.y"'),
        (("bad key",), '"bad key"'),
        (("",), '""'),
    ],
)
def test_format_path(path: tuple[str | int, ...], text: str) -> None:
    assert format_path(path) == text


def test_every_code_is_documented_in_codes() -> None:
    used = {c for codes in EXPECTED_CODES.values() for c in codes} | {"E105"}
    assert used <= set(CODES)
    assert all(re.fullmatch(r"[EW]\d{3}", c) for c in CODES)


# -- the command line ---------------------------------------------------------------------------

runner = CliRunner()


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _copy(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copytree(BROKEN / name, target)
    return target


@pytest.mark.parametrize("name", [n for n in FIXTURES if n not in CRASHES and n != "symbol_map"])
def test_validate_broken_exits_2_and_writes_nothing(name: str, tmp_path: Path) -> None:
    folder = _copy(name, tmp_path)
    before = _tree(tmp_path)
    result = runner.invoke(app, ["validate", str(folder)])
    assert result.exit_code == 2
    assert result.stdout == ""
    n = sum(1 for d in compile_tree(folder).diagnostics if d.severity == "error")
    summary = f"{n} error{'s' if n != 1 else ''}; nothing was written."
    assert result.stderr == render(compile_tree(folder)) + "\n\n" + summary + "\n"
    assert _tree(tmp_path) == before


def test_validate_with_only_a_warning_succeeds(tmp_path: Path) -> None:
    folder = _copy("symbol_map", tmp_path)
    result = runner.invoke(app, ["validate", str(folder)])
    assert result.exit_code == 0
    assert "warning[W001]" in result.stderr
    assert result.stderr.endswith("1 descriptors are valid.\n")
    assert not (tmp_path / "generated").exists()


@pytest.mark.parametrize("name", _xfail(CRASHES))
@pytest.mark.parametrize("command", ["validate", "compile"])
def test_no_traceback_for_any_broken_fixture(name: str, command: str, tmp_path: Path) -> None:
    folder = _copy(name, tmp_path)
    args = [command, str(folder)]
    if command == "compile":
        args += ["--out", str(tmp_path / "out")]
    result = runner.invoke(app, args)
    assert result.exception is None or isinstance(
        result.exception, SystemExit
    ), f"{type(result.exception).__name__}: {result.exception}"
    assert "Traceback" not in result.stderr
    assert result.exit_code in (0, 2)


@pytest.mark.parametrize("name", ["dsl_syntax", "chained_compare", "bad_escape"])
def test_no_traceback_from_the_real_command(name: str) -> None:
    proc = subprocess.run(
        [str(MDGEN), "validate", name],
        cwd=BROKEN,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Traceback" not in proc.stderr
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert re.search(r"^\d+ errors?; nothing was written\.$", proc.stderr, re.MULTILINE)


@pytest.mark.parametrize(
    ("name", "toml_path", "line", "col", "underlined"),
    [
        # non-associative comparisons, and input left over after a complete expression
        ("chained_compare", "channels.trades.match", 16, 28, "=="),
        ("chained_compare", "channels.trades.fields.side", 22, 16, "in"),
        ("chained_compare", "channels.trades.fields.trade_id", 23, 19, ")"),
        # a bad DSL escape inside a TOML literal string
        ("bad_escape", "channels.trades.fields.side", 22, 11, "\\q"),
        # ... inside a TOML basic string, where the DSL backslash is the TOML escape \\
        ("bad_escape", "channels.trades.fields.trade_id", 23, 18, "\\\\x41"),
        # a raw tab in a DSL string, made by the TOML escape \t
        ("bad_escape", "channels.trades.fields.ts_exchange", 24, 25, "\\t"),
    ],
)
def test_string_and_end_errors_positions(
    name: str, toml_path: str, line: int, col: int, underlined: str, in_broken: Path
) -> None:
    (d,) = [d for d in compile_fixture(name).diagnostics if d.toml_path == toml_path]
    assert (d.code, d.line, d.col) == ("E200", line, col)
    assert d.source_line[col - 1 :].startswith(underlined)


def test_missing_folder(tmp_path: Path) -> None:
    result = runner.invoke(app, ["validate", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert result.stderr == f"error: descriptor folder '{tmp_path / 'nope'}' does not exist\n"


# -- compile and compile --check ----------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, Path]:
    """A descriptor folder with one valid descriptor, and an output folder path."""
    descriptors = tmp_path / "mini"
    shutil.copytree(VALID, descriptors)
    return descriptors, tmp_path / "out"


def _compile(*args: str) -> object:
    return runner.invoke(app, ["compile", *args])


def test_compile_writes_modules(project: tuple[Path, Path]) -> None:
    descriptors, out = project
    result = _compile(str(descriptors), "--out", str(out))
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["__init__.py", "mini.py"]
    expected = compile_tree(descriptors).files
    for name, text in expected.items():
        assert (out / name).read_text(encoding="utf-8") == text
    assert result.stderr.splitlines() == [
        f"wrote {out / '__init__.py'}",
        f"wrote {out / 'mini.py'}",
        "2 written, 0 removed, 0 unchanged.",
    ]
    assert (out / "mini.py").read_text(encoding="utf-8").startswith(GENERATED_MARK)
    again = _compile(str(descriptors), "--out", str(out))
    assert again.exit_code == 0
    assert again.stderr == "0 written, 0 removed, 2 unchanged.\n"


def test_compile_default_output_is_beside_the_descriptors(project: tuple[Path, Path]) -> None:
    descriptors, _ = project
    result = _compile(str(descriptors))
    assert result.exit_code == 0, result.stderr
    assert (descriptors.parent / "generated" / "mini.py").is_file()


def test_compile_broken_writes_nothing(tmp_path: Path) -> None:
    folder = _copy("many", tmp_path)
    out = tmp_path / "out"
    result = _compile(str(folder), "--out", str(out))
    assert result.exit_code == 2
    assert not out.exists()
    out.mkdir()
    (out / "keep.py").write_text(GENERATED_MARK + " from old\n", encoding="utf-8")
    before = _tree(out)
    assert _compile(str(folder), "--out", str(out)).exit_code == 2
    assert _compile(str(folder), "--out", str(out), "--check").exit_code == 2
    assert _tree(out) == before


def test_check_in_sync(project: tuple[Path, Path]) -> None:
    descriptors, out = project
    assert _compile(str(descriptors), "--out", str(out)).exit_code == 0
    result = _compile(str(descriptors), "--out", str(out), "--check")
    assert result.exit_code == 0
    assert result.stdout == ""
    assert result.stderr == "2 generated files are up to date.\n"


def _assert_unified_diff(text: str, old_name: str, new_name: str) -> list[str]:
    lines = text.splitlines()
    assert lines[0] == f"--- {old_name}"
    assert lines[1] == f"+++ {new_name}"
    assert re.fullmatch(r"@@ -\d+(,\d+)? \+\d+(,\d+)? @@", lines[2])
    for line in lines[3:]:
        assert line[:1] in (" ", "+", "-", "\\") or re.match(r"@@ -\d", line), line
    return lines


def test_check_changed_file(project: tuple[Path, Path]) -> None:
    descriptors, out = project
    assert _compile(str(descriptors), "--out", str(out)).exit_code == 0
    module = out / "mini.py"
    good = module.read_text(encoding="utf-8")
    assert 'EXCHANGE = "mini"\n' in good
    module.write_text(good.replace('EXCHANGE = "mini"', 'EXCHANGE = "edited"'), encoding="utf-8")
    edited = module.read_text(encoding="utf-8")
    result = _compile(str(descriptors), "--out", str(out), "--check")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"changed: {module}",
        "generated code is out of date: run `mdgen compile`",
    ]
    lines = _assert_unified_diff(result.stdout, f"a/{module}", f"b/{module}")
    assert '-EXCHANGE = "edited"' in lines
    assert '+EXCHANGE = "mini"' in lines
    assert sum(1 for x in lines[2:] if x[:1] in "+-") == 2
    assert module.read_text(encoding="utf-8") == edited  # --check writes nothing


def test_check_missing_file(project: tuple[Path, Path]) -> None:
    descriptors, out = project
    assert _compile(str(descriptors), "--out", str(out)).exit_code == 0
    (out / "mini.py").unlink()
    result = _compile(str(descriptors), "--out", str(out), "--check")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == f"missing: {out / 'mini.py'}"
    lines = _assert_unified_diff(result.stdout, f"a/{out / 'mini.py'}", f"b/{out / 'mini.py'}")
    assert lines[2].startswith("@@ -0,0 +1,")
    assert all(x.startswith("+") for x in lines[3:])
    assert not (out / "mini.py").exists()


def test_check_missing_output_folder(project: tuple[Path, Path]) -> None:
    descriptors, out = project
    result = _compile(str(descriptors), "--out", str(out), "--check")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[:2] == [
        f"missing: {out / '__init__.py'}",
        f"missing: {out / 'mini.py'}",
    ]
    assert not out.exists()


def test_check_stale_file(project: tuple[Path, Path]) -> None:
    descriptors, out = project
    assert _compile(str(descriptors), "--out", str(out)).exit_code == 0
    stale = out / "gone.py"
    stale.write_text(GENERATED_MARK + " from descriptors/gone.toml. DO NOT EDIT.\n", "utf-8")
    handwritten = out / "notes.py"
    handwritten.write_text("# written by hand\n", encoding="utf-8")
    result = _compile(str(descriptors), "--out", str(out), "--check")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"stale: {stale} (no descriptor produces it)",
        "generated code is out of date: run `mdgen compile`",
    ]
    assert stale.exists()
    # compiling removes the stale module and leaves the hand-written one alone
    result = _compile(str(descriptors), "--out", str(out))
    assert result.exit_code == 0
    assert result.stderr.splitlines() == [f"removed {stale}", "0 written, 1 removed, 2 unchanged."]
    assert not stale.exists()
    assert handwritten.exists()
    assert _compile(str(descriptors), "--out", str(out), "--check").exit_code == 0
