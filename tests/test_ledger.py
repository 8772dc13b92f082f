"""Balances, reserves, positions and settlement (matchbox.engine.ledger): a test per rule and per reason."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import Driver, examples, rejected
from matchbox.bus.codec import decode_command, decode_event, encode_command, encode_event
from matchbox.engine import BookIntegrityError, Engine
from matchbox.engine.schemes import BACK, LAY, ODDS_LADDER
from matchbox.engine.types import (
    MAX_BPS,
    AdvanceTime,
    AmendOrder,
    BalanceChanged,
    BalanceReason,
    CancelAll,
    CancelOrder,
    CancelOrders,
    CloseMarket,
    Command,
    CreateMarket,
    Deposit,
    Event,
    FeeSchedule,
    MarketCreated,
    MarketStateChanged,
    OrderKind,
    PlaceOrder,
    PositionChanged,
    ReduceOrder,
    RejectReason,
    SelfTradePrevention,
    SettleMarket,
    Side,
    TickScheme,
    TimeInForce,
    TradeExecuted,
    Withdraw,
)

BUY, SELL = Side.BUY, Side.SELL


def balance(driver: Driver, account: str) -> tuple[int, int]:
    """(total, reserved) of an account."""
    found = driver.engine.ledger.accounts[account]
    return found.total, found.reserved


def position(driver: Driver, account: str, market_id: str = "m") -> tuple[int, int, int]:
    """(yes, no, committed) of an account in a market; zeros when it holds nothing."""
    found = driver.engine.ledger.positions.get((market_id, account))
    return (0, 0, 0) if found is None else (found.yes, found.no, found.committed)


def funded(scheme: TickScheme = TickScheme.BINARY, fees: FeeSchedule | None = None, **accounts: int) -> Driver:
    driver = Driver()
    driver.market("m", scheme, collateral=True, fees=fees)
    for account, amount in accounts.items():
        driver.apply(Deposit, account=account, amount=amount)
    return driver


def cash_events(events: list[Event]) -> list[tuple[str, int, int, BalanceReason]]:
    return [(e.account, e.total, e.reserved, e.reason) for e in events if isinstance(e, BalanceChanged)]


# ---------------------------------------------------------------------- deposits and withdrawals


def test_deposit_and_withdraw_report_the_balance() -> None:
    driver = funded(a=1_000)
    events = driver.apply(Withdraw, account="a", amount=300)
    assert cash_events(events) == [("a", 700, 0, BalanceReason.WITHDRAW)]
    events = driver.apply(Deposit, account="a", amount=50)
    assert cash_events(events) == [("a", 750, 0, BalanceReason.DEPOSIT)]
    assert driver.engine.ledger.net_deposits == 750


def test_withdraw_beyond_the_free_balance_is_insufficient_funds() -> None:
    driver = funded(a=1_000)
    driver.place(BUY, 50, 10)  # reserves 500
    assert rejected(driver.apply(Withdraw, account="a", amount=501)) is RejectReason.INSUFFICIENT_FUNDS
    assert rejected(driver.apply(Withdraw, account="nobody", amount=1)) is RejectReason.INSUFFICIENT_FUNDS
    assert RejectReason.INSUFFICIENT_FUNDS.value == 600
    driver.apply(Withdraw, account="a", amount=500)
    assert balance(driver, "a") == (500, 500)


@pytest.mark.parametrize("command", [Deposit, Withdraw])
@pytest.mark.parametrize("amount", [0, -5])
def test_an_amount_of_zero_or_less_is_invalid(command: Any, amount: int) -> None:
    driver = funded(a=10)
    assert rejected(driver.apply(command, account="a", amount=amount)) is RejectReason.INVALID_AMOUNT
    assert RejectReason.INVALID_AMOUNT.value == 601


def test_a_deposit_that_would_overflow_64_bits_is_invalid() -> None:
    driver = funded(a=2**62)
    assert rejected(driver.apply(Deposit, account="b", amount=2**62)) is RejectReason.INVALID_AMOUNT


@pytest.mark.parametrize("command", [Deposit, Withdraw])
def test_money_needs_an_account(command: Any) -> None:
    driver = funded()
    assert rejected(driver.apply(command, account="", amount=5)) is RejectReason.INVALID_ACCOUNT
    assert RejectReason.INVALID_ACCOUNT.value == 602


# ---------------------------------------------------------------------- markets


def test_collateral_needs_a_binary_or_odds_market() -> None:
    driver = Driver()
    events = driver.market("t", TickScheme.TICKS, collateral=True)
    assert rejected(events) is RejectReason.INVALID_MARKET_SPEC
    assert driver.market("b", TickScheme.BINARY, collateral=True)[0].collateral  # type: ignore[attr-defined]


def test_markets_without_collateral_need_no_money() -> None:
    driver = Driver()
    driver.market("m", TickScheme.BINARY)
    driver.place(SELL, 50, 10, account="a")
    events = driver.place(BUY, 50, 10, account="b")
    assert not [e for e in events if isinstance(e, (BalanceChanged, PositionChanged))]
    assert not driver.engine.ledger


def test_a_collateral_market_settles_only_on_an_outcome_of_its_scheme() -> None:
    driver = funded()
    driver.market("o", TickScheme.ODDS, collateral=True)
    assert rejected(driver.apply(SettleMarket, market_id="m", outcome="win")) is RejectReason.INVALID_OUTCOME
    assert RejectReason.INVALID_OUTCOME.value == 105
    assert rejected(driver.apply(SettleMarket, market_id="o", outcome="yes")) is RejectReason.INVALID_OUTCOME


# ---------------------------------------------------------------------- reserves, binary


def test_a_binary_buy_reserves_its_price_per_contract() -> None:
    driver = funded(a=1_000)
    events = driver.place(BUY, 40, 10)
    assert cash_events(events) == [("a", 1_000, 400, BalanceReason.RESERVE)]


def test_a_binary_sell_without_contracts_reserves_the_no_side() -> None:
    driver = funded(a=1_000)
    driver.place(SELL, 40, 10)
    assert balance(driver, "a") == (1_000, 600)


def test_an_order_over_the_free_balance_is_insufficient_funds_and_changes_nothing() -> None:
    driver = funded(a=1_000)
    driver.place(BUY, 50, 10)
    before = driver.engine.state_hash()
    assert rejected(driver.place(BUY, 50, 11)) is RejectReason.INSUFFICIENT_FUNDS
    assert rejected(driver.place(BUY, 50, 1, account="nobody")) is RejectReason.INSUFFICIENT_FUNDS
    assert driver.engine.state_hash() == before


def test_a_market_order_reserves_at_the_worst_tick() -> None:
    driver = funded(a=10_000, b=10_000)
    driver.place(SELL, 30, 5, account="b")
    events = driver.place(BUY, 0, 10, account="a", kind=OrderKind.MARKET, tif=TimeInForce.IOC)
    # reserved 99 * 10, paid 30 * 5, the rest released with the unfilled remainder
    assert cash_events(events)[0] == ("a", 10_000, 990, BalanceReason.RESERVE)
    assert balance(driver, "a") == (10_000 - 150, 0)
    assert position(driver, "a") == (5, 0, 0)


# ---------------------------------------------------------------------- trades, binary


def test_a_trade_turns_reserve_into_position_and_releases_a_better_price() -> None:
    driver = funded(a=1_000, b=1_000)
    driver.place(SELL, 40, 10, account="b")  # b reserves 600 for the NO side
    events = driver.place(BUY, 45, 10, account="a")  # a reserves 450, trades at 40
    assert [type(e) for e in events if isinstance(e, TradeExecuted)] == [TradeExecuted]
    assert balance(driver, "a") == (600, 0)  # paid 400, 50 released
    assert balance(driver, "b") == (400, 0)  # paid 600 for 10 NO
    assert position(driver, "a") == (10, 0, 0)
    assert position(driver, "b") == (0, 10, 0)
    assert driver.engine.ledger.pot("m") == 1_000


def test_a_sell_reserves_held_contracts_first_then_cash() -> None:
    driver = funded(a=1_000, b=1_000, c=1_000)
    driver.place(SELL, 40, 10, account="b")
    driver.place(BUY, 40, 10, account="a")  # a holds 10 YES
    events = driver.place(SELL, 60, 15, account="a")  # 10 contracts + 5 * 40 cash
    assert position(driver, "a") == (10, 0, 10)
    assert balance(driver, "a") == (600, 200)
    assert [e.committed for e in events if isinstance(e, PositionChanged)] == [10]
    driver.place(BUY, 60, 15, account="c")  # a delivers 10 YES at 60, and goes short 5
    assert position(driver, "a") == (0, 5, 0)
    assert balance(driver, "a") == (600 + 600 - 200, 0)
    assert position(driver, "c") == (15, 0, 0)
    driver.engine.check_invariants()


def test_buying_yes_while_short_redeems_the_pairs() -> None:
    driver = funded(a=1_000, b=1_000)
    driver.place(BUY, 30, 10, account="b")
    driver.place(SELL, 30, 10, account="a")  # a short 10 at 30: paid 700
    assert balance(driver, "a") == (300, 0)
    driver.place(SELL, 20, 4, account="b")  # b, holding 10 YES, sells 4 of them
    driver.place(BUY, 20, 4, account="a")  # a buys 4 YES at 20: 4 pairs redeem for 400
    assert position(driver, "a") == (0, 6, 0)
    assert balance(driver, "a") == (300 - 80 + 400, 0)
    assert position(driver, "b") == (6, 0, 0)


def test_committed_contracts_are_not_redeemed_until_released() -> None:
    driver = funded(a=1_000, b=1_000, c=1_000)
    driver.place(SELL, 50, 5, account="b")
    driver.place(BUY, 50, 5, account="a")  # a: 5 YES
    driver.place(SELL, 90, 5, account="a")  # commits them
    driver.place(BUY, 10, 5, account="c")
    driver.place(SELL, 10, 5, account="a")  # a goes short 5 while its YES are committed
    assert position(driver, "a") == (5, 5, 5)
    events = driver.cancel(3)  # the commitment ends: the pairs redeem
    assert position(driver, "a") == (0, 0, 0)
    assert [e.reason for e in events if isinstance(e, PositionChanged)] == [BalanceReason.RELEASE]


# ---------------------------------------------------------------------- releases


def test_cancel_reduce_and_cancel_all_release_what_is_unused() -> None:
    driver = funded(a=10_000)
    driver.place(BUY, 50, 10)
    driver.place(BUY, 40, 10)
    driver.apply(ReduceOrder, order_id=1, reduce_by=4)
    assert balance(driver, "a") == (10_000, 300 + 400)
    events = driver.cancel(1)
    assert cash_events(events) == [("a", 10_000, 400, BalanceReason.RELEASE)]
    driver.apply(CancelAll, market_id="m", account="a")
    assert balance(driver, "a") == (10_000, 0)


def test_expiry_releases_the_reserve() -> None:
    driver = funded(a=1_000)
    driver.place(BUY, 50, 10, tif=TimeInForce.GTD, expires_at=5_000)
    events = driver.apply(AdvanceTime, ts=5_000)
    assert cash_events(events) == [("a", 1_000, 0, BalanceReason.RELEASE)]


def test_a_partly_covered_sell_releases_cash_before_contracts() -> None:
    driver = funded(a=1_000, b=1_000)
    driver.place(SELL, 50, 3, account="b")
    driver.place(BUY, 50, 3, account="a")  # a: 3 YES
    driver.place(SELL, 70, 5, account="a")  # 3 contracts + 2 * 30 cash
    driver.apply(ReduceOrder, order_id=3, reduce_by=2)
    assert balance(driver, "a") == (850, 0)
    assert position(driver, "a") == (3, 0, 3)


# ---------------------------------------------------------------------- odds


def test_odds_back_reserves_its_stake_and_lay_its_liability_rounded_up() -> None:
    driver = funded(TickScheme.ODDS, a=10_000, b=10_000)
    driver.place(BACK, 150, 1_000, account="a")  # tick 150 = odds 3.00
    assert balance(driver, "a") == (10_000, 1_000)
    driver.place(LAY, 1, 150, account="b")  # odds 1.01: liability 1.5 -> 2
    assert balance(driver, "b") == (10_000, 2)
    assert rejected(driver.place(LAY, 150, 5_001, account="b")) is RejectReason.INSUFFICIENT_FUNDS


def test_odds_trade_fills_the_pot_and_settles_to_the_winner() -> None:
    driver = funded(TickScheme.ODDS, a=10_000, b=10_000)
    driver.place(BACK, 150, 1_000, account="a")  # a backs 10.00 at 3.00
    driver.place(LAY, 160, 1_000, account="b")  # b lays up to 3.20, trades at 3.00
    assert balance(driver, "a") == (9_000, 0)
    assert balance(driver, "b") == (8_000, 0)  # liability 2,000; the better odds released
    assert driver.engine.ledger.pot("m") == 3_000
    events = driver.apply(SettleMarket, market_id="m", outcome="win")
    assert balance(driver, "a") == (12_000, 0)
    assert balance(driver, "b") == (8_000, 0)
    assert {e.reason for e in events if isinstance(e, BalanceChanged)} == {BalanceReason.SETTLEMENT}
    assert not driver.engine.ledger.positions


def test_a_fill_pays_each_side_s_fee_to_the_fee_account_and_the_reserve_covers_it() -> None:
    """Maker 1 %, taker 2 % plus 1 per contract, each of its own side's price: a buy of YES at 40
    pays on 40, a sell of YES on 60 (it buys NO). A buy reserves, per contract, the most a fill
    could cost in fees at its limit: ceil(2 % of 40) + 1 = 2."""
    fees = FeeSchedule(maker_bps=100, taker_bps=200, taker_per_contract=1, account="house")
    driver = funded(fees=fees, a=1_000, b=1_000, c=419)
    driver.place(BUY, 40, 10, account="a")
    assert balance(driver, "a") == (1_000, 420)
    assert rejected(driver.place(BUY, 40, 10, account="c")) is RejectReason.INSUFFICIENT_FUNDS  # 400 + its fees
    events = driver.place(SELL, 40, 10, account="b")
    trade = next(e for e in events if isinstance(e, TradeExecuted))
    assert (trade.maker_fee, trade.taker_fee) == (4, 12 + 10)
    assert balance(driver, "a") == (1_000 - 400 - 4, 0)
    assert balance(driver, "b") == (1_000 - 600 - 22, 0)
    assert balance(driver, "house") == (26, 0)
    fee_lines = [(account, total) for account, total, _, reason in cash_events(events) if reason is BalanceReason.FEE]
    assert fee_lines == [("a", 596), ("house", 4), ("b", 378), ("house", 26)]
    driver.apply(SettleMarket, market_id="m", outcome="yes")
    assert balance(driver, "a") == (596 + 1_000, 0)
    assert sum(a.total for a in driver.engine.ledger.accounts.values()) == driver.engine.ledger.net_deposits
    bad = (FeeSchedule(maker_bps=10_001), FeeSchedule(commission_bps=5), FeeSchedule(account="not ok!"))
    for schedule in bad:  # over 100 %; commission on a binary market; no account
        spec = {"market_id": "x", "scheme": TickScheme.BINARY, "collateral": True, "fees": schedule}
        assert rejected(driver.apply(CreateMarket, **spec)) is RejectReason.INVALID_MARKET_SPEC
    assert rejected(driver.apply(CreateMarket, market_id="x", scheme=TickScheme.BINARY, fees=fees))  # no collateral


def test_an_odds_market_takes_commission_on_net_winnings_at_settlement() -> None:
    driver = funded(TickScheme.ODDS, FeeSchedule(commission_bps=500), a=10_000, b=10_000)
    driver.place(BACK, 150, 1_000, account="a")  # 10.00 at 3.00: wins 20.00
    driver.place(LAY, 150, 1_000, account="b")
    events = driver.apply(SettleMarket, market_id="m", outcome="win")
    assert balance(driver, "a") == (12_000 - 100, 0)  # 5 % of the 2,000 won
    assert balance(driver, "b") == (8_000, 0)  # lost: no commission
    assert balance(driver, "fees") == (100, 0)
    assert [(account, reason) for account, _, _, reason in cash_events(events)] == [
        ("a", BalanceReason.SETTLEMENT),
        ("a", BalanceReason.FEE),
        ("fees", BalanceReason.FEE),
        ("b", BalanceReason.SETTLEMENT),
    ]


def test_odds_losing_back_pays_the_layer() -> None:
    driver = funded(TickScheme.ODDS, a=10_000, b=10_000)
    driver.place(BACK, 150, 1_000, account="a")
    driver.place(LAY, 150, 1_000, account="b")
    driver.apply(SettleMarket, market_id="m", outcome="lose")
    assert balance(driver, "a") == (9_000, 0)
    assert balance(driver, "b") == (11_000, 0)


def test_odds_winnings_round_down_and_fills_never_overdraw_the_lay_reserve() -> None:
    driver = funded(TickScheme.ODDS, a=10_000, b=10_000)
    for _ in range(3):
        driver.place(BACK, 1, 1, account="a")  # three 1-cent backs at 1.01
    driver.place(LAY, 1, 3, account="b")  # reserve ceil(0.03) = 1
    assert balance(driver, "b") == (10_000, 0)  # each liability floor(0.01) = 0
    assert driver.engine.ledger.pot("m") == 3


def test_odds_void_returns_every_stake_and_liability() -> None:
    driver = funded(TickScheme.ODDS, a=10_000, b=10_000)
    driver.place(BACK, 150, 1_000, account="a")
    driver.place(LAY, 150, 600, account="b")
    driver.place(BACK, 200, 100, account="b")  # b also backs: both exposures are kept
    events = driver.apply(SettleMarket, market_id="m", outcome="void")
    assert balance(driver, "a") == (10_000, 0)
    assert balance(driver, "b") == (10_000, 0)
    assert {e.reason for e in events if isinstance(e, BalanceChanged)} >= {BalanceReason.VOID}


# ---------------------------------------------------------------------- settlement, binary


@pytest.mark.parametrize(
    ("outcome", "a_total", "b_total"), [("yes", 1_700, 300), ("no", 700, 1_300), ("void", 1_200, 800)]
)
def test_binary_settlement_pays_the_winning_contracts(outcome: str, a_total: int, b_total: int) -> None:
    driver = funded(a=1_000, b=1_000)
    driver.place(SELL, 30, 10, account="b")
    driver.place(BUY, 30, 10, account="a")
    driver.place(BUY, 20, 5, account="a")  # resting: released by the settlement
    driver.apply(SettleMarket, market_id="m", outcome=outcome)
    assert balance(driver, "a") == (a_total, 0)
    assert balance(driver, "b") == (b_total, 0)
    assert a_total + b_total == driver.engine.ledger.net_deposits


def test_close_releases_reserves_and_keeps_positions_until_settled() -> None:
    driver = funded(a=1_000, b=1_000)
    driver.place(SELL, 30, 10, account="b")
    driver.place(BUY, 30, 10, account="a")
    driver.place(BUY, 20, 5, account="a")
    driver.apply(CloseMarket, market_id="m")
    assert balance(driver, "a") == (700, 0)
    assert position(driver, "a") == (10, 0, 0)


# ---------------------------------------------------------------------- invariants and snapshots


def test_the_invariant_catches_money_appearing() -> None:
    driver = funded(a=1_000)
    driver.engine.ledger.accounts["a"].total += 1
    with pytest.raises(BookIntegrityError, match="conserved"):
        driver.engine.check_invariants()


def test_an_engine_without_money_writes_the_version_1_snapshot() -> None:
    driver = Driver()
    driver.market("m", TickScheme.BINARY)
    driver.place(BUY, 40, 3)
    data = driver.engine.snapshot()
    assert data[1:].startswith(b"\xafmatchbox.engine\x01")
    assert Engine.restore(data).state_hash() == driver.engine.state_hash()


def test_snapshot_and_restore_keep_the_ledger() -> None:
    driver = funded(a=1_000, b=1_000)
    driver.place(SELL, 50, 3, account="b")
    driver.place(BUY, 50, 3, account="a")
    driver.place(SELL, 70, 5, account="a")
    restored = Engine.restore(driver.engine.snapshot())
    restored.check_invariants()
    assert restored.state_hash() == driver.engine.state_hash()
    assert restored.ledger.orders == driver.engine.ledger.orders
    assert restored.ledger.positions == driver.engine.ledger.positions


# ---------------------------------------------------------------------- properties

PROFILE = settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
ACCOUNTS = ("a", "b", "c")
MONEY_MARKETS = {"bin": (45, 55), "odds": (96, 104), "bin2": (92, 99)}  # price bands, so orders cross
ALL_MARKETS = (*MONEY_MARKETS, "plain")
OUTCOMES = {"bin": ("yes", "no", "void"), "bin2": ("yes", "no", "void", "win"), "odds": ("win", "lose", "void")}
ACTION = st.sampled_from(
    ["deposit", "withdraw"]
    + ["place"] * 24
    + ["cancel", "reduce"] * 2
    + ["amend"] * 6
    + ["cancel_many", "cancel_all", "advance", "settle"]
)
BPS = st.sampled_from((0, 1, 7, 50, 100, 333, MAX_BPS))
FILL_FEES = st.none() | st.builds(
    FeeSchedule,
    maker_bps=BPS,
    taker_bps=BPS,
    maker_per_contract=st.integers(0, 3),
    taker_per_contract=st.integers(0, 3),
    account=st.sampled_from(("fees", "a")),  # the fee account may trade too
)
COMMISSION = st.none() | st.builds(FeeSchedule, commission_bps=BPS)
TIF = st.sampled_from((TimeInForce.GTC, TimeInForce.GTC, TimeInForce.GTD, TimeInForce.IOC, TimeInForce.FOK))


@st.composite
def money_journals(draw: st.DrawFn) -> list[Command]:
    commands: list[Command] = []
    ts = 1_000
    order_id = 0

    def add(command_type: type[Command], **fields: Any) -> None:
        commands.append(command_type(seq=len(commands) + 1, ts=ts, **fields))

    add(CreateMarket, market_id="bin", scheme=TickScheme.BINARY, collateral=True, fees=draw(FILL_FEES))
    add(CreateMarket, market_id="odds", scheme=TickScheme.ODDS, collateral=True, fees=draw(COMMISSION))
    add(
        CreateMarket,
        market_id="bin2",
        scheme=TickScheme.BINARY,
        collateral=True,
        stp=draw(st.sampled_from(SelfTradePrevention)),
    )
    add(CreateMarket, market_id="plain", scheme=TickScheme.BINARY)
    for account in ACCOUNTS:
        add(Deposit, account=account, amount=draw(st.integers(0, 20_000)))
    for _ in range(draw(st.integers(1, 60))):
        ts += draw(st.integers(0, 2))
        action = draw(ACTION)
        account = draw(st.sampled_from(ACCOUNTS))
        if action in ("deposit", "withdraw"):
            amount = draw(st.integers(-10, 3_000))
            add(Deposit if action == "deposit" else Withdraw, account=account, amount=amount)
        elif action == "place":
            market_id = draw(st.sampled_from(ALL_MARKETS))
            low, high = MONEY_MARKETS.get(market_id, (40, 60))
            tif = draw(TIF)
            kind = (
                OrderKind.MARKET
                if tif in (TimeInForce.IOC, TimeInForce.FOK) and draw(st.booleans())
                else OrderKind.LIMIT
            )
            order_id += 1
            add(
                PlaceOrder,
                market_id=market_id,
                order_id=order_id,
                account=account,
                side=draw(st.sampled_from(Side)),
                price=draw(st.integers(low, high)),
                qty=draw(st.integers(1, 25)),
                tif=tif,
                kind=kind,
                expires_at=ts + draw(st.integers(1, 10)) if tif is TimeInForce.GTD else 0,
            )
        elif action == "cancel" and order_id:
            add(CancelOrder, order_id=draw(st.integers(1, order_id)))
        elif action == "reduce" and order_id:
            add(ReduceOrder, order_id=draw(st.integers(1, order_id)), reduce_by=draw(st.integers(1, 30)))
        elif action == "amend" and order_id:
            market_id = draw(st.sampled_from(ALL_MARKETS))  # the order's or not: a price off its ladder is refused
            low, high = MONEY_MARKETS.get(market_id, (40, 60))
            add(
                AmendOrder,
                order_id=draw(st.integers(max(1, order_id - 6), order_id)),
                price=draw(st.sampled_from((0, low, high, (low + high) // 2))),
                qty=draw(st.sampled_from((0, 1, 5, 25, 200))),
            )
        elif action == "cancel_many" and order_id:
            add(CancelOrders, order_ids=tuple(draw(st.lists(st.integers(1, order_id), min_size=1, max_size=4))))
        elif action == "cancel_all":
            add(CancelAll, market_id=draw(st.sampled_from(ALL_MARKETS)), account=account)
        elif action == "advance":
            ts += draw(st.integers(1, 6))
            add(AdvanceTime)
        elif action == "settle":
            market_id = draw(st.sampled_from(tuple(OUTCOMES)))
            add(SettleMarket, market_id=market_id, outcome=draw(st.sampled_from(OUTCOMES[market_id])))
    for market_id in OUTCOMES:  # the end: every market decided (a second settle is refused)
        ts += 1
        add(SettleMarket, market_id=market_id, outcome=draw(st.sampled_from(OUTCOMES[market_id][:3])))
    return commands


def run(engine: Engine, commands: list[Command]) -> list[Event]:
    events: list[Event] = []
    for command in commands:
        events.extend(engine.apply(command))
        engine.check_invariants()  # money conserved, no negative or over-reserved balance
    return events


@PROFILE
@given(money_journals())
def test_money_is_conserved_and_everything_is_paid_out_at_the_end(commands: list[Command]) -> None:
    engine = Engine()
    events = run(engine, commands)
    ledger = engine.ledger
    assert not ledger.positions
    assert not ledger.orders
    assert all(account.reserved == 0 for account in ledger.accounts.values())
    assert sum(account.total for account in ledger.accounts.values()) == ledger.net_deposits
    # the events alone rebuild the balances and the money in and out
    last = {e.account: (e.total, e.reserved) for e in events if isinstance(e, BalanceChanged)}
    assert last == {name: (a.total, a.reserved) for name, a in ledger.accounts.items()}


@PROFILE
@given(money_journals(), st.integers(0, 10_000))
def test_replay_and_restore_midway_give_the_same_balances_and_hash(commands: list[Command], cut: int) -> None:
    cut %= len(commands) + 1
    first = Engine()
    events = run(first, commands)
    second = Engine()
    replayed = run(second, commands[:cut])
    restored = Engine.restore(second.snapshot())
    assert restored.state_hash() == second.state_hash()
    replayed += run(restored, commands[cut:])
    assert replayed == events
    assert restored.state_hash() == first.state_hash()
    assert restored.ledger.accounts == first.ledger.accounts


@PROFILE
@given(money_journals())
def test_positions_rebuild_from_the_events(commands: list[Command]) -> None:
    engine = Engine()
    held: dict[tuple[str, str], tuple[int, int, int, int, int]] = {}
    for command in commands:
        for event in engine.apply(command):
            if isinstance(event, PositionChanged):
                held[(event.market_id, event.account)] = (
                    event.yes,
                    event.no,
                    event.committed,
                    event.stake,
                    event.liability,
                )
        live = {key: value for key, value in held.items() if any(value)}
        ledger = {key: (p.yes, p.no, p.committed, p.stake, p.liability) for key, p in engine.ledger.positions.items()}
        assert live == ledger


def test_a_command_sees_the_money_that_expiries_released_before_it() -> None:
    driver = funded(a=100)
    driver.place(BUY, 60, 1, tif=TimeInForce.GTD, expires_at=5_000)
    events = driver.place(BUY, 70, 1, ts=5_000)  # affordable only once the first has expired
    assert cash_events(events)[-1] == ("a", 100, 70, BalanceReason.RESERVE)
    events = driver.apply(Deposit, account="a", amount=1, ts=5_001)
    assert cash_events(events) == [("a", 101, 70, BalanceReason.DEPOSIT)]


# ---------------------------------------------------------------------- on the wire


def test_money_commands_and_events_cross_the_bus_and_old_entries_still_decode() -> None:
    deposit = Deposit(seq=0, ts=0, account="a", amount=500)
    assert decode_command(encode_command(deposit), seq=3, ts=4) == Deposit(seq=3, ts=4, account="a", amount=500)
    old = b'{"type":"CreateMarket","seq":0,"ts":0,"market_id":"x","scheme":0,"max_tick":0,"max_qty":5,"stp":0}'
    command = decode_command(old, seq=1, ts=2)
    assert isinstance(command, CreateMarket)
    assert not command.collateral
    old_event = b'{"v":1,"n":1,"in":"1-0","type":"MarketCreated","seq":1,"ts":2,"market_id":"x","scheme":0,'
    old_event += b'"min_tick":1,"max_tick":99,"max_qty":5,"stp":0}'
    created = decode_event(old_event).event
    assert isinstance(created, MarketCreated)
    assert not created.collateral
    driver = funded(a=1_000, b=1_000)
    driver.place(SELL, 40, 2, account="b")
    for event in driver.place(BUY, 40, 2, account="a"):
        assert decode_event(encode_event(event, 9, "5-0")).event == event


def test_self_trade_prevention_releases_the_cancelled_orders_reserve() -> None:
    driver = Driver()
    driver.market("m", TickScheme.BINARY, collateral=True, stp=SelfTradePrevention.CANCEL_RESTING)
    driver.apply(Deposit, account="a", amount=1_000)
    driver.apply(Deposit, account="b", amount=1_000)
    driver.place(SELL, 50, 4, account="a")  # reserves 200
    driver.place(SELL, 51, 4, account="b")
    driver.place(BUY, 51, 4, account="a")  # cancels its own sell, then buys from b at 51
    assert balance(driver, "a") == (1_000 - 204, 0)
    assert position(driver, "a") == (4, 0, 0)


def test_fok_that_cannot_fill_and_post_only_that_would_take_reserve_nothing() -> None:
    driver = funded(a=1_000, b=1_000)
    driver.place(SELL, 50, 4, account="b")
    events = driver.place(BUY, 50, 5, account="a", tif=TimeInForce.FOK)
    assert rejected(events) is RejectReason.FOK_CANNOT_FILL
    assert rejected(driver.place(BUY, 50, 1, account="a", post_only=True)) is RejectReason.POST_ONLY_WOULD_TAKE
    assert balance(driver, "a") == (1_000, 0)


def test_insufficient_funds_comes_after_the_orders_own_fields() -> None:
    driver = funded()
    assert rejected(driver.place(BUY, 0, 5, account="a")) is RejectReason.INVALID_PRICE
    assert rejected(driver.place(BUY, 50, 0, account="a")) is RejectReason.INVALID_QUANTITY
    assert rejected(driver.place(BUY, 50, 5, account="a")) is RejectReason.INSUFFICIENT_FUNDS


def profit(event: TradeExecuted, outcome: str, binary: bool) -> int:
    """What the buyer (lay) of one trade makes once the market is decided; the seller makes minus that."""
    qty, price = event.qty, event.price
    if binary:
        value = {"yes": 100, "no": 0, "void": 50}[outcome]
        return (value - price) * qty
    liability = qty * (ODDS_LADDER[price - 1] - 100) // 100
    return {"win": -liability, "lose": qty, "void": 0}[outcome]


@PROFILE
@given(money_journals())
def test_final_balances_match_a_reference_made_of_trades_alone(commands: list[Command]) -> None:
    """Reserves, contract deliveries and redemptions only move money in time: once every market
    is decided, an account holds what it paid in, plus what each of its trades won or lost."""
    engine = Engine()
    expected: dict[str, int] = {}
    trades: list[TradeExecuted] = []
    outcomes: dict[str, str] = {}
    schedules = {c.market_id: c.fees for c in commands if isinstance(c, CreateMarket) and c.fees is not None}
    for command in commands:
        events = engine.apply(command)
        if isinstance(command, (Deposit, Withdraw)) and isinstance(events[-1], BalanceChanged):
            sign = 1 if isinstance(command, Deposit) else -1
            expected[command.account] = expected.get(command.account, 0) + sign * command.amount
        trades += [e for e in events if isinstance(e, TradeExecuted) and e.market_id in MONEY_MARKETS]
        outcomes |= {e.market_id: e.outcome for e in events if isinstance(e, MarketStateChanged) and e.outcome}
    winnings: dict[tuple[str, str], int] = {}
    for trade in trades:
        made = profit(trade, outcomes[trade.market_id], trade.market_id != "odds")
        buyer, seller = (
            (trade.taker_account, trade.maker_account)
            if trade.taker_side is BUY
            else (trade.maker_account, trade.taker_account)
        )
        expected[buyer] += made
        expected[seller] -= made
        for account, won in ((buyer, made), (seller, -made)):
            winnings[(trade.market_id, account)] = winnings.get((trade.market_id, account), 0) + won
        fees = schedules.get(trade.market_id)
        if fees is not None and trade.market_id != "odds":  # on fills: bps of each side's own price, rounded up
            maker_price = trade.price if trade.taker_side is Side.SELL else 100 - trade.price
            maker_fee = -(-fees.maker_bps * maker_price * trade.qty // 10_000) + fees.maker_per_contract * trade.qty
            taker_price = 100 - maker_price
            taker_fee = -(-fees.taker_bps * taker_price * trade.qty // 10_000) + fees.taker_per_contract * trade.qty
            assert (trade.maker_fee, trade.taker_fee) == (maker_fee, taker_fee), trade
            for account, fee in ((trade.maker_account, maker_fee), (trade.taker_account, taker_fee)):
                expected[account] = expected.get(account, 0) - fee
                expected[fees.account] = expected.get(fees.account, 0) + fee
        else:
            assert trade.maker_fee == trade.taker_fee == 0, trade
    odds = schedules.get("odds")
    for (market_id, account), won in sorted(winnings.items()):  # commission: on net winnings, at settlement
        if odds is not None and market_id == "odds" and outcomes[market_id] != "void" and won > 0:
            commission = -(-odds.commission_bps * won // 10_000)
            expected[account] -= commission
            expected[odds.account] = expected.get(odds.account, 0) + commission
    charged = {name: total for name, total in expected.items() if total or name in engine.ledger.accounts}
    assert charged == {name: account.total for name, account in engine.ledger.accounts.items()}
