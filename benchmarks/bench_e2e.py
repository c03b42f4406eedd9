"""End-to-end throughput on loopback: a blaster process -> mdgen session -> NDJSON.gz sink.

Run: .venv/bin/python benchmarks/bench_e2e.py [--messages N] [--transport websockets|picows|both]

A separate process serves one WebSocket that answers Binance's SUBSCRIBE with an ACK and then
sends N real Binance trade frames as fast as the socket takes them. The collector (the same
Session/Pipeline/sink code `mdgen run` uses) decodes, routes, parses, wraps and writes every
record to gzip files. Prints records/s from the first to the last record stored.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import tempfile
import time
from pathlib import Path

import orjson

from runtime.collector import Collector, Instance
from runtime.pipeline import Pipeline
from runtime.registry import load_spec
from runtime.session import Backoff
from runtime.sinks import NdjsonGzSink
from runtime.transport import make_transport

TRADE = {
    "stream": "btcusdt@trade",
    "data": {
        "e": "trade",
        "E": 1700000000000,
        "s": "BTCUSDT",
        "t": 0,
        "p": "37000.12000000",
        "q": "0.00150000",
        "T": 1700000000000,
        "m": True,
        "M": True,
    },
}


def _blaster(port_out: multiprocessing.Queue, messages: int) -> None:  # type: ignore[type-arg]
    from picows import WSListener, WSMsgType, ws_create_server

    frames = []
    for i in range(1000):
        TRADE["data"]["t"] = i  # type: ignore[index]
        frames.append(orjson.dumps(TRADE))

    class Listener(WSListener):
        def on_ws_frame(self, transport, frame) -> None:  # type: ignore[no-untyped-def]
            if frame.msg_type != WSMsgType.TEXT:
                return
            req = orjson.loads(frame.get_payload_as_bytes())
            transport.send(WSMsgType.TEXT, orjson.dumps({"result": None, "id": req["id"]}))
            asyncio.get_running_loop().create_task(self.blast(transport))

        async def blast(self, transport) -> None:  # type: ignore[no-untyped-def]
            raw = transport.underlying_transport
            for n in range(messages):
                transport.send(WSMsgType.TEXT, frames[n % 1000])
                if n % 256 == 0:
                    while raw.get_write_buffer_size() > 4_000_000:
                        await asyncio.sleep(0.001)

    async def main() -> None:
        server = await ws_create_server(lambda _: Listener(), "127.0.0.1", 0)
        port_out.put(server.sockets[0].getsockname()[1])
        await asyncio.sleep(3600)

    asyncio.run(main())


async def _collect(port: int, transport: str, messages: int, out: Path) -> float:
    spec = load_spec("binance")
    pipeline = Pipeline(NdjsonGzSink(out), batch_size=2000, flush_interval=0.5, queue_batches=16)
    inst = Instance(
        "bench", spec, ["BTC-USDT"], ["trades"], url_override=f"ws://127.0.0.1:{port}/stream"
    )
    collector = Collector([inst], make_transport(transport), pipeline, backoff=Backoff())  # type: ignore[arg-type]
    first: float | None = None

    async def watch() -> None:
        nonlocal first
        while True:
            await asyncio.sleep(0.005)
            if first is None and pipeline.stats.records_in > 0:
                first = time.perf_counter()
            if pipeline.stats.records_in >= messages:
                collector.request_stop()
                return

    watcher = asyncio.create_task(watch())
    await collector.run(duration=120)
    watcher.cancel()
    end = time.perf_counter()
    assert pipeline.stats.records_out >= messages, pipeline.stats
    return messages / (end - (first or end))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=300_000)
    parser.add_argument("--transport", default="both", choices=["websockets", "picows", "both"])
    args = parser.parse_args()
    names = ["websockets", "picows"] if args.transport == "both" else [args.transport]
    for name in names:
        ports: multiprocessing.Queue[int] = multiprocessing.Queue()
        proc = multiprocessing.Process(target=_blaster, args=(ports, args.messages), daemon=True)
        proc.start()
        try:
            port = ports.get(timeout=10)
            with tempfile.TemporaryDirectory() as tmp:
                rate = asyncio.run(_collect(port, name, args.messages, Path(tmp)))
                size = sum(p.stat().st_size for p in Path(tmp).rglob("*.gz"))
            print(
                f"{name:<11} {args.messages:>9,} trade messages  {rate:>10,.0f} records/s "
                f"end to end ({size / 1e6:.1f} MB gzip)"
            )
        finally:
            proc.terminate()
            proc.join()


if __name__ == "__main__":
    main()
