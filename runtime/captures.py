"""Where the mock exchange finds a capture to replay for an exchange."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_CAPTURES = REPO.parent / "shared" / "captures"
"""Real captured traffic beside the repository (``../shared/captures``)."""
FIXTURE_CAPTURES = REPO / "tests" / "fixtures" / "captures"
"""Small captures built from exchanges' documentation examples, for venues without a recording."""


def find_capture(
    exchange: str, *, aliases: Iterable[str] = (), folders: Iterable[Path] | None = None
) -> Path | None:
    """``<folder>/<name>/raw.ndjson`` for the exchange id or one of its former names."""
    search = list(folders) if folders is not None else [SHARED_CAPTURES, FIXTURE_CAPTURES]
    for folder in search:
        for name in (exchange, *aliases):
            path = folder / name / "raw.ndjson"
            if path.is_file():
                return path
    return None
