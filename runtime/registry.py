"""Find the generated module of an exchange."""

from __future__ import annotations

import importlib

from runtime.spec import ExchangeSpec


class UnknownExchangeError(LookupError):
    """No generated module exists for the requested exchange id."""


def exchanges() -> dict[str, str]:
    """Exchange id -> module name, from the generated registry."""
    import generated

    return dict(generated.EXCHANGES)


def load_spec(exchange: str) -> ExchangeSpec:
    """The ``SPEC`` of one generated module."""
    known = exchanges()
    if exchange not in known:
        raise UnknownExchangeError(
            f"no generated module for exchange '{exchange}'; known: {', '.join(sorted(known))}"
        )
    spec = importlib.import_module(known[exchange]).SPEC
    assert isinstance(spec, ExchangeSpec)
    return spec
