"""Shared fixtures: paths, generated-module loading, Python-file snapshots."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import pytest
from syrupy.assertion import SnapshotAssertion
from syrupy.extensions.single_file import SingleFileSnapshotExtension, WriteMode

from compiler.pipeline import compile_descriptor

ROOT = Path(__file__).resolve().parents[1]
FEATURES = ROOT / "tests" / "fixtures" / "features"


class PythonSnapshotExtension(SingleFileSnapshotExtension):
    """Snapshots stored as ``.py`` files, so reviewers read generated code as Python."""

    _write_mode = WriteMode.TEXT
    file_extension = "py"


@pytest.fixture
def py_snapshot(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    return snapshot.use_extension(PythonSnapshotExtension)


def compile_fixture(path: Path) -> str:
    """Compile one fixture descriptor, failing the test with rendered diagnostics on error."""
    _, text, diagnostics = compile_descriptor(
        f"features/{path.name}", path.read_text(), path.parent
    )
    errors = [d.render() for d in diagnostics if d.severity == "error"]
    assert text is not None and not errors, "\n".join(errors)
    return text


def load_module(name: str, source: str) -> types.ModuleType:
    """Execute generated source as a fresh module (not registered in sys.modules)."""
    module = types.ModuleType(name)
    exec(compile(source, f"<generated {name}>", "exec"), module.__dict__)
    return module


def replay_clean(exchange: str, capture: Path) -> list[dict[str, Any]]:
    """Every record ``mdgen replay`` makes of ``capture``, asserting no frame was left
    unrecognized or malformed (the failure lists the first problems)."""
    from runtime.registry import load_spec
    from runtime.replay import replay_lines

    with capture.open("rb") as lines:
        records, report = replay_lines(load_spec(exchange), lines)
        out = [record for _, record in records]
    problems = "\n".join(f"line {p.line}: {p.reason}: {p.text}" for p in report.samples)
    assert report.unrecognized == 0 and report.malformed == 0, problems
    return out
