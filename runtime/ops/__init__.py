"""Operations of ``mdgen run``: /healthz and /metrics, time quality, logs, the live view.

See docs/operations.md. :class:`Ops` wraps one collector run; :func:`configure_logging` sets up
structured logs; :class:`HealthReporting` is the optional protocol a sink implements to report
its state, spool and replay backlog.
"""

from runtime.ops.health import Monitor, Validation
from runtime.ops.http import OpsHttpServer
from runtime.ops.logs import configure_logging, redact, register_secret
from runtime.ops.observe import BatchObserver, HealthReporting, ObservedSink, sink_health
from runtime.ops.service import Ops, OpsSettings
from runtime.ops.skew import ClockProbe, parse_server_time

__all__ = [
    "BatchObserver",
    "ClockProbe",
    "HealthReporting",
    "Monitor",
    "ObservedSink",
    "Ops",
    "OpsHttpServer",
    "OpsSettings",
    "Validation",
    "configure_logging",
    "parse_server_time",
    "redact",
    "register_secret",
    "sink_health",
]
