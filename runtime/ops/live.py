"""The live terminal view of ``mdgen run``: one row per instance, redrawn in place (rich)."""

from __future__ import annotations

import sys
from typing import IO

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from runtime.ops.health import Monitor

__all__ = ["LiveView", "render"]

_STATE_STYLE = {
    "streaming": "green",
    "subscribing": "cyan",
    "starting": "cyan",
    "reconnecting": "yellow",
    "failed": "bold red",
    "stopped": "dim",
}


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"


def _lag(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    sign = "-" if seconds < 0 else ""
    return sign + _age(abs(seconds))


def _rate(value: float) -> str:
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.1f}"


def render(monitor: Monitor, http_url: str | None = None) -> Group:
    """The table of instances and a status line, from what the monitor last polled."""
    table = Table(box=None, pad_edge=False, header_style="bold", expand=False)
    for name, justify in (
        ("instance", "left"),
        ("state", "left"),
        ("conns", "right"),
        ("msg/s", "right"),
        ("rec/s", "right"),
        ("lag", "right"),
        ("last msg", "right"),
        ("reconn", "right"),
        ("gaps", "right"),
        ("sink", "left"),
    ):
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    now = monitor.clock()
    sink_state = monitor.sink_state or "-"
    sink_style = "green" if monitor.sink.health()["healthy"] else "bold red"
    for inst in monitor.collector.instances:
        sessions = inst.sessions
        state = inst.state
        streaming = sum(1 for s in sessions if s.state == "streaming")
        window = monitor.windows.get(inst.name)
        msg_rate, rec_rate, lag = window.rates() if window else (0.0, 0.0, None)
        last = max((s.stats.last_message for s in sessions), default=0.0)
        table.add_row(
            inst.name,
            Text(state, style=_STATE_STYLE.get(state, "")),
            f"{streaming}/{len(sessions)}",
            _rate(msg_rate),
            _rate(rec_rate),
            _lag(lag),
            _age(now - last if last else None),
            str(sum(sum(s.stats.reconnects.values()) for s in sessions)),
            str(sum(s.stats.gaps for s in sessions)),
            Text(sink_state, style=sink_style),
        )
    pipeline = monitor.collector.pipeline
    st = pipeline.stats
    status = Text()
    if monitor.healthy is None or monitor.healthy:
        status.append("healthy", style="green")
    else:
        status.append("unhealthy", style="bold red")
        if monitor.reasons:
            status.append(f" ({monitor.reasons[0]})", style="red")
    status.append(
        f"  queue {pipeline.queue.qsize()}/{pipeline.queue.maxsize}"
        f"  backpressure {st.backpressure_seconds:.1f}s"
        f"  written {st.records_out}"
    )
    if http_url:
        status.append(f"  {http_url}/metrics", style="dim")
    return Group(table, status)


class LiveView:
    """Shows :func:`render` on the terminal; log lines print above it.

    Redrawn by :meth:`refresh`, which the caller runs on the event loop (no refresh thread:
    the runtime's objects are only read from the loop's thread).
    """

    def __init__(
        self,
        monitor: Monitor,
        *,
        http_url: str | None = None,
        stream: IO[str] | None = None,
    ) -> None:
        self.monitor = monitor
        self.http_url = http_url
        self.console = Console(file=stream or sys.stderr)
        self._live = Live(
            console=self.console,
            auto_refresh=False,
            redirect_stdout=False,
            redirect_stderr=True,
            transient=False,
        )

    def start(self) -> None:
        self._live.start()
        self.refresh()

    def refresh(self) -> None:
        self._live.update(render(self.monitor, self.http_url), refresh=True)

    def stop(self) -> None:
        """Draw once more (the final state stays on screen) and stop."""
        self.refresh()
        self._live.stop()
