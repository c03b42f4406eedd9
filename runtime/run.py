"""``mdgen run``: plan instances, optionally start mock exchanges, run the collector."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from runtime.captures import FIXTURE_CAPTURES, find_capture
from runtime.collector import Collector, Instance
from runtime.instruments import (
    SymbolReport,
    descriptor_map_file,
    normalize_symbols,
    prepare_symbols,
    read_symbol_maps,
)
from runtime.mock import MockExchange, MockOptions
from runtime.ops import Ops, OpsSettings
from runtime.pipeline import Pipeline
from runtime.session import Backoff
from runtime.sinks import NdjsonGzSink, Sink
from runtime.spec import ExchangeSpec
from runtime.transport import TransportName, make_transport

log = logging.getLogger("mdgen.run")


@dataclass
class PlannedInstance:
    """What one instance collects."""

    name: str
    spec: ExchangeSpec
    symbols: list[str]
    channels: list[str]
    symbol_map_file: Path | None = None
    """The instance's symbol map file (collector.toml); applied after the descriptor's."""


@dataclass
class RunSettings:
    """Everything ``mdgen run`` needs besides the instances (from collector.toml and flags)."""

    data_dir: Path = Path("data")
    transport: TransportName = "websockets"
    batch_size: int = 1000
    flush_interval: float = 1.0
    queue_batches: int = 64
    backoff: Backoff = field(default_factory=Backoff)
    duration: float | None = None
    mock: bool = False
    mock_options: MockOptions = field(default_factory=MockOptions)
    captures: Path | None = None
    ops: OpsSettings = field(default_factory=OpsSettings)
    shutdown_timeout: float | None = None
    """Seconds allowed to flush after the run ends (None: as long as it takes)."""
    instruments: bool = True
    """Load each exchange's instrument list (``[symbols.instruments]``) at startup."""


class FlushIncomplete(Exception):
    """The shutdown deadline passed before every buffered record was written."""

    def __init__(self, unflushed: int, timeout: float | None) -> None:
        super().__init__(
            f"shutdown_timeout of {timeout}s passed: {unflushed} buffered records were not written"
        )
        self.unflushed = unflushed


@dataclass
class InstanceSummary:
    name: str
    state: str
    messages: int
    records: int
    unrecognized: int
    malformed: int
    reconnects: int
    gaps: int
    symbols: SymbolReport | None = None
    """How the exchange's symbol overrides were loaded (shared by its instances)."""


def capture_for(settings: RunSettings, exchange: str, aliases: tuple[str, ...] = ()) -> Path | None:
    """The capture a mock exchange replays: ``<captures>/<exchange or alias>/raw.ndjson``, else
    the repository's documentation-example capture of the exchange (tests/fixtures/captures)."""
    folders = [settings.captures, FIXTURE_CAPTURES] if settings.captures else [FIXTURE_CAPTURES]
    return find_capture(exchange, aliases=aliases, folders=folders)


@contextlib.asynccontextmanager
async def mocks_for(
    plans: list[PlannedInstance], settings: RunSettings
) -> AsyncIterator[dict[str, MockExchange]]:
    """One in-process mock exchange per exchange, serving its capture."""
    mocks: dict[str, MockExchange] = {}
    try:
        for plan in plans:
            if plan.spec.id not in mocks:
                mock = MockExchange(
                    plan.spec,
                    capture_for(settings, plan.spec.id, plan.spec.aliases),
                    settings.mock_options,
                )
                await mock.start()
                mocks[plan.spec.id] = mock
                log.info("mock %s listening at %s", plan.spec.id, mock.ws_url)
        yield mocks
    finally:
        for mock in mocks.values():
            await mock.stop()


def symbol_maps(plans: list[PlannedInstance]) -> dict[str, list[tuple[Path, dict[str, str]]]]:
    """Per exchange, the symbol map files to apply and their entries: the descriptor's, then
    each instance's (in plan order). Raises ``SymbolMapError`` for a bad file."""
    files: dict[str, list[Path]] = {}
    for plan in plans:
        paths = files.setdefault(plan.spec.id, [])
        own = descriptor_map_file(plan.spec)
        if not paths and own is not None:
            paths.append(own)
        if plan.symbol_map_file is not None and plan.symbol_map_file not in paths:
            paths.append(plan.symbol_map_file)
    return {exchange: read_symbol_maps(paths) for exchange, paths in files.items()}


async def _prepare_symbols(
    plans: list[PlannedInstance],
    maps: dict[str, list[tuple[Path, dict[str, str]]]],
    mocks: dict[str, MockExchange],
    settings: RunSettings,
) -> dict[str, SymbolReport]:
    """Load every exchange's symbol overrides once (instrument list, then map files)."""
    reports: dict[str, SymbolReport] = {}
    for plan in plans:
        spec = plan.spec
        if spec.id in reports:
            continue
        client_spec = mocks[spec.id].client_spec() if spec.id in mocks else spec
        if not settings.instruments:
            client_spec = dataclasses.replace(client_spec, instruments=None)
        report = await prepare_symbols(client_spec, maps.get(spec.id, []))
        reports[spec.id] = report
        if report.requests or report.files:
            log.info("%s", report.summary())
    return reports


def capture_symbols(mock: MockExchange, channels: list[str]) -> list[str]:
    """Canonical symbols the mock's capture has data for, on any of ``channels``."""
    raws = {raw for channel, raw in mock.capture.pairs() if channel in channels}
    return sorted({mock.capture.symbols[raw] for raw in raws if raw in mock.capture.symbols})


async def execute(
    plans: list[PlannedInstance], settings: RunSettings, sink: Sink | None = None
) -> list[InstanceSummary]:
    """Run until the duration ends or SIGINT/SIGTERM; flush everything; summarize."""
    sink = sink if sink is not None else NdjsonGzSink(settings.data_dir)
    pipeline = Pipeline(
        sink,
        batch_size=settings.batch_size,
        flush_interval=settings.flush_interval,
        queue_batches=settings.queue_batches,
    )
    maps = symbol_maps(plans)
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(_reset_symbols, plans)
        mocks: dict[str, MockExchange] = {}
        if settings.mock:
            mocks = await stack.enter_async_context(mocks_for(plans, settings))
        reports = await _prepare_symbols(plans, maps, mocks, settings)
        instances = []
        for plan in plans:
            spec = plan.spec
            symbols = normalize_symbols(spec.symbols, plan.symbols)
            if spec.id in mocks:
                spec = mocks[spec.id].client_spec()
            if not symbols:  # e.g. a shard that owns none of the instance's symbols
                log.warning("%s: no symbols to collect (this shard owns none); skipped", plan.name)
                continue
            instances.append(Instance(plan.name, spec, symbols, plan.channels))
        collector = Collector(
            instances,
            make_transport(settings.transport),
            pipeline,
            backoff=settings.backoff,
            shutdown_timeout=settings.shutdown_timeout,
        )
        collector.symbol_reports = reports
        await stack.enter_async_context(
            Ops(collector, settings.ops, probe_clocks=not settings.mock)
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, collector.request_stop)
        try:
            await collector.run(settings.duration)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
    if collector.unflushed:
        raise FlushIncomplete(collector.unflushed, settings.shutdown_timeout)
    return [_summary(inst, reports.get(inst.spec.id)) for inst in collector.instances]


def _reset_symbols(plans: list[PlannedInstance]) -> None:
    """Drop the run's symbol overrides (the mappers are module-wide)."""
    for plan in plans:
        plan.spec.symbols.reset_overrides()


def _summary(inst: Instance, symbols: SymbolReport | None = None) -> InstanceSummary:
    stats = [s.stats for s in inst.sessions]
    return InstanceSummary(
        name=inst.name,
        state=inst.state,
        messages=sum(s.messages for s in stats),
        records=sum(s.records for s in stats),
        unrecognized=sum(s.unrecognized for s in stats),
        malformed=sum(s.malformed for s in stats),
        reconnects=sum(sum(s.reconnects.values()) for s in stats),
        gaps=sum(s.gaps for s in stats),
        symbols=symbols,
    )
