"""The supervisor behind ``mdgen run``: instances, their connections, the pipeline, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import httpx

from runtime.instruments import SymbolReport
from runtime.pipeline import Pipeline
from runtime.rest import RestClient
from runtime.session import Backoff, Session, State
from runtime.spec import ExchangeSpec
from runtime.subscriptions import plan_connections
from runtime.transport import Transport

log = logging.getLogger("mdgen.collector")


@dataclass
class Instance:
    """One configured exchange instance and its running connections."""

    name: str
    spec: ExchangeSpec
    symbols: list[str]
    channels: list[str]
    url_override: str | None = None
    sessions: list[Session] = field(default_factory=list)
    crashed: str | None = None

    @property
    def state(self) -> State:
        """The least healthy state of its connections (failed > reconnecting > ... > streaming)."""
        if self.crashed is not None:
            return "failed"
        order: list[State] = [
            "failed",
            "reconnecting",
            "starting",
            "subscribing",
            "streaming",
            "stopped",
        ]
        states = {s.state for s in self.sessions} or {"starting"}
        return next(s for s in order if s in states)


class Collector:
    """Runs instances side by side; one failing never stops another."""

    def __init__(
        self,
        instances: Iterable[Instance],
        transport: Transport,
        pipeline: Pipeline,
        *,
        backoff: Backoff | None = None,
        rest_transport: httpx.AsyncBaseTransport | None = None,
        shutdown_timeout: float | None = None,
    ) -> None:
        self.instances = list(instances)
        self.rest_transport = rest_transport
        self.shutdown_timeout = shutdown_timeout
        self.unflushed = 0
        """Envelopes accepted but not written because the shutdown deadline passed."""
        self.symbol_reports: dict[str, SymbolReport] = {}
        """What loading symbol overrides did, by exchange (set by ``mdgen run``; metrics)."""
        self._clients: list[RestClient] = []
        self.transport = transport
        self.pipeline = pipeline
        self.backoff = backoff or Backoff()
        self.stop = asyncio.Event()
        self.started = time.monotonic()

    def _sessions(self, inst: Instance) -> list[Session]:
        plans = plan_connections(
            inst.spec, inst.name, inst.symbols, inst.channels, url_override=inst.url_override
        )
        planned = {(sub.channel, sub.symbol) for plan in plans for sub in plan.subscriptions}
        channels = inst.spec.channels
        left_out = [  # for_symbols said no (an ``also`` channel rides on its parent)
            f"{channel}/{symbol}"
            for channel in inst.channels
            for symbol in inst.symbols
            if (channels[channel].source or channel, symbol) not in planned
        ]
        if left_out:
            log.info(
                "%s: not subscribed, the channel does not exist for the symbol: %s",
                inst.name,
                ", ".join(left_out),
            )
        rest = self._rest_client(inst.spec)
        return [
            Session(
                inst.spec,
                inst.name,
                plan,
                self.transport,
                self.pipeline,
                backoff=self.backoff,
                rest=rest,
            )
            for plan in plans
        ]

    def _rest_client(self, spec: ExchangeSpec) -> RestClient | None:
        """A REST client for exchanges that need a REST call before connecting."""
        if spec.bootstrap is None or spec.rest is None:
            return None
        client = RestClient(spec.rest, signing=spec.signing, transport=self.rest_transport)
        self._clients.append(client)
        return client

    async def _run_instance(self, inst: Instance) -> None:
        try:
            inst.sessions = self._sessions(inst)
            log.info(
                "%s: %d connection(s), %d channel(s) x %d symbol(s)",
                inst.name,
                len(inst.sessions),
                len(inst.channels),
                len(inst.symbols),
            )
            await asyncio.gather(*(s.run(self.stop) for s in inst.sessions))
        except Exception as exc:  # crash isolation: record it, keep other instances running
            inst.crashed = repr(exc)
            log.exception("%s: instance crashed; other instances keep running", inst.name)

    async def run(self, duration: float | None = None) -> None:
        """Run until ``duration`` passes or :meth:`request_stop`, then flush and close."""
        await self.pipeline.start()
        tasks = [asyncio.create_task(self._run_instance(i), name=i.name) for i in self.instances]
        try:
            if duration is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), duration)
            else:
                await self.stop.wait()
        finally:
            self.stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            try:
                async with asyncio.timeout(self.shutdown_timeout):
                    await self.pipeline.close()
            except TimeoutError:
                self.unflushed = await self.pipeline.abort()
                log.error(
                    "shutdown_timeout of %.1fs passed: %d buffered records were not written",
                    self.shutdown_timeout,
                    self.unflushed,
                )
            for client in self._clients:
                await client.aclose()

    def request_stop(self) -> None:
        """Graceful shutdown (SIGINT/SIGTERM): stop reading, flush what is buffered."""
        self.stop.set()
