"""Configuration of ``mdgen run``: ``collector.toml``, command-line overrides and the run plan.

:func:`load_config` reads and checks a ``collector.toml`` (docs/collector-config.md) and, given
the command line's :class:`RunOverrides`, checks those too. Every problem found is reported in one
go, as compiler-style diagnostics (``file:line:col: error[E4xx]: message``, the TOML path and a
caret); :class:`ConfigError` carries them. :func:`plan_instances` turns a config plus the command
line into the list of :class:`InstancePlan` that ``mdgen run`` starts.
"""

from __future__ import annotations

import contextlib
import difflib
import math
import os
import re
import tomllib
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    PrivateAttr,
    SecretStr,
    StringConstraints,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from compiler.diagnostics import Diagnostic, format_path
from compiler.locate import (
    LocatedProblem,
    Locator,
    Problem,
    SchemaCodes,
    schema_problems,
    toml_error,
)
from compiler.tomlpos import TomlPath
from runtime.registry import exchanges, load_spec
from runtime.spec import ExchangeSpec

__all__ = [
    "CollectorConfig",
    "CollectorSettings",
    "ConfigError",
    "HttpSettings",
    "InstanceConfig",
    "InstancePlan",
    "PipelineSettings",
    "ReconnectSettings",
    "RunOverrides",
    "Shard",
    "ShardError",
    "SinkSettings",
    "load_config",
    "parse_shard",
    "plan_instances",
    "symbol_problem",
]

COMMAND_LINE = "<command line>"
"""The file name of diagnostics about command-line values."""

_SCHEMA_CODES = SchemaCodes(unknown_key="E401", missing_key="E402", invalid_value="E403")
_RULE = "config_rule"  # pydantic error type of cross-key rules (reported by the raw checks)
_CUSTOM_CODES = {"instance_name": "E405", "canonical_symbol": "E406", "shard": "E407"}
_MONGO_SCHEMES = ("mongodb://", "mongodb+srv://")
_SPOOL_MAX_BYTES = 1 << 30
_SPOOL_SEGMENT_BYTES = 16 << 20
_MONGO_ONLY = (
    "spool_dir",
    "spool_max_bytes",
    "spool_segment_bytes",
    "on_full",
    "fsync",
    "fsync_interval",
    "replay_rate",
    "dedup_window",
    "dedup_max_keys",
)


def _fail(kind: str, reason: str) -> PydanticCustomError:
    """A pydantic error whose message is ``reason`` verbatim (braces included)."""
    return PydanticCustomError(kind, "{reason}", {"reason": reason})


# -- shards ------------------------------------------------------------------------------------


class ShardError(ValueError):
    """A shard given as text is not ``I/N`` with ``1 <= I <= N``."""


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (1-based: ``1/4`` .. ``4/4``).

    Shard ``I/N`` owns the symbols whose CRC-32 (of the UTF-8 canonical symbol) is ``I-1`` modulo
    ``N``: the split is the same in every process and on every machine, whatever PYTHONHASHSEED.
    """

    index: int
    count: int

    def __post_init__(self) -> None:
        problem = _shard_range_problem(self.index, self.count)
        if problem is not None:
            raise ShardError(problem)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, symbol: str) -> bool:
        """Whether this shard collects ``symbol`` (a canonical symbol)."""
        return zlib.crc32(symbol.encode("utf-8")) % self.count == self.index - 1

    def select(self, symbols: Iterable[str]) -> list[str]:
        """The symbols this shard owns, in their original order."""
        return [s for s in symbols if self.owns(s)]


_SHARD = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


def _shard_range_problem(index: int, count: int) -> str | None:
    if count < 1:
        return f"shard {index}/{count}: the shard count must be at least 1"
    if index == 0:
        return (
            f"shard {index}/{count}: shards are numbered from 1, use 1/{count} .. {count}/{count}"
        )
    if not 1 <= index <= count:
        return f"shard {index}/{count} does not exist: use 1/{count} .. {count}/{count}"
    return None


def parse_shard(text: str) -> Shard:
    """``"I/N"`` (1-based, ``1 <= I <= N``) as a :class:`Shard`; :class:`ShardError` otherwise.

    The config's ``shard`` key and the command line's ``--shard`` both use this.
    """
    found = _SHARD.fullmatch(text)
    if found is None:
        raise ShardError(f"shard {text!r} is not I/N (shard I of N, from 1), e.g. '1/4'")
    index, count = int(found.group(1)), int(found.group(2))
    problem = _shard_range_problem(index, count)
    if problem is not None:
        raise ShardError(problem)
    return Shard(index, count)


def _to_shard(value: object) -> Shard:
    if isinstance(value, Shard):
        return value
    if not isinstance(value, str):
        raise _fail("shard", "shard must be a string I/N, e.g. '1/4'")
    try:
        return parse_shard(value)
    except ShardError as exc:
        raise _fail("shard", str(exc)) from None


ShardField = Annotated[Shard, PlainValidator(_to_shard), PlainSerializer(str)]


# -- symbols and names -------------------------------------------------------------------------

_CANONICAL = re.compile(r"[A-Z0-9]+(?:-[A-Z0-9]+)+")
_INSTANCE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")


def symbol_problem(symbol: str) -> str | None:
    """Why ``symbol`` is not canonical (``BASE-QUOTE[-EXTRA...]``, A-Z and 0-9), or None."""
    if _CANONICAL.fullmatch(symbol):
        return None
    message = (
        f"'{symbol}' is not a canonical symbol: expected BASE-QUOTE[-EXTRA...] in upper-case "
        "letters and digits, e.g. 'BTC-USDT'"
    )
    guess = re.sub(r"[\s/_:]+", "-", symbol.strip()).upper()
    if _CANONICAL.fullmatch(guess):
        message += f"; did you mean '{guess}'?"
    return message


def _check_symbol(value: str) -> str:
    problem = symbol_problem(value)
    if problem is not None:
        raise _fail("canonical_symbol", problem)
    return value


def _check_instance_name(value: str) -> str:
    if not _INSTANCE_NAME.fullmatch(value):
        raise _fail(
            "instance_name",
            f"instance name '{value}' must be lower-case letters, digits, '-' and '_', "
            "starting with a letter or digit",
        )
    return value


def _to_path(value: object) -> Path:
    if isinstance(value, Path):
        return value
    if not isinstance(value, str):
        raise _fail("path_type", "expected a path (a string)")
    if not value.strip():
        raise _fail("path_empty", "the path must not be empty")
    return Path(value)


CanonicalSymbol = Annotated[str, AfterValidator(_check_symbol)]
InstanceName = Annotated[str, AfterValidator(_check_instance_name)]
ConfigPath = Annotated[Path, BeforeValidator(_to_path)]
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
MongoDatabase = Annotated[
    str, StringConstraints(min_length=1, max_length=63, pattern=r'^[^/\\. "$\x00]+$')
]


# -- cross-key rules (shared by the models and by load_config's checks of the raw TOML) --------


@dataclass(frozen=True)
class _Rule:
    """A broken cross-key rule: where (relative to its section) and why."""

    path: TomlPath
    message: str
    at_key: bool = False


def _sink_rules(keys: Mapping[str, object]) -> list[_Rule]:
    """Rules of ``[sink]`` over the keys present in it."""
    kind = keys.get("kind")
    rules = []
    if kind == "mongodb":
        if "uri" in keys and "uri_env" in keys:
            rules.append(_Rule(("uri_env",), "set either uri or uri_env, not both", at_key=True))
        elif "uri" not in keys and "uri_env" not in keys:
            rules.append(_Rule((), 'a kind = "mongodb" sink needs uri or uri_env'))
        if "dir" in keys:
            rules.append(_Rule(("dir",), 'dir applies to kind = "ndjson" only', at_key=True))
        total = keys.get("spool_max_bytes", _SPOOL_MAX_BYTES)
        segment = keys.get("spool_segment_bytes", _SPOOL_SEGMENT_BYTES)
        if (
            isinstance(total, int)
            and isinstance(segment, int)
            and total >= 1 << 20
            and segment >= 64 << 10
            and total < 2 * segment
        ):
            where = "spool_max_bytes" if "spool_max_bytes" in keys else "spool_segment_bytes"
            rules.append(
                _Rule(
                    (where,),
                    f"spool_max_bytes ({total}) must be at least twice spool_segment_bytes "
                    f"({segment})",
                    at_key=True,
                )
            )
    elif kind == "ndjson":
        for key in ("uri", "uri_env", "database", *_MONGO_ONLY):
            if key in keys:
                rules.append(_Rule((key,), f'{key} applies to kind = "mongodb" only', at_key=True))
    return rules


def _reconnect_rules(initial_delay: float, max_delay: float) -> list[_Rule]:
    if max_delay < initial_delay:
        return [
            _Rule(
                ("max_delay",),
                f"max_delay ({max_delay:g}) is smaller than initial_delay ({initial_delay:g})",
            )
        ]
    return []


def _raise_first(rules: list[_Rule]) -> None:
    if rules:
        raise _fail(_RULE, rules[0].message)


# -- the schema --------------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class CollectorSettings(_Model):
    """``[collector]``: process-wide settings."""

    data_dir: ConfigPath = Path("data")
    """Where the embedded default sink writes ``<exchange>/<channel>/<date>/<symbol>.ndjson.gz``."""
    transport: Literal["websockets", "picows"] = "websockets"
    log_format: Literal["auto", "json", "text"] = "auto"
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    shutdown_timeout: float = Field(default=10.0, ge=0)
    """Seconds allowed to flush on SIGINT/SIGTERM."""


class PipelineSettings(_Model):
    """``[pipeline]``: batching between connections and the sink."""

    batch_size: int = Field(default=1000, ge=1)
    flush_interval: float = Field(default=1.0, gt=0)
    queue_batches: int = Field(default=64, ge=1)


class ReconnectSettings(_Model):
    """``[reconnect]``: exponential backoff with full jitter."""

    initial_delay: float = Field(default=0.5, gt=0)
    max_delay: float = Field(default=30.0, gt=0)
    multiplier: float = Field(default=2.0, ge=1)
    stable_after: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _rules(self) -> ReconnectSettings:
        _raise_first(_reconnect_rules(self.initial_delay, self.max_delay))
        return self


class SinkSettings(_Model):
    """``[sink]``: where records go instead of the embedded default sink."""

    kind: Literal["mongodb", "ndjson"]
    uri: SecretStr | None = None
    """MongoDB connection string (never shown in reprs or messages)."""
    uri_env: EnvName | None = None
    """Name of the environment variable holding the MongoDB connection string."""
    database: MongoDatabase = "mdgen"
    dir: ConfigPath | None = None
    """``ndjson`` only: output folder; default: ``[collector].data_dir``."""
    spool_dir: ConfigPath | None = None
    """``mongodb`` only: the durable spool; default: ``<[collector].data_dir>/spool``."""
    spool_max_bytes: int = Field(default=_SPOOL_MAX_BYTES, ge=1 << 20)
    spool_segment_bytes: int = Field(default=_SPOOL_SEGMENT_BYTES, ge=64 << 10)
    on_full: Literal["block", "drop_oldest", "drop_newest"] = "block"
    fsync: Literal["batch", "interval"] = "batch"
    fsync_interval: float = Field(default=1.0, gt=0)
    replay_rate: float = Field(default=20_000.0, gt=0)
    """Records per second the replay worker sends at most."""
    dedup_window: float = Field(default=0.0, ge=0)
    """Seconds an identity is remembered to drop repeats; 0: no dedup window."""
    dedup_max_keys: int = Field(default=1_000_000, ge=1)

    @model_validator(mode="after")
    def _rules(self) -> SinkSettings:
        _raise_first(_sink_rules({k: getattr(self, k) for k in self.model_fields_set}))
        if self.uri is not None and not self.uri.get_secret_value().startswith(_MONGO_SCHEMES):
            raise _fail(_RULE, "uri must start with mongodb:// or mongodb+srv://")
        return self

    def connection_uri(self, environ: Mapping[str, str] | None = None) -> str:
        """The MongoDB connection string: ``uri``, or the value of the ``uri_env`` variable."""
        if self.uri is not None:
            return self.uri.get_secret_value()
        env = os.environ if environ is None else environ
        if self.uri_env is None or not env.get(self.uri_env):
            raise LookupError(f"environment variable {self.uri_env} is not set")
        return env[self.uri_env]


class HttpSettings(_Model):
    """``[http]``: the optional /healthz and /metrics server."""

    enabled: bool = False
    host: Annotated[str, StringConstraints(min_length=1)] = "127.0.0.1"
    port: int = Field(default=9108, ge=0, le=65535)
    stale_after: float = Field(default=60.0, gt=0)
    """Seconds without data records after which a connection makes /healthz answer 503."""


class InstanceConfig(_Model):
    """``[instances.<name>]``: one collector instance of one exchange."""

    exchange: Annotated[str, StringConstraints(min_length=1)]
    descriptor_path: ConfigPath
    enabled: bool = True
    symbols: list[CanonicalSymbol] = []
    channels: list[str] | None = Field(default=None, min_length=1)
    """Channel names from the descriptor; None: every channel."""
    symbol_map_file: ConfigPath | None = None
    shard: ShardField | None = None


class CollectorConfig(_Model):
    """A whole ``collector.toml``. :func:`load_config` returns it with absolute paths."""

    collector: CollectorSettings = CollectorSettings()
    pipeline: PipelineSettings = PipelineSettings()
    reconnect: ReconnectSettings = ReconnectSettings()
    sink: SinkSettings | None = None
    http: HttpSettings = HttpSettings()
    instances: dict[InstanceName, InstanceConfig] = {}

    _origin: _Origin | None = PrivateAttr(default=None)

    @property
    def source(self) -> Path | None:
        """The file this config was loaded from (None for defaults)."""
        return self._origin.path if self._origin is not None else None


_SECTIONS: dict[str, type[BaseModel]] = {
    "collector": CollectorSettings,
    "pipeline": PipelineSettings,
    "reconnect": ReconnectSettings,
    "sink": SinkSettings,
    "http": HttpSettings,
}


# -- command line ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunOverrides:
    """What the ``mdgen run`` command line says, before any checking."""

    exchanges: list[str] = field(default_factory=list)
    """Exchanges named on the command line; empty: every enabled instance of the config."""
    symbols: list[str] | None = None
    """``--symbols``: replaces the symbols of every planned instance."""
    channels: list[str] | None = None
    """``--channels``: replaces the channels of every planned instance."""
    shard: str | None = None
    """``--shard I/N``: replaces the shard of every planned instance."""
    duration: float | None = None
    """``--duration SECONDS``: stop after that long."""


@dataclass(frozen=True)
class InstancePlan:
    """One instance ``mdgen run`` starts: an exchange, its symbols (this shard's) and channels.

    ``symbols`` is empty when the shard owns none of the instance's symbols.
    """

    name: str
    exchange: str
    spec: ExchangeSpec
    symbols: list[str]
    channels: list[str]
    shard: Shard | None = None
    symbol_map_file: Path | None = None


class ConfigError(Exception):
    """The config or the command line has errors; ``diagnostics`` holds every problem found."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = diagnostics
        super().__init__(self.render())

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    def render(self) -> str:
        return "\n".join(d.render() for d in self.diagnostics)

    def __str__(self) -> str:
        return self.render()


# -- reporting ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Origin:
    """Where a config came from: file path, the name diagnostics show, text, base folder."""

    path: Path
    display: str
    text: str
    base: Path


CollectorConfig.model_rebuild()

_KEY_TOKEN = re.compile(r"[A-Za-z0-9_\-]+")
_VALUE_TOKEN = re.compile(r"[^\s,\]}#]+")


def _string_end(line: str, i: int) -> int | None:
    """Index just past the one-line string literal opening at ``i``; None if not closed."""
    quote = line[i]
    j = i + 1
    while j < len(line):
        if quote == '"' and line[j] == "\\":
            j += 2
            continue
        if line[j] == quote:
            return j + 1
        j += 1
    return None


def _token_width(line: str, col: int, at_key: bool) -> int:
    """Width of the TOML token at ``col`` (1-based): a string, key, scalar, array or header."""
    i = col - 1
    if not 0 <= i < len(line):
        return 1
    c = line[i]
    if c in "\"'":
        if line.startswith(c * 3, i):
            return 3
        end = _string_end(line, i)
        return end - i if end is not None else 1
    if c in "[{":
        depth, j = 0, i
        while j < len(line):
            ch = line[j]
            if ch in "\"'":
                end = _string_end(line, j)
                if end is None:
                    return 1
                j = end
                continue
            if ch == "#":
                return 1
            if ch in "[{":
                depth += 1
            elif ch in "]}":
                depth -= 1
                if depth == 0:
                    return j - i + 1
            j += 1
        return 1
    token = (_KEY_TOKEN if at_key else _VALUE_TOKEN).match(line, i)
    return token.end() - i if token else 1


class _CommandLine:
    """The command line rebuilt as one line, so problems in it get a column and a caret."""

    def __init__(self, overrides: RunOverrides) -> None:
        self.spots: dict[tuple[str, int], tuple[int, int]] = {}
        text = "mdgen run"
        for i, exchange in enumerate(overrides.exchanges):
            text += " "
            self.spots[("EXCHANGE", i)] = (len(text) + 1, len(exchange))
            text += exchange
        lists = (("--symbols", overrides.symbols), ("--channels", overrides.channels))
        for option, values in lists:
            if values is None:
                continue
            text += f" {option} "
            self.spots[(option, -1)] = (len(text) - len(option), len(option))
            for i, value in enumerate(values):
                text += "," if i else ""
                self.spots[(option, i)] = (len(text) + 1, len(value))
                text += value
        scalars = (("--shard", overrides.shard), ("--duration", overrides.duration))
        for option, scalar in scalars:
            if scalar is None:
                continue
            value = scalar if isinstance(scalar, str) else f"{scalar:g}"
            text += f" {option} "
            self.spots[(option, -1)] = (len(text) - len(option), len(option))
            self.spots[(option, 0)] = (len(text) + 1, len(value))
            text += value
        self.spots[("", -1)] = (len(text) + 1, 1)  # the end of the line
        self.text = text

    def diagnostic(self, option: str, index: int, code: str, message: str) -> Diagnostic:
        col, width = self.spots.get((option, index)) or self.spots[("", -1)]
        return Diagnostic(
            code, message, COMMAND_LINE, 1, col, option, self.text, max(1, width), "error"
        )


class _Reporter:
    """Collects diagnostics about one config file and one command line."""

    def __init__(self, origin: _Origin | None, cli: _CommandLine | None) -> None:
        self.origin = origin
        self.locator = Locator(origin.display, origin.text) if origin is not None else None
        self.cli_line = cli
        self.file_diags: list[Diagnostic] = []
        self.cli_diags: list[Diagnostic] = []

    def problem(self, problem: LocatedProblem) -> None:
        if self.locator is None:
            display = self.origin.display if self.origin is not None else "<config>"
            self.file_diags.append(
                Diagnostic(
                    problem.code,
                    problem.message,
                    display,
                    1,
                    1,
                    format_path(problem.path),
                    severity="warning" if problem.severity == "warning" else "error",
                )
            )
            return
        diag = self.locator.diagnostic(problem)
        if diag.width == 1 and diag.source_line:
            width = _token_width(diag.source_line, diag.col, problem.at_key)
            diag = replace(diag, width=width)
        self.file_diags.append(diag)

    def at(
        self,
        path: TomlPath,
        code: str,
        message: str,
        *,
        severity: str = "error",
        at_key: bool = False,
    ) -> None:
        self.problem(Problem(path, code, message, severity=severity, at_key=at_key))

    def warn(self, path: TomlPath, code: str, message: str) -> None:
        self.at(path, code, message, severity="warning")

    def cli(self, option: str, index: int, code: str, message: str) -> None:
        if self.cli_line is not None:
            self.cli_diags.append(self.cli_line.diagnostic(option, index, code, message))

    def direct(self, diagnostic: Diagnostic) -> None:
        self.file_diags.append(diagnostic)

    def diagnostics(self) -> list[Diagnostic]:
        """File diagnostics by position, then command-line ones; exact repeats dropped."""
        out: list[Diagnostic] = []
        for group in (self.file_diags, self.cli_diags):
            for diag in sorted(group, key=lambda d: (d.sort_key, d.message)):
                if diag not in out:
                    out.append(diag)
        return out

    @property
    def failed(self) -> bool:
        return any(d.severity == "error" for d in self.file_diags + self.cli_diags)


# -- checks shared by load_config and plan_instances ---------------------------------------------


def _did_you_mean(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _unknown_exchange(name: str, known: Iterable[str]) -> str:
    ids = sorted(known)
    if not ids:
        return f"unknown exchange '{name}': no generated modules (run `mdgen compile`)"
    return f"unknown exchange '{name}'{_did_you_mean(name, ids)} (known: {', '.join(ids)})"


def default_channels(spec: ExchangeSpec) -> list[str]:
    """The channels collected when none are named: every channel except the private ones
    (channels on an endpoint that needs credentials: a ``[websocket.login]``, or a bootstrap
    call that is ``signed`` or carries the ``api_key``)."""
    return [name for name, ch in spec.channels.items() if not needs_credentials(spec, ch.endpoint)]


def needs_credentials(spec: ExchangeSpec, endpoint: str) -> bool:
    """Does connecting to WebSocket ``endpoint`` need the credentials of ``[signing]``?"""
    if spec.login is not None and endpoint in spec.login.endpoints:
        return True
    boot = spec.bootstrap
    if boot is None or not boot.covers(endpoint) or spec.rest is None:
        return False
    call = spec.rest.endpoints.get(boot.endpoint)
    return call is not None and (call.signed or call.api_key)


def _missing_credentials(exchange: str, spec: ExchangeSpec, channel: str) -> str | None:
    """Why a private channel cannot be collected: the credential variables that are unset."""
    endpoint = spec.channels[channel].endpoint
    signing = spec.signing
    if signing is None or not needs_credentials(spec, endpoint):
        return None
    names = [signing.key_env, signing.secret_env]
    if signing.passphrase_env:
        names.append(signing.passphrase_env)
    unset = [n for n in names if not os.environ.get(n, "").strip()]
    if not unset:
        return None
    return (
        f"channel '{channel}' of '{exchange}' is private and needs credentials: set the "
        f"environment variable{'s' if len(unset) > 1 else ''} {', '.join(unset)}"
    )


def _unknown_channel(exchange: str, channel: str, spec: ExchangeSpec) -> str:
    names = list(spec.channels)
    return (
        f"exchange '{exchange}' has no channel '{channel}'{_did_you_mean(channel, names)} "
        f"(channels: {', '.join(names)})"
    )


class _Specs:
    """Generated specs by exchange id, loaded once; a failure is remembered as its message."""

    def __init__(self) -> None:
        try:
            self.known = exchanges()
        except Exception:  # no (or a broken) generated/ package: every exchange is unknown
            self.known = {}
        self._cache: dict[str, ExchangeSpec | str] = {}

    def get(self, exchange: str) -> ExchangeSpec | str:
        """The spec, or why there is none."""
        if exchange not in self._cache:
            if exchange not in self.known:
                self._cache[exchange] = _unknown_exchange(exchange, self.known)
            else:
                try:
                    self._cache[exchange] = load_spec(exchange)
                except Exception as exc:  # a stale or broken generated module is not a crash
                    self._cache[exchange] = (
                        f"cannot load the generated module of exchange '{exchange}': {exc}"
                    )
        return self._cache[exchange]


def _duplicates(values: Sequence[object]) -> list[int]:
    """Indices of the values already seen earlier in ``values``."""
    seen: set[object] = set()
    repeats = []
    for i, value in enumerate(values):
        if isinstance(value, str):
            if value in seen:
                repeats.append(i)
            seen.add(value)
    return repeats


def _dedupe(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


# -- load_config -------------------------------------------------------------------------------


def _known_keys(parent: TomlPath) -> list[str]:
    if not parent:
        return list(CollectorConfig.model_fields)
    if len(parent) == 1 and isinstance(parent[0], str) and parent[0] in _SECTIONS:
        return list(_SECTIONS[parent[0]].model_fields)
    if len(parent) == 2 and parent[0] == "instances":
        return list(InstanceConfig.model_fields)
    return []


def _schema_hook(loc: TomlPath, err: ErrorDetails) -> list[LocatedProblem] | None:
    kind = err["type"]
    if kind == _RULE:
        return []  # the raw checks report these, each at its own key
    if loc and loc[-1] == "[key]":
        code = _CUSTOM_CODES.get(kind, "E403")
        return [Problem(loc[:-1], code, err["msg"], at_key=True)]
    if kind in _CUSTOM_CODES:
        return [Problem(loc, _CUSTOM_CODES[kind], err["msg"])]
    if kind == "extra_forbidden" and loc:
        known = _known_keys(loc[:-1])
        message = f"unknown key '{loc[-1]}'"
        if known:
            message += _did_you_mean(str(loc[-1]), known) + f" (keys: {', '.join(known)})"
        return [Problem(loc, "E401", message, at_key=True)]
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return [Problem(loc, "E403", "expected a table")]
    if kind == "literal_error" and "ctx" in err:
        return [Problem(loc, "E403", f"expected {err['ctx']['expected']}, not {err['input']!r}")]
    if kind == "list_type":
        return [Problem(loc, "E403", "expected an array")]
    if kind == "too_short" and loc[-1:] == ("channels",):
        return [Problem(loc, "E403", "channels must not be empty; leave it out for every channel")]
    return None


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _resolve(base: Path, path: Path) -> Path:
    with contextlib.suppress(RuntimeError):  # no home folder to expand ~ to
        path = path.expanduser()
    return Path(os.path.normpath(path if path.is_absolute() else base / path))


def _check_sink(raw: Mapping[str, Any], rep: _Reporter) -> None:
    for rule in _sink_rules(raw):
        rep.at(("sink",) + rule.path, "E411", rule.message, at_key=rule.at_key)
    uri = raw.get("uri")
    if isinstance(uri, str) and not uri.startswith(_MONGO_SCHEMES):
        rep.at(("sink", "uri"), "E403", "uri must start with mongodb:// or mongodb+srv://")
    name = raw.get("uri_env")
    if raw.get("kind") != "mongodb" or "uri" in raw or not isinstance(name, str):
        return
    value = os.environ.get(name)
    if not value:
        rep.at(("sink", "uri_env"), "E412", f"environment variable {name} is not set")
    elif not value.startswith(_MONGO_SCHEMES):
        rep.at(
            ("sink", "uri_env"),
            "E412",
            f"environment variable {name} does not hold a MongoDB URI (mongodb:// or "
            "mongodb+srv://); its value is not shown",
        )


def _check_reconnect(raw: Mapping[str, Any], rep: _Reporter) -> None:
    defaults = ReconnectSettings()
    initial = raw.get("initial_delay", defaults.initial_delay)
    maximum = raw.get("max_delay", defaults.max_delay)
    if _is_number(initial) and _is_number(maximum):
        for rule in _reconnect_rules(float(initial), float(maximum)):
            rep.at(("reconnect",) + rule.path, "E411", rule.message)


def _check_instance(
    name: str, raw: Mapping[str, Any], base: Path, specs: _Specs, rep: _Reporter
) -> None:
    """What the schema cannot check; environment checks for enabled instances only."""
    where: TomlPath = ("instances", name)
    for key in ("symbols", "channels"):
        values = raw.get(key)
        if isinstance(values, list):
            for i in _duplicates(values):
                rep.warn(where + (key, i), "W401", f"'{values[i]}' is listed twice in {key}")
    if raw.get("enabled", True) is not True:
        return  # disabled (or not a boolean, which the schema reports): shape only
    exchange = raw.get("exchange")
    if isinstance(exchange, str) and exchange:
        spec = specs.get(exchange)
        if isinstance(spec, str):
            rep.at(where + ("exchange",), "E408", spec)
        else:
            channels = raw.get("channels")
            for i, channel in enumerate(channels if isinstance(channels, list) else []):
                if isinstance(channel, str) and channel not in spec.channels:
                    rep.at(
                        where + ("channels", i), "E409", _unknown_channel(exchange, channel, spec)
                    )
                elif isinstance(channel, str):
                    missing = _missing_credentials(exchange, spec, channel)
                    if missing is not None:
                        rep.at(where + ("channels", i), "E415", missing)
    descriptor = raw.get("descriptor_path")
    if isinstance(descriptor, str) and descriptor.strip():
        path = _resolve(base, Path(descriptor))
        if not path.exists():
            rep.at(
                where + ("descriptor_path",),
                "E410",
                f"descriptor_path '{descriptor}' does not exist (looked for {path})",
            )
        elif not path.is_file():
            rep.at(
                where + ("descriptor_path",),
                "E410",
                f"descriptor_path '{descriptor}' is not a file",
            )
        elif isinstance(exchange, str) and exchange in specs.known and path.stem != exchange:
            rep.at(
                where + ("descriptor_path",),
                "E410",
                f"descriptor_path '{descriptor}' is the descriptor of '{path.stem}', not of "
                f"'{exchange}' (a descriptor is named <exchange id>.toml)",
            )
    symbol_map = raw.get("symbol_map_file")
    if isinstance(symbol_map, str) and symbol_map.strip():
        path = _resolve(base, Path(symbol_map))
        if not path.is_file():
            rep.warn(
                where + ("symbol_map_file",),
                "W400",
                f"symbol_map_file '{symbol_map}' does not exist (looked for {path}); the "
                "descriptor's symbol rules apply unchanged",
            )
        else:
            from runtime.symbolmap import SymbolMapError, load_symbol_map

            try:
                load_symbol_map(path)
            except SymbolMapError as exc:
                for diagnostic in exc.diagnostics:
                    rep.direct(diagnostic)


def _check_raw(data: Mapping[str, Any], base: Path, specs: _Specs, rep: _Reporter) -> None:
    """Checks over the raw TOML, so they run even where the schema found errors."""
    sink = data.get("sink")
    if isinstance(sink, dict):
        _check_sink(sink, rep)
    reconnect = data.get("reconnect")
    if isinstance(reconnect, dict):
        _check_reconnect(reconnect, rep)
    instances = data.get("instances")
    if isinstance(instances, dict):
        for name, raw in instances.items():
            if isinstance(raw, dict):
                _check_instance(name, raw, base, specs, rep)


def _with_absolute_paths(config: CollectorConfig, base: Path) -> CollectorConfig:
    collector = config.collector.model_copy(
        update={"data_dir": _resolve(base, config.collector.data_dir)}
    )
    sink = config.sink
    if sink is not None and sink.dir is not None:
        sink = sink.model_copy(update={"dir": _resolve(base, sink.dir)})
    if sink is not None and sink.spool_dir is not None:
        sink = sink.model_copy(update={"spool_dir": _resolve(base, sink.spool_dir)})
    instances = {}
    for name, inst in config.instances.items():
        update: dict[str, Path] = {"descriptor_path": _resolve(base, inst.descriptor_path)}
        if inst.symbol_map_file is not None:
            update["symbol_map_file"] = _resolve(base, inst.symbol_map_file)
        instances[name] = inst.model_copy(update=update)
    return config.model_copy(update={"collector": collector, "sink": sink, "instances": instances})


def load_config(
    path: Path | None, *, overrides: RunOverrides | None = None
) -> tuple[CollectorConfig, list[Diagnostic]]:
    """Read and check ``path`` (None: the defaults, no instances) and the command line.

    Relative paths resolve against the config file's folder (the current folder for defaults);
    the returned config holds absolute paths. Returns the warnings; raises :class:`ConfigError`
    with every diagnostic when there is any error.
    """
    cli = _CommandLine(overrides) if overrides is not None else None
    specs = _Specs()
    config: CollectorConfig | None
    if path is None:
        rep = _Reporter(None, cli)
        config = _with_absolute_paths(CollectorConfig(), Path.cwd())
    else:
        config, rep = _load_file(Path(path), cli, specs)
    if overrides is not None:
        if config is not None and not rep.failed:
            _plan(config, overrides, rep, specs)
        else:
            _check_overrides(overrides, rep, specs)
    diagnostics = rep.diagnostics()
    if rep.failed or config is None:
        raise ConfigError(diagnostics)
    return config, diagnostics


def _load_file(
    path: Path, cli: _CommandLine | None, specs: _Specs
) -> tuple[CollectorConfig | None, _Reporter]:
    display = str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM (Windows editors) is dropped
    except FileNotFoundError:
        rep = _Reporter(None, cli)
        rep.direct(Diagnostic("E404", "the config file does not exist", display, 1, 1))
        return None, rep
    except (OSError, UnicodeDecodeError) as exc:
        rep = _Reporter(None, cli)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        rep.direct(Diagnostic("E404", f"cannot read the config file: {reason}", display, 1, 1))
        return None, rep
    base = path.absolute().parent
    origin = _Origin(path, display, text, base)
    rep = _Reporter(origin, cli)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        rep.direct(toml_error(display, text, exc, "E400"))
        return None, rep
    config: CollectorConfig | None = None
    try:
        config = CollectorConfig.model_validate(data)
    except pydantic.ValidationError as exc:
        for problem in schema_problems(exc, _SCHEMA_CODES, _schema_hook):
            rep.problem(problem)
    _check_raw(data, base, specs, rep)
    if config is None:
        return None, rep
    config = _with_absolute_paths(config, base)
    config._origin = origin
    return config, rep


# -- plan_instances ----------------------------------------------------------------------------


@dataclass
class _CheckedOverrides:
    exchanges: list[tuple[int, str]]  # (position on the command line, exchange id)
    symbols: list[str] | None
    channels: list[str] | None
    shard: Shard | None


def _check_overrides(overrides: RunOverrides, rep: _Reporter, specs: _Specs) -> _CheckedOverrides:
    """Check what the command line says on its own; problems point into the command line."""
    named: dict[str, int] = {}
    for i, exchange in enumerate(overrides.exchanges):
        named.setdefault(exchange, i)
    for exchange, i in named.items():
        spec = specs.get(exchange)
        if isinstance(spec, str):
            rep.cli("EXCHANGE", i, "E408", spec)
        elif overrides.channels is not None:
            for j, channel in enumerate(overrides.channels):
                if channel not in spec.channels:
                    rep.cli("--channels", j, "E409", _unknown_channel(exchange, channel, spec))
    for option, values in (("--symbols", overrides.symbols), ("--channels", overrides.channels)):
        if values is not None and not values:
            rep.cli(option, -1, "E403", f"{option} lists nothing")
    for i, symbol in enumerate(overrides.symbols or []):
        problem = symbol_problem(symbol)
        if problem is not None:
            rep.cli("--symbols", i, "E406", problem)
    shard = None
    if overrides.shard is not None:
        try:
            shard = parse_shard(overrides.shard)
        except ShardError as exc:
            rep.cli("--shard", 0, "E407", str(exc))
    duration = overrides.duration
    if duration is not None and not (math.isfinite(duration) and duration > 0):
        rep.cli("--duration", 0, "E403", "--duration must be a positive number of seconds")
    return _CheckedOverrides(
        exchanges=[(i, exchange) for exchange, i in named.items()],
        symbols=_dedupe(overrides.symbols) if overrides.symbols else None,
        channels=_dedupe(overrides.channels) if overrides.channels else None,
        shard=shard,
    )


def _plan(
    config: CollectorConfig, overrides: RunOverrides, rep: _Reporter, specs: _Specs
) -> list[InstancePlan]:
    cli = _check_overrides(overrides, rep, specs)
    enabled = [(n, i) for n, i in config.instances.items() if i.enabled]
    targets: list[tuple[int, str]] = cli.exchanges
    if not targets:
        targets = [(-1, e) for e in _dedupe(i.exchange for _, i in enabled)]
        if not targets:
            rep.cli("", -1, "E413", "nothing to run: name an exchange, or enable an instance")
    plans: list[InstancePlan] = []
    for position, exchange in targets:
        spec = specs.get(exchange)
        mine = [(n, i) for n, i in enabled if i.exchange == exchange]
        if isinstance(spec, str):
            for name, _ in mine:
                rep.at(("instances", name, "exchange"), "E408", spec)
            continue
        for j, channel in enumerate(cli.channels or []):
            if channel not in spec.channels:
                rep.cli("--channels", j, "E409", _unknown_channel(exchange, channel, spec))
            elif (missing := _missing_credentials(exchange, spec, channel)) is not None:
                rep.cli("--channels", j, "E415", missing)
        if not mine:
            if not cli.symbols:
                disabled = [n for n, i in config.instances.items() if i.exchange == exchange]
                note = f" (disabled: {', '.join(disabled)})" if disabled else ""
                rep.cli(
                    "EXCHANGE",
                    position,
                    "E413",
                    f"no symbols to collect from '{exchange}': pass --symbols, or enable an "
                    f'instance with exchange = "{exchange}" in the config{note}',
                )
                continue
            channels = cli.channels or default_channels(spec)
            plans.append(_make_plan(exchange, exchange, spec, cli.symbols, channels, cli.shard))
            continue
        for name, inst in mine:
            where: TomlPath = ("instances", name)
            channels = cli.channels or inst.channels or default_channels(spec)
            if cli.channels is None:
                for i, channel in enumerate(inst.channels or []):
                    if channel not in spec.channels:
                        rep.at(
                            where + ("channels", i),
                            "E409",
                            _unknown_channel(exchange, channel, spec),
                        )
            symbols = cli.symbols or inst.symbols
            if not symbols:
                rep.at(
                    where + ("symbols",),
                    "E413",
                    f"instance '{name}' has no symbols: list them in symbols, or pass --symbols",
                )
                continue
            plan = _make_plan(name, exchange, spec, symbols, channels, cli.shard or inst.shard)
            plans.append(replace(plan, symbol_map_file=inst.symbol_map_file))
    return plans


def _make_plan(
    name: str,
    exchange: str,
    spec: ExchangeSpec,
    symbols: list[str],
    channels: list[str],
    shard: Shard | None,
) -> InstancePlan:
    chosen = _dedupe(symbols)
    if shard is not None:
        chosen = shard.select(chosen)
    return InstancePlan(name, exchange, spec, chosen, _dedupe(channels), shard)


def plan_instances(config: CollectorConfig, overrides: RunOverrides) -> list[InstancePlan]:
    """The instances ``mdgen run`` starts for this config and command line.

    For each exchange named on the command line (every exchange with an enabled instance when
    none is named): its enabled instances, or, when it has none, an implicit instance named after
    the exchange. ``--symbols``/``--channels``/``--shard`` replace the instances' own; channels
    default to every channel of the exchange; the shard keeps the symbols it owns. Raises
    :class:`ConfigError` when something cannot run (e.g. an exchange without symbols).
    """
    rep = _Reporter(config._origin, _CommandLine(overrides))
    plans = _plan(config, overrides, rep, _Specs())
    if rep.failed:
        raise ConfigError(rep.diagnostics())
    return plans
