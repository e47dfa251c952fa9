"""Prices per million tokens, and the cost of a completion.

The built-in table covers common hosted models (USD, list prices; override or extend them in
``[pricing]`` of aiestack.toml). Local models cost nothing. A model with no known price has an
unknown cost (``None``), never a made-up zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aiestack.types import Usage


@dataclass(frozen=True, slots=True)
class Price:
    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: float | None = None
    #: Prompt-cache writes (Anthropic: 1.25× input for the 5-minute cache); None: the input rate.
    cache_write_per_mtok: float | None = None

    def cost(self, usage: Usage) -> float:
        """Input at its rate, cache reads at the cached rate, cache writes at the write rate, output at its rate."""
        cached = min(usage.cached_tokens, usage.input_tokens)
        written = min(usage.cache_write_tokens, usage.input_tokens - cached)
        cached_rate = self.input_per_mtok if self.cached_input_per_mtok is None else self.cached_input_per_mtok
        write_rate = self.input_per_mtok if self.cache_write_per_mtok is None else self.cache_write_per_mtok
        return (
            (usage.input_tokens - cached - written) * self.input_per_mtok
            + cached * cached_rate
            + written * write_rate
            + usage.output_tokens * self.output_per_mtok
        ) / 1_000_000


BUILTIN_PRICES: Mapping[str, Price] = {
    "gpt-4o": Price(2.50, 10.00, 1.25),
    "gpt-4o-mini": Price(0.15, 0.60, 0.075),
    "gpt-4.1": Price(2.00, 8.00, 0.50),
    "gpt-4.1-mini": Price(0.40, 1.60, 0.10),
    "gpt-4.1-nano": Price(0.10, 0.40, 0.025),
    "o3-mini": Price(1.10, 4.40, 0.55),
    "claude-3-5-haiku-latest": Price(0.80, 4.00, 0.08, 1.00),
    "claude-3-5-sonnet-latest": Price(3.00, 15.00, 0.30, 3.75),
    "claude-3-7-sonnet-latest": Price(3.00, 15.00, 0.30, 3.75),
    "claude-sonnet-4-0": Price(3.00, 15.00, 0.30, 3.75),
    "claude-opus-4-0": Price(15.00, 75.00, 1.50, 18.75),
    "text-embedding-3-small": Price(0.02, 0.0),
    "text-embedding-3-large": Price(0.13, 0.0),
}

FREE = Price(0.0, 0.0, 0.0)


class PriceTable:
    """Looks up a model's price: configured overrides first, then the built-in table.

    A local model (embedded, or self-hosted with ``local = true``) costs nothing unless a price is
    configured for it, e.g. to account for the hardware it runs on."""

    def __init__(self, overrides: Mapping[str, Price] | None = None, *, builtin: Mapping[str, Price] = BUILTIN_PRICES):
        self._prices = {**builtin, **(overrides or {})}

    def price(self, model: str) -> Price | None:
        return self._prices.get(model)

    def cost(self, model: str, usage: Usage, *, local: bool = False) -> float | None:
        """The cost in USD: by the model's price if known, 0 for a local model without one, else unknown."""
        price = self.price(model)
        if price is None:
            return 0.0 if local else None
        return price.cost(usage)
