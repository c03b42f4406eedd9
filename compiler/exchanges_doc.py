"""``docs/exchanges.md``: which venue offers which channels, with which order-book guarantees.

:func:`render_exchanges_table` turns parsed descriptors into the page's markdown. The output
depends only on the descriptors (venues sorted by id, channels in file order), so a fresh
rendering can be compared with the committed page.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, get_args

from compiler.schema import BookSync, ChannelKind, Descriptor

KINDS: tuple[str, ...] = get_args(ChannelKind)
"""Record kinds, in the schema's order: the columns of the channel table."""

_SEQUENCE = {
    "none": "no sequence check",
    "contiguous": "each delta's `seq_first` = previous `seq` + 1",
    "straddle": "the first delta spans the snapshot's `seq`, then contiguous",
    "prev_seq": "each delta's `prev_seq` = previous `seq`",
    "monotonic": "`seq` only increases",
}
_SNAPSHOT = {
    "first_message": "the channel's first message",
    "rest": "a REST call",
    "ws_request": "a request sent on the WebSocket, answered in the channel",
    "every_message": "every message is a whole book",
    "channel": "the records of another channel (subscribed with it)",
}


def load_descriptors(folder: Path) -> list[Descriptor]:
    """Every ``*.toml`` of ``folder`` parsed into the schema (no DSL checks), sorted by name."""
    return [
        Descriptor.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))
        for path in sorted(folder.glob("*.toml"))
    ]


def render_exchanges_table(descriptors: list[Descriptor]) -> str:
    """The markdown of ``docs/exchanges.md`` for ``descriptors`` (order does not matter)."""
    venues = sorted(descriptors, key=lambda d: d.exchange.id)
    out = [
        "# Exchanges",
        "",
        "<!-- Generated from descriptors/*.toml by compiler/exchanges_doc.py; do not edit. -->",
        "",
        f"{len(venues)} venues. Each cell names the descriptor's channels of that record kind "
        "(the `--channels` names); records are described in "
        "[descriptor-reference.md](descriptor-reference.md#12-normalized-records).",
        "",
        "## Channels",
        "",
        _row(["exchange", "market", *KINDS]),
        _row(["---"] * (2 + len(KINDS))),
    ]
    for d in venues:
        by_kind: dict[str, list[str]] = {k: [] for k in KINDS}
        for name, kind, parent in _channels(d):
            by_kind[kind].append(f"{name} (on {parent})" if parent else name)
        cells = [", ".join(by_kind[k]) or "–" for k in KINDS]
        out.append(_row([f"`{d.exchange.id}`", d.exchange.market, *cells]))
    out += [
        "",
        "## Order books",
        "",
        "Where each book channel's full book comes from, how deltas are checked for gaps, and "
        "the checksum verified after each update.",
        "",
        _row(["exchange", "channel", "snapshot", "sequence", "checksum", "depth"]),
        _row(["---"] * 6),
    ]
    for d in venues:
        for name, channel in d.channels.items():
            if channel.kind != "book":
                continue
            sync = channel.sync
            if sync is None:
                out.append(_row([f"`{d.exchange.id}`", name, "not declared", "–", "–", "–"]))
                continue
            out.append(
                _row(
                    [
                        f"`{d.exchange.id}`",
                        name,
                        _snapshot(d, sync),
                        f"`{sync.sequence}`",
                        _checksum(sync),
                        str(sync.depth) if sync.depth else "–",
                    ]
                )
            )
    out += ["", "Snapshot sources:", ""]
    out += [f"- `{k}`: {v}" for k, v in _SNAPSHOT.items()]
    out += ["", "Sequence rules:", ""]
    out += [f"- `{k}`: {v}" for k, v in _SEQUENCE.items()]
    out += ["", "## Venues", ""]
    for d in venues:
        out += _venue(d)
    return "\n".join(out).rstrip("\n") + "\n"


def _channels(d: Descriptor) -> Iterable[tuple[str, str, str | None]]:
    """(name, kind, parent channel or None) of every channel, ``also`` channels after theirs."""
    for name, channel in d.channels.items():
        yield name, channel.kind, None
        also: dict[str, Any] = getattr(channel, "also", None) or {}
        for child, spec in also.items():
            yield child, str(spec.kind), name


def _snapshot(d: Descriptor, sync: BookSync) -> str:
    if sync.snapshot == "rest" and sync.rest_endpoint is not None:
        endpoints = d.rest.endpoints if d.rest is not None else {}
        ep = endpoints.get(sync.rest_endpoint)
        path = f" `{ep.method} {ep.path}`" if ep is not None else ""
        return f"`rest`:{path}"
    if sync.snapshot == "channel" and sync.snapshot_channel is not None:
        return f"`channel`: `{sync.snapshot_channel}`"
    return f"`{sync.snapshot}`"


def _checksum(sync: BookSync) -> str:
    if sync.checksum == "none":
        return "–"
    depth = f", top {sync.checksum_depth}" if sync.checksum_depth else ""
    return f"`{sync.checksum}`{depth}"


def _venue(d: Descriptor) -> list[str]:
    ex = d.exchange
    lines = [f"### {_text(ex.name)} (`{ex.id}`)", "", f"- market: {ex.market}"]
    for name, ep in d.websocket.endpoints.items():
        extra = f", {ep.compression} frames" if ep.compression != "none" else ""
        lines.append(f"- WebSocket `{name}`: {', '.join(f'<{u}>' for u in ep.urls)}{extra}")
    eps = d.rest.endpoints if d.rest is not None else {}
    bootstrap = d.websocket.bootstrap
    if bootstrap is not None:
        boot = bootstrap.endpoint
        call = f" (`{eps[boot].method} {eps[boot].path}`)" if boot in eps else ""
        where = ", ".join(f"`{e}`" for e in bootstrap.endpoints) or "every endpoint"
        line = f"- connect URL ({where}) from the REST call `{boot}`{call}"
        keep = bootstrap.keepalive
        if keep is not None:
            kcall = f" (`{eps[keep.endpoint].method} {eps[keep.endpoint].path}`)"
            kcall = kcall if keep.endpoint in eps else ""
            line += f", kept alive by `{keep.endpoint}`{kcall} every {keep.interval:g} s"
        lines.append(line)
    login = d.websocket.login
    if login is not None:
        where = ", ".join(f"`{e}`" for e in login.endpoints)
        encoding = f"HMAC-SHA256 {login.sign_encoding}"
        lines.append(f"- signed login on {where} ({encoding}); credentials: {_credentials(d)}")
    elif d.signing is not None:
        lines.append(f"- credentials: {_credentials(d)}")
    sub = d.websocket.subscribe
    pacing = f", {sub.interval:g} s apart" if sub.interval else ""
    lines.append(f"- subscribe: {sub.mode} mode{pacing}; ACK: {_ack(d)}")
    if ex.docs:
        lines.append("- docs: " + ", ".join(f"<{url}>" for url in ex.docs))
    return [*lines, ""]


def _credentials(d: Descriptor) -> str:
    s = d.signing
    if s is None:
        return "none"
    names = [s.key_env, s.secret_env] + ([s.passphrase_env] if s.passphrase_env else [])
    return ", ".join(f"`{n}`" for n in names)


def _ack(d: Descriptor) -> str:
    ack = d.websocket.ack
    if ack is None:
        return "none"
    return "per topic" if ack.per == "topic" else "per message"


def _text(value: str) -> str:
    return value.replace("|", "\\|")


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(_text(c) for c in cells) + " |"
