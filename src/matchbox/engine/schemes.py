"""Tick schemes: which integer ticks a market trades at, and what they mean to people.

- ``binary``: ticks 1..99 are the price in cents of a YES contract that pays 100 if the event
  happens. Sides are buy and sell.
- ``odds``: the standard betting-exchange decimal odds ladder, 1.01 to 1000, mapped to
  consecutive ticks 1..350 (1 = 1.01, 100 = 2.00, 350 = 1000). The increment is 0.01 up to 2,
  0.02 up to 3, 0.05 up to 4, 0.1 up to 6, 0.2 up to 10, 0.5 up to 20, 1 up to 30, 2 up to 50,
  5 up to 100 and 10 up to 1000. A *lay* rests on the bid side and a *back* on the ask side,
  so the book's price-time rule reads: a back at odds o matches resting lays at odds >= o, a lay
  at odds o matches resting backs at odds <= o, and each taker gets the best odds for it first
  (highest lay odds for a back, lowest back odds for a lay). The quantity is the stake.
- ``ticks``: plain integer ticks 1..max_tick (the original README's generic model, prices like 490/500/510).

The engine only sees ticks. Odds are kept here in integer hundredths (``101`` is 1.01) so the
ladder has no floats; the API edge turns them into ``Decimal``.
"""

from __future__ import annotations

from decimal import Decimal

from matchbox.engine.types import Side, TickScheme

BINARY_MAX_TICK = 99
TICKS_MAX_TICK_LIMIT = 100_000  # a book holds one slot per tick, so the range is bounded

BACK = Side.SELL
LAY = Side.BUY

# (upper bound of the band, increment), both in hundredths of decimal odds
_ODDS_BANDS: tuple[tuple[int, int], ...] = (
    (200, 1),
    (300, 2),
    (400, 5),
    (600, 10),
    (1000, 20),
    (2000, 50),
    (3000, 100),
    (5000, 200),
    (10000, 500),
    (100000, 1000),
)


def _build_odds_ladder() -> tuple[int, ...]:
    ladder = [101]
    for upper, step in _ODDS_BANDS:
        while ladder[-1] < upper:
            ladder.append(ladder[-1] + step)
    return tuple(ladder)


ODDS_LADDER: tuple[int, ...] = _build_odds_ladder()  # ODDS_LADDER[tick - 1] = odds * 100
ODDS_MAX_TICK = len(ODDS_LADDER)
_TICK_OF_ODDS = {odds: tick for tick, odds in enumerate(ODDS_LADDER, start=1)}


def tick_range(scheme: TickScheme, max_tick: int = 0) -> tuple[int, int] | None:
    """The (lowest, highest) tick of a market, or None if the spec is invalid."""
    if scheme is TickScheme.BINARY:
        return 1, BINARY_MAX_TICK
    if scheme is TickScheme.ODDS:
        return 1, ODDS_MAX_TICK
    if 1 <= max_tick <= TICKS_MAX_TICK_LIMIT:
        return 1, max_tick
    return None


def odds_to_tick(odds: Decimal) -> int | None:
    """The tick of decimal odds on the ladder, or None if the odds are off it."""
    hundredths = odds * 100
    if hundredths != hundredths.to_integral_value():
        return None
    return _TICK_OF_ODDS.get(int(hundredths))


def tick_to_odds(tick: int) -> Decimal:
    """Decimal odds of a ladder tick (1 -> 1.01, 350 -> 1000)."""
    return Decimal(ODDS_LADDER[tick - 1]) / 100
