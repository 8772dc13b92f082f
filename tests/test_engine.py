"""The matching rules of matchbox.engine, one test per rule, on the original README's scenarios first."""

from __future__ import annotations

from decimal import Decimal

import pytest

from conftest import Driver, rejected
from matchbox.engine import BookIntegrityError, Engine
from matchbox.engine.schemes import BACK, LAY, odds_to_tick
from matchbox.engine.types import (
    AdvanceTime,
    AmendOrder,
    CancelAll,
    CancelOrders,
    CancelReason,
    CloseMarket,
    CreateMarket,
    Event,
    MarketCreated,
    MarketInfo,
    MarketState,
    MarketStateChanged,
    OrderAccepted,
    OrderAmended,
    OrderCancelled,
    OrderKind,
    OrderReduced,
    OrderRested,
    PlaceOrder,
    ReduceOrder,
    Rejected,
    RejectReason,
    ResumeMarket,
    SelfTradePrevention,
    SettleMarket,
    Side,
    SuspendMarket,
    TickScheme,
    TimeInForce,
    TradeExecuted,
)

BUY, SELL = Side.BUY, Side.SELL


def trades(events: list[Event]) -> list[tuple[int, int, int, int]]:
    """(maker id, taker id, price, qty) of every trade."""
    return [(e.maker_order_id, e.taker_order_id, e.price, e.qty) for e in events if isinstance(e, TradeExecuted)]


def kinds(events: list[Event]) -> list[str]:
    return [type(e).__name__ for e in events]


# ---------------------------------------------------------------------- the original README's scenarios


def test_no_match_rests_on_book(driver: Driver) -> None:
    events = driver.place(BUY, 50, 10)
    assert kinds(events) == ["OrderAccepted", "OrderRested"]
    assert driver.engine.best_bid_ask("m") == (50, None)


def test_full_match(driver: Driver) -> None:
    driver.place(SELL, 50, 10, account="s")
    events = driver.place(BUY, 50, 10, account="b")
    assert trades(events) == [(1, 2, 50, 10)]
    assert isinstance(events[-1], TradeExecuted)
    assert events[-1].taker_remaining == 0
    assert events[-1].maker_remaining == 0
    depth = driver.engine.depth("m")
    assert depth is not None
    assert depth.asks == []
    assert driver.engine.orders == {}


def test_partial_fill_incoming_larger(driver: Driver) -> None:
    driver.place(SELL, 50, 10, account="s")
    events = driver.place(BUY, 50, 25, account="b")
    assert trades(events) == [(1, 2, 50, 10)]
    assert isinstance(events[-1], OrderRested)
    assert events[-1].remaining == 15
    status = driver.engine.order_status(2)
    assert status is not None
    assert (status.filled, status.remaining) == (10, 15)


def test_partial_fill_resting_larger(driver: Driver) -> None:
    driver.place(SELL, 50, 30, account="s")
    events = driver.place(BUY, 50, 10, account="b")
    assert trades(events) == [(1, 2, 50, 10)]
    status = driver.engine.order_status(1)
    assert status is not None
    assert (status.filled, status.remaining) == (10, 20)


def test_price_priority(driver: Driver) -> None:
    driver.place(SELL, 52, 10, account="s1")
    driver.place(SELL, 50, 10, account="s2")
    driver.place(SELL, 51, 10, account="s3")
    assert trades(driver.place(BUY, 52, 10, account="b")) == [(2, 4, 50, 10)]


def test_time_priority(driver: Driver) -> None:
    driver.place(SELL, 50, 10, account="s1")
    driver.place(SELL, 50, 10, account="s2")
    assert trades(driver.place(BUY, 50, 10, account="b")) == [(1, 3, 50, 10)]


def test_fills_sum_to_matched_qty(driver: Driver) -> None:
    for qty in (3, 7, 11):
        driver.place(SELL, 50, qty, account=f"s{qty}")
    events = driver.place(BUY, 50, 15, account="b")
    assert sum(t[3] for t in trades(events)) == 15
    assert driver.engine.depth("m").asks[0].qty == 6  # type: ignore[union-attr]


def test_no_match_when_price_too_low(driver: Driver) -> None:
    driver.place(SELL, 50, 10, account="s")
    assert trades(driver.place(BUY, 49, 10, account="b")) == []
    assert driver.engine.best_bid_ask("m") == (49, 50)


def test_sell_matches_highest_bid_first(driver: Driver) -> None:
    driver.place(BUY, 48, 10, account="b1")
    driver.place(BUY, 50, 10, account="b2")
    driver.place(BUY, 49, 10, account="b3")
    assert trades(driver.place(SELL, 48, 10, account="s")) == [(2, 4, 50, 10)]


def test_sweep_across_three_levels_at_maker_prices(driver: Driver) -> None:
    for price in (490, 500, 510):
        driver.place(SELL, price, 10, account=f"s{price}")
    events = driver.place(BUY, 510, 25, account="b")
    assert [(t[2], t[3]) for t in trades(events)] == [(490, 10), (500, 10), (510, 5)]
    depth = driver.engine.depth("m")
    assert depth is not None
    assert [(lv.price, lv.qty) for lv in depth.asks] == [(510, 5)]
    assert depth.bids == []


def test_partial_fills_through_one_level_fifo(driver: Driver) -> None:
    driver.place(SELL, 100, 30, account="s1")
    driver.place(SELL, 100, 50, account="s2")
    events = driver.place(BUY, 100, 60, account="b")
    assert trades(events) == [(1, 3, 100, 30), (2, 3, 100, 30)]
    assert driver.engine.depth("m").asks[0].qty == 20  # type: ignore[union-attr]


def test_trade_ids_count_up_across_markets(driver: Driver) -> None:
    driver.market("other")
    driver.place(SELL, 5, 1, account="s")
    driver.place(SELL, 5, 1, account="s", market_id="other")
    first = driver.place(BUY, 5, 1, account="b")
    second = driver.place(BUY, 5, 1, account="b", market_id="other")
    assert [e.trade_id for e in first + second if isinstance(e, TradeExecuted)] == [1, 2]


# ---------------------------------------------------------------------- time in force


def test_ioc_cancels_its_remainder(driver: Driver) -> None:
    driver.place(SELL, 50, 4, account="s")
    events = driver.place(BUY, 50, 10, account="b", tif=TimeInForce.IOC)
    assert trades(events) == [(1, 2, 50, 4)]
    assert isinstance(events[-1], OrderCancelled)
    assert (events[-1].cancelled_qty, events[-1].reason) == (6, CancelReason.UNFILLED)
    assert driver.engine.depth("m").bids == []  # type: ignore[union-attr]


def test_fok_fills_completely_across_levels(driver: Driver) -> None:
    driver.place(SELL, 50, 4, account="s1")
    driver.place(SELL, 51, 6, account="s2")
    events = driver.place(BUY, 51, 10, account="b", tif=TimeInForce.FOK)
    assert trades(events) == [(1, 3, 50, 4), (2, 3, 51, 6)]


def test_fok_that_cannot_fill_is_rejected_and_executes_nothing(driver: Driver) -> None:
    driver.place(SELL, 50, 4, account="s1")
    driver.place(SELL, 52, 6, account="s2")
    before = driver.engine.state_hash()
    assert rejected(driver.place(BUY, 51, 10, account="b", tif=TimeInForce.FOK)) is RejectReason.FOK_CANNOT_FILL
    assert rejected(driver.place(BUY, 40, 1, account="b", tif=TimeInForce.FOK)) is RejectReason.FOK_CANNOT_FILL
    assert driver.engine.state_hash() == before


def test_post_only_rests_when_passive_and_is_rejected_when_it_would_take(driver: Driver) -> None:
    driver.place(SELL, 50, 5, account="s")
    assert kinds(driver.place(BUY, 49, 5, account="b", post_only=True)) == ["OrderAccepted", "OrderRested"]
    assert rejected(driver.place(BUY, 50, 5, account="b", post_only=True)) is RejectReason.POST_ONLY_WOULD_TAKE
    ioc = driver.place(BUY, 40, 5, account="b", post_only=True, tif=TimeInForce.IOC)
    assert rejected(ioc) is RejectReason.INVALID_ORDER_TYPE


def test_market_order_sweeps_at_maker_prices_and_cancels_the_rest(driver: Driver) -> None:
    driver.place(SELL, 600, 5, account="s1")
    driver.place(SELL, 990, 5, account="s2")
    events = driver.place(BUY, 0, 12, account="b", kind=OrderKind.MARKET, tif=TimeInForce.IOC)
    assert isinstance(events[0], OrderAccepted)
    assert events[0].price == 1000
    assert [(t[2], t[3]) for t in trades(events)] == [(600, 5), (990, 5)]
    assert isinstance(events[-1], OrderCancelled)
    assert events[-1].cancelled_qty == 2


def test_market_sell_takes_bids_down_to_the_lowest_tick(driver: Driver) -> None:
    driver.place(BUY, 2, 5, account="b")
    events = driver.place(SELL, 0, 5, account="s", kind=OrderKind.MARKET, tif=TimeInForce.FOK)
    assert trades(events) == [(1, 2, 2, 5)]


def test_market_order_must_be_ioc_or_fok(driver: Driver) -> None:
    assert rejected(driver.place(BUY, 0, 5, kind=OrderKind.MARKET)) is RejectReason.INVALID_ORDER_TYPE
    events = driver.place(BUY, 0, 5, kind=OrderKind.MARKET, tif=TimeInForce.FOK)
    assert rejected(events) is RejectReason.FOK_CANNOT_FILL  # empty book


def test_gtd_expires_at_the_first_command_at_or_after_its_time(driver: Driver) -> None:
    driver.place(BUY, 50, 5, tif=TimeInForce.GTD, expires_at=5_000, ts=2_000)
    assert driver.apply(AdvanceTime, ts=4_999) == []
    assert driver.engine.order_status(1) is not None
    events = driver.place(SELL, 50, 5, account="s", ts=5_000)
    assert isinstance(events[0], OrderCancelled)
    assert events[0].reason is CancelReason.EXPIRED
    assert trades(events) == []  # expired before the sell could meet it
    assert isinstance(events[-1], OrderRested)


def test_gtd_expiries_come_in_time_then_id_order(driver: Driver) -> None:
    driver.place(BUY, 50, 1, tif=TimeInForce.GTD, expires_at=9_000)
    driver.place(BUY, 51, 1, tif=TimeInForce.GTD, expires_at=8_000)
    driver.place(BUY, 52, 1, tif=TimeInForce.GTD, expires_at=8_000)
    events = driver.apply(AdvanceTime, ts=9_500)
    assert [(e.order_id, e.reason) for e in events if isinstance(e, OrderCancelled)] == [
        (2, CancelReason.EXPIRED),
        (3, CancelReason.EXPIRED),
        (1, CancelReason.EXPIRED),
    ]


def test_expiry_must_be_in_the_future_and_only_for_gtd(driver: Driver) -> None:
    now = driver.ts + 1
    past = driver.place(BUY, 50, 5, tif=TimeInForce.GTD, expires_at=now, ts=now)
    assert rejected(past) is RejectReason.INVALID_EXPIRY
    assert rejected(driver.place(BUY, 50, 5, tif=TimeInForce.GTD)) is RejectReason.INVALID_EXPIRY
    assert rejected(driver.place(BUY, 50, 5, expires_at=10**12)) is RejectReason.INVALID_EXPIRY


def test_a_filled_gtd_order_does_not_expire_later(driver: Driver) -> None:
    driver.place(BUY, 50, 5, tif=TimeInForce.GTD, expires_at=10_000)
    driver.place(SELL, 50, 5, account="s")
    assert driver.apply(AdvanceTime, ts=20_000) == []


# ---------------------------------------------------------------------- cancel, reduce, cancel all


def test_cancel_takes_the_order_off_the_book(driver: Driver) -> None:
    driver.place(BUY, 50, 5)
    events = driver.cancel(1)
    assert isinstance(events[0], OrderCancelled)
    assert (events[0].cancelled_qty, events[0].reason) == (5, CancelReason.USER)
    assert driver.engine.best_bid_ask("m") == (None, None)


def test_cancel_of_unknown_finished_or_foreign_orders_is_rejected(driver: Driver) -> None:
    driver.place(BUY, 50, 5, account="a")
    driver.place(BUY, 50, 5, account="a")
    driver.cancel(1)
    assert rejected(driver.cancel(1)) is RejectReason.ORDER_NOT_OPEN
    assert rejected(driver.cancel(99)) is RejectReason.UNKNOWN_ORDER
    assert rejected(driver.cancel(2, account="intruder")) is RejectReason.UNKNOWN_ORDER
    assert driver.engine.order_status(2) is not None


def test_cancelled_orders_are_skipped_by_matching(driver: Driver) -> None:
    for account in ("s1", "s2", "s3"):
        driver.place(SELL, 50, 5, account=account)
    driver.cancel(1)
    driver.cancel(2)
    assert trades(driver.place(BUY, 50, 5, account="b")) == [(3, 4, 50, 5)]


def test_reduce_keeps_time_priority(driver: Driver) -> None:
    driver.place(SELL, 50, 10, account="s1")
    driver.place(SELL, 50, 10, account="s2")
    events = driver.apply(ReduceOrder, order_id=1, reduce_by=7)
    assert isinstance(events[0], OrderReduced)
    assert events[0].remaining == 3
    assert trades(driver.place(BUY, 50, 5, account="b")) == [(1, 3, 50, 3), (2, 3, 50, 2)]


def test_reduce_by_the_whole_remainder_cancels(driver: Driver) -> None:
    driver.place(SELL, 50, 10)
    events = driver.apply(ReduceOrder, order_id=1, reduce_by=10)
    assert isinstance(events[0], OrderCancelled)
    assert events[0].reason is CancelReason.USER
    assert driver.engine.orders == {}


def test_reduce_must_reduce(driver: Driver) -> None:
    driver.place(SELL, 50, 10)
    assert rejected(driver.apply(ReduceOrder, order_id=1, reduce_by=0)) is RejectReason.INVALID_QUANTITY
    assert rejected(driver.apply(ReduceOrder, order_id=5, reduce_by=1)) is RejectReason.UNKNOWN_ORDER


def test_cancel_all_takes_one_accounts_orders_in_one_market(driver: Driver) -> None:
    driver.market("other")
    driver.place(BUY, 50, 1, account="a")
    driver.place(SELL, 60, 1, account="a")
    driver.place(BUY, 50, 1, account="b")
    driver.place(BUY, 50, 1, account="a", market_id="other")
    events = driver.apply(CancelAll, market_id="m", account="a")
    assert [(e.order_id, e.reason) for e in events if isinstance(e, OrderCancelled)] == [
        (1, CancelReason.CANCEL_ALL),
        (2, CancelReason.CANCEL_ALL),
    ]
    assert sorted(driver.engine.orders) == [3, 4]


# ---------------------------------------------------------------------- self-trade prevention


def test_cancel_taker_rejects_an_order_whose_first_match_is_its_own(driver: Driver) -> None:
    driver.place(SELL, 50, 5, account="a")
    assert rejected(driver.place(BUY, 50, 5, account="a")) is RejectReason.SELF_TRADE
    assert driver.engine.order_status(1) is not None


def test_cancel_taker_cancels_the_remainder_on_meeting_its_own_order(driver: Driver) -> None:
    driver.place(SELL, 50, 5, account="x")
    driver.place(SELL, 51, 5, account="a")
    events = driver.place(BUY, 51, 8, account="a")
    assert trades(events) == [(1, 3, 50, 5)]
    assert isinstance(events[-1], OrderCancelled)
    assert (events[-1].order_id, events[-1].reason, events[-1].cancelled_qty) == (3, CancelReason.SELF_TRADE, 3)
    assert driver.engine.order_status(2) is not None


def test_cancel_resting_removes_the_accounts_resting_order_and_goes_on() -> None:
    driver = Driver()
    driver.market(stp=SelfTradePrevention.CANCEL_RESTING)
    driver.place(SELL, 50, 5, account="a")
    driver.place(SELL, 50, 5, account="x")
    events = driver.place(BUY, 50, 5, account="a")
    assert kinds(events) == ["OrderAccepted", "OrderCancelled", "TradeExecuted"]
    assert isinstance(events[1], OrderCancelled)
    assert events[1].order_id == 1
    assert events[1].reason is CancelReason.SELF_TRADE
    assert trades(events) == [(2, 3, 50, 5)]


def test_fok_counts_only_liquidity_it_may_take() -> None:
    driver = Driver()
    driver.market(stp=SelfTradePrevention.CANCEL_RESTING)
    driver.place(SELL, 50, 5, account="a")
    driver.place(SELL, 50, 5, account="x")
    assert rejected(driver.place(BUY, 50, 8, account="a", tif=TimeInForce.FOK)) is RejectReason.FOK_CANNOT_FILL
    assert len(driver.engine.orders) == 2


def test_an_order_s_own_self_trade_prevention_overrides_its_market_s(driver: Driver) -> None:
    """The market cancels the taker; one order asks to cancel the resting order instead and goes
    on trading, another to cancel both: its own resting order and its remainder go, even when
    that resting order is the first it meets (where cancel_taker would reject it)."""
    driver.place(SELL, 50, 5, account="a")  # 1
    driver.place(SELL, 50, 5, account="x")  # 2
    events = driver.place(BUY, 50, 5, account="a", stp=SelfTradePrevention.CANCEL_RESTING)  # 3
    assert kinds(events) == ["OrderAccepted", "OrderCancelled", "TradeExecuted"]
    assert trades(events) == [(2, 3, 50, 5)]
    driver.place(SELL, 60, 4, account="a")  # 4
    events = driver.place(BUY, 60, 6, account="a", stp=SelfTradePrevention.CANCEL_BOTH)  # 5
    assert kinds(events) == ["OrderAccepted", "OrderCancelled", "OrderCancelled"]
    cancelled = [(e.order_id, e.cancelled_qty, e.reason) for e in events if isinstance(e, OrderCancelled)]
    assert cancelled == [(4, 4, CancelReason.SELF_TRADE), (5, 6, CancelReason.SELF_TRADE)]
    assert driver.engine.orders == {}
    driver.place(SELL, 70, 4, account="a")  # 6
    assert rejected(driver.place(BUY, 70, 4, account="a", tif=TimeInForce.FOK, stp=SelfTradePrevention.CANCEL_BOTH))
    assert 6 in driver.engine.orders  # a FOK that cannot fill cancels nothing


def test_an_amend_counts_what_it_may_trade_against_the_largest_order_never_what_was_reduced() -> None:
    driver = Driver()
    driver.market(max_qty=60)
    driver.place(SELL, 60, 50)  # 1
    for _ in range(3):  # a quote lowered and raised again and again: it never has more than 50 live
        assert kinds(driver.apply(ReduceOrder, order_id=1, reduce_by=10)) == ["OrderReduced"]
        assert kinds(driver.apply(AmendOrder, order_id=1, qty=50)) == ["OrderAmended", "OrderRested"]
    assert rejected(driver.apply(AmendOrder, order_id=1, qty=61)) is RejectReason.QUANTITY_OVER_MAX


def test_an_amend_s_qty_counts_what_has_filled_so_a_fill_it_had_not_seen_never_trades_twice(driver: Driver) -> None:
    """qty is FIX's OrderQty: filled plus the new remaining. A trader sees 10 resting, decides on
    8; meanwhile 4 fill. The amend leaves 4 to trade (8 in all), keeping its place, never 8 more;
    a qty at or below what has filled cancels what is left."""
    driver.place(SELL, 50, 10, account="m")  # 1
    driver.place(BUY, 50, 4, account="t")  # 2: fills 4 of it
    events = driver.apply(AmendOrder, order_id=1, qty=8)
    assert kinds(events) == ["OrderReduced"]
    assert isinstance(events[0], OrderReduced)
    assert (events[0].reduced_by, events[0].remaining) == (2, 4)
    events = driver.apply(AmendOrder, order_id=1, qty=9, price=51)  # a new price: 5 more to trade
    assert kinds(events) == ["OrderAmended", "OrderRested"]
    assert isinstance(events[0], OrderAmended)
    assert events[0].remaining == 5
    events = driver.apply(AmendOrder, order_id=1, qty=4)  # no more than has filled
    assert kinds(events) == ["OrderCancelled"]
    assert isinstance(events[0], OrderCancelled)
    assert (events[0].cancelled_qty, events[0].reason) == (
        5,
        CancelReason.USER,
    )


def test_an_amended_order_keeps_its_own_self_trade_rule_through_a_snapshot(driver: Driver) -> None:
    """The market cancels the taker; the order was placed to cancel the resting order instead.
    Amended to cross the account's own resting order, after a snapshot and restore, its own rule
    still applies: the resting order goes and it trades on."""
    driver.place(SELL, 55, 5, account="a")  # 1
    driver.place(SELL, 55, 5, account="x")  # 2
    driver.place(BUY, 50, 5, account="a", stp=SelfTradePrevention.CANCEL_RESTING)  # 3
    engine = Engine.restore(driver.engine.snapshot())
    assert engine.state_hash() == driver.engine.state_hash()
    events = engine.apply(AmendOrder(seq=9, ts=9_000, order_id=3, price=55))
    assert kinds(events) == ["OrderAmended", "OrderCancelled", "TradeExecuted"]
    assert trades(events) == [(2, 3, 55, 5)]


def test_a_market_opens_and_closes_itself_on_journal_time() -> None:
    """Created to open at 2,000 and close at 3,000 (engine time): suspended until it opens, orders
    refused; open between; at 3,000 closed by the engine, its book cancelled, before any order of
    the command that reached it (and after a snapshot and restore, the same)."""
    driver = Driver()
    info = MarketInfo(title="Rain", question="Will it rain?", outcomes=("YES", "NO"))
    events = driver.apply(
        CreateMarket, market_id="m", scheme=TickScheme.BINARY, info=info, opens_at=2_000, closes_at=3_000
    )
    assert kinds(events) == ["MarketCreated", "MarketStateChanged"]
    assert isinstance(events[0], MarketCreated)
    assert (events[0].info, events[0].closes_at) == (info, 3_000)
    assert rejected(driver.place(BUY, 40, 5, market_id="m")) is RejectReason.MARKET_NOT_OPEN
    events = driver.place(BUY, 40, 5, market_id="m", ts=2_000)
    assert kinds(events) == ["MarketStateChanged", "OrderAccepted", "OrderRested"]
    engine = Engine.restore(driver.engine.snapshot())
    events = engine.apply(
        PlaceOrder(seq=9, ts=3_000, market_id="m", order_id=99, account="a", side=SELL, price=40, qty=5)
    )
    assert kinds(events) == ["MarketStateChanged", "OrderCancelled", "Rejected"]
    assert isinstance(events[0], MarketStateChanged)
    assert events[0].state is MarketState.CLOSED
    assert isinstance(events[1], OrderCancelled)
    assert events[1].reason is CancelReason.MARKET_CLOSED
    assert engine.next_expiry() is None
    for bad in ({"closes_at": 1}, {"opens_at": 5_000, "closes_at": 4_000}, {"info": MarketInfo(outcomes=("A",))}):
        assert rejected(driver.apply(CreateMarket, market_id="x", scheme=TickScheme.BINARY, **bad)) is (
            RejectReason.INVALID_MARKET_SPEC
        )


def test_cancel_orders_gives_each_id_its_own_outcome(driver: Driver) -> None:
    driver.place(BUY, 40, 5, account="a")  # 1
    driver.place(BUY, 41, 5, account="b")  # 2
    driver.place(BUY, 42, 5, account="a")  # 3
    events = driver.apply(CancelOrders, order_ids=(3, 2, 1, 1, 99), account="a")
    outcomes = [(type(e).__name__, getattr(e, "order_id", 0), getattr(e, "reason", None)) for e in events]
    assert outcomes == [
        ("OrderCancelled", 3, CancelReason.USER),
        ("Rejected", 2, RejectReason.UNKNOWN_ORDER),  # another account's: as if it did not exist
        ("OrderCancelled", 1, CancelReason.USER),
        ("Rejected", 1, RejectReason.ORDER_NOT_OPEN),  # named twice
        ("Rejected", 99, RejectReason.UNKNOWN_ORDER),
    ]
    assert set(driver.engine.orders) == {2}
    assert rejected(driver.apply(CancelOrders, order_ids=())) is RejectReason.INVALID_ORDER_IDS
    assert rejected(driver.apply(CancelOrders, order_ids=tuple(range(1, 102)))) is RejectReason.INVALID_ORDER_IDS
    assert set(driver.engine.orders) == {2}


# ---------------------------------------------------------------------- markets


def test_market_lifecycle_and_its_rules(driver: Driver) -> None:
    driver.place(BUY, 50, 5)
    suspended = driver.apply(SuspendMarket, market_id="m")[0]
    assert isinstance(suspended, MarketStateChanged)
    assert suspended.state is MarketState.SUSPENDED
    assert rejected(driver.place(BUY, 50, 5)) is RejectReason.MARKET_NOT_OPEN
    assert driver.engine.depth("m").bids[0].qty == 5  # type: ignore[union-attr]
    assert rejected(driver.apply(SuspendMarket, market_id="m")) is RejectReason.ILLEGAL_TRANSITION
    driver.apply(ResumeMarket, market_id="m")
    driver.place(BUY, 51, 5)
    events = driver.apply(CloseMarket, market_id="m")
    assert kinds(events) == ["MarketStateChanged", "OrderCancelled", "OrderCancelled"]
    assert {e.reason for e in events[1:] if isinstance(e, OrderCancelled)} == {CancelReason.MARKET_CLOSED}
    assert rejected(driver.apply(ResumeMarket, market_id="m")) is RejectReason.ILLEGAL_TRANSITION
    settled = driver.apply(SettleMarket, market_id="m", outcome="yes")
    assert isinstance(settled[0], MarketStateChanged)
    assert settled[0].state is MarketState.SETTLED
    assert settled[0].outcome == "yes"
    assert rejected(driver.apply(SettleMarket, market_id="m")) is RejectReason.ILLEGAL_TRANSITION
    assert rejected(driver.apply(SuspendMarket, market_id="nope")) is RejectReason.UNKNOWN_MARKET


def test_settling_an_open_market_cancels_its_book(driver: Driver) -> None:
    driver.place(SELL, 50, 5)
    events = driver.apply(SettleMarket, market_id="m", outcome="no")
    assert kinds(events) == ["MarketStateChanged", "OrderCancelled"]


def test_market_specs_are_checked(driver: Driver) -> None:
    assert rejected(driver.market("m")) is RejectReason.MARKET_EXISTS
    assert rejected(driver.market("t", max_tick=0)) is RejectReason.INVALID_MARKET_SPEC
    assert rejected(driver.market("t", max_tick=10**9)) is RejectReason.INVALID_MARKET_SPEC
    assert rejected(driver.market("", scheme=TickScheme.BINARY)) is RejectReason.INVALID_MARKET_SPEC
    assert rejected(driver.market("q", scheme=TickScheme.BINARY, max_qty=0)) is RejectReason.INVALID_MARKET_SPEC


def test_many_markets_keep_separate_books(driver: Driver) -> None:
    driver.market("b", scheme=TickScheme.BINARY)
    driver.place(SELL, 50, 5, account="s", market_id="m")
    assert trades(driver.place(BUY, 50, 5, account="b", market_id="b")) == []
    assert driver.engine.best_bid_ask("b") == (50, None)
    assert driver.engine.best_bid_ask("m") == (None, 50)


# ---------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"market_id": "nope"}, RejectReason.UNKNOWN_MARKET),
        ({"qty": 0}, RejectReason.INVALID_QUANTITY),
        ({"qty": -3}, RejectReason.INVALID_QUANTITY),
        ({"qty": 101}, RejectReason.QUANTITY_OVER_MAX),
        ({"price": 0}, RejectReason.INVALID_PRICE),
        ({"price": 100}, RejectReason.INVALID_PRICE),
        ({"order_id": 1}, RejectReason.DUPLICATE_ORDER_ID),
        ({"order_id": 0}, RejectReason.DUPLICATE_ORDER_ID),
    ],
)
def test_bad_orders_are_rejected_with_a_reason_and_change_nothing(
    fields: dict[str, object], reason: RejectReason
) -> None:
    driver = Driver()
    driver.market("m", scheme=TickScheme.BINARY, max_qty=100)
    driver.place(BUY, 40, 5, order_id=1)
    before = driver.engine.state_hash()
    order: dict[str, object] = {"price": 50, "qty": 5, "order_id": 2, **fields}
    events = driver.place(SELL, **order)  # type: ignore[arg-type]
    assert rejected(events) is reason
    assert isinstance(events[0], Rejected)
    assert events[0].command == "PlaceOrder"
    assert driver.engine.state_hash() == before
    assert driver.place(SELL, 45, 1, order_id=2)[0] == OrderAccepted(
        seq=driver.seq,
        ts=driver.ts,
        market_id="m",
        order_id=2,
        account="a",
        side=SELL,
        price=45,
        qty=1,
        tif=TimeInForce.GTC,
        kind=OrderKind.LIMIT,
        post_only=False,
        expires_at=0,
    )


# ---------------------------------------------------------------------- ladders


def test_binary_market_trades_cents_1_to_99() -> None:
    driver = Driver()
    driver.market("b", scheme=TickScheme.BINARY)
    assert kinds(driver.place(BUY, 1, 1, market_id="b")) == ["OrderAccepted", "OrderRested"]
    assert kinds(driver.place(SELL, 99, 1, market_id="b")) == ["OrderAccepted", "OrderRested"]
    assert rejected(driver.place(SELL, 100, 1, market_id="b")) is RejectReason.INVALID_PRICE


def test_odds_back_matches_lays_at_or_above_its_odds_best_odds_first() -> None:
    def tick(odds: str) -> int:
        found = odds_to_tick(Decimal(odds))
        assert found is not None
        return found

    driver = Driver()
    driver.market("race", scheme=TickScheme.ODDS)
    driver.place(LAY, tick("2.50"), 10, account="l1", market_id="race")
    driver.place(LAY, tick("2.60"), 10, account="l2", market_id="race")
    driver.place(LAY, tick("2.00"), 10, account="l3", market_id="race")
    events = driver.place(BACK, tick("2.50"), 15, account="backer", market_id="race")
    assert [(t[0], t[2], t[3]) for t in trades(events)] == [(2, tick("2.60"), 10), (1, tick("2.50"), 5)]
    assert driver.engine.best_bid_ask("race") == (tick("2.50"), None)  # 2.00 lay is below the back's odds


def test_odds_lay_matches_backs_at_or_below_its_odds_best_odds_first() -> None:
    t = {o: odds_to_tick(Decimal(o)) or 0 for o in ("3.00", "3.05", "3.10", "4.00")}
    driver = Driver()
    driver.market("race", scheme=TickScheme.ODDS)
    driver.place(BACK, t["3.10"], 10, account="b1", market_id="race")
    driver.place(BACK, t["3.00"], 10, account="b2", market_id="race")
    driver.place(BACK, t["4.00"], 10, account="b3", market_id="race")
    events = driver.place(LAY, t["3.10"], 15, account="layer", market_id="race")
    assert [(x[0], x[2]) for x in trades(events)] == [(2, t["3.00"]), (1, t["3.10"])]
    assert driver.engine.best_bid_ask("race") == (None, t["3.10"])


# ---------------------------------------------------------------------- queries and invariants


def test_depth_aggregates_levels_best_first(driver: Driver) -> None:
    driver.place(BUY, 50, 5, account="b1")
    driver.place(BUY, 50, 7, account="b2")
    driver.place(BUY, 48, 1, account="b3")
    driver.place(SELL, 55, 2, account="s1")
    driver.place(SELL, 53, 3, account="s2")
    depth = driver.engine.depth("m", max_levels=1)
    assert depth is not None
    assert [(lv.price, lv.qty, lv.orders) for lv in depth.bids] == [(50, 12, 2)]
    assert [(lv.price, lv.qty, lv.orders) for lv in depth.asks] == [(53, 3, 1)]
    full = driver.engine.depth("m", max_levels=10)
    assert full is not None
    assert [lv.price for lv in full.bids] == [50, 48]
    assert driver.engine.depth("nope") is None


def test_check_invariants_catches_a_corrupted_level(driver: Driver) -> None:
    driver.place(BUY, 50, 5)
    level = driver.engine.books["m"].levels[BUY][50]
    assert level is not None
    level.total += 1
    with pytest.raises(BookIntegrityError, match="level totals"):
        driver.engine.check_invariants()


def test_check_invariants_catches_a_crossed_book(driver: Driver) -> None:
    driver.place(BUY, 50, 5, account="b")
    driver.place(SELL, 60, 5, account="s")
    driver.engine.books["m"].best_ask = 40
    with pytest.raises(BookIntegrityError):
        driver.engine.check_invariants()


def test_check_invariants_catches_an_index_mismatch(driver: Driver) -> None:
    driver.place(BUY, 50, 5)
    del driver.engine.orders[1]
    with pytest.raises(BookIntegrityError, match="id index"):
        driver.engine.check_invariants()


def test_many_cancels_compact_a_level_without_losing_priority(driver: Driver) -> None:
    for i in range(100):
        driver.place(SELL, 50, 1, account=f"s{i}")
    for order_id in range(1, 101):
        if order_id % 4:
            driver.cancel(order_id)
    level = driver.engine.books["m"].levels[SELL][50]
    assert level is not None
    assert len(level.orders) < 100
    events = driver.place(BUY, 50, 3, account="b")
    assert [t[0] for t in trades(events)] == [4, 8, 12]


def test_the_head_of_a_level_is_always_live(driver: Driver) -> None:
    for account in ("s1", "s2", "s3", "s4"):
        driver.place(SELL, 50, 5, account=account)
    driver.cancel(2)  # a husk right behind the head
    driver.place(BUY, 50, 5, account="b")  # fills order 1; order 2's husk must not become the head
    level = driver.engine.books["m"].levels[SELL][50]
    assert level is not None
    assert level.orders[0].order_id == 3
    level.orders.appendleft(
        level.orders[0].__class__(9, "x", SELL, 50, 1, 0, 1, TimeInForce.GTC, 0, level.orders[0].book)
    )
    with pytest.raises(BookIntegrityError, match="head of the level"):
        driver.engine.check_invariants()


def test_sparse_levels_on_a_wide_ladder_keep_the_best_prices_right() -> None:
    driver = Driver()
    driver.market("wide", max_tick=100_000)
    for price in (60_000, 70_000, 99_990):
        driver.place(SELL, price, 1, account="s", market_id="wide")
    for price in (2, 40_000):
        driver.place(BUY, price, 1, account="b", market_id="wide")
    assert driver.engine.best_bid_ask("wide") == (40_000, 60_000)
    driver.place(BUY, 75_000, 2, account="t", market_id="wide")  # takes 60,000 and 70,000
    assert driver.engine.best_bid_ask("wide") == (40_000, 99_990)
    driver.place(SELL, 1, 2, account="t2", market_id="wide")  # takes 40,000 and 2
    assert driver.engine.best_bid_ask("wide") == (None, 99_990)
    depth = driver.engine.depth("wide")
    assert depth is not None
    assert [(level.price, level.qty) for level in depth.asks] == [(99_990, 1)]
    assert depth.bids == []
