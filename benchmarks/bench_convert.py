"""Print ns/call of the hot-path runtime helpers: .venv/bin/python benchmarks/bench_convert.py."""

from __future__ import annotations

import sys
import timeit
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runtime.convert import dec, levels, path, ts_iso, ts_ms, ts_s  # noqa: E402
from runtime.symbols import SymbolMapper, SymbolRules  # noqa: E402

MSG: dict[str, Any] = {"data": [{"p": "63214.57", "T": 1652459199958}], "e": "trade"}
BOOK = [["63214.57", "0.51230000", "2"] for _ in range(20)]
MAPPER = SymbolMapper(SymbolRules(separator="", case="lower", quotes=("USDT", "BTC", "ETH")))
MAPPER.canonical("btcusdt")
ts_iso("2021-04-17T16:43:30.244075Z")

CASES: list[tuple[str, str]] = [
    ("baseline (empty lambda call)", "f(None)"),
    ("dec(str)", 'dec("63214.57")'),
    ("ts_ms(int)", "ts_ms(1652459199958)"),
    ("ts_ms(str)", 'ts_ms("1652459199958")'),
    ("ts_s(str with fraction)", 'ts_s("1618678142.557535")'),
    ("ts_iso (cache hit, 6 digits + Z)", 'ts_iso("2021-04-17T16:43:30.244075Z")'),
    ("ts_iso (cache hit, 7 digits +09:00)", 'ts_iso("2021-04-17T16:43:30.1234567+09:00")'),
    ("path(2 keys)", 'path(MSG, "data", 0)'),
    ("path(2 keys, missing)", 'path(MSG, "result", 0)'),
    ("SymbolMapper.canonical (cache hit)", 'canonical("btcusdt")'),
    ("levels(20 rows of str) per call", "levels(BOOK)"),
]


def main() -> None:
    """Time each case and print the best of 7 repeats in ns per call."""
    env: dict[str, Any] = {
        "f": lambda _: None,
        "dec": dec,
        "ts_ms": ts_ms,
        "ts_s": ts_s,
        "ts_iso": ts_iso,
        "path": path,
        "levels": levels,
        "MSG": MSG,
        "BOOK": BOOK,
        "canonical": MAPPER.canonical,
    }
    print(f"Python {sys.version.split()[0]}")
    for name, stmt in CASES:
        timer = timeit.Timer(stmt, globals=env)
        number, _ = timer.autorange()
        number = max(number, 100_000 if "levels" not in stmt else 10_000)
        best = min(timer.repeat(repeat=7, number=number)) / number
        print(f"{name:<40} {best * 1e9:8.0f} ns/call")


if __name__ == "__main__":
    main()
