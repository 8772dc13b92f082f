"""``matchbox chaos``: a whole run passes on a sound exchange, and every checker can fail.

The checkers get hand-made data with one violation each and must report it (a checker that
cannot fail proves nothing); the run itself is a subprocess, as an operator or CI starts it.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Sequence

import pytest

from matchbox.chaos.checks import (
    check_feeds,
    check_hostile,
    check_instances,
    check_orders,
    check_processes,
    check_trades,
)
from matchbox.chaos.faults import KINDS, schedule
from matchbox.chaos.money import check_money
from matchbox.chaos.quiet import Quiet
from matchbox.chaos.records import Ack, Answers, Cash, Exit, FeedLog, Probe
from matchbox.chaos.state import ApiView, Book, EngineView, SqlView, StreamEvent
from matchbox.engine.types import (
    BalanceChanged,
    BalanceReason,
    Event,
    MarketCreated,
    OrderAccepted,
    OrderKind,
    PositionChanged,
    Rejected,
    RejectReason,
    SelfTradePrevention,
    Side,
    TickScheme,
    TimeInForce,
    TradeExecuted,
)

pytestmark = pytest.mark.e2e  # chaos: processes killed and Valkey restarted for seconds on end

# --------------------------------------------------------------------------- hand-made events


def stream(*events: Event) -> list[StreamEvent]:
    """Events as the output stream holds them: numbered from 1, each its own input entry."""
    return [StreamEvent(f"{1000 + n}-{n}", n, f"{1000 + n}-0", e) for n, e in enumerate(events, start=1)]


def accepted(order_id: int, account: str = "ann", market_id: str = "m") -> OrderAccepted:
    return OrderAccepted(
        seq=0,
        ts=0,
        market_id=market_id,
        order_id=order_id,
        account=account,
        side=Side.BUY,
        price=50,
        qty=1,
        tif=TimeInForce.GTC,
        kind=OrderKind.LIMIT,
        post_only=False,
        expires_at=0,
    )


def rejected(order_id: int, account: str = "ann") -> Rejected:
    return Rejected(
        seq=0,
        ts=0,
        command="PlaceOrder",
        reason=RejectReason.INSUFFICIENT_FUNDS,
        market_id="m",
        order_id=order_id,
        account=account,
    )


def trade(trade_id: int, market_id: str = "m", price: int = 50) -> TradeExecuted:
    return TradeExecuted(
        seq=0,
        ts=0,
        market_id=market_id,
        trade_id=trade_id,
        price=price,
        qty=1,
        taker_side=Side.BUY,
        maker_order_id=1,
        taker_order_id=2,
        maker_account="ann",
        taker_account="bob",
        maker_remaining=0,
        taker_remaining=0,
    )


def ack(order_id: int, status: int = 201, entry: int | None = None, body: str = "{}") -> Ack:
    entry_id = f"{1000 + entry}-0" if entry is not None else None
    return Ack(order_id, "ann", "m", status, entry_id, body)


def balance(account: str, total: int, reserved: int = 0, reason: BalanceReason = BalanceReason.TRADE) -> BalanceChanged:
    return BalanceChanged(seq=0, ts=0, account=account, total=total, reserved=reserved, reason=reason, market_id="m")


def position(account: str, yes: int, no: int) -> PositionChanged:
    return PositionChanged(
        seq=0,
        ts=0,
        market_id="m",
        account=account,
        yes=yes,
        no=no,
        committed=0,
        stake=0,
        liability=0,
        reason=BalanceReason.TRADE,
    )


BINARY = MarketCreated(
    seq=0, ts=0, market_id="m", scheme=TickScheme.BINARY, min_tick=1, max_tick=99, max_qty=100,
    stp=SelfTradePrevention.CANCEL_TAKER, collateral=True,
)  # fmt: skip


def violated(messages: Sequence[str], *words: str) -> bool:
    """Some violation names every one of ``words``."""
    return any(all(word in message for word in words) for message in messages)


# --------------------------------------------------------------------------- orders


def test_orders_hold_when_every_ack_has_its_one_outcome() -> None:
    events = stream(accepted(1), rejected(2))
    check = check_orders([ack(1, 201, entry=1), ack(2, 422, entry=2), ack(1, 200, entry=1)], events)
    assert check.held, check.violations
    assert check.figures["orders acknowledged"] == 2


def test_an_acknowledged_order_missing_from_the_events_is_reported() -> None:
    check = check_orders([ack(1), ack(7, 202)], stream(accepted(1)))
    assert violated(check.violations, "order 7", "202", "not in the events")


def test_an_order_id_with_two_outcomes_is_reported() -> None:
    check = check_orders([], stream(accepted(3), rejected(3, account="bob")))
    assert violated(check.violations, "order id 3 has two outcomes")


def test_order_ids_out_of_journal_order_are_reported() -> None:
    check = check_orders([], stream(accepted(5), accepted(4)))
    assert violated(check.violations, "order id 4", "after order id 5")


def test_a_gap_in_event_numbers_is_reported() -> None:
    events = stream(accepted(1), accepted(2))
    events[1] = StreamEvent("1003-3", 3, "1003-0", events[1].event)
    assert violated(check_orders([], events).violations, "event numbers go from 1 to 3")


def test_an_entry_that_is_no_event_is_reported() -> None:
    assert violated(check_orders([], stream(accepted(1)), ["1002-2"]).violations, "not events", "1002-2")


def test_one_id_acknowledged_for_two_orders_is_reported() -> None:
    check = check_orders([ack(1, body='{"qty":1}'), ack(1, body='{"qty":2}')], stream(accepted(1)))
    assert violated(check.violations, "order id 1", "two different orders")


def test_an_answer_that_disagrees_with_the_events_is_reported() -> None:
    events = stream(rejected(1), accepted(2, account="bob"))
    check = check_orders([ack(1, 201), ack(2, 202, entry=9)], events)
    assert violated(check.violations, "order 1", "said accepted", "Rejected")
    assert violated(check.violations, "order 2", "entry 1009-0")
    assert violated(check.violations, "order 2", "for ann", "bob")


# --------------------------------------------------------------------------- trades


def sql(trades: dict[int, tuple[str, int, int, int, int, int]], analytics: set[int] | None = None) -> SqlView:
    return SqlView(trades=trades, analytics_trades=set(trades) if analytics is None else analytics)


def test_trades_hold_when_the_database_has_the_stream() -> None:
    events = stream(trade(10), trade(12))
    check = check_trades(events, sql({10: ("m", 50, 1, 1, 2, 1), 12: ("m", 50, 1, 1, 2, 2)}), {"persistence": 0})
    assert check.held, check.violations


def test_a_missing_an_extra_and_a_changed_trade_are_reported() -> None:
    events = stream(trade(1), trade(2))
    check = check_trades(events, sql({1: ("m", 51, 1, 1, 2, 1), 3: ("m", 50, 1, 1, 2, 9)}, {1, 2, 5}), {})
    assert violated(check.violations, "trade 2", "not in the database")
    assert violated(check.violations, "trade 3", "not in the stream")
    assert violated(check.violations, "trade 1", "the database")
    assert violated(check.violations, "analytics counted 1")


def test_a_trade_twice_in_the_stream_or_going_back_is_reported() -> None:
    check = check_trades(stream(trade(5), trade(5), trade(4)), sql({}), {})
    assert violated(check.violations, "trade id 5 appears twice")
    assert violated(check.violations, "trade id 4", "after trade id 5")


# --------------------------------------------------------------------------- money


def funded() -> list[StreamEvent]:
    """ann and bob deposit 1000 each; a trade moves 100 into the market (ann YES, bob NO)."""
    return stream(
        BINARY,
        balance("ann", 1000, reason=BalanceReason.DEPOSIT),
        balance("bob", 1000, reason=BalanceReason.DEPOSIT),
        balance("ann", 940),
        position("ann", 1, 0),
        balance("bob", 960),
        position("bob", 0, 1),
    )


def engine_view(**changes: object) -> EngineView:
    view = EngineView(balances={"ann": (940, 0), "bob": (960, 0)}, net_deposits=2000, pots={"m": 100})
    for name, value in changes.items():
        setattr(view, name, value)
    return view


def cash() -> dict[str, Cash]:
    return {"ann": Cash(deposited=1000), "bob": Cash(deposited=500, deposit_unknown=500)}


def test_money_holds_when_conserved_and_every_copy_agrees() -> None:
    apis = [ApiView("api-1", balances={"ann": (940, 0)})]
    database = SqlView(balances={"ann": (940, 0), "bob": (960, 0)})
    check = check_money(funded(), engine_view(), apis, database, cash())
    assert check.held, check.violations
    assert check.figures["held by markets"] == 100


def test_money_that_appears_from_nowhere_is_reported() -> None:
    events = [*funded(), *stream(balance("bob", 990))]  # 30 more, no deposit
    check = check_money(events, engine_view(), [], SqlView(balances={"ann": (940, 0), "bob": (990, 0)}), cash())
    assert violated(check.violations, "the events", "deposits - withdrawals = 2000", "2030")


def test_a_negative_balance_is_reported() -> None:
    events = [*funded(), *stream(balance("ann", 940, reserved=950))]
    check = check_money(events, engine_view(), [], SqlView(balances={"ann": (940, 950), "bob": (960, 0)}), cash())
    assert violated(check.violations, "negative", "ann", "reserved 950")


def test_copies_that_disagree_are_reported() -> None:
    apis = [ApiView("api-2", balances={"bob": (961, 0)})]
    database = SqlView(balances={"ann": (940, 0)})
    engine = engine_view(balances={"ann": (940, 0), "bob": (960, 5)}, pots={"m": 90}, net_deposits=1990)
    check = check_money(funded(), engine, apis, database, cash())
    assert violated(check.violations, "api-2 GET /account", "'bob'", "total 961")
    assert violated(check.violations, "the database's balances", "'bob'", "nothing")
    assert violated(check.violations, "the engine's balances", "'bob'", "reserved 5")
    assert violated(check.violations, "market m holds 90 in the engine")
    assert violated(check.violations, "the engine has 1990")
    unbuilt = check_money(funded(), EngineView(error="RollbackDetected: hash"), [], SqlView(error="gone"), cash())
    assert violated(unbuilt.violations, "could not be rebuilt", "hash")
    assert violated(unbuilt.violations, "database could not be read", "gone")


def test_a_deposit_lost_after_its_acknowledgement_is_reported() -> None:
    acknowledged = {"ann": Cash(deposited=1500), "bob": Cash(deposited=1000)}
    database = SqlView(balances={"ann": (940, 0), "bob": (960, 0)})
    check = check_money(funded(), engine_view(), [], database, acknowledged)
    assert violated(check.violations, "'ann'", "in the events are 1000", "acknowledged 1500")


# --------------------------------------------------------------------------- instances


BOOK: Book = ([(49, 3, 1)], [(51, 2, 2)])


def instances(apis: list[ApiView], answers: Answers, quiet: Quiet | None = None) -> list[str]:
    engine = EngineView(books={"m": BOOK})
    check = check_instances(apis, "9-9", engine, answers, Answers(), [(0.0, 1e12)], quiet or Quiet(reached=True))
    return check.violations


def test_instances_hold_when_ready_caught_up_and_alike() -> None:
    answers = Answers()
    answers.add("api-1", "POST", "/v1/orders", 503, "", "redis down")  # during a fault: allowed
    assert instances([ApiView("api-1", "", "9-9", {"m": BOOK})], answers) == []


def test_an_instance_not_ready_behind_or_with_another_book_is_reported() -> None:
    api = ApiView("api-1", "503 tail stalled", "9-1", {"m": (BOOK[0], [(51, 1, 1)])})
    found = instances([api], Answers(), Quiet(reached=False, seconds=90, behind=["api-1's tail is at 9-1"]))
    assert violated(found, "api-1 GET /ready", "503")
    assert violated(found, "api-1's tail is at 9-1", "ends at 9-9")
    assert violated(found, "api-1's m asks differ", "51x1(1)", "51x2(2)")
    assert violated(found, "no quiet within 90 s")


def test_a_500_is_reported() -> None:
    answers = Answers()
    answers.add("api-2", "GET", "/v1/markets/m/book", 500, "", "Internal Server Error")
    assert violated(instances([], answers), "api-2 GET /v1/markets/m/book answered 500")


# --------------------------------------------------------------------------- feeds


def test_a_resumed_feed_that_saw_every_trade_once_in_order_holds() -> None:
    events = stream(trade(1), trade(2, market_id="other"), trade(3), trade(4))
    feed = FeedLog("f", "m", "1001-1", ["1003-3", "1004-4"], connections=2, resumes=2)
    assert check_feeds([feed], events).held


@pytest.mark.parametrize(
    ("received", "words"),
    [
        (["1003-3"], ("missed 1 of 2", "1004-4")),
        (["1003-3", "1003-3", "1004-4"], ("more than once", "1003-3")),
        (["1004-4", "1003-3"], ("1003-3 after 1004-4", "out of order")),
        (["1002-2", "1003-3", "1004-4"], ("no trade of its market", "1002-2")),
    ],
)
def test_a_feed_with_a_gap_a_repeat_or_a_swap_is_reported(received: list[str], words: tuple[str, ...]) -> None:
    events = stream(trade(1), trade(2, market_id="other"), trade(3), trade(4))
    feed = FeedLog("f", "m", "1001-1", received, connections=3, resumes=3)
    assert violated(check_feeds([feed], events).violations, *words)


# --------------------------------------------------------------------------- hostile clients, processes


def test_a_hostile_client_let_through_is_reported() -> None:
    probes = [Probe("70 KiB body", "api-1", True, "413", "413"), Probe("chunked", "api-2", False, "422", "413")]
    check = check_hostile(probes)
    assert violated(check.violations, "chunked on api-2", "422", "required: 413")
    assert check.figures == {"probes": 2, "as required": 1}


def test_a_process_that_died_on_its_own_is_reported_with_its_last_words() -> None:
    traceback = (
        "Traceback (most recent call last):\n"
        '  File "/w/src/matchbox/leader/runner.py", line 55, in run\n'
        '  File "/w/src/matchbox/engine/engine.py", line 765, in add_restored\n'
        "NameError: name '_TIF' is not defined\n"
    )
    exits = [Exit("engine-2", 3, 0.0, "ALARM: Redis went back in time"), Exit("engine-1", 1, 0.0, traceback, "e1.log")]
    check = check_processes(exits)
    assert violated(check.violations, "engine-2 exited with code 3", "ALARM")
    assert violated(check.violations, "engine-1", "NameError", "add_restored, matchbox/engine/engine.py:765", "e1.log")


# --------------------------------------------------------------------------- the schedule, the run


def test_the_fault_schedule_is_seeded_and_has_every_kind() -> None:
    first = schedule(random.Random(1), 60)
    assert first == schedule(random.Random(1), 60)
    assert {kind for _, kind in first} == set(KINDS)
    times = [at for at, _ in first]
    assert times == sorted(times)
    assert times[0] > 0
    assert times[-1] < 60


@pytest.mark.timeout(300)
def test_a_chaos_run_holds_every_promise() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "matchbox", "chaos", "--seconds", "60", "--seed", "1", "--json"],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    lines = run.stdout.strip().splitlines()
    assert lines, run.stderr[-4000:]
    report = json.loads(lines[-1])
    violations = [v for c in report["checks"] for v in c["violations"]]
    assert run.returncode == 0, "\n".join(violations) or run.stderr[-4000:]
    assert report["faults_injected"] > 0
    assert report["orders_acknowledged"] > 0
    assert report["violations"] == 0
