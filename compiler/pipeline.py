"""The compiler as a pure function: descriptor texts in, generated files and diagnostics out."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic

from compiler.diagnostics import Diagnostic, format_path
from compiler.emit import render_module, render_registry
from compiler.lower import PathProblem, lower
from compiler.schema import SCHEMA_VERSION, Descriptor
from compiler.tomlpos import Pos, TomlIndex

TomlPath = tuple[str | int, ...]


@dataclass
class CompileResult:
    """Generated files (path relative to the output folder -> text) and every diagnostic."""

    files: dict[str, str] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]


class _Locator:
    """Turns TOML paths (and offsets inside DSL strings) into diagnostics."""

    def __init__(self, display: str, text: str) -> None:
        self.display = display
        self.lines = text.splitlines()
        self.index = TomlIndex(text)

    def diagnostic(self, problem: PathProblem) -> Diagnostic:
        pos: Pos | None = None
        width = 1
        if problem.start is not None:
            pos = self.index.string_char(problem.path, problem.start)
            end = problem.end if problem.end is not None else problem.start + 1
            end_pos = self.index.string_char(problem.path, max(end - 1, problem.start))
            if pos is not None and end_pos is not None and end_pos.line == pos.line:
                width = end_pos.col - pos.col + 1
        if pos is None and problem.at_key:
            pos = self.index.key(problem.path)
        if pos is None:
            pos = self.index.value(problem.path) or self.index.nearest(problem.path)
        source = self.lines[pos.line - 1] if 0 < pos.line <= len(self.lines) else ""
        return Diagnostic(
            code=problem.code,
            message=problem.message,
            file=self.display,
            line=pos.line,
            col=pos.col,
            toml_path=format_path(problem.path),
            source_line=source,
            width=width,
            severity="warning" if problem.severity == "warning" else "error",
        )


def _schema_problems(exc: pydantic.ValidationError, data: dict[str, Any]) -> list[PathProblem]:
    problems = []
    for err in exc.errors():
        loc: TomlPath = tuple(p for p in err["loc"] if isinstance(p, str | int))
        kind = err["type"]
        if kind == "extra_forbidden":
            problems.append(PathProblem(loc, "E101", f"unknown key '{loc[-1]}'", at_key=True))
        elif kind == "missing":
            problems.append(PathProblem(loc, "E102", f"missing required key '{loc[-1]}'"))
        elif loc == ("schema",):
            problems.append(
                PathProblem(
                    loc,
                    "E104",
                    f"schema {data.get('schema')!r} is not supported; this compiler reads "
                    f'schema = "{SCHEMA_VERSION}"',
                )
            )
        else:
            problems.append(PathProblem(loc, "E103", err["msg"]))
    return problems


def _toml_error(display: str, text: str, exc: tomllib.TOMLDecodeError) -> Diagnostic:
    line = getattr(exc, "lineno", 1) or 1
    col = getattr(exc, "colno", 1) or 1
    message = getattr(exc, "msg", str(exc))
    lines = text.splitlines()
    source = lines[line - 1] if 0 < line <= len(lines) else ""
    return Diagnostic("E100", f"invalid TOML: {message}", display, line, col, "", source)


def compile_descriptor(
    display: str, text: str, source_dir: Path
) -> tuple[str | None, str | None, list[Diagnostic]]:
    """Compile one descriptor: (exchange id, module text, diagnostics)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return None, None, [_toml_error(display, text, exc)]
    locator = _Locator(display, text)
    try:
        desc = Descriptor.model_validate(data)
    except pydantic.ValidationError as exc:
        return None, None, [locator.diagnostic(p) for p in _schema_problems(exc, data)]
    ir, problems = lower(desc, display, source_dir)
    expected_id = Path(display).stem
    if desc.exchange.id != expected_id:
        problems.append(
            PathProblem(
                ("exchange", "id"),
                "E309",
                f"exchange id '{desc.exchange.id}' must match the file name '{expected_id}'",
            )
        )
    diagnostics = [locator.diagnostic(p) for p in problems]
    if any(d.severity == "error" for d in diagnostics):
        return desc.exchange.id, None, diagnostics
    return desc.exchange.id, render_module(ir), diagnostics


def compile_tree(source_dir: Path) -> CompileResult:
    """Compile every ``*.toml`` in ``source_dir`` (sorted); paths in output are module files."""
    result = CompileResult()
    modules: list[tuple[str, str]] = []
    label = source_dir.resolve().name
    files = sorted(source_dir.glob("*.toml"))
    for path in files:
        display = f"{label}/{path.name}"
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            result.diagnostics.append(Diagnostic("E105", f"cannot read: {exc}", display, 1, 1))
            continue
        exchange_id, module, diagnostics = compile_descriptor(display, text, source_dir)
        result.diagnostics.extend(diagnostics)
        if exchange_id is not None and module is not None:
            modules.append((exchange_id, exchange_id))
            result.files[f"{exchange_id}.py"] = module
    result.diagnostics.sort(key=lambda d: d.sort_key)
    if not result.errors:
        result.files["__init__.py"] = render_registry(label, modules)
    return result
