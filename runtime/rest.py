"""The REST client generated modules' RestSpec drives: weights, signing, retries, failover."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import quote

import httpx
import orjson

from runtime.patterns import compile_template
from runtime.ratelimit import Clock, Sleep, WeightLimiter
from runtime.signing import REDACTED, Signer, encode_query, param_pairs, rest_signer
from runtime.spec import BootstrapSpec, RestEndpointSpec, RestSpec, SigningSpec

RETRY_STATUSES = frozenset({418, 429})
"""Rate-limit answers retried after a backoff (or ``Retry-After``); 5xx is retried too."""

EXCERPT_CHARS = 300

_BOOTSTRAP_ERRORS = (KeyError, IndexError, TypeError, ValueError, AttributeError)


class RestError(Exception):
    """A REST call that failed for good: last status (``None``: no reply), URL, body excerpt."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None,
        url: str,
        body_excerpt: str = "",
        attempts: int = 0,
    ) -> None:
        detail = f"{message} (status {status}, {attempts} attempt(s), {url})"
        if body_excerpt:
            detail += f": {body_excerpt}"
        super().__init__(detail)
        self.status = status
        self.url = url
        self.body_excerpt = body_excerpt
        self.attempts = attempts


@dataclass(frozen=True)
class RestReply:
    """A successful reply: ``body`` is decoded JSON, or text when it is not JSON.

    ``elapsed`` is the whole call in seconds, rate-limit waits and retries included.
    """

    status: int
    body: Any
    url: str
    elapsed: float
    attempts: int
    query: Mapping[str, str] = field(default_factory=dict)
    """The request's parameters as strings, path placeholders included: a REST parse's
    ``query``."""


@dataclass(frozen=True)
class BootstrapReply:
    """What a bootstrap call gives: the URL to connect to, the client ping interval (None:
    the descriptor's), and the decoded reply (keep-alive parameters are built from it)."""

    url: str
    ping_interval: float | None
    body: Any


@dataclass
class RestStats:
    """Counters for metrics: replies by status (or error name), retries, waits, failovers."""

    requests: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    rate_limit_wait: float = 0.0
    failovers: int = 0
    giveups: int = 0


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or HTTP date), or None."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - now
    return max(0.0, seconds) if seconds == seconds else None  # NaN check


def _fill_path(path: str, params: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """``path`` with its ``{name}`` placeholders taken (and removed) from ``params``, and the
    values used."""
    if "{" not in path:
        return path, {}
    template = compile_template(path)
    missing = [name for name in template.names if name not in params]
    if missing:
        raise ValueError(f"REST path {path!r} needs parameter(s) {', '.join(missing)}")
    values = {name: str(params.pop(name)) for name in template.names}
    return template.fill({k: quote(v, safe="") for k, v in values.items()}), values


def _decode(content: bytes) -> Any:
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return content.decode("utf-8", errors="replace")


class RestClient:
    """Calls the endpoints of one RestSpec.

    Each attempt takes the endpoint's weight from ``limiter`` (by default a WeightLimiter built
    from the spec's rate limit), is signed afresh when the endpoint is signed, and is retried
    with exponential backoff and full jitter on 418/429/5xx and transport errors, at most
    ``max_retries`` times after the first attempt. ``Retry-After`` replaces the backoff; one
    longer than ``max_retry_after`` gives up at once. Transport errors and 5xx move to the next
    base URL, which stays current for later calls. ``post_params="json"`` sends a POST/PUT's
    parameters as a JSON body instead of the query string.
    """

    def __init__(
        self,
        spec: RestSpec,
        *,
        signer: Signer | None = None,
        signing: SigningSpec | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        limiter: WeightLimiter | None = None,
        max_retries: int = 5,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        max_retry_after: float = 300.0,
        timeout: float = 10.0,
        post_params: Literal["query", "json"] = "query",
        headers: Mapping[str, str] | None = None,
        sleep: Sleep = asyncio.sleep,
        rng: Callable[[], float] = random.random,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
    ) -> None:
        if not spec.base_urls:
            raise ValueError("RestSpec has no base_urls")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.spec = spec
        self.signer = signer
        self._signing = signing
        """Where credentials come from when a call first needs them (``signer`` unset)."""
        if limiter is None and spec.rate_limit_weight and spec.rate_limit_seconds:
            limiter = WeightLimiter(
                spec.rate_limit_weight, spec.rate_limit_seconds, clock=clock, sleep=sleep
            )
        self.limiter = limiter
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.max_retry_after = max_retry_after
        self.post_params = post_params
        self.stats = RestStats()
        self._base = 0
        self._sleep = sleep
        self._rng = rng
        self._clock = clock
        self._wall_clock = wall_clock
        self._client = httpx.AsyncClient(
            transport=transport,
            timeout=timeout,
            headers={"Accept": "application/json", **(headers or {})},
        )

    def __repr__(self) -> str:
        return (
            f"RestClient(base_url={self.base_url!r}, signer={self.signer!r}, "
            f"max_retries={self.max_retries})"
        )

    @property
    def base_url(self) -> str:
        """The base URL requests currently go to."""
        return self.spec.base_urls[self._base]

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> RestClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- calls ------------------------------------------------------------------------------

    def endpoint(self, name: str) -> RestEndpointSpec:
        try:
            return self.spec.endpoints[name]
        except KeyError:
            known = ", ".join(sorted(self.spec.endpoints)) or "none"
            raise KeyError(f"no REST endpoint {name!r} (known: {known})") from None

    async def call(
        self,
        endpoint_name: str,
        *,
        raw: str | None = None,
        symbol: str | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> RestReply:
        """Call one endpoint; ``params`` override the endpoint's own ``params(raw, symbol)``."""
        ep = self.endpoint(endpoint_name)
        if (ep.signed or ep.api_key) and self.signer is None:
            if self._signing is None:
                raise ValueError(
                    f"REST endpoint {ep.name!r} needs credentials but the client has no signer"
                )
            self.signer = rest_signer(self._signing)  # SigningError names the missing env var
        merged: dict[str, Any] = {}
        if ep.params is not None:
            merged.update(ep.params(raw or "", symbol or ""))
        merged.update(params or {})
        path, path_values = _fill_path(ep.path, merged)
        pairs = param_pairs(merged)
        query = dict(pairs) | path_values
        method = ep.method.upper()
        body = ""
        if self.post_params == "json" and method in ("POST", "PUT") and pairs:
            body = orjson.dumps(dict(pairs)).decode()
            pairs = []

        start = self._clock()
        last_status: int | None = None
        last_excerpt = ""
        attempt = 0
        while True:
            attempt += 1
            await self._take_weight(ep.weight)
            request = self._build(ep, path, method, pairs, body)
            url = self._shown_url(path, request.url.query.decode())
            delay: float | None = None
            try:
                response = await self._client.send(request)
                content = await response.aread()
            except httpx.TransportError as exc:
                self.stats.requests[type(exc).__name__] += 1
                last_status = None
                last_excerpt = self._excerpt(f"{type(exc).__name__}: {exc}")
                self._failover()
            else:
                status = response.status_code
                self.stats.requests[str(status)] += 1
                if status < 400:
                    return RestReply(
                        status, _decode(content), url, self._clock() - start, attempt, query
                    )
                last_status = status
                last_excerpt = self._excerpt(content.decode("utf-8", errors="replace"))
                if status not in RETRY_STATUSES and status < 500:
                    raise RestError(
                        f"{method} {ep.name} was refused",
                        status=status,
                        url=url,
                        body_excerpt=last_excerpt,
                        attempts=attempt,
                    )
                delay = parse_retry_after(response.headers.get("Retry-After"), self._wall_clock())
                if delay is not None and delay > self.max_retry_after:
                    self.stats.giveups += 1
                    raise RestError(
                        f"{method} {ep.name}: the server asks to wait {delay:.0f}s "
                        f"(more than max_retry_after={self.max_retry_after:.0f}s)",
                        status=status,
                        url=url,
                        body_excerpt=last_excerpt,
                        attempts=attempt,
                    )
                if status >= 500:
                    self._failover()
            if attempt > self.max_retries:
                self.stats.giveups += 1
                raise RestError(
                    f"{method} {ep.name} failed after {attempt} attempt(s)",
                    status=last_status,
                    url=url,
                    body_excerpt=last_excerpt,
                    attempts=attempt,
                )
            self.stats.retries += 1
            await self._sleep(delay if delay is not None else self._backoff(attempt))

    async def bootstrap(self, spec: BootstrapSpec, base: str = "") -> BootstrapReply:
        """Call the bootstrap endpoint: the URL to connect to (``base`` is the endpoint's own
        URL), the ping interval, and the reply (for keep-alive calls)."""
        reply = await self.call(spec.endpoint)
        try:
            url = spec.url(reply.body, base)
            ping = spec.ping_interval(reply.body) if spec.ping_interval is not None else None
            ping_interval = float(ping) if ping is not None else None
        except _BOOTSTRAP_ERRORS as exc:
            raise RestError(
                f"bootstrap reply of {spec.endpoint!r} lacks what the descriptor reads "
                f"({type(exc).__name__}: {exc})",
                status=reply.status,
                url=reply.url,
                body_excerpt=self._excerpt(repr(reply.body)),
                attempts=reply.attempts,
            ) from None
        return BootstrapReply(url, ping_interval, reply.body)

    async def keepalive(self, spec: BootstrapSpec, bootstrap_reply: Any) -> RestReply:
        """The bootstrap's keep-alive call, with parameters built from its reply."""
        assert spec.keepalive_endpoint is not None
        params = None
        if spec.keepalive_params is not None:
            try:
                params = spec.keepalive_params(bootstrap_reply)
            except _BOOTSTRAP_ERRORS as exc:
                raise RestError(
                    f"keep-alive parameters of {spec.keepalive_endpoint!r}: the bootstrap reply "
                    f"lacks what the descriptor reads ({type(exc).__name__}: {exc})",
                    status=None,
                    url=self.base_url,
                ) from None
        return await self.call(spec.keepalive_endpoint, params=params)

    # -- helpers ----------------------------------------------------------------------------

    def _build(
        self,
        ep: RestEndpointSpec,
        path: str,
        method: str,
        pairs: list[tuple[str, str]],
        body: str,
    ) -> httpx.Request:
        headers: dict[str, str] = {}
        if body:
            headers["Content-Type"] = "application/json"
        if ep.signed and self.signer is not None:
            signed = self.signer.sign(method, path, pairs, body)
            query = signed.query
            headers.update(signed.headers)
        else:
            query = encode_query(pairs)
            if ep.api_key and self.signer is not None:
                headers.update(self.signer.key_headers())
        url = self.base_url + path + (f"?{query}" if query else "")
        return self._client.build_request(
            method, url, headers=headers, content=body.encode() if body else None
        )

    async def _take_weight(self, weight: int) -> None:
        if self.limiter is None or weight <= 0:
            return
        waited = await self.limiter.acquire(min(weight, self.limiter.capacity))
        self.stats.rate_limit_wait += waited

    def _backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2^(attempt-1)))."""
        ceiling = min(self.backoff_cap, self.backoff_base * 2.0 ** min(attempt - 1, 60))
        return self._rng() * ceiling

    def _failover(self) -> None:
        if len(self.spec.base_urls) > 1:
            self._base = (self._base + 1) % len(self.spec.base_urls)
            self.stats.failovers += 1

    def _shown_url(self, path: str, query: str) -> str:
        """The URL for messages: signature parameter and credential values redacted."""
        if query and self.signer is not None:
            name = self.signer.params.signature_param
            query = "&".join(
                f"{name}={REDACTED}" if part.startswith(f"{name}=") else part
                for part in query.split("&")
            )
        url = self.base_url + path + (f"?{query}" if query else "")
        return self.signer.redact(url) if self.signer is not None else url

    def _excerpt(self, text: str) -> str:
        if self.signer is not None:
            text = self.signer.redact(text)
        text = " ".join(text.split())
        return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 1] + "…"
