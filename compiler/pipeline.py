"""The compiler as a pure function: descriptor texts in, generated files and diagnostics out."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic
from black.parsing import InvalidInput
from pydantic_core import ErrorDetails

from compiler.diagnostics import Diagnostic
from compiler.emit import render_module, render_registry
from compiler.locate import (
    LocatedProblem,
    Locator,
    Problem,
    SchemaCodes,
    schema_problems,
    toml_error,
)
from compiler.lower import lower
from compiler.schema import SCHEMA_VERSION, Descriptor

TomlPath = tuple[str | int, ...]


@dataclass
class CompileResult:
    """Generated files (path relative to the output folder -> text) and every diagnostic."""

    files: dict[str, str] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]


_DESCRIPTOR_CODES = SchemaCodes(unknown_key="E101", missing_key="E102", invalid_value="E103")


def _schema_problems(exc: pydantic.ValidationError, data: dict[str, Any]) -> list[LocatedProblem]:
    def schema_version(loc: TomlPath, err: ErrorDetails) -> list[LocatedProblem] | None:
        if loc != ("schema",) or err["type"] in ("extra_forbidden", "missing"):
            return None
        message = (
            f"schema {data.get('schema')!r} is not supported; this compiler reads "
            f'schema = "{SCHEMA_VERSION}"'
        )
        return [Problem(loc, "E104", message)]

    return schema_problems(exc, _DESCRIPTOR_CODES, schema_version)


def compile_descriptor(
    display: str, text: str, source_dir: Path
) -> tuple[str | None, str | None, list[Diagnostic]]:
    """Compile one descriptor: (exchange id, module text, diagnostics)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return None, None, [toml_error(display, text, exc, "E100")]
    locator = Locator(display, text)
    try:
        desc = Descriptor.model_validate(data)
    except pydantic.ValidationError as exc:
        return None, None, [locator.diagnostic(p) for p in _schema_problems(exc, data)]
    ir, problems = lower(desc, display, source_dir)
    expected_id = Path(display).stem
    if desc.exchange.id != expected_id:
        problems.append(
            Problem(
                ("exchange", "id"),
                "E309",
                f"exchange id '{desc.exchange.id}' must match the file name '{expected_id}'",
            )
        )
    diagnostics = [locator.diagnostic(p) for p in problems]
    if any(d.severity == "error" for d in diagnostics):
        return desc.exchange.id, None, diagnostics
    try:
        module = render_module(ir)
    except InvalidInput as exc:
        internal = Problem(
            ("exchange", "id"), "E900", f"internal compiler error: {str(exc).splitlines()[0]}"
        )
        return desc.exchange.id, None, [*diagnostics, locator.diagnostic(internal)]
    return desc.exchange.id, module, diagnostics


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
