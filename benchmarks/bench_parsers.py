"""Parse + normalize throughput of the generated modules over the real captures.

Run: .venv/bin/python benchmarks/bench_parsers.py [--repeat N]
Frames are pre-loaded into memory; each figure is the best of N passes. Two figures per
exchange: from frame text (orjson decode + route + parse) and from decoded messages
(route + parse only). A third table isolates trade messages, the target being
>= 500k trade messages/s for a generated parser (shared/notes/performance.md).
"""

from __future__ import annotations

import argparse
import base64
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from runtime.captures import find_capture
from runtime.frames import decode
from runtime.registry import exchanges, load_spec
from runtime.spec import Context, ExchangeSpec

CAPTURES = Path(__file__).resolve().parents[2] / "shared" / "captures"


def load_frames(path: Path, spec: ExchangeSpec) -> list[bytes | str]:
    compression = next(iter(spec.endpoints.values())).compression
    frames: list[bytes | str] = []
    for line in path.open("rb"):
        entry = orjson.loads(line)
        if entry["kind"] != "ws":
            continue
        if "data_b64" in entry and compression != "none":
            frames.append(base64.b64decode(entry["data_b64"]))
        else:
            frames.append(entry["data"].encode())
    return frames


def best_rate(fn: Callable[[], int], repeat: int) -> tuple[float, int]:
    best = float("inf")
    count = 0
    for _ in range(repeat):
        start = time.perf_counter()
        count = fn()
        best = min(best, time.perf_counter() - start)
    return count / best, count


def run_from_text(spec: ExchangeSpec, frames: list[bytes | str]) -> Callable[[], int]:
    route, routes = spec.route, spec.routes
    compression = next(iter(spec.endpoints.values())).compression

    def run() -> int:
        ctx = Context()
        records = 0
        for frame in frames:
            msg = decode(frame, compression)
            r = routes[route(msg, ctx)]
            if r.parse is not None:
                records += len(r.parse(msg, 0, ctx))
        return len(frames)

    return run


def run_decoded(spec: ExchangeSpec, msgs: list[Any]) -> Callable[[], int]:
    route, routes = spec.route, spec.routes

    def run() -> int:
        ctx = Context()
        for msg in msgs:
            r = routes[route(msg, ctx)]
            if r.parse is not None:
                r.parse(msg, 0, ctx)
        return len(msgs)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    if not CAPTURES.is_dir():
        raise SystemExit(f"captures not found at {CAPTURES}")
    print(f"{'exchange':<10} {'frames':>7} {'text→records msg/s':>20} {'decoded msg/s':>15}")
    trade_rows = []
    for exchange in sorted(exchanges()):
        spec = load_spec(exchange)
        path = find_capture(exchange, aliases=spec.aliases, folders=[CAPTURES])  # htx: huobi/
        if path is None:
            continue
        frames = load_frames(path, spec)
        compression = next(iter(spec.endpoints.values())).compression
        msgs = [decode(f, compression) for f in frames]
        text_rate, n = best_rate(run_from_text(spec, frames), args.repeat)
        dec_rate, _ = best_rate(run_decoded(spec, msgs), args.repeat)
        print(f"{exchange:<10} {n:>7} {text_rate:>20,.0f} {dec_rate:>15,.0f}")
        ctx = Context()
        trades = [
            (f, m)
            for f, m in zip(frames, msgs, strict=True)
            if spec.routes[spec.route(m, ctx)].channel in ("trades", "agg_trades")
        ]
        if trades:
            # Repeat the capture's trade frames so each pass is long enough to time.
            reps = max(1, 20_000 // len(trades))
            t_frames = [f for f, _ in trades] * reps
            t_msgs = [m for _, m in trades] * reps
            t_text, _ = best_rate(run_from_text(spec, t_frames), args.repeat)
            t_dec, _ = best_rate(run_decoded(spec, t_msgs), args.repeat)
            trade_rows.append((exchange, len(trades), t_text, t_dec))
    print()
    print(f"{'trades only':<12} {'frames':>6} {'text→records msg/s':>20} {'decoded msg/s':>15}")
    for exchange, n, t_text, t_dec in trade_rows:
        print(f"{exchange:<12} {n:>6} {t_text:>20,.0f} {t_dec:>15,.0f}")


if __name__ == "__main__":
    main()
