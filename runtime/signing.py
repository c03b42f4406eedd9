"""Request signing for authenticated REST endpoints and WebSocket logins.

Two generic schemes, parameterised by :class:`SigningParams` (header and parameter names,
timestamp format, how the secret and passphrase are used) so no venue is named here:

``hmac_sha256_hex``
    HMAC-SHA256 over the percent-encoded query string concatenated with the request body, hex
    encoded; the signature is appended as a query parameter and the API key sent in a header.
``hmac_sha256_base64``
    HMAC-SHA256 over ``timestamp + METHOD + request_path(?query) + body``, base64 encoded; the
    key, signature, timestamp and passphrase travel in headers.

Credentials come only from environment variables, read once when the :class:`Signer` is made.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, NoReturn
from urllib.parse import parse_qsl, quote

from runtime.spec import LoginSpec, SigningSpec

TimestampFormat = Literal["ms", "s", "iso_ms"]
Params = Mapping[str, Any] | Iterable[tuple[str, Any]]

REDACTED = "<redacted>"


class SigningError(RuntimeError):
    """Signing cannot be set up or used; the message names env vars, never their values."""


class _Secret:
    """A credential that does not show itself in ``repr``/``str`` and refuses to be pickled."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return REDACTED

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("credentials cannot be pickled")


@dataclass(frozen=True)
class SigningParams:
    """Venue details of the generic schemes; the defaults are neutral, not any venue's."""

    key_header: str = "X-API-KEY"
    """Header carrying the API key (both schemes)."""
    timestamp_format: TimestampFormat = "ms"
    """Request timestamps: epoch milliseconds, epoch seconds, or ISO-8601 UTC with milliseconds."""
    # hmac_sha256_hex
    signature_param: str = "signature"
    timestamp_param: str | None = "timestamp"
    """Query parameter the timestamp is added as (unless the request already carries it)."""
    recv_window_param: str | None = None
    recv_window: int | None = None
    # hmac_sha256_base64
    sign_header: str = "X-API-SIGN"
    timestamp_header: str = "X-API-TIMESTAMP"
    passphrase_header: str = "X-API-PASSPHRASE"
    secret_encoding: Literal["text", "base64"] = "text"
    """``base64``: the secret is base64 text whose decoded bytes are the HMAC key."""
    passphrase_mode: Literal["plain", "hmac"] = "plain"
    """``hmac``: send base64(HMAC-SHA256(secret, passphrase)) instead of the passphrase."""
    prehash_query: Literal["encoded", "decoded"] = "encoded"
    """Whether the query string in the pre-hash string is percent-encoded as sent, or not."""
    extra_headers: Mapping[str, str] = field(default_factory=dict)
    # WebSocket login
    login_method: str = "GET"
    login_path: str = "/users/self/verify"
    login_timestamp_format: TimestampFormat = "s"
    login_payload: Callable[[str, str | None, str], Any] | None = None
    """``(api_key, passphrase, timestamp) -> text`` the login signs, instead of
    ``timestamp + login_method + login_path``."""
    login_encoding: Literal["base64", "hex"] = "base64"


@dataclass(frozen=True)
class SignedRequest:
    """What to send: the full query string (signature included where it goes there), headers."""

    query: str
    headers: dict[str, str]
    body: str


def param_text(value: Any) -> str:
    """A parameter value as sent: booleans lower-case, everything else ``str``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def param_pairs(params: Params | None) -> list[tuple[str, str]]:
    """``(name, text)`` pairs in order, dropping ``None`` values."""
    if params is None:
        return []
    items = params.items() if isinstance(params, Mapping) else params
    return [(str(k), param_text(v)) for k, v in items if v is not None]


def encode_query(pairs: Iterable[tuple[str, str]]) -> str:
    """Percent-encode pairs (RFC 3986: only unreserved characters stay literal)."""
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs)


def prehash(timestamp: str, method: str, request_path: str, body: str = "") -> str:
    """The string ``hmac_sha256_base64`` signs: ``timestamp + METHOD + request_path + body``."""
    return timestamp + method.upper() + request_path + body


def _require_env(name: str, what: str) -> str:
    value = os.environ.get(name, "")
    if not value.strip():
        raise SigningError(f"{what} missing: set the environment variable {name}")
    return value


class Signer:
    """Signs requests with credentials read from the environment variables a SigningSpec names."""

    def __init__(
        self,
        spec: SigningSpec,
        params: SigningParams | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.scheme = spec.scheme
        self.key_env = spec.key_env
        self.secret_env = spec.secret_env
        self.passphrase_env = spec.passphrase_env
        self.params = params or SigningParams()
        self.clock = clock
        self._key = _Secret(_require_env(spec.key_env, "API key"))
        self._secret = _Secret(_require_env(spec.secret_env, "API secret"))
        try:
            self._hmac_key()
        except (binascii.Error, ValueError):
            raise SigningError(f"API secret in {spec.secret_env} is not valid base64") from None
        self._passphrase = (
            _Secret(_require_env(spec.passphrase_env, "API passphrase"))
            if spec.passphrase_env
            else None
        )

    def __repr__(self) -> str:
        return (
            f"Signer(scheme={self.scheme!r}, key_env={self.key_env!r}, "
            f"secret_env={self.secret_env!r}, passphrase_env={self.passphrase_env!r})"
        )

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Signer holds credentials and cannot be pickled")

    # -- primitives -------------------------------------------------------------------------

    def _hmac_key(self) -> bytes:
        secret = self._secret.reveal()
        if self.params.secret_encoding == "base64":
            return base64.b64decode(secret, validate=True)
        return secret.encode()

    def digest(self, payload: str) -> bytes:
        """HMAC-SHA256 of ``payload`` (UTF-8) keyed with the secret."""
        return hmac.new(self._hmac_key(), payload.encode(), hashlib.sha256).digest()

    def sign_hex(self, payload: str) -> str:
        return self.digest(payload).hex()

    def sign_base64(self, payload: str) -> str:
        return base64.b64encode(self.digest(payload)).decode()

    def timestamp(self, fmt: TimestampFormat | None = None) -> str:
        """The current time (from ``clock``) in ``fmt`` (default: ``params.timestamp_format``)."""
        now = self.clock()
        fmt = fmt or self.params.timestamp_format
        if fmt == "s":
            return str(int(now))
        millis = round(now * 1000)
        if fmt == "ms":
            return str(millis)
        moment = datetime.fromtimestamp(millis // 1000, UTC)
        return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{millis % 1000:03d}Z"

    def redact(self, text: str) -> str:
        """``text`` with every credential value replaced by ``<redacted>``."""
        for secret in (self._key, self._secret, self._passphrase):
            if secret is not None and secret.reveal():
                text = text.replace(secret.reveal(), REDACTED)
        return text

    def key_headers(self) -> dict[str, str]:
        """Headers of a request that carries the API key but no signature."""
        return {self.params.key_header: self._key.reveal(), **self.params.extra_headers}

    # -- requests ---------------------------------------------------------------------------

    def sign(
        self,
        method: str,
        path: str,
        params: Params | None = None,
        body: str = "",
        *,
        timestamp: str | None = None,
    ) -> SignedRequest:
        """Sign one request: ``params`` go in the query string, ``body`` is sent as is."""
        pairs = param_pairs(params)
        if self.scheme == "hmac_sha256_hex":
            return self._sign_hex(pairs, body, timestamp)
        return self._sign_base64(method, path, pairs, body, timestamp)

    def _sign_hex(
        self, pairs: list[tuple[str, str]], body: str, timestamp: str | None
    ) -> SignedRequest:
        p = self.params
        names = {k for k, _ in pairs}
        if body and not body.lstrip().startswith(("{", "[")):
            names.update(k for k, _ in parse_qsl(body, keep_blank_values=True))
        if p.recv_window_param and p.recv_window is not None and p.recv_window_param not in names:
            pairs.append((p.recv_window_param, str(p.recv_window)))
        if p.timestamp_param and p.timestamp_param not in names:
            pairs.append((p.timestamp_param, timestamp or self.timestamp()))
        query = encode_query(pairs)
        signature = self.sign_hex(query + body)
        signed = f"{query}&" if query else ""
        headers = {p.key_header: self._key.reveal(), **p.extra_headers}
        return SignedRequest(f"{signed}{p.signature_param}={signature}", headers, body)

    def _sign_base64(
        self,
        method: str,
        path: str,
        pairs: list[tuple[str, str]],
        body: str,
        timestamp: str | None,
    ) -> SignedRequest:
        p = self.params
        query = encode_query(pairs)
        shown = query if p.prehash_query == "encoded" else "&".join(f"{k}={v}" for k, v in pairs)
        request_path = f"{path}?{shown}" if shown else path
        ts = timestamp or self.timestamp()
        headers = {
            p.key_header: self._key.reveal(),
            p.sign_header: self.sign_base64(prehash(ts, method, request_path, body)),
            p.timestamp_header: ts,
        }
        if self._passphrase is not None:
            passphrase = self._passphrase.reveal()
            if p.passphrase_mode == "hmac":
                passphrase = self.sign_base64(passphrase)
            headers[p.passphrase_header] = passphrase
        headers.update(p.extra_headers)
        return SignedRequest(query, headers, body)

    # -- WebSocket login --------------------------------------------------------------------

    def login_values(self, timestamp: str | int | None = None) -> dict[str, str | None]:
        """Variables of a descriptor's login message: api_key, passphrase (None when the
        signing section names no passphrase), timestamp and sign.

        ``sign`` is HMAC-SHA256 (base64 or hex, ``params.login_encoding``) over
        ``params.login_payload(api_key, passphrase, timestamp)``, or else over
        ``timestamp + login_method + login_path``; the timestamp defaults to now in
        ``params.login_timestamp_format``.
        """
        p = self.params
        ts = str(timestamp) if timestamp is not None else self.timestamp(p.login_timestamp_format)
        key = self._key.reveal()
        passphrase = self._passphrase.reveal() if self._passphrase is not None else None
        if p.login_payload is not None:
            payload = str(p.login_payload(key, passphrase, ts))
        else:
            payload = prehash(ts, p.login_method, p.login_path)
        sign = self.sign_hex(payload) if p.login_encoding == "hex" else self.sign_base64(payload)
        return {"api_key": key, "passphrase": passphrase, "timestamp": ts, "sign": sign}


def key_header_of(signing: SigningSpec) -> str:
    """The HTTP header that carries the API key of ``signing`` (its own, or the default)."""
    return signing.key_header or SigningParams.key_header


def login_signer(signing: SigningSpec, login: LoginSpec) -> Signer:
    """A Signer for a descriptor's WebSocket login (what ``sign`` covers comes from ``login``)."""
    params = SigningParams(
        login_method=login.sign_method,
        login_path=login.sign_path,
        login_timestamp_format=login.timestamp_format,
        login_payload=login.sign_payload,
        login_encoding=login.sign_encoding,
        key_header=key_header_of(signing),
    )
    return Signer(signing, params)


def rest_signer(signing: SigningSpec) -> Signer:
    """A Signer for a descriptor's REST endpoints (``signed`` or ``api_key``)."""
    return Signer(signing, SigningParams(key_header=key_header_of(signing)))
