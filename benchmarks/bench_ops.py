"""Cost of operations (/healthz, /metrics, monitor, batch observer) on the hot path.

Run: .venv/bin/python benchmarks/bench_ops.py [--messages N] [--rounds R] [--transport T]

The blaster process of bench_e2e.py sends N real Binance trade frames per connection as fast as
the socket takes them. The collector (Session -> Pipeline -> a sink that drops batches, so the
session's hot path dominates) runs in four modes, interleaved over R rounds:

- ``baseline``: no ops at all;
- ``ops``: the monitor, the batch observer and the HTTP server, not scraped;
- ``ops+scrape 1Hz`` and ``ops+scrape 10Hz``: a separate process GETs /metrics and /healthz
  every second / every 100 ms (Prometheus scrapes every 15 s or so, a Kubernetes probe every
  10 s: these are 15 and 150 times that);
- ``ops+scrape 10Hz loop``: the same with the HTTP server on the collector's event loop
  instead of its own thread (``OpsSettings.http_thread = False``);
- with ``--stress``, ``ops+scrape max``: the scraper asks again as soon as an answer arrives.

Per mode: median and best records/s (wall clock, first to last record), the collector
process's CPU time per record (steadier than wall-clock rates on a shared machine), scrapes per
run and their latency. Then the two costs in isolation: the batch observer per record, and the
event-loop time one /metrics + /healthz answer takes.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import statistics
import time
from dataclasses import dataclass, field
from multiprocessing import Queue
from multiprocessing.synchronize import Event as EventType

import orjson
from bench_e2e import TRADE, _blaster

from runtime.collector import Collector, Instance
from runtime.envelope import Envelope, wrap
from runtime.ops import BatchObserver, Ops, OpsSettings
from runtime.pipeline import Pipeline
from runtime.registry import load_spec
from runtime.session import Backoff
from runtime.spec import Context
from runtime.transport import make_transport

MODES = ("baseline", "ops", "ops+scrape 1Hz", "ops+scrape 10Hz", "ops+scrape 10Hz loop")
STRESS = "ops+scrape max"


class DropSink:
    """Counts and forgets (the benchmark measures the session side, not storage)."""

    def __init__(self) -> None:
        self.records = 0

    async def open(self) -> None:
        return None

    async def write(self, batch: list[Envelope]) -> None:
        self.records += len(batch)

    async def close(self) -> None:
        return None


@dataclass
class Result:
    rate: float
    cpu_per_record: float
    latencies: list[float] = field(default_factory=list)


def _scraper(port: int, interval: float, stop: EventType, out: Queue[list[float]]) -> None:
    """GET /metrics and /healthz until ``stop``; puts the latency of each pair on ``out``."""
    import httpx

    latencies = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        while not stop.is_set():
            started = time.perf_counter()
            client.get("/metrics").raise_for_status()
            client.get("/healthz")
            latencies.append(time.perf_counter() - started)
            if interval:
                time.sleep(interval)
    out.put(latencies)


async def _collect(port: int, transport: str, messages: int, mode: str) -> Result:
    spec = load_spec("binance")
    pipeline = Pipeline(DropSink(), batch_size=2000, flush_interval=0.5, queue_batches=16)
    inst = Instance(
        "bench", spec, ["BTC-USDT"], ["trades"], url_override=f"ws://127.0.0.1:{port}/stream"
    )
    collector = Collector(
        [inst], make_transport(transport), pipeline, backoff=Backoff()  # type: ignore[arg-type]
    )
    first: float | None = None
    first_cpu = 0.0

    async def watch() -> None:
        nonlocal first, first_cpu
        while True:
            await asyncio.sleep(0.005)
            if first is None and pipeline.stats.records_in > 0:
                first, first_cpu = time.perf_counter(), time.process_time()
            if pipeline.stats.records_in >= messages:
                collector.request_stop()
                return

    ops: Ops | None = None
    scraper: multiprocessing.Process | None = None
    stop = multiprocessing.Event()
    out: Queue[list[float]] = multiprocessing.Queue()
    if mode != "baseline":
        settings = OpsSettings(http_enabled=True, http_port=0, http_thread="loop" not in mode)
        ops = Ops(collector, settings, probe_clocks=False)
        await ops.start()
        if "scrape" in mode:
            assert ops.server is not None
            interval = 1.0 if "1Hz" in mode else 0.1 if "10Hz" in mode else 0.0
            scraper = multiprocessing.Process(
                target=_scraper, args=(ops.server.port, interval, stop, out), daemon=True
            )
            scraper.start()
            await asyncio.sleep(0.5)  # the scraper is up before the blast starts
    watcher = asyncio.create_task(watch())
    latencies: list[float] = []
    try:
        await collector.run(duration=300)
    finally:
        watcher.cancel()
        end, end_cpu = time.perf_counter(), time.process_time()
        stop.set()
        if scraper is not None:
            latencies = await asyncio.to_thread(out.get, True, 60)
            await asyncio.to_thread(scraper.join, 10)
        if ops is not None:
            await ops.stop()
    assert pipeline.stats.records_out >= messages, pipeline.stats
    start = first or end
    return Result(messages / (end - start), (end_cpu - first_cpu) / messages, latencies)


def _observer_cost(records: int = 2000, rounds: int = 200) -> float:
    """Seconds the batch observer spends per record on 2000-record trade batches."""
    spec = load_spec("binance")
    route = spec.routes[spec.route(TRADE, Context())]
    assert route.parse is not None
    batch = []
    for i in range(records):
        rec = route.parse(orjson.loads(orjson.dumps(TRADE)), time.time_ns(), Context())[0]
        rec["trade_id"] = str(i)
        batch.append(wrap("bench", "trades", rec))
    observer = BatchObserver(dead_letter_hint=lambda: 0)  # as in a run without bad frames
    started = time.perf_counter()
    for _ in range(rounds):
        observer.observe(batch)
    return (time.perf_counter() - started) / (rounds * records)


def _scrape_cost(times: int = 200) -> float:
    """Event-loop seconds one /metrics + /healthz answer takes (1 instance, 1 connection)."""

    async def main() -> float:
        spec = load_spec("binance")
        pipeline = Pipeline(DropSink(), batch_size=2000, flush_interval=0.5, queue_batches=16)
        collector = Collector(
            [Instance("bench", spec, ["BTC-USDT"], ["trades"])],
            make_transport("websockets"),
            pipeline,
        )
        ops = Ops(collector, OpsSettings(http_enabled=True, http_port=0), probe_clocks=False)
        await ops.start()
        try:
            ops.sink.observer.observe([wrap("bench", "trades", TRADE_RECORD)] * 10)
            assert ops.server is not None
            started = time.perf_counter()
            for _ in range(times):
                ops.server.respond("GET", "/metrics")
                ops.server.respond("GET", "/healthz")
            return (time.perf_counter() - started) / times
        finally:
            await ops.stop()

    return asyncio.run(main())


TRADE_RECORD = {
    "exchange": "binance",
    "channel": "trades",
    "symbol": "BTC-USDT",
    "ts_exchange": 1,
    "ts_recv": 2,
    "seq": None,
}


def _ms(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values) * 1e3:.1f}/{max(values) * 1e3:.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--transport", default="picows", choices=["websockets", "picows"])
    parser.add_argument("--stress", action="store_true", help="Also scrape without pause.")
    args = parser.parse_args()
    modes = (*MODES, STRESS) if args.stress else MODES
    logging.disable(logging.WARNING)  # the blaster's transport chatters about its buffers
    ports: Queue[int] = multiprocessing.Queue()
    blaster = multiprocessing.Process(target=_blaster, args=(ports, args.messages), daemon=True)
    blaster.start()
    results: dict[str, list[Result]] = {m: [] for m in modes}
    try:
        port = ports.get(timeout=10)
        for _ in range(args.rounds):
            for mode in modes:
                results[mode].append(
                    asyncio.run(_collect(port, args.transport, args.messages, mode))
                )
    finally:
        blaster.terminate()
        blaster.join()
    base = statistics.median(r.rate for r in results["baseline"])
    base_cpu = statistics.median(r.cpu_per_record for r in results["baseline"])
    print(f"{args.transport}, {args.messages:,} trade messages per run, {args.rounds} rounds")
    print(
        f"{'mode':<21} {'median rec/s':>12} {'vs base':>8} {'best rec/s':>11} "
        f"{'CPU/record':>10} {'vs base':>8}  scrapes/run  latency med/max"
    )
    for mode in modes:
        rates = [r.rate for r in results[mode]]
        cpu = statistics.median(r.cpu_per_record for r in results[mode])
        med = statistics.median(rates)
        latencies = [x for r in results[mode] for x in r.latencies]
        scrapes = statistics.median(len(r.latencies) for r in results[mode])
        print(
            f"{mode:<21} {med:>12,.0f} {(med / base - 1) * 100:>+7.1f}% {max(rates):>11,.0f} "
            f"{cpu * 1e6:>8.2f}µs {(cpu / base_cpu - 1) * 100:>+7.1f}%  {scrapes:>11.0f}  "
            f"{_ms(latencies)}"
        )
    print(f"batch observer: {_observer_cost() * 1e9:.0f} ns per record (2000-record batches)")
    print(f"one /metrics + /healthz answer: {_scrape_cost() * 1e3:.2f} ms of event-loop time")


if __name__ == "__main__":
    main()
