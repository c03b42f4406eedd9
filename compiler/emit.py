"""Render IR through jinja2 templates and format the result with black (pinned, fixed mode)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import black
import jinja2
from black.mode import TargetVersion

from compiler.lower import ModuleIR
from runtime.spec import API_VERSION

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
_MODE = black.Mode(target_versions={TargetVersion.PY311}, line_length=100)


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
    )
    env.filters["pyrepr"] = repr
    env.filters["docstring"] = _docstring_text
    env.filters["oneline"] = lambda text: " ".join(str(text).split())
    return env


def _docstring_text(text: str) -> str:
    """Text safe inside a triple-quoted docstring."""
    return " ".join(text.replace("\\", "\\\\").replace('"', '\\"').split())


def format_python(source: str) -> str:
    """Format with black in-process; its output is part of what is committed."""
    return black.format_str(source, mode=_MODE)


def render(template: str, **context: Any) -> str:
    return format_python(_environment().get_template(template).render(**context))


def render_module(ir: ModuleIR) -> str:
    """The generated module for one exchange."""
    return render("exchange.py.jinja", ir=ir, api_version=API_VERSION)


def render_registry(source_dir: str, modules: list[tuple[str, str]]) -> str:
    """``generated/__init__.py``: exchange id -> module, sorted."""
    return render("registry.py.jinja", source_dir=source_dir, modules=sorted(modules))
