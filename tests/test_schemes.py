"""The tick ladders: binary cents, the decimal odds ladder, plain ticks."""

from __future__ import annotations

import itertools
from decimal import Decimal

import pytest

from matchbox.engine.schemes import (
    ODDS_LADDER,
    ODDS_MAX_TICK,
    odds_to_tick,
    tick_range,
    tick_to_odds,
)
from matchbox.engine.types import TickScheme


def test_odds_ladder_has_the_standard_350_ticks_from_1_01_to_1000() -> None:
    assert ODDS_MAX_TICK == 350
    assert tick_to_odds(1) == Decimal("1.01")
    assert tick_to_odds(100) == Decimal("2")
    assert tick_to_odds(350) == Decimal("1000")


@pytest.mark.parametrize(
    ("low", "high", "step"),
    [
        ("1.01", "2", "0.01"),
        ("2", "3", "0.02"),
        ("3", "4", "0.05"),
        ("4", "6", "0.1"),
        ("6", "10", "0.2"),
        ("10", "20", "0.5"),
        ("20", "30", "1"),
        ("30", "50", "2"),
        ("50", "100", "5"),
        ("100", "1000", "10"),
    ],
)
def test_each_band_of_the_ladder_steps_by_its_increment(low: str, high: str, step: str) -> None:
    first, last = odds_to_tick(Decimal(low)), odds_to_tick(Decimal(high))
    assert first is not None
    assert last is not None
    odds = [tick_to_odds(t) for t in range(first, last + 1)]
    assert {b - a for a, b in itertools.pairwise(odds)} == {Decimal(step)}


def test_ladder_is_strictly_increasing_and_round_trips() -> None:
    assert list(ODDS_LADDER) == sorted(set(ODDS_LADDER))
    for tick in range(1, ODDS_MAX_TICK + 1):
        assert odds_to_tick(tick_to_odds(tick)) == tick


@pytest.mark.parametrize("odds", ["1.00", "1.005", "2.01", "3.01", "25.5", "1001", "0"])
def test_odds_off_the_ladder_have_no_tick(odds: str) -> None:
    assert odds_to_tick(Decimal(odds)) is None


def test_tick_ranges() -> None:
    assert tick_range(TickScheme.BINARY) == (1, 99)
    assert tick_range(TickScheme.ODDS) == (1, 350)
    assert tick_range(TickScheme.TICKS, 1000) == (1, 1000)
    assert tick_range(TickScheme.TICKS, 0) is None
