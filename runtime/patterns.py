"""Text templates with ``{name}`` placeholders: matched against strings and filled from values.

Used by symbol patterns (``[symbols] patterns``) and by REST paths with placeholders
(``path = "/api/v2/order_book/{pair}"``). A placeholder is ``{name}`` or ``{name:regex}``;
``name`` is an identifier, and ``regex`` (no braces inside, no groups) restricts what it matches.
Without a regex a placeholder matches ``[A-Za-z0-9.]+``: letters, digits and dots, never a
separator such as ``-``, ``_``, ``/`` or ``:``. Everything else is literal text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Template", "compile_template", "placeholders"]

DEFAULT_PART = r"[A-Za-z0-9.]+"

_PLACEHOLDER = re.compile(r"\{([^{}:]*)(?::([^{}]*))?\}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Template:
    """One compiled template: ``match`` gives the placeholder values, ``fill`` the text."""

    text: str
    names: tuple[str, ...]
    regex: re.Pattern[str]
    parts: Mapping[str, re.Pattern[str]]
    """Per placeholder: what one value must fully match."""

    def match(self, value: str) -> dict[str, str] | None:
        """Placeholder values when ``value`` fits the template (case-insensitive), else None."""
        m = self.regex.fullmatch(value)
        return None if m is None else m.groupdict()

    def accepts(self, name: str, value: str) -> bool:
        """Does ``value`` fit placeholder ``name`` (its regex, or the default part)?"""
        return self.parts[name].fullmatch(value) is not None

    def fill(self, values: Mapping[str, Any]) -> str:
        """The template with each placeholder replaced by ``str(values[name])``."""
        return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), self.text)


def placeholders(text: str) -> list[str]:
    """Placeholder names of ``text`` in order; ValueError for a malformed placeholder."""
    return list(compile_template(text).names)


def compile_template(text: str) -> Template:
    """Compile ``text``; ValueError names what is wrong with it."""
    names: list[str] = []
    parts: dict[str, re.Pattern[str]] = {}
    regex = ""
    pos = 0
    for m in _PLACEHOLDER.finditer(text):
        literal = text[pos : m.start()]
        if "{" in literal or "}" in literal:
            raise ValueError(f"unbalanced brace in template {text!r}")
        regex += re.escape(literal)
        name, part = m.group(1), m.group(2)
        if not _NAME.fullmatch(name):
            raise ValueError(f"bad placeholder name {name!r} in template {text!r}")
        if name in parts:
            raise ValueError(f"placeholder {{{name}}} appears twice in template {text!r}")
        source = part if part else DEFAULT_PART
        try:
            compiled = re.compile(source, re.IGNORECASE)
        except re.error as exc:
            raise ValueError(f"bad regex for placeholder {{{name}}} in {text!r}: {exc}") from None
        if compiled.groups:
            raise ValueError(f"the regex of placeholder {{{name}}} in {text!r} has groups")
        names.append(name)
        parts[name] = compiled
        regex += f"(?P<{name}>{source})"
        pos = m.end()
    tail = text[pos:]
    if "{" in tail or "}" in tail:
        raise ValueError(f"unbalanced brace in template {text!r}")
    regex += re.escape(tail)
    return Template(text, tuple(names), re.compile(regex, re.IGNORECASE), parts)
