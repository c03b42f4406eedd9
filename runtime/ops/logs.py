"""Structured logging for ``mdgen run``: JSON lines or readable text, redaction, rate limits.

:func:`configure_logging` installs one handler on the root logger. Its format is JSON lines
when stderr is not a terminal and readable text when it is (``log_format`` overrides). Every
line passes through a :class:`Redactor` (credentials in URLs, ``key=value`` pairs that look
secret, and the values of secret-looking environment variables are replaced by
``<redacted>``) and through a :class:`RepeatFilter`, which lets a recurring warning or error
through a few times and then once per interval, with how many similar lines were suppressed.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import IO, Any, Literal

import orjson

from runtime.signing import REDACTED

LogFormat = Literal["auto", "json", "text"]

__all__ = [
    "JsonFormatter",
    "LogFormat",
    "Redactor",
    "RepeatFilter",
    "TextFormatter",
    "configure_logging",
    "redact",
    "register_secret",
]

_SECRET_ENV = re.compile(r"SECRET|PASSW|PASSPHRASE|TOKEN|API_?KEY|PRIVATE|CREDENTIAL|_URI$|_DSN$")
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/@\s]+)@")
_SECRET_PAIR = re.compile(
    r"(?i)(?P<name>api[-_]?key|apikey|secret|passphrase|password|passwd|signature|sign|token"
    r"|access[-_]?key|private[-_]?key)(?P<sep>\"?'?\s*[:=]\s*\"?'?)(?P<value>[^\s\"'&,;}\]]+)"
)
_TEXT_HIDDEN = frozenset(
    {"event", "scope", "from", "to", "healthy", "reasons", "exchange", "connection"}
)
"""Structured fields the text format leaves out (the message already says them)."""
_MIN_SECRET = 6  # shorter environment values are not treated as secrets (too many false hits)

# Attributes every LogRecord has; anything else came from ``extra=`` and is logged as a field.
_STANDARD = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)


class Redactor:
    """Replaces credentials in text: known secret values, URL user-info, secret-looking pairs."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        self._lock = threading.Lock()
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str | None) -> None:
        """Never print ``secret`` (values shorter than 6 characters are ignored)."""
        if secret and len(secret) >= _MIN_SECRET:
            with self._lock:
                self._secrets.add(secret)

    def add_environment(self, environ: dict[str, str] | None = None) -> None:
        """Treat the values of secret-looking environment variables (``*SECRET*``, ``*TOKEN*``,
        ``*API_KEY*``, ``*_URI``, ...) as secrets."""
        env = os.environ if environ is None else environ
        for name, value in env.items():
            if _SECRET_ENV.search(name.upper()):
                self.add(value)

    def __call__(self, text: str) -> str:
        with self._lock:
            secrets = sorted(self._secrets, key=len, reverse=True)
        for secret in secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        text = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{REDACTED}@", text)
        return _SECRET_PAIR.sub(lambda m: f"{m['name']}{m['sep']}{REDACTED}", text)


_REDACTOR = Redactor()


def redact(text: str) -> str:
    """``text`` with every credential the process knows of replaced by ``<redacted>``."""
    return _REDACTOR(text)


def register_secret(value: str | None) -> None:
    """Add a value that must never appear in logs, /healthz or the live view."""
    _REDACTOR.add(value)


class RepeatFilter(logging.Filter):
    """Rate-limits recurring warnings and errors.

    Lines are grouped by logger, level, message template and first argument (usually the
    connection or instance name). A group passes ``burst`` times, then at most once per
    ``interval`` seconds; the line that passes after a pause carries ``suppressed`` (how many
    were dropped). INFO and DEBUG lines always pass.
    """

    def __init__(
        self,
        burst: int = 5,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        super().__init__()
        self.burst = burst
        self.interval = interval
        self.clock = clock
        self.max_keys = max_keys
        self._groups: dict[tuple[object, ...], list[float]] = {}  # [count, window_start, dropped]
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        first = record.args[0] if isinstance(record.args, tuple) and record.args else None
        key = (record.name, record.levelno, str(record.msg), str(first))
        now = self.clock()
        with self._lock:
            group = self._groups.get(key)
            if group is None:
                if len(self._groups) >= self.max_keys:
                    self._groups.clear()
                self._groups[key] = [1, now, 0]
                return True
            if now - group[1] >= self.interval:
                dropped = int(group[2])
                group[:] = [1, now, 0]
                if dropped:
                    record.suppressed = dropped
                return True
            group[0] += 1
            if group[0] <= self.burst:
                return True
            group[2] += 1
            return False


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``msg``, the
    ``extra=`` fields, ``suppressed`` when lines were rate-limited, ``exc`` for tracebacks."""

    def __init__(self, redactor: Callable[[str], str] = redact) -> None:
        super().__init__()
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        out: dict[str, Any] = {
            "ts": stamp.replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(_fields(record))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        text = orjson.dumps(out, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
        return self.redactor(text)


class TextFormatter(logging.Formatter):
    """``HH:MM:SS.mmm LEVEL logger: message key=value ...`` for a person at a terminal."""

    def __init__(self, redactor: Callable[[str], str] = redact) -> None:
        super().__init__()
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created).strftime("%H:%M:%S.%f")[:-3]
        text = f"{stamp} {record.levelname:<7} {record.name}: {record.getMessage()}"
        fields = {
            k: v for k, v in _fields(record).items() if v is not None and k not in _TEXT_HIDDEN
        }
        if fields:
            text += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return self.redactor(text)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (the live view redirects it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, value: IO[str]) -> None:
        return None


_INSTALLED = "_mdgen_handler"


def configure_logging(
    log_format: LogFormat = "auto",
    level: str = "info",
    *,
    stream: IO[str] | None = None,
    secrets: Iterable[str] = (),
    repeat_burst: int = 5,
    repeat_interval: float = 60.0,
) -> logging.Handler:
    """Install mdgen's handler on the root logger (replacing any handler already there).

    ``auto`` picks text when the stream (default: stderr) is a terminal, JSON lines otherwise.
    Secrets: ``secrets``, plus the values of secret-looking environment variables.
    """
    _REDACTOR.add_environment()
    for secret in secrets:
        _REDACTOR.add(secret)
    target = stream if stream is not None else sys.stderr
    if log_format == "auto":
        isatty = getattr(target, "isatty", None)
        log_format = "text" if callable(isatty) and isatty() else "json"
    handler: logging.Handler = (
        logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    )
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(RepeatFilter(repeat_burst, repeat_interval))
    setattr(handler, _INSTALLED, True)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("websockets", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    return handler
