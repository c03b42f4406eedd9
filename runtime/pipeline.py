"""Batching and a bounded queue between connections and the sink, with back-pressure."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from runtime.envelope import Envelope
from runtime.sinks import Sink


@dataclass
class PipelineStats:
    """Counters for health and metrics."""

    records_in: int = 0
    batches_out: int = 0
    records_out: int = 0
    backpressure_seconds: float = 0.0
    backpressure_events: int = 0
    sink_errors: int = 0

    def queue_depth(self, pipeline: Pipeline) -> int:
        return pipeline.queue.qsize()


class Pipeline:
    """Collects envelopes into batches, hands them to one sink through a bounded queue.

    ``emit`` blocks (back-pressure) when ``queue_batches`` batches are waiting: memory stays
    bounded by about ``queue_batches * batch_size`` envelopes, and the time spent blocked is
    counted. A partial batch is flushed every ``flush_interval`` seconds.
    """

    def __init__(
        self, sink: Sink, *, batch_size: int, flush_interval: float, queue_batches: int
    ) -> None:
        self.sink = sink
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.queue: asyncio.Queue[list[Envelope] | None] = asyncio.Queue(queue_batches)
        self.stats = PipelineStats()
        self._batch: list[Envelope] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._space = asyncio.Event()

    async def start(self) -> None:
        await self.sink.open()
        self._tasks = [
            asyncio.create_task(self._consume(), name="sink"),
            asyncio.create_task(self._tick(), name="flush-timer"),
        ]

    def add(self, envelopes: list[Envelope]) -> bool:
        """Add envelopes; True when a full batch is waiting and ``flush()`` must be awaited."""
        self.stats.records_in += len(envelopes)
        self._batch.extend(envelopes)
        return len(self._batch) >= self.batch_size

    async def emit(self, envelopes: list[Envelope]) -> None:
        """Add envelopes; waits when the sink is behind (back-pressure)."""
        if self.add(envelopes):
            await self.flush()

    async def flush(self) -> None:
        """Hand the partial batch to the sink queue, waiting while the queue is full.

        The batch leaves the pipeline only once it is in the queue, so a task cancelled while
        waiting (shutdown) loses nothing: :meth:`close` flushes what is still here.
        """
        if not self._batch:
            return
        if self.queue.full():
            self.stats.backpressure_events += 1
            started = time.monotonic()
            while self.queue.full():
                self._space.clear()
                await self._space.wait()
            self.stats.backpressure_seconds += time.monotonic() - started
        if self._batch:
            batch, self._batch = self._batch, []
            self.queue.put_nowait(batch)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            await self.flush()

    async def _consume(self) -> None:
        while True:
            batch = await self.queue.get()
            self._space.set()
            if batch is None:
                return
            await self.sink.write(batch)
            self.stats.batches_out += 1
            self.stats.records_out += len(batch)

    async def abort(self) -> int:
        """Stop without flushing (a shutdown deadline passed); returns the envelopes that were
        accepted but not written."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        return self.stats.records_in - self.stats.records_out

    async def close(self) -> None:
        """Flush everything buffered into the sink, then close it."""
        consumer, timer = self._tasks
        timer.cancel()
        await asyncio.gather(timer, return_exceptions=True)
        await self.flush()
        await self.queue.put(None)
        await consumer
        await self.sink.close()
