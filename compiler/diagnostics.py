"""Diagnostics: error codes, positions and caret rendering."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]

CODES: dict[str, str] = {
    "E100": "the file is not valid TOML",
    "E101": "unknown key",
    "E102": "missing required key",
    "E103": "invalid value",
    "E104": "unsupported descriptor schema version",
    "E105": "the file cannot be read",
    "E200": "DSL syntax error",
    "E300": "unknown name",
    "E301": "unknown function",
    "E302": "wrong number of arguments",
    "E303": "construct not allowed here",
    "E304": "reference to something the descriptor does not define",
    "E305": "missing record field for the channel kind",
    "E306": "record field not defined for the channel kind",
    "E307": "invalid variable name",
    "E308": "inconsistent settings",
    "E309": "exchange id does not match the file name, or is used twice",
    "W001": "symbol_map_file does not exist",
    "E900": "internal compiler error (the generated code does not parse): please report it",
    "E400": "the collector config is not valid TOML",
    "E401": "unknown key in the collector config",
    "E402": "missing required key in the collector config",
    "E403": "invalid value in the collector config or on the command line",
    "E404": "the collector config file cannot be read",
    "E405": "invalid instance name",
    "E406": "not a canonical symbol",
    "E407": "invalid shard",
    "E408": "unknown exchange, or its generated module cannot be loaded",
    "E409": "the exchange has no such channel",
    "E410": "descriptor_path does not exist or names another exchange's descriptor",
    "E411": "inconsistent collector settings",
    "E412": "the environment variable named by sink.uri_env is unset or not a MongoDB URI",
    "E413": "nothing to collect: no instance, or no symbols for an exchange",
    "E414": "a symbol map file cannot be read, is not TOML, or has an entry that is not "
    'raw = "CANONICAL"',
    "E415": "a private channel is selected and a credential environment variable is unset",
    "W400": "an instance's symbol_map_file does not exist",
    "W401": "a symbol or channel is listed twice",
}
"""Every diagnostic code; docs/errors.md explains each one."""


@dataclass(frozen=True)
class Diagnostic:
    """One problem in one descriptor, located to a line and column (both 1-based)."""

    code: str
    message: str
    file: str
    line: int
    col: int
    toml_path: str = ""
    source_line: str = ""
    width: int = 1
    severity: Severity = "error"

    def render(self) -> str:
        """``file:line:col: error[CODE]: message``, the TOML path and a caret under the spot."""
        head = f"{self.file}:{self.line}:{self.col}: {self.severity}[{self.code}]: {self.message}"
        lines = [head]
        if self.toml_path:
            lines.append(f"  at {self.toml_path}")
        if self.source_line:
            gutter = f"{self.line:>5} | "
            text = self.source_line.expandtabs(1)
            lines.append(gutter + text)
            width = max(1, min(self.width, len(text) - self.col + 1))
            lines.append(" " * (len(gutter) - 2) + "| " + " " * (self.col - 1) + "^" * width)
        return "\n".join(lines)

    @property
    def sort_key(self) -> tuple[str, int, int, str]:
        return (self.file, self.line, self.col, self.code)


def format_path(path: tuple[str | int, ...]) -> str:
    """TOML-style dotted path: ``channels.trades.fields.price``, ``urls[1]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            bare = part.replace("_", "").replace("-", "").isalnum()
            piece = part if bare else f'"{part}"'
            out += ("." if out else "") + piece
    return out
