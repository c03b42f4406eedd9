"""docs/exchanges.md is the rendering of the descriptors (compiler/exchanges_doc.py)."""

from __future__ import annotations

import random

from compiler.exchanges_doc import KINDS, load_descriptors, render_exchanges_table
from tests.conftest import ROOT

DESCRIPTORS = ROOT / "descriptors"
PAGE = ROOT / "docs" / "exchanges.md"


def test_docs_exchanges_md_is_up_to_date() -> None:
    fresh = render_exchanges_table(load_descriptors(DESCRIPTORS))
    assert (
        PAGE.read_text(encoding="utf-8") == fresh
    ), "docs/exchanges.md is stale: render it with compiler.exchanges_doc.render_exchanges_table"


def test_rendering_does_not_depend_on_the_input_order() -> None:
    descriptors = load_descriptors(DESCRIPTORS)
    shuffled = list(descriptors)
    random.Random(7).shuffle(shuffled)
    assert render_exchanges_table(shuffled) == render_exchanges_table(descriptors)


def test_every_venue_and_book_channel_is_listed() -> None:
    descriptors = load_descriptors(DESCRIPTORS)
    page = render_exchanges_table(descriptors)
    lines = page.splitlines()
    header = next(ln for ln in lines if ln.startswith("| exchange | market |"))
    assert header.count("|") == len(KINDS) + 3
    for d in descriptors:
        assert sum(ln.startswith(f"| `{d.exchange.id}` |") for ln in lines) == 1 + sum(
            ch.kind == "book" for ch in d.channels.values()
        )
        for url in d.exchange.docs:
            assert f"<{url}>" in page
