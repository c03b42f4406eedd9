"""Local mock exchange: replays captured traffic over each exchange's real protocol.

See :mod:`runtime.mock.server` for the behaviour and its limits.
"""

from runtime.mock.capture import Capture, Frame, RestReply, TopicIndex, load_capture
from runtime.mock.rest import RestIndex
from runtime.mock.server import MockExchange, MockOptions, MockStats, compress, run_mock

__all__ = [
    "Capture",
    "Frame",
    "MockExchange",
    "MockOptions",
    "MockStats",
    "RestIndex",
    "RestReply",
    "TopicIndex",
    "compress",
    "load_capture",
    "run_mock",
]
