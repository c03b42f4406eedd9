"""Lower a validated descriptor into the IR the templates render: Python fragments, sorted."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from compiler.dsl import DslSyntaxError, Node, Spread, parse
from compiler.kinds import CURRENCY_KINDS, declared_fields, required_fields
from compiler.locate import Problem
from compiler.schema import BookSync, Channel, Descriptor, Parse
from compiler.translate import (
    RESERVED,
    Constants,
    Scope,
    Translator,
    uses_name,
    valid_variable_name,
)
from runtime.patterns import placeholders

TomlPath = tuple[str | int, ...]


@dataclass
class Function:
    """One generated function: ``def name(params) -> returns:`` + docstring + body lines."""

    name: str
    params: str
    returns: str
    doc: str
    body: list[str]


@dataclass
class ModuleIR:
    """Everything the module template needs, precomputed."""

    exchange_id: str
    exchange_name: str
    descriptor: str
    symbol_rules: str
    constants: list[tuple[str, str]]
    functions: list[Function]
    routes: list[str]
    spec: str


@dataclass
class _Route:
    condition: str
    entry: str
    endpoints: frozenset[str] | None = None
    """The WebSocket endpoints whose messages may take this route (None: every one)."""


def _call(func: str, *args: str, **kwargs: str | None) -> str:
    """Render ``func(a, k=v)`` omitting keyword arguments whose value is None."""
    parts = list(args) + [f"{k}={v}" for k, v in kwargs.items() if v is not None]
    return f"{func}({', '.join(parts)})"


def _tuple(items: list[str]) -> str:
    return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"


def _dict(items: list[tuple[str, str]]) -> str:
    return "{" + ", ".join(f"{k!r}: {v}" for k, v in items) + "}"


_SAFE_LOOKUP = re.compile(r"rt\.(?:path|get)\(m(?:, (?:'[^'\\]*'|-?\d+))+\)")


def _shared_lookups(conditions: list[str]) -> tuple[list[str], list[str]]:
    """Hoist safe lookups used by several routing conditions into locals (they are pure):
    the assignments, and the conditions rewritten to use them."""
    counts: dict[str, int] = {}
    for cond in conditions:
        for found in _SAFE_LOOKUP.findall(cond):
            counts[found] = counts.get(found, 0) + 1
    shared = [code for code, n in counts.items() if n > 1]
    body = []
    out = list(conditions)
    for i, code in enumerate(shared, 1):
        name = f"_v{i}"  # DSL variables cannot start with "_", so no comprehension clashes
        body.append(f"{name} = {code}")
        out = [cond.replace(code, name) for cond in out]
    return body, out


class Lowerer:
    """Builds a :class:`ModuleIR` and collects every problem found on the way."""

    def __init__(self, desc: Descriptor, descriptor_path: str, source_dir: Path) -> None:
        self.desc = desc
        self.descriptor_path = descriptor_path
        self.source_dir = source_dir
        self.problems: list[Problem] = []
        self.constants = Constants()
        self.functions: list[Function] = []

    # -- expressions ---------------------------------------------------------------------
    def parse_expr(self, path: TomlPath, source: str) -> Node | None:
        try:
            return parse(source)
        except DslSyntaxError as exc:
            end = min(exc.offset + 1, len(source))
            self.problems.append(Problem(path, "E200", exc.message, exc.offset, end))
            return None

    def translate(self, path: TomlPath, node: Node | None, scope: Scope) -> str:
        if node is None:
            return "None"
        translator = Translator(scope, self.constants)
        code = translator.translate(node)
        for p in translator.problems:
            self.problems.append(Problem(path, p.code, p.message, p.start, p.end))
        return code

    def expr(self, path: TomlPath, source: str, scope: Scope) -> str:
        return self.translate(path, self.parse_expr(path, source), scope)

    def error(self, path: TomlPath, code: str, message: str, *, at_key: bool = False) -> None:
        self.problems.append(Problem(path, code, message, at_key=at_key))

    # -- scopes --------------------------------------------------------------------------
    @staticmethod
    def message_scope(
        *, safe: bool = False, extra: dict[str, str] | None = None, ctx: bool = False
    ) -> Scope:
        """``$`` is the message; ``ctx`` (``bound()``) only where the function receives it."""
        return Scope(variables=dict(extra or {}), root="m", fields=True, safe=safe, has_ctx=ctx)

    def function(self, name: str, params: str, returns: str, doc: str, body: list[str]) -> str:
        self.functions.append(Function(name, params, returns, doc, body))
        return name

    def expr_function(
        self,
        name: str,
        params: str,
        returns: str,
        doc: str,
        path: TomlPath,
        source: str,
        scope: Scope,
    ) -> str:
        code = self.expr(path, source, scope)
        if returns == "bool":
            code = f"bool({code})"
        elif returns == "str":
            code = f"str({code})"
        elif returns == "list[Any]":
            code = f"list({code})"
        return self.function(name, params, returns, doc, [f"return {code}"])

    # -- the module ----------------------------------------------------------------------
    def lower(self) -> ModuleIR:
        d = self.desc
        routes: list[_Route] = []
        self._check_references()
        self._lower_control(routes)
        channel_specs: list[tuple[str, str]] = []
        for name, channel in d.channels.items():
            channel_specs.append((name, self._lower_channel(name, channel, routes)))
            channel_specs.extend(self._lower_also(name, channel, channel_specs))
        subscribe = self._lower_subscribe()
        on_connect = self._lower_on_connect()
        rest = self._lower_rest()
        bootstrap = self._lower_bootstrap()
        login = self._lower_login()
        route_fn = self._route_function(routes)
        endpoint_routes = self._endpoint_routes(routes)
        endpoints = [
            (
                name,
                _call(
                    "rt.WsEndpointSpec",
                    urls=_tuple([repr(u) for u in ep.urls]),
                    compression=repr(ep.compression),
                    max_streams=repr(ep.max_streams) if ep.max_streams else None,
                    max_outbound_per_second=(
                        repr(ep.max_outbound_per_second) if ep.max_outbound_per_second else None
                    ),
                    idle_timeout=repr(ep.idle_timeout),
                    max_lifetime=repr(ep.max_lifetime) if ep.max_lifetime else None,
                ),
            )
            for name, ep in d.websocket.endpoints.items()
        ]
        signing = None
        if d.signing is not None:
            s = d.signing
            signing = _call(
                "rt.SigningSpec",
                scheme=repr(s.scheme),
                key_env=repr(s.key_env),
                secret_env=repr(s.secret_env),
                passphrase_env=repr(s.passphrase_env) if s.passphrase_env else None,
                key_header=repr(s.key_header) if s.key_header else None,
            )
        spec = _call(
            "rt.ExchangeSpec",
            id=repr(d.exchange.id),
            name=repr(d.exchange.name),
            descriptor=repr(self.descriptor_path),
            symbols="SYMBOLS",
            route=route_fn,
            endpoint_routes=endpoint_routes,
            routes="ROUTES",
            endpoints=_dict(endpoints),
            subscribe=subscribe,
            channels=_dict(channel_specs),
            ack=self._lower_ack(),
            error=self._lower_error(),
            keepalive=self._lower_keepalive(),
            bootstrap=bootstrap,
            rest=rest,
            signing=signing,
            symbol_map_file=repr(d.symbols.symbol_map_file) if d.symbols.symbol_map_file else None,
            instruments=self._lower_instruments(),
            mock=self._lower_mock(),
            aliases=_tuple([repr(a) for a in d.exchange.aliases]) if d.exchange.aliases else None,
            on_connect=on_connect,
            login=login,
        )
        sym = d.symbols
        symbol_rules = _call(
            "rt.SymbolRules",
            separator=repr(sym.separator),
            case=repr(sym.case),
            quotes=_tuple([repr(q) for q in sym.quotes]) if sym.quotes else None,
            aliases=repr(dict(sorted(sym.aliases.items()))) if sym.aliases else None,
            suffixes=repr(dict(sorted(sym.suffixes.items()))) if sym.suffixes else None,
            patterns=self._symbol_patterns(),
        )
        return ModuleIR(
            exchange_id=d.exchange.id,
            exchange_name=d.exchange.name,
            descriptor=self.descriptor_path,
            symbol_rules=symbol_rules,
            constants=list(self.constants.items()),
            functions=self.functions,
            routes=[r.entry for r in routes],
            spec=spec,
        )

    # -- checks across sections -----------------------------------------------------------
    def _check_references(self) -> None:
        d = self.desc
        rest_eps = d.rest.endpoints if d.rest else {}
        sub = d.websocket.subscribe
        if sub.mode == "message" and sub.message is None:
            self.error(("websocket", "subscribe"), "E308", "mode 'message' needs 'message'")
        if sub.mode == "url" and sub.url is None:
            self.error(("websocket", "subscribe"), "E308", "mode 'url' needs 'url'")
        ack = d.websocket.ack
        if ack is not None and ack.per == "topic":
            if ack.key is None:
                self.error(("websocket", "ack"), "E308", "per = 'topic' needs 'key'")
            for name, ch in d.channels.items():
                if ch.ack_key is None and ch.topic is not None:
                    self.error(
                        ("channels", name), "E308", "ack per topic: each channel needs 'ack_key'"
                    )
        if ack is not None and (ack.bind_key is None) != (ack.bind_value is None):
            self.error(("websocket", "ack"), "E308", "'bind_key' and 'bind_value' go together")
        boot = d.websocket.bootstrap
        if boot is not None and boot.endpoint not in rest_eps:
            self.error(
                ("websocket", "bootstrap", "endpoint"),
                "E304",
                f"rest endpoint '{boot.endpoint}' is not defined in [rest.endpoints]",
            )
        if d.rest is not None and d.rest.time_endpoint and d.rest.time_endpoint not in rest_eps:
            self.error(
                ("rest", "time_endpoint"),
                "E304",
                f"rest endpoint '{d.rest.time_endpoint}' is not defined in [rest.endpoints]",
            )
        for name, ep in rest_eps.items():
            if (ep.parse is None) != (ep.channel is None):
                self.error(("rest", "endpoints", name), "E308", "'channel' and 'parse' go together")
            if ep.channel is not None and ep.channel not in d.channels:
                self.error(
                    ("rest", "endpoints", name, "channel"),
                    "E304",
                    f"channel '{ep.channel}' is not defined in [channels]",
                )
        login = d.websocket.login
        if login is not None:
            if d.signing is None:
                self.error(("websocket", "login"), "E308", "a login needs a [signing] section")
            self._check_ws_endpoints(("websocket", "login", "endpoints"), login.endpoints)
        if d.mock is not None and d.mock.login is not None and login is None:
            self.error(("mock", "login"), "E308", "[mock.login] needs a [websocket.login] section")
        if d.signing is None and any(ep.signed or ep.api_key for ep in rest_eps.values()):
            self.error(("rest",), "E308", "a signed or api_key endpoint needs a [signing] section")
        self._check_session_setup()
        inst = d.symbols.instruments
        if inst is not None and inst.endpoint not in rest_eps:
            self.error(
                ("symbols", "instruments", "endpoint"),
                "E304",
                f"rest endpoint '{inst.endpoint}' is not defined in [rest.endpoints]",
            )
        map_file = d.symbols.symbol_map_file
        if map_file is not None and not (self.source_dir / map_file).is_file():
            self.problems.append(
                Problem(
                    ("symbols", "symbol_map_file"),
                    "W001",
                    f"symbol_map_file '{d.symbols.symbol_map_file}' does not exist "
                    f"(relative to {self.source_dir})",
                    severity="warning",
                )
            )

    # -- control messages --------------------------------------------------------------------
    def _route(
        self,
        routes: list[_Route],
        path: TomlPath,
        source: str,
        entry: str,
        endpoints: frozenset[str] | None = None,
    ) -> None:
        cond = self.expr(path, source, self.message_scope(safe=True, ctx=True))
        routes.append(_Route(cond, entry, endpoints))

    def _lower_control(self, routes: list[_Route]) -> None:
        ws = self.desc.websocket
        ka = ws.keepalive
        if ka.server_ping is not None:
            self._route(
                routes,
                ("websocket", "keepalive", "server_ping", "match"),
                ka.server_ping.match,
                'rt.Route("ping")',
            )
        if ka.pong is not None:
            self._route(routes, ("websocket", "keepalive", "pong"), ka.pong, 'rt.Route("pong")')
        if ws.login is not None:
            self._route(
                routes,
                ("websocket", "login", "match"),
                ws.login.match,
                'rt.Route("login")',
                frozenset(ws.login.endpoints),
            )
        if ws.error is not None:
            self._route(
                routes, ("websocket", "error", "match"), ws.error.match, 'rt.Route("error")'
            )
        if ws.ack is not None:
            self._route(routes, ("websocket", "ack", "match"), ws.ack.match, 'rt.Route("ack")')
        scoped = frozenset(ws.control.endpoints) if ws.control.endpoints else None
        self._check_ws_endpoints(("websocket", "control", "endpoints"), ws.control.endpoints)
        for kind in ("reconnect", "heartbeat", "info"):
            source = getattr(ws.control, kind)
            if source is not None:
                self._route(
                    routes,
                    ("websocket", "control", kind),
                    source,
                    f'rt.Route("{kind}")',
                    scoped,
                )

    def _route_function(self, routes: list[_Route], endpoint: str | None = None) -> str:
        """``route`` over every rule, or ``route_<endpoint>`` over the rules that can match on
        that endpoint's connections (same ROUTES indices)."""
        taken = [
            (i, r)
            for i, r in enumerate(routes)
            if endpoint is None or r.endpoints is None or endpoint in r.endpoints
        ]
        body, conditions = _shared_lookups([r.condition for _, r in taken])
        for (i, _), cond in zip(taken, conditions, strict=True):
            body += [f"if {cond}:", f"    return {i}"]
        body.append("return -1")
        where = "" if endpoint is None else f" on endpoint '{endpoint}'"
        return self.function(
            "route" if endpoint is None else f"route_{endpoint}",
            "m: Any, ctx: rt.Context",
            "int",
            f"Index into ROUTES of the first rule that matches ``m``{where}, or -1 when none does.",
            body,
        )

    def _endpoint_routes(self, routes: list[_Route]) -> str | None:
        """Per-endpoint route functions, for endpoints that can skip some rules."""
        eps = self.desc.websocket.endpoints
        if len(eps) < 2:
            return None
        out = []
        for name in eps:
            if any(r.endpoints is not None and name not in r.endpoints for r in routes):
                out.append((name, self._route_function(routes, name)))
        return _dict(out) if out else None

    def _lower_ack(self) -> str | None:
        ack = self.desc.websocket.ack
        if ack is None:
            return None
        base = ("websocket", "ack")
        scope = self.message_scope

        def one(attr: str, returns: str = "Any") -> str | None:
            source = getattr(ack, attr)
            if source is None:
                return None
            return self.expr_function(
                f"ack_{attr}",
                "m: Any",
                returns,
                f"ACK rule '{attr}' applied to an ACK.",
                (*base, attr),
                source,
                scope(),
            )

        return _call(
            "rt.AckSpec",
            per=repr(ack.per),
            timeout=repr(ack.timeout),
            id=one("id"),
            key=one("key"),
            ok=one("ok", "bool"),
            reason=one("reason"),
            bind_key=one("bind_key"),
            bind_value=one("bind_value"),
        )

    def _lower_error(self) -> str | None:
        err = self.desc.websocket.error
        if err is None:
            return None
        fns: dict[str, str | None] = {}
        for attr in ("reason", "id"):
            source = getattr(err, attr)
            fns[attr] = (
                None
                if source is None
                else self.expr_function(
                    f"error_{attr}",
                    "m: Any",
                    "Any",
                    f"The {attr} an error message carries.",
                    ("websocket", "error", attr),
                    source,
                    self.message_scope(),
                )
            )
        return _call("rt.ErrorSpec", reason=fns["reason"], id=fns["id"])

    def _lower_keepalive(self) -> str | None:
        ka = self.desc.websocket.keepalive
        base = ("websocket", "keepalive")
        ping = reply = None
        if ka.client_ping is not None:
            scope = Scope(variables={"req_id": "req_id"}, generator=True)
            ping = self.expr_function(
                "client_ping",
                "req_id: int",
                "Any",
                "The keepalive message the client sends.",
                (*base, "client_ping", "message"),
                ka.client_ping.message,
                scope,
            )
        if ka.server_ping is not None:
            reply = self.expr_function(
                "server_ping_reply",
                "m: Any",
                "Any",
                "The reply to a server ping ``m``.",
                (*base, "server_ping", "reply"),
                ka.server_ping.reply,
                self.message_scope(),
            )
        if ping is None and reply is None and ka.protocol_ping_interval is None:
            return None
        return _call(
            "rt.KeepaliveSpec",
            client_ping_interval=repr(ka.client_ping.interval) if ka.client_ping else None,
            client_ping=ping,
            server_ping_reply=reply,
            protocol_ping_interval=(
                repr(ka.protocol_ping_interval) if ka.protocol_ping_interval else None
            ),
        )

    def _lower_subscribe(self) -> str:
        sub = self.desc.websocket.subscribe
        base = ("websocket", "subscribe")
        message = url = None
        if sub.message is not None:
            scope = Scope(
                variables={n: n for n in ("topics", "key", "req_id", "symbols")}, generator=True
            )
            message = self.expr_function(
                "subscribe_message",
                "topics: list[Any], key: Any, req_id: int, symbols: list[str]",
                "Any",
                "One subscribe message for a chunk of topics.",
                (*base, "message"),
                sub.message,
                scope,
            )
        if sub.url is not None:
            scope = Scope(variables={"base": "base", "topics": "topics"}, generator=True)
            url = self.expr_function(
                "subscribe_url",
                "base: str, topics: list[Any]",
                "str",
                "The connection URL that embeds ``topics``.",
                (*base, "url"),
                sub.url,
                scope,
            )
        return _call(
            "rt.SubscribeSpec",
            mode=repr(sub.mode),
            group=repr(sub.group),
            chunk=repr(sub.chunk),
            interval=repr(sub.interval),
            message=message,
            url=url,
        )

    def _lower_on_connect(self) -> str | None:
        """One function per message sent right after connecting (``req_id`` is fresh)."""
        messages = self.desc.websocket.on_connect
        if not messages:
            return None
        names = []
        for i, source in enumerate(messages):
            names.append(
                self.expr_function(
                    f"connect_message_{i}",
                    "req_id: int",
                    "Any",
                    f"Message {i} sent right after connecting, before subscribing.",
                    ("websocket", "on_connect", i),
                    source,
                    Scope(variables={"req_id": "req_id"}, generator=True),
                )
            )
        return _tuple(names)

    def _symbol_patterns(self) -> str | None:
        patterns = self.desc.symbols.patterns
        for i, p in enumerate(patterns):
            try:
                raw = placeholders(p.raw)
                canonical = placeholders(p.canonical)
            except ValueError as exc:
                self.error(("symbols", "patterns", i), "E103", str(exc))
                continue
            if set(raw) != set(canonical):
                self.error(
                    ("symbols", "patterns", i),
                    "E308",
                    "'raw' and 'canonical' must use the same placeholders "
                    f"(raw: {', '.join(raw) or 'none'}; "
                    f"canonical: {', '.join(canonical) or 'none'})",
                )
        if not patterns:
            return None
        return _tuple([_tuple([repr(p.raw), repr(p.canonical)]) for p in patterns])

    # -- channels ----------------------------------------------------------------------
    def _endpoint_of(self, name: str, channel: Channel) -> str:
        eps = self.desc.websocket.endpoints
        if channel.endpoint is not None:
            if channel.endpoint not in eps:
                self.error(
                    ("channels", name, "endpoint"),
                    "E304",
                    f"websocket endpoint '{channel.endpoint}' is not defined; "
                    f"defined: {', '.join(eps)}",
                )
            return channel.endpoint
        if len(eps) > 1:
            self.error(
                ("channels", name),
                "E308",
                "several websocket endpoints exist: say which one with 'endpoint'",
            )
        return next(iter(eps))

    def _lower_channel(self, name: str, ch: Channel, routes: list[_Route]) -> str:
        base: TomlPath = ("channels", name)
        endpoint = self._endpoint_of(name, ch)
        topic = "None"
        if ch.topic is not None:
            topic = self.expr_function(
                f"topic_{name}",
                "raw: str, symbol: str",
                "Any",
                f"The subscription topic of channel '{name}' for one symbol.",
                (*base, "topic"),
                ch.topic,
                Scope(variables={"raw": "raw", "symbol": "symbol"}),
            )
        applies = None
        if ch.for_symbols is not None:
            applies = self.expr_function(
                f"for_symbols_{name}",
                "raw: str, symbol: str",
                "bool",
                f"Does channel '{name}' exist for this symbol?",
                (*base, "for_symbols"),
                ch.for_symbols,
                Scope(variables={"raw": "raw", "symbol": "symbol"}),
            )
        key = None
        if ch.key is not None:
            key = self.expr_function(
                f"key_{name}",
                "",
                "Any",
                f"The grouping key of channel '{name}'.",
                (*base, "key"),
                ch.key,
                Scope(variables={}),
            )
        ack_key = None
        if ch.ack_key is not None:
            ack_key = self.expr_function(
                f"ack_key_{name}",
                "raw: str, symbol: str, key: Any",
                "Any",
                f"What an ACK for channel '{name}' and one symbol is matched on.",
                (*base, "ack_key"),
                ch.ack_key,
                Scope(variables={"raw": "raw", "symbol": "symbol", "key": "key"}),
            )
        parser = self._parser(f"parse_{name}", base, name, ch, ch.kind, rest=False)
        if ch.also:
            parsers = [parser] + [
                self._parser(f"parse_{a}", (*base, "also", a), a, also, also.kind, rest=False)
                for a, also in ch.also.items()
            ]
            parser = self.function(
                f"dispatch_{name}",
                "m: Any, ts_recv: int, ctx: rt.Context",
                "list[rt.Record]",
                f"Records of channel '{name}' and of the channels that parse its messages too.",
                ["return " + " + ".join(f"{p}(m, ts_recv, ctx)" for p in parsers)],
            )
        self._route(
            routes,
            (*base, "match"),
            ch.match,
            f'rt.Route("data", {name!r}, {parser})',
            frozenset({endpoint}),
        )
        sync = None
        if ch.sync is not None:
            if ch.kind != "book":
                self.error((*base, "sync"), "E308", "'sync' applies to channels of kind 'book'")
            s = ch.sync
            if s.snapshot == "rest":
                eps = self.desc.rest.endpoints if self.desc.rest else {}
                if s.rest_endpoint is None:
                    self.error((*base, "sync"), "E308", "snapshot 'rest' needs 'rest_endpoint'")
                elif s.rest_endpoint not in eps:
                    self.error(
                        (*base, "sync", "rest_endpoint"),
                        "E304",
                        f"rest endpoint '{s.rest_endpoint}' is not defined",
                    )
                elif eps[s.rest_endpoint].channel != name:
                    self.error(
                        (*base, "sync", "rest_endpoint"),
                        "E308",
                        f"rest endpoint '{s.rest_endpoint}' must set channel = '{name}'",
                    )
            if s.checksum != "none" and "checksum" not in ch.fields:
                self.error(
                    (*base, "fields"), "E305", f"checksum '{s.checksum}' needs a 'checksum' field"
                )
            request = self._sync_request(name, base, ch, s)
            sync = _call(
                "rt.BookSyncSpec",
                snapshot=repr(s.snapshot),
                rest_endpoint=repr(s.rest_endpoint),
                sequence=repr(s.sequence),
                checksum=repr(s.checksum),
                checksum_depth=repr(s.checksum_depth) if s.checksum_depth else None,
                depth=repr(s.depth) if s.depth else None,
                request=request,
                snapshot_channel=repr(s.snapshot_channel) if s.snapshot_channel else None,
            )
        return _call(
            "rt.ChannelSpec",
            name=repr(name),
            kind=repr(ch.kind),
            endpoint=repr(endpoint),
            topic=topic,
            key=key,
            ack_key=ack_key,
            sync=sync,
            for_symbols=applies,
        )

    def _sync_request(self, name: str, base: TomlPath, ch: Channel, s: BookSync) -> str | None:
        """Checks ``sync.request`` / ``sync.snapshot_channel``; the request function's name."""
        path = (*base, "sync")
        if (s.snapshot == "ws_request") != (s.request is not None):
            self.error(path, "E308", "'request' goes with snapshot 'ws_request' (and only with it)")
        if (s.snapshot == "channel") != (s.snapshot_channel is not None):
            self.error(
                path, "E308", "'snapshot_channel' goes with snapshot 'channel' (and only with it)"
            )
        source = self.desc.channels.get(s.snapshot_channel) if s.snapshot_channel else None
        if s.snapshot_channel is not None and source is None:
            self.error(
                (*path, "snapshot_channel"),
                "E304",
                f"channel '{s.snapshot_channel}' is not defined",
            )
        elif source is not None and (
            s.snapshot_channel == name
            or source.kind != "book"
            or (source.endpoint or "") != (ch.endpoint or "")
            or (source.sync is not None and source.sync.snapshot == "channel")
        ):
            self.error(
                (*path, "snapshot_channel"),
                "E308",
                "the snapshot channel must be another book channel on the same endpoint, "
                "itself not taking snapshots from a channel",
            )
        if s.request is None:
            return None
        return self.expr_function(
            f"request_{name}",
            "raw: str, symbol: str, req_id: int",
            "Any",
            f"The snapshot request of channel '{name}' for one symbol.",
            (*path, "request"),
            s.request,
            Scope(variables={"raw": "raw", "symbol": "symbol", "req_id": "req_id"}, generator=True),
        )

    def _lower_also(
        self, name: str, ch: Channel, specs: list[tuple[str, str]]
    ) -> list[tuple[str, str]]:
        """Channel specs of ``also`` channels: the parent's subscription, ``source`` = parent."""
        out: list[tuple[str, str]] = []
        taken = set(self.desc.channels) | {n for n, _ in specs}
        for a, also in ch.also.items():
            if a in taken:
                self.error(
                    ("channels", name, "also", a),
                    "E308",
                    f"channel name '{a}' is used twice",
                    at_key=True,
                )
            taken.add(a)
            out.append(
                (
                    a,
                    _call(
                        "rt.ChannelSpec",
                        name=repr(a),
                        kind=repr(also.kind),
                        endpoint=repr(ch.endpoint or next(iter(self.desc.websocket.endpoints))),
                        topic=f"topic_{name}" if ch.topic is not None else "None",
                        key=f"key_{name}" if ch.key is not None else None,
                        ack_key=f"ack_key_{name}" if ch.ack_key is not None else None,
                        source=repr(name),
                    ),
                )
            )
        return out

    def _parser(
        self, fname: str, base: TomlPath, channel: str, p: Parse, kind: str, *, rest: bool
    ) -> str:
        """Generate the function turning one message into records of ``channel``."""
        allowed = declared_fields(kind)
        for f in p.fields:
            if f not in allowed:
                self.error(
                    (*base, "fields", f),
                    "E306",
                    f"'{f}' is not a field of kind '{kind}' (fields: {', '.join(allowed)})",
                    at_key=True,
                )
        for f in required_fields(kind):
            if f not in p.fields:
                self.error((*base, "fields"), "E305", f"kind '{kind}' needs field '{f}'")
        extra = {"query": "query"} if rest else {}
        body: list[str] = []
        lets: dict[str, str] = {}
        for var, source in p.let.items():
            if not valid_variable_name(var) or var.startswith("f_") or var in RESERVED | {"it"}:
                self.error(
                    (*base, "let", var),
                    "E307",
                    f"'{var}' cannot be used as a variable name",
                    at_key=True,
                )
            code = self.expr(
                (*base, "let", var), source, self.message_scope(extra=extra | lets, ctx=True)
            )
            body.append(f"{var} = {code}")
            lets[var] = var
        scope_vars = extra | lets
        each_node = None
        if p.each is not None:
            each_node = self.parse_expr((*base, "each"), p.each)
            if isinstance(each_node, Spread):
                each_node = each_node.obj
        item_vars = scope_vars | ({"it": "it"} if each_node is not None else {})
        where = None
        if p.where is not None:
            where = self.expr(
                (*base, "where"), p.where, self.message_scope(extra=item_vars, ctx=True)
            )
        values: dict[str, str] = {}
        hoisted: list[str] = []
        per_item: list[str] = []  # the symbol, when it depends on the item
        for f in allowed:
            if f not in p.fields:
                continue
            path = (*base, "fields", f)
            node = self.parse_expr(path, p.fields[f])
            code = self.translate(path, node, self.message_scope(extra=item_vars, ctx=True))
            in_loop = node is not None and each_node is not None and uses_name(node, "it")
            local = "symbol_raw" if f == "symbol" else f"f_{f}"
            if f == "symbol" and in_loop:
                per_item.append(f"symbol_raw = {code}")
                values[f] = local
            elif f == "symbol" or (each_node is not None and not in_loop):
                hoisted.append(f"{local} = {code}")
                values[f] = local
            else:
                values[f] = code
        record = self._record(channel, kind, values)
        if each_node is None:
            if where is not None:
                body += [f"if not ({where}):", "    return []"]
            body += hoisted
            body.append(f"return [{record}]")
        else:
            source = self.translate(
                (*base, "each"), each_node, self.message_scope(extra=scope_vars, ctx=True)
            )
            body += hoisted
            body.append("out: list[rt.Record] = []")
            body.append(f"for it in {source}:")
            if where is not None:
                body += [f"    if not ({where}):", "        continue"]
            body += [f"    {line}" for line in per_item]
            body.append(f"    out.append({record})")
            body.append("return out")
        params = (
            "m: Any, query: Mapping[str, str], ts_recv: int, ctx: rt.Context"
            if rest
            else "m: Any, ts_recv: int, ctx: rt.Context"
        )
        what = "a REST reply" if rest else "one message"
        return self.function(
            fname,
            params,
            "list[rt.Record]",
            f"Records of channel '{channel}' (kind {kind}) from {what}.",
            body,
        )

    @staticmethod
    def _record(channel: str, kind: str, values: dict[str, str]) -> str:
        items = [
            ("exchange", "EXCHANGE"),
            ("channel", repr(channel)),
            (
                "symbol",
                "symbol_raw" if kind in CURRENCY_KINDS else "SYMBOLS.canonical(symbol_raw)",
            ),
            ("symbol_raw", "symbol_raw"),
            ("ts_exchange", values.get("ts_exchange", "None")),
            ("ts_recv", "ts_recv"),
            ("seq", values.get("seq", "None")),
        ]
        for f in declared_fields(kind)[3:]:
            items.append((f, values.get(f, "None")))
        return "{" + ", ".join(f"{k!r}: {v}" for k, v in items) + "}"

    # -- REST ------------------------------------------------------------------------------
    def _lower_rest(self) -> str | None:
        rest = self.desc.rest
        if rest is None:
            return None
        eps: list[tuple[str, str]] = []
        for name, ep in rest.endpoints.items():
            base: TomlPath = ("rest", "endpoints", name)
            params = None
            try:
                in_path = placeholders(ep.path)
            except ValueError as exc:
                self.error((*base, "path"), "E103", str(exc))
                in_path = []
            if in_path and ep.params is None:
                self.error(
                    (*base, "path"),
                    "E308",
                    f"the path placeholders ({', '.join(in_path)}) need 'params' that set them",
                )
            if ep.params is not None:
                params = self.expr_function(
                    f"rest_{name}_params",
                    "raw: str, symbol: str",
                    "dict[str, Any]",
                    f"Query parameters of REST endpoint '{name}' for one symbol.",
                    (*base, "params"),
                    ep.params,
                    Scope(variables={"raw": "raw", "symbol": "symbol"}),
                )
            parser = None
            if ep.parse is not None and ep.channel is not None and ep.channel in self.desc.channels:
                kind = self.desc.channels[ep.channel].kind
                parser = self._parser(
                    f"rest_{name}_parse", (*base, "parse"), ep.channel, ep.parse, kind, rest=True
                )
            eps.append(
                (
                    name,
                    _call(
                        "rt.RestEndpointSpec",
                        name=repr(name),
                        method=repr(ep.method),
                        path=repr(ep.path),
                        weight=repr(ep.weight),
                        signed=repr(ep.signed) if ep.signed else None,
                        api_key=repr(ep.api_key) if ep.api_key else None,
                        params=params,
                        channel=repr(ep.channel) if ep.channel else None,
                        parse=parser,
                    ),
                )
            )
        rl = rest.rate_limit
        return _call(
            "rt.RestSpec",
            base_urls=_tuple([repr(u) for u in rest.base_urls]),
            rate_limit_weight=repr(rl.weight) if rl else None,
            rate_limit_seconds=repr(rl.per_seconds) if rl else None,
            time_endpoint=repr(rest.time_endpoint) if rest.time_endpoint else None,
            endpoints=_dict(eps),
        )

    def _lower_mock(self) -> str | None:
        mock = self.desc.mock
        if mock is None:
            return None
        base = ("mock",)
        request = self.message_scope
        reply_scope = Scope(
            variables={"topic": "topic"}, root="m", fields=True, has_ctx=False, generator=True
        )
        fns: dict[str, str | None] = {
            "subscribe": self.expr_function(
                "mock_subscribe",
                "m: Any",
                "bool",
                "Is the client message ``m`` a subscribe?",
                (*base, "subscribe"),
                mock.subscribe,
                request(safe=True),
            ),
            "topics": self.expr_function(
                "mock_topics",
                "m: Any",
                "list[Any]",
                "The topics a subscribe request asks for.",
                (*base, "topics"),
                mock.topics,
                request(),
            ),
            "key": None,
            "ping": None,
            "client_ping": None,
            "pong": None,
        }
        if (mock.client_ping is None) != (mock.pong is None):
            self.error(base, "E308", "'client_ping' and 'pong' go together")
        if mock.client_ping is not None and mock.pong is not None:
            fns["client_ping"] = self.expr_function(
                "mock_client_ping",
                "m: Any",
                "bool",
                "Is the client message ``m`` a ping?",
                (*base, "client_ping"),
                mock.client_ping,
                request(safe=True),
            )
            fns["pong"] = self.expr_function(
                "mock_pong",
                "m: Any",
                "Any",
                "The mock's answer to a client ping ``m``.",
                (*base, "pong"),
                mock.pong,
                request(),
            )
        if mock.key is not None:
            fns["key"] = self.expr_function(
                "mock_key",
                "m: Any",
                "Any",
                "The grouping key a subscribe request carries.",
                (*base, "key"),
                mock.key,
                request(),
            )
        for attr, doc in (("ack", "accepts"), ("reject", "rejects")):
            fns[attr] = self.expr_function(
                f"mock_{attr}",
                "m: Any, topic: Any",
                "Any",
                f"The reply that {doc} subscribe request ``m`` (for ``topic`` when per topic).",
                (*base, attr),
                getattr(mock, attr),
                reply_scope,
            )
        if mock.ping is not None:
            fns["ping"] = self.expr_function(
                "mock_ping",
                "req_id: int",
                "Any",
                "A server ping the mock sends.",
                (*base, "ping"),
                mock.ping,
                Scope(variables={"req_id": "req_id"}, generator=True),
            )
        return _call(
            "rt.MockSpec",
            subscribe=fns["subscribe"],
            topics=fns["topics"],
            ack_per=repr(mock.ack_per),
            ack=fns["ack"],
            reject=fns["reject"],
            key=fns["key"],
            ping=fns["ping"],
            ping_interval=repr(mock.ping_interval),
            pong_timeout=repr(mock.pong_timeout) if mock.pong_timeout else None,
            client_ping=fns["client_ping"],
            pong=fns["pong"],
            login=self._lower_mock_login(),
            request=self._lower_mock_request(),
        )

    def _lower_mock_request(self) -> str | None:
        mock = self.desc.mock
        if mock is None or mock.request is None:
            return None
        mr = mock.request
        base = ("mock", "request")
        reply_scope = Scope(
            variables={"frame": "frame"}, root="m", fields=True, has_ctx=False, generator=True
        )
        reject_scope = Scope(variables={}, root="m", fields=True, generator=True)
        fns: dict[str, str | None] = {
            "match": self.expr_function(
                "mock_request_match",
                "m: Any",
                "bool",
                "Is the client message ``m`` a request the mock answers?",
                (*base, "match"),
                mr.match,
                self.message_scope(safe=True),
            ),
            "key": self.expr_function(
                "mock_request_key",
                "m: Any",
                "Any",
                "The key of request ``m``.",
                (*base, "key"),
                mr.key,
                self.message_scope(),
            ),
            "reply_key": self.expr_function(
                "mock_request_reply_key",
                "m: Any",
                "Any",
                "The key of the request a captured frame ``m`` answers (null: not a reply).",
                (*base, "reply_key"),
                mr.reply_key,
                self.message_scope(safe=True),
            ),
            "reply": None,
            "reject": None,
        }
        if mr.reply is not None:
            fns["reply"] = self.expr_function(
                "mock_request_reply",
                "m: Any, frame: Any",
                "Any",
                "The reply to request ``m`` built from the captured reply ``frame``.",
                (*base, "reply"),
                mr.reply,
                reply_scope,
            )
        if mr.reject is not None:
            fns["reject"] = self.expr_function(
                "mock_request_reject",
                "m: Any",
                "Any",
                "The reply to request ``m`` when the capture has no reply for its key.",
                (*base, "reject"),
                mr.reject,
                reject_scope,
            )
        return _call("rt.MockRequestSpec", **fns)

    def _lower_login(self) -> str | None:
        login = self.desc.websocket.login
        if login is None:
            return None
        base = ("websocket", "login")
        names = ("req_id", "api_key", "passphrase", "timestamp", "sign")
        message = self.expr_function(
            "login_message",
            "req_id: int, api_key: str, passphrase: str | None, timestamp: str, sign: str",
            "Any",
            "The login message sent after connecting, before subscribing.",
            (*base, "message"),
            login.message,
            Scope(variables={n: n for n in names}, generator=True),
        )
        ok = reason = None
        if login.ok is not None:
            ok = self.expr_function(
                "login_ok",
                "m: Any",
                "bool",
                "Does the login reply ``m`` accept the login?",
                (*base, "ok"),
                login.ok,
                self.message_scope(safe=True),
            )
        if login.reason is not None:
            reason = self.expr_function(
                "login_reason",
                "m: Any",
                "Any",
                "Why the login reply ``m`` rejects the login.",
                (*base, "reason"),
                login.reason,
                self.message_scope(safe=True),
            )
        payload = None
        if login.sign_payload is not None:
            payload = self.expr_function(
                "login_sign_payload",
                "api_key: str, passphrase: str | None, timestamp: str",
                "str",
                "What the login signature covers.",
                (*base, "sign_payload"),
                login.sign_payload,
                Scope(variables={n: n for n in ("api_key", "passphrase", "timestamp")}),
            )
        return _call(
            "rt.LoginSpec",
            endpoints=_tuple([repr(e) for e in login.endpoints]),
            message=message,
            sign_path=repr(login.sign_path) if login.sign_path else None,
            sign_payload=payload,
            sign_encoding=repr(login.sign_encoding) if login.sign_encoding != "base64" else None,
            sign_method=repr(login.sign_method),
            timestamp_format=repr(login.timestamp),
            ok=ok,
            reason=reason,
            timeout=repr(login.timeout),
        )

    def _lower_mock_login(self) -> str | None:
        mock = self.desc.mock
        if mock is None or mock.login is None:
            return None
        ml = mock.login
        base = ("mock", "login")
        fns = {
            "match": self.expr_function(
                "mock_login_match",
                "m: Any",
                "bool",
                "Is the client message ``m`` a login?",
                (*base, "match"),
                ml.match,
                self.message_scope(safe=True),
            )
        }
        for attr, doc in (
            ("timestamp", "The timestamp a login ``m`` was signed with."),
            ("sign", "The signature a login ``m`` carries."),
            ("accept", "The reply accepting login ``m``."),
            ("reject", "The reply rejecting login ``m``."),
        ):
            scope = (
                Scope(variables={}, root="m", fields=True, generator=True)
                if attr in ("accept", "reject")
                else self.message_scope()
            )
            fns[attr] = self.expr_function(
                f"mock_login_{attr}", "m: Any", "Any", doc, (*base, attr), getattr(ml, attr), scope
            )
        return _call("rt.MockLoginSpec", **fns)

    def _check_ws_endpoints(self, path: TomlPath, names: list[str]) -> None:
        """E304 for each name in the list at ``path`` that is not a WebSocket endpoint."""
        for i, ep_name in enumerate(names):
            if ep_name not in self.desc.websocket.endpoints:
                self.error(
                    (*path, i),
                    "E304",
                    f"endpoint '{ep_name}' is not defined in [websocket.endpoints]",
                )

    def _check_session_setup(self) -> None:
        """Bootstrap endpoints, keep-alive, login payload, and channels without a topic."""
        d = self.desc
        ws = d.websocket
        rest_eps = d.rest.endpoints if d.rest else {}
        boot = ws.bootstrap
        if boot is not None:
            self._check_ws_endpoints(("websocket", "bootstrap", "endpoints"), boot.endpoints)
            keep = boot.keepalive
            if keep is not None and keep.endpoint not in rest_eps:
                self.error(
                    ("websocket", "bootstrap", "keepalive", "endpoint"),
                    "E304",
                    f"rest endpoint '{keep.endpoint}' is not defined in [rest.endpoints]",
                )
        login = ws.login
        if login is not None and (login.sign_path is None) == (login.sign_payload is None):
            self.error(
                ("websocket", "login"),
                "E308",
                "a login needs exactly one of 'sign_path' and 'sign_payload'",
            )
        set_up: set[str] = set(login.endpoints) if login is not None else set()
        if boot is not None:
            set_up |= set(boot.endpoints or ws.endpoints)
        for name, ch in d.channels.items():
            if ch.topic is None and (ch.endpoint or next(iter(ws.endpoints))) not in set_up:
                self.error(
                    ("channels", name),
                    "E308",
                    "a channel without 'topic' needs an endpoint that bootstraps or logs in "
                    "(nothing else would make its messages come)",
                )

    def _lower_bootstrap(self) -> str | None:
        boot = self.desc.websocket.bootstrap
        if boot is None:
            return None
        base = ("websocket", "bootstrap")
        url = self.expr_function(
            "bootstrap_url",
            "m: Any, base: str",
            "str",
            "The URL to connect to, from the bootstrap reply and the endpoint's URL ``base``.",
            (*base, "url"),
            boot.url,
            self.message_scope(extra={"base": "base"}),
        )
        keep = boot.keepalive
        keep_params = None
        if keep is not None and keep.params is not None:
            keep_params = self.expr_function(
                "bootstrap_keepalive_params",
                "m: Any",
                "Any",
                "Parameters of the keep-alive call, from the bootstrap reply.",
                (*base, "keepalive", "params"),
                keep.params,
                self.message_scope(),
            )
        interval = None
        if boot.ping_interval is not None:
            interval = self.expr_function(
                "bootstrap_ping_interval",
                "m: Any",
                "Any",
                "The client ping interval in seconds, from the bootstrap reply.",
                (*base, "ping_interval"),
                boot.ping_interval,
                self.message_scope(),
            )
        return _call(
            "rt.BootstrapSpec",
            endpoint=repr(boot.endpoint),
            url=url,
            ping_interval=interval,
            endpoints=_tuple([repr(e) for e in boot.endpoints]) if boot.endpoints else None,
            keepalive_endpoint=repr(keep.endpoint) if keep is not None else None,
            keepalive_interval=repr(keep.interval) if keep is not None else None,
            keepalive_params=keep_params,
        )

    def _lower_instruments(self) -> str | None:
        """``[symbols.instruments]``: the functions that turn instrument-list replies into
        (raw, canonical) overrides; the runtime calls them item by item."""
        inst = self.desc.symbols.instruments
        if inst is None:
            return None
        base = ("symbols", "instruments")
        each_node = self.parse_expr((*base, "each"), inst.each)
        if isinstance(each_node, Spread):
            each_node = each_node.obj
        each_code = self.translate((*base, "each"), each_node, self.message_scope())
        each = self.function(
            "instruments_each",
            "m: Any",
            "list[Any]",
            "The items of an instrument-list reply.",
            [f"return list({each_code})"],
        )
        item = self.message_scope(extra={"it": "it"})
        fns: dict[str, str | None] = {"where": None}
        for attr, returns, doc in (
            ("where", "bool", "Whether item ``it`` of the instrument list gives an override."),
            ("raw", "str", "The raw symbol of instrument-list item ``it``."),
            ("canonical", "str", "The canonical symbol of instrument-list item ``it``."),
        ):
            source = getattr(inst, attr)
            if source is not None:
                fns[attr] = self.expr_function(
                    f"instruments_{attr}",
                    "m: Any, it: Any",
                    returns,
                    doc,
                    (*base, attr),
                    source,
                    item,
                )
        requests = _tuple([repr(dict(r)) for r in inst.requests])
        return _call(
            "rt.InstrumentsSpec",
            endpoint=repr(inst.endpoint),
            requests=requests,
            each=each,
            raw=fns["raw"],
            canonical=fns["canonical"],
            where=fns["where"],
        )


def lower(
    desc: Descriptor, descriptor_path: str, source_dir: Path
) -> tuple[ModuleIR, list[Problem]]:
    """Lower ``desc``; the IR is only meaningful when no error-severity problem is returned."""
    lowerer = Lowerer(desc, descriptor_path, source_dir)
    ir = lowerer.lower()
    return ir, lowerer.problems


__all__ = ["Function", "ModuleIR", "lower"]
