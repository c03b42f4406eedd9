"""Operations around one collector run: health monitor, HTTP server, clock probes, live view."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from runtime.ops.health import Monitor, Validation
from runtime.ops.http import OpsHttpServer
from runtime.ops.live import LiveView
from runtime.ops.logs import register_secret
from runtime.ops.metrics import RuntimeMetrics, make_registry
from runtime.ops.observe import BatchObserver, ObservedSink
from runtime.ops.skew import ClockProbe

if TYPE_CHECKING:
    from types import TracebackType

    from runtime.collector import Collector

__all__ = ["Ops", "OpsSettings"]

log = logging.getLogger("mdgen.ops")


@dataclass(frozen=True)
class OpsSettings:
    """How ``mdgen run`` is observed (``[http]`` of collector.toml and the command line)."""

    http_enabled: bool = False
    http_host: str = "127.0.0.1"
    http_port: int = 9108
    http_thread: bool = True
    """Serve from a thread of its own (prompt answers at full load) or on the collector's loop."""
    live: bool = False
    """Show the live terminal view (the command line decides: a terminal and no --quiet)."""
    stale_after: float = 60.0
    """Seconds without data records after which a connection makes /healthz answer 503."""
    tick: float = 0.5
    """Seconds between two polls of the states (state-change log lines, live view)."""
    clock_probe_interval: float = 60.0
    """Seconds between server-time probes of each exchange; 0 turns them off."""
    config_source: str | None = None
    config_warnings: tuple[str, ...] = ()


class Ops:
    """``async with Ops(collector, settings):`` around ``collector.run()``.

    Entering wraps the pipeline's sink in an :class:`ObservedSink` (so it must happen before
    the collector starts), starts the monitor, the clock probes, the HTTP server and the live
    view; leaving stops them after a last poll.
    """

    def __init__(
        self,
        collector: Collector,
        settings: OpsSettings,
        *,
        probe_clocks: bool = True,
        rest_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.collector = collector
        self.settings = settings
        pipeline = collector.pipeline
        observer = BatchObserver(dead_letter_hint=self._bad_frames)
        self.sink = (
            pipeline.sink
            if isinstance(pipeline.sink, ObservedSink)
            else ObservedSink(pipeline.sink, observer)
        )
        self.probes: list[ClockProbe] = []
        if probe_clocks and settings.clock_probe_interval > 0:
            self.probes = _probes(collector, settings.clock_probe_interval, rest_transport)
        self.monitor = Monitor(
            collector,
            self.sink,
            stale_after=settings.stale_after,
            validation=Validation(settings.config_source, settings.config_warnings),
            probes=self.probes,
        )
        self.metrics = RuntimeMetrics(collector, self.sink, self.monitor, self.probes)
        self.registry = make_registry(self.metrics)
        self.server: OpsHttpServer | None = None
        if settings.http_enabled:
            self.server = OpsHttpServer(
                self.registry,
                self.monitor.report,
                settings.http_host,
                settings.http_port,
                threaded=settings.http_thread,
            )
        self.live: LiveView | None = None
        self._tasks: list[asyncio.Task[Any]] = []

    def _bad_frames(self) -> int:
        """Frames the sessions made dead letters of (unrecognized plus malformed)."""
        return sum(
            s.stats.unrecognized + s.stats.malformed
            for inst in self.collector.instances
            for s in inst.sessions
        )

    async def start(self) -> None:
        self.collector.pipeline.sink = self.sink
        for inst in self.collector.instances:
            signing = inst.spec.signing
            if signing is not None:
                for env in (signing.key_env, signing.secret_env, signing.passphrase_env):
                    if env:
                        register_secret(os.environ.get(env))
        if self.server is not None:
            try:
                await self.server.start()
            except OSError as exc:  # collecting matters more than being observed
                log.error(
                    "cannot serve /healthz and /metrics on %s:%s: %s; collecting without them",
                    self.settings.http_host,
                    self.settings.http_port,
                    exc,
                )
                self.server = None
        if self.settings.live:
            self.live = LiveView(self.monitor, http_url=self.server.url if self.server else None)
            self.live.start()
        self._tasks = [asyncio.create_task(self._tick(), name="ops-monitor")]
        self._tasks += [
            asyncio.create_task(p.run(), name=f"clock-{p.exchange}") for p in self.probes
        ]

    async def _tick(self) -> None:
        while True:
            self.monitor.poll()
            if self.live is not None:
                self.live.refresh()
            await asyncio.sleep(self.settings.tick)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for probe in self.probes:
            await probe.client.aclose()
        self.monitor.poll()
        if self.live is not None:
            self.live.stop()
            self.live = None
        if self.server is not None:
            await self.server.stop()

    async def __aenter__(self) -> Ops:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def _probes(
    collector: Collector, interval: float, transport: httpx.AsyncBaseTransport | None
) -> list[ClockProbe]:
    """One clock probe per exchange whose descriptor names ``rest.time_endpoint``."""
    probes: dict[str, ClockProbe] = {}
    for inst in collector.instances:
        rest = inst.spec.rest
        if inst.spec.id in probes or rest is None or rest.time_endpoint is None:
            continue
        with contextlib.suppress(ValueError):
            probes[inst.spec.id] = ClockProbe(
                inst.spec.id, rest, interval=interval, transport=transport
            )
    return list(probes.values())
