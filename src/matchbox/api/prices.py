"""Words and numbers at the edge, ticks and sides inside: the API's translation per tick scheme.

- binary markets: ``price`` in cents (1..99) of a YES contract, ``qty`` contracts, buy/sell;
- odds markets: ``odds`` (decimal, on the ladder 1.01..1000), ``stake``, back/lay (a back is a
  sell of the outcome at those odds and rests on the ask side; a lay is a buy);
- ticks markets: ``price`` an integer tick (1..max), ``qty`` units, buy/sell.
"""

from __future__ import annotations

from decimal import Decimal

from matchbox.api.codes import Code
from matchbox.engine.schemes import odds_to_tick, tick_to_odds
from matchbox.engine.types import RejectReason, Side, TickScheme

SIDE_WORDS = {
    TickScheme.BINARY: {"buy": Side.BUY, "sell": Side.SELL},
    TickScheme.TICKS: {"buy": Side.BUY, "sell": Side.SELL},
    TickScheme.ODDS: {"lay": Side.BUY, "back": Side.SELL},
}
SCHEME_NAMES = {TickScheme.BINARY: "binary", TickScheme.ODDS: "odds", TickScheme.TICKS: "ticks"}


class PriceError(ValueError):
    """A value that does not fit the market; ``field`` names the request field at fault."""

    def __init__(self, field: str, message: str, code: Code | RejectReason = Code.INVALID_FIELD) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.code = code


def side_of(scheme: TickScheme, word: str) -> Side:
    words = SIDE_WORDS[scheme]
    if word not in words:
        raise PriceError("side", f"a {SCHEME_NAMES[scheme]} market takes side {' or '.join(words)}, not {word!r}")
    return words[word]


def side_word(scheme: TickScheme, side: Side) -> str:
    return next(word for word, value in SIDE_WORDS[scheme].items() if value is side)


def tick_of(scheme: TickScheme, price: int | None, odds: Decimal | None) -> int:
    """The tick of a limit order's price (``price`` for binary/ticks markets, ``odds`` for odds
    markets). The odds are as the request model bounds them (finite, a dozen digits at most), so
    the arithmetic on them is small whatever the client sent. Whether a price is on the market's
    ladder is the engine's rule (``check_order``)."""
    if scheme is TickScheme.ODDS:
        if odds is None:
            raise PriceError("odds", "an odds market takes its price as odds, e.g. 2.5", Code.MISSING_FIELD)
        tick = odds_to_tick(odds)
        if tick is None:
            raise PriceError(
                "odds",
                f"{odds} is not on the odds ladder (1.01 ... 1000 in its increments)",
                RejectReason.INVALID_PRICE,
            )
        return tick
    if price is None:
        raise PriceError("price", "a limit order needs a price", Code.MISSING_FIELD)
    return price


def price_out(scheme: TickScheme, tick: int) -> int | float:
    """A tick as the market's users read it: cents, plain ticks, or decimal odds."""
    return float(tick_to_odds(tick)) if scheme is TickScheme.ODDS else tick
