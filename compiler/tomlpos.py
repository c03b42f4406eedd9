"""Source positions for TOML documents.

``tomllib`` reports no positions, so :class:`TomlIndex` re-scans a document (one that tomllib
already accepted) and records where every key and value starts. Diagnostics can then point at
``file:line:col`` -- down to a single character inside a string value
(:meth:`TomlIndex.string_char`).

Paths mirror the parsed data: table keys are ``str``, array indices are ``int``. A path is found
whatever the spelling: ``[a.b]`` headers, dotted keys, inline tables, ``[[a]]`` arrays of tables
(nested ones too) and inline arrays.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass

__all__ = ["Pos", "TomlIndex", "TomlPath"]

TomlPath = tuple[str | int, ...]

_WS = " \t"
_WS_NL = " \t\r\n"
_BARE_KEY = re.compile(r"[A-Za-z0-9_\-\u0080-\U0010ffff]+")  # TOML 1.0 set, plus non-ASCII
_SCALAR = re.compile(r"[^,\]}#\r\n]*")  # numbers, booleans, dates (which may contain a space)
_HEX = frozenset("0123456789abcdefABCDEF")
_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\"}
_ESCAPES["e"] = "\x1b"  # TOML 1.1; harmless for 1.0 documents
_HEX_ESCAPES = {"u": 4, "U": 8, "x": 2}  # \xHH is TOML 1.1
_MAX_DEPTH = 100  # nesting of arrays / inline tables we follow (keeps recursion bounded)


@dataclass(frozen=True)
class Pos:
    """A source position: 1-based line and column; columns count characters, not bytes."""

    line: int
    col: int


@dataclass(frozen=True)
class _Decoded:
    """A decoded string value: its text and where each character came from."""

    text: str
    offsets: tuple[int, ...]  # source offset of each decoded character
    close: int  # source offset of the closing delimiter
    end: int  # source offset just past the closing delimiter


def _skip(s: str, i: int, chars: str) -> int:
    """Index of the first character at or after ``i`` that is not in ``chars``."""
    n = len(s)
    while i < n and s[i] in chars:
        i += 1
    return i


def _decode_string(s: str, start: int) -> _Decoded | None:
    """Decode the TOML string (any of the four kinds) whose opening quote is at ``start``.

    Follows TOML 1.0 and tomllib: CRLF inside multi-line strings decodes to a single ``\\n``.
    Returns None if the string is malformed or unterminated.
    """
    n = len(s)
    quote = s[start : start + 1]
    if quote not in ('"', "'"):
        return None
    multi = s.startswith(quote * 3, start)
    chars: list[str] = []
    offsets: list[int] = []
    i = start + (3 if multi else 1)
    if multi:  # a newline right after the opening delimiter is trimmed
        if s.startswith("\n", i):
            i += 1
        elif s.startswith("\r\n", i):
            i += 2
    while i < n:
        c = s[i]
        if c == quote:
            if not multi:
                return _Decoded("".join(chars), tuple(offsets), i, i + 1)
            run = _skip(s, i, quote) - i
            content = run if run < 3 else run - 3  # up to two quotes may precede the closer
            chars.extend(quote * content)
            offsets.extend(range(i, i + content))
            if run >= 3:
                return _Decoded("".join(chars), tuple(offsets), i + content, i + run)
            i += run
        elif c == "\\" and quote == '"':
            if multi:  # line-ending backslash: drop the newline and all following whitespace
                j = _skip(s, i + 1, _WS)
                if s.startswith("\n", j) or s.startswith("\r\n", j):
                    i = _skip(s, j, _WS_NL)
                    continue
            esc = s[i + 1 : i + 2]
            width = _HEX_ESCAPES.get(esc, 0)
            if esc in _ESCAPES:
                chars.append(_ESCAPES[esc])
            elif width:
                digits = s[i + 2 : i + 2 + width]
                if len(digits) != width or not _HEX.issuperset(digits):
                    return None
                code = int(digits, 16)
                if code > 0x10FFFF:
                    return None
                chars.append(chr(code))
            else:
                return None
            offsets.append(i)
            i += 2 + width
        elif c in "\r\n":
            if not multi:
                return None
            chars.append("\n")  # CRLF maps to its '\r'
            offsets.append(i)
            i += 2 if s.startswith("\r\n", i) else 1
        else:
            chars.append(c)
            offsets.append(i)
            i += 1
    return None


class _Scanner:
    """One pass over a TOML document, filling the position tables of a :class:`TomlIndex`."""

    def __init__(self, s: str, index: TomlIndex) -> None:
        self.s = s
        self.n = len(s)
        self.i = 1 if s.startswith("\ufeff") else 0
        self.values = index._values
        self.keys = index._keys
        self.strings = index._strings
        self.aot: dict[TomlPath, int] = {}  # resolved array-of-tables path -> blocks seen so far

    def run(self) -> None:
        """Scan the whole document, statement by statement."""
        table: TomlPath = ()
        while True:
            self._skip_blank()
            if self.i >= self.n:
                return
            if self.s[self.i] == "[":
                header = self._header()
                if header is not None:
                    table = header
            else:
                self._keyval(table, 0)
            self._end_line()

    # -- lexical helpers -------------------------------------------------------------------

    def _peek(self) -> str:
        return self.s[self.i : self.i + 1]

    def _skip_blank(self) -> None:
        """Skip whitespace, newlines and comments."""
        while True:
            self.i = _skip(self.s, self.i, _WS_NL)
            if self._peek() != "#":
                return
            self._to_eol()

    def _to_eol(self) -> None:
        """Move to the end of the current line (its newline is not consumed)."""
        eol = self.s.find("\n", self.i)
        self.i = self.n if eol < 0 else eol

    def _end_line(self) -> None:
        """Finish the current line (trailing comment; anything unexpected is skipped)."""
        self.i = _skip(self.s, self.i, _WS)
        if self._peek() == "#":
            self._to_eol()
        eol = self.s.find("\n", self.i)
        self.i = self.n if eol < 0 else eol + 1

    def _simple_key(self) -> tuple[str, int] | None:
        """A bare or quoted key: (decoded name, offset)."""
        s, i = self.s, self.i
        if s[i : i + 1] in ('"', "'"):
            if s.startswith(s[i] * 3, i):
                return None
            decoded = _decode_string(s, i)
            if decoded is None:
                return None
            self.i = decoded.end
            return decoded.text, i
        m = _BARE_KEY.match(s, i)
        if m is None:
            return None
        self.i = m.end()
        return m.group(), i

    def _key(self) -> list[tuple[str, int]] | None:
        """A dotted key: its segments as (name, offset)."""
        segments: list[tuple[str, int]] = []
        while True:
            segment = self._simple_key()
            if segment is None:
                return None
            segments.append(segment)
            j = _skip(self.s, self.i, _WS)
            if self.s[j : j + 1] != ".":
                return segments
            self.i = _skip(self.s, j + 1, _WS)

    # -- recording -------------------------------------------------------------------------

    def _implicit(self, path: TomlPath, key: int, value: int) -> None:
        """Record a table created implicitly (first mention wins)."""
        self.keys.setdefault(path, key)
        self.values.setdefault(path, value)

    # -- grammar ---------------------------------------------------------------------------

    def _header(self) -> TomlPath | None:
        """A ``[table]`` or ``[[array.of.tables]]`` header; returns the resolved table path."""
        start = self.i
        aot = self.s.startswith("[[", start)
        self.i = _skip(self.s, start + (2 if aot else 1), _WS)
        segments = self._key()
        if segments is None:
            return None
        self.i = _skip(self.s, self.i, _WS)
        closer = "]]" if aot else "]"
        if not self.s.startswith(closer, self.i):
            return None
        self.i += len(closer)
        path: TomlPath = ()
        for name, offset in segments[:-1]:
            path += (name,)
            self._implicit(path, offset, start)
            if path in self.aot:  # descend into the latest block of that array of tables
                path += (self.aot[path] - 1,)
        path += (segments[-1][0],)
        if aot:
            count = self.aot.get(path, 0)
            self.aot[path] = count + 1
            self._implicit(path, start, start)
            path += (count,)
        self.keys[path] = self.values[path] = start
        return path

    def _keyval(self, table: TomlPath, depth: int) -> bool:
        """``key = value`` inside ``table``; False if it is not one."""
        segments = self._key()
        if segments is None:
            return False
        self.i = _skip(self.s, self.i, _WS)
        if self._peek() != "=":
            return False
        self.i = _skip(self.s, self.i + 1, _WS)
        path = table
        for name, offset in segments[:-1]:
            path += (name,)
            self._implicit(path, offset, offset)
        name, offset = segments[-1]
        path += (name,)
        self.keys[path] = offset
        self._value(path, depth)
        return True

    def _value(self, path: TomlPath, depth: int) -> None:
        """A value of any kind starting at the current offset."""
        s, start = self.s, self.i
        c = self._peek()
        if not c or c in "\r\n#,]}=" or depth > _MAX_DEPTH:
            return
        self.values[path] = start
        if c in "\"'":
            decoded = _decode_string(s, start)
            if decoded is None:
                self._to_eol()  # give up on the rest of the line
                return
            self.strings[path] = start
            self.i = decoded.end
        elif c == "[":
            self._array(path, depth)
        elif c == "{":
            self._inline_table(path, depth)
        else:
            m = _SCALAR.match(s, start)
            self.i = m.end() if m else start + 1

    def _array(self, path: TomlPath, depth: int) -> None:
        self.i += 1
        index = 0
        while True:
            self._skip_blank()
            if self._peek() == "]":
                self.i += 1
                return
            element = path + (index,)
            before = self.i
            self._value(element, depth + 1)
            if self.i == before:
                return
            if element in self.values:
                self.keys[element] = self.values[element]
            index += 1
            self._skip_blank()
            if self._peek() != ",":
                if self._peek() == "]":
                    self.i += 1
                return
            self.i += 1

    def _inline_table(self, path: TomlPath, depth: int) -> None:
        self.i += 1
        while True:
            self._skip_blank()  # newlines are tolerated (TOML 1.1)
            if self._peek() == "}":
                self.i += 1
                return
            if not self._keyval(path, depth + 1):
                return
            self._skip_blank()
            if self._peek() != ",":
                if self._peek() == "}":
                    self.i += 1
                return
            self.i += 1


class TomlIndex:
    """Positions of every key and value in one TOML document."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._values: dict[TomlPath, int] = {}
        self._keys: dict[TomlPath, int] = {}
        self._strings: dict[TomlPath, int] = {}  # path -> offset of the opening quote
        self._decoded: dict[TomlPath, _Decoded | None] = {}
        self._line_starts = [0]
        self._line_starts.extend(m.end() for m in re.finditer("\n", text))
        self._bom = text.startswith("\ufeff")
        self.complete = True
        """False when the scanner stopped early on input it does not understand (positions
        found so far are kept; lookups past that point return None and callers fall back)."""
        try:
            _Scanner(text, self).run()
        except (IndexError, ValueError, KeyError, RecursionError):
            self.complete = False

    def value(self, path: tuple[str | int, ...]) -> Pos | None:
        """Where the value at ``path`` starts; None when not found.

        That is the opening quote of a string, ``[`` of an array, ``{`` of an inline table, the
        first character of a scalar, or the ``[`` of the header defining a table.
        """
        return self._pos(self._values.get(tuple(path)))

    def key(self, path: tuple[str | int, ...]) -> Pos | None:
        """Where the key of the last element of ``path`` starts; None when not found.

        For header tables (and ``[[array]]`` blocks) this is the header's ``[``; for inline array
        elements it is the element itself.
        """
        return self._pos(self._keys.get(tuple(path)))

    def nearest(self, path: tuple[str | int, ...]) -> Pos:
        """Best effort: the value (else key) of the longest existing prefix of ``path``."""
        for end in range(len(path), 0, -1):
            pos = self.value(path[:end]) or self.key(path[:end])
            if pos is not None:
                return pos
        return Pos(1, 1)

    def string_char(self, path: tuple[str | int, ...], offset: int) -> Pos | None:
        """Source position of character ``offset`` (0-based) of the decoded string at ``path``.

        ``offset == len(decoded)`` maps to the closing quote. An escape sequence is one decoded
        character located at its backslash. None if there is no such string or offset.
        """
        path = tuple(path)
        start = self._strings.get(path)
        if start is None:
            return None
        if path not in self._decoded:
            self._decoded[path] = _decode_string(self._text, start)
        decoded = self._decoded[path]
        if decoded is None or not 0 <= offset <= len(decoded.offsets):
            return None
        if offset == len(decoded.offsets):
            return self._pos(decoded.close)
        return self._pos(decoded.offsets[offset])

    def _pos(self, offset: int | None) -> Pos | None:
        if offset is None:
            return None
        line = bisect_right(self._line_starts, offset)
        col = offset - self._line_starts[line - 1] + 1
        if line == 1 and self._bom:
            col -= 1
        return Pos(line, col)
