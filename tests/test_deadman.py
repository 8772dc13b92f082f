"""The dead-man switch: Heartbeat arms a deadline; past it, the account's resting orders go."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import Driver, examples, running_leader, wait_until
from matchbox.bus.codec import decode_command, decode_event, encode_command, encode_event
from matchbox.bus.connection import Bus
from matchbox.bus.journal import Journal
from matchbox.engine import BookIntegrityError, Engine
from matchbox.engine.types import (
    MAX_HEARTBEAT_TIMEOUT_MS,
    AdvanceTime,
    BalanceChanged,
    BalanceReason,
    CancelReason,
    Command,
    CreateMarket,
    DeadmanTriggered,
    Deposit,
    Event,
    Heartbeat,
    HeartbeatSet,
    OrderCancelled,
    PlaceOrder,
    Rejected,
    RejectReason,
    Side,
    SuspendMarket,
    TickScheme,
    TimeInForce,
)
from test_engine_properties import journals

BUY, SELL = Side.BUY, Side.SELL
MS = 1_000_000  # engine time is in ns


def two_markets() -> Driver:
    driver = Driver()
    driver.market("m")
    driver.market("n", TickScheme.BINARY)
    return driver


def heartbeat(driver: Driver, account: str, timeout_ms: int, **fields: Any) -> list[Event]:
    return driver.apply(Heartbeat, account=account, timeout_ms=timeout_ms, **fields)


def armed(driver: Driver, account: str, timeout_ms: int) -> int:
    """Arm the account's switch; return its deadline, as the HeartbeatSet reports it."""
    events = heartbeat(driver, account, timeout_ms)
    assert len(events) == 1, events
    assert isinstance(events[0], HeartbeatSet), events
    assert events[0].account == account
    assert events[0].deadline == driver.ts + timeout_ms * MS
    return events[0].deadline


def advance(driver: Driver, ts: int) -> list[Event]:
    return driver.apply(AdvanceTime, ts=ts)


def cancels(events: list[Event]) -> list[tuple[int, str, int, CancelReason]]:
    """(order id, account, cancelled qty, reason) of every cancel."""
    return [(e.order_id, e.account, e.cancelled_qty, e.reason) for e in events if isinstance(e, OrderCancelled)]


def triggered(events: list[Event]) -> list[tuple[str, int]]:
    return [(e.account, e.cancelled) for e in events if isinstance(e, DeadmanTriggered)]


def rejected(events: list[Event]) -> RejectReason:
    assert len(events) == 1, events
    assert isinstance(events[0], Rejected), events
    assert events[0].command == "Heartbeat"
    return events[0].reason


DEADMAN = CancelReason.DEADMAN


# ---------------------------------------------------------------------- arming and firing


def test_silence_past_the_deadline_cancels_every_resting_order_in_every_market() -> None:
    driver = two_markets()
    driver.place(BUY, 10, 5, account="a")  # 1
    driver.place(SELL, 20, 3, account="a", market_id="n")  # 2
    driver.place(BUY, 11, 4, account="b")  # 3: another account's
    driver.place(SELL, 30, 7, account="a")  # 4
    deadline = armed(driver, "a", 250)
    assert advance(driver, deadline - 1) == []  # one nanosecond early: nothing
    events = advance(driver, deadline)
    assert cancels(events) == [(1, "a", 5, DEADMAN), (2, "a", 3, DEADMAN), (4, "a", 7, DEADMAN)]
    assert [type(e).__name__ for e in events][-1] == "DeadmanTriggered"
    assert triggered(events) == [("a", 3)]
    assert events[-1].ts == deadline
    assert events[-1].seq == driver.seq
    assert set(driver.engine.orders) == {3}  # b's order untouched
    assert driver.engine.deadlines == {}
    assert advance(driver, deadline + 10**12) == []  # disarmed: it fires once


def test_the_switch_fires_before_the_command_that_reaches_the_deadline() -> None:
    driver = two_markets()
    driver.place(BUY, 10, 5, account="a")
    deadline = armed(driver, "a", 1)
    events = driver.place(BUY, 12, 2, account="a", ts=deadline + 5)
    assert [type(e).__name__ for e in events] == ["OrderCancelled", "DeadmanTriggered", "OrderAccepted", "OrderRested"]
    assert set(driver.engine.orders) == {2}  # the new order rests: the switch is no longer armed


def test_orders_placed_before_and_after_arming_are_both_covered() -> None:
    driver = two_markets()
    driver.place(BUY, 10, 5, account="a")
    deadline = armed(driver, "a", 100)
    driver.place(BUY, 9, 5, account="a", market_id="n")
    assert cancels(advance(driver, deadline)) == [(1, "a", 5, DEADMAN), (2, "a", 5, DEADMAN)]


def test_a_heartbeat_before_the_deadline_postpones_it() -> None:
    driver = two_markets()
    driver.place(BUY, 10, 5, account="a")
    first = armed(driver, "a", 100)
    advance(driver, first - 10 * MS)
    second = armed(driver, "a", 100)
    assert second > first
    assert advance(driver, first) == []
    assert advance(driver, second - 1) == []
    assert triggered(advance(driver, second)) == [("a", 1)]


def test_a_heartbeat_may_also_bring_the_deadline_closer() -> None:
    driver = two_markets()
    driver.place(BUY, 10, 5, account="a")
    armed(driver, "a", 1000)
    sooner = armed(driver, "a", 10)
    assert triggered(advance(driver, sooner)) == [("a", 1)]


def test_a_zero_timeout_disarms() -> None:
    driver = two_markets()
    driver.place(BUY, 10, 5, account="a")
    deadline = armed(driver, "a", 100)
    events = heartbeat(driver, "a", 0)
    assert events == [HeartbeatSet(seq=driver.seq, ts=driver.ts, account="a", deadline=0)]
    assert advance(driver, deadline + 10**12) == []
    assert set(driver.engine.orders) == {1}
    assert driver.engine.next_expiry() is None


def test_disarming_an_unarmed_account_is_accepted() -> None:
    driver = two_markets()
    assert heartbeat(driver, "nobody", 0) == [HeartbeatSet(seq=driver.seq, ts=driver.ts, account="nobody", deadline=0)]


def test_ioc_remainders_and_filled_orders_are_not_counted() -> None:
    driver = two_markets()
    driver.place(SELL, 10, 4, account="b")  # 1
    driver.place(BUY, 10, 6, account="a", tif=TimeInForce.IOC)  # 2: fills 4, the rest is UNFILLED
    driver.place(BUY, 12, 3, account="a")  # 3: rests
    driver.place(SELL, 12, 3, account="c")  # 4: fills 3 entirely
    driver.place(BUY, 11, 5, account="a")  # 5: rests...
    driver.place(SELL, 11, 2, account="c")  # 6: ...and is partly filled
    deadline = armed(driver, "a", 1)
    events = advance(driver, deadline)
    assert cancels(events) == [(5, "a", 3, DEADMAN)]
    assert triggered(events) == [("a", 1)]


def test_an_account_with_no_resting_orders_still_learns_the_switch_fired() -> None:
    driver = two_markets()
    deadline = armed(driver, "a", 1)
    assert advance(driver, deadline) == [DeadmanTriggered(seq=driver.seq, ts=deadline, account="a", cancelled=0)]


def test_orders_in_a_suspended_market_are_cancelled_too() -> None:
    driver = two_markets()
    driver.place(BUY, 10, 5, account="a", market_id="n")
    driver.apply(SuspendMarket, market_id="n")
    deadline = armed(driver, "a", 1)
    assert cancels(advance(driver, deadline)) == [(1, "a", 5, DEADMAN)]


def test_switches_fire_by_deadline_then_account_and_before_gtd_expiries_at_the_same_time() -> None:
    driver = two_markets()
    driver.place(BUY, 10, 1, account="z")  # 1
    driver.place(BUY, 10, 1, account="y")  # 2
    driver.place(BUY, 10, 1, account="x")  # 3
    driver.place(BUY, 9, 1, account="b", tif=TimeInForce.GTD, expires_at=driver.ts + 3 * MS + 100)  # 4
    driver.place(BUY, 8, 1, account="y", tif=TimeInForce.GTD, expires_at=driver.ts + 3 * MS + 100)  # 5
    start = driver.ts
    later = armed(driver, "z", 3)  # ts = start + 1
    driver.ts = start
    sooner_y = armed(driver, "y", 3)  # ts = start + 1 again: the same deadline
    driver.ts = start - 1
    sooner_x = armed(driver, "x", 3)  # ts = start
    assert sooner_x < sooner_y == later
    expiry = start + 3 * MS + 100
    events = advance(driver, expiry)
    assert triggered(events) == [("x", 1), ("y", 2), ("z", 1)]
    assert cancels(events) == [
        (3, "x", 1, DEADMAN),
        (2, "y", 1, DEADMAN),
        (5, "y", 1, DEADMAN),  # its GTD expiry is due too, but the switch came first
        (1, "z", 1, DEADMAN),
        (4, "b", 1, CancelReason.EXPIRED),
    ]


def test_a_gtd_expiry_before_the_deadline_comes_first() -> None:
    driver = two_markets()
    driver.place(BUY, 9, 1, account="a", tif=TimeInForce.GTD, expires_at=driver.ts + 100)
    driver.place(BUY, 8, 1, account="a")
    deadline = armed(driver, "a", 1)
    assert cancels(advance(driver, deadline)) == [(1, "a", 1, CancelReason.EXPIRED), (2, "a", 1, DEADMAN)]


def test_the_collateral_reserve_is_released() -> None:
    driver = Driver()
    driver.market("m", TickScheme.BINARY, collateral=True)
    driver.market("p")  # a market without money, in the same engine
    driver.apply(Deposit, account="a", amount=10_000)
    driver.place(BUY, 40, 10, account="a")
    driver.place(SELL, 70, 5, account="a")
    driver.place(BUY, 5, 5, account="a", market_id="p")
    account = driver.engine.ledger.accounts["a"]
    assert (account.total, account.reserved) == (10_000, 400 + 150)
    deadline = armed(driver, "a", 1)
    events = advance(driver, deadline)
    assert triggered(events) == [("a", 3)]
    released = [(e.total, e.reserved, e.market_id) for e in events if isinstance(e, BalanceChanged)]
    assert released == [(10_000, 150, "m"), (10_000, 0, "m")]
    assert all(e.reason is BalanceReason.RELEASE for e in events if isinstance(e, BalanceChanged))
    assert (account.total, account.reserved) == (10_000, 0)  # all free again
    assert driver.engine.ledger.orders == {}


def test_a_command_after_the_switch_sees_the_released_money() -> None:
    driver = Driver()
    driver.market("m", TickScheme.BINARY, collateral=True)
    driver.apply(Deposit, account="a", amount=400)
    driver.place(BUY, 40, 10, account="a")
    deadline = armed(driver, "a", 1)
    events = driver.place(BUY, 40, 10, account="a", ts=deadline)  # affordable only once the first goes
    assert [type(e).__name__ for e in events] == [
        "OrderCancelled",
        "BalanceChanged",  # released: 0 reserved
        "DeadmanTriggered",
        "OrderAccepted",
        "BalanceChanged",  # reserved again for the new order
        "OrderRested",
    ]
    assert [e.reserved for e in events if isinstance(e, BalanceChanged)] == [0, 400]
    assert set(driver.engine.orders) == {2}


# ---------------------------------------------------------------------- rejections


@pytest.mark.parametrize("timeout_ms", [-1, -(2**63), MAX_HEARTBEAT_TIMEOUT_MS + 1, 2**63 - 1])
def test_a_timeout_below_zero_or_above_an_hour_is_invalid(timeout_ms: int) -> None:
    driver = two_markets()
    before = driver.engine.state_hash()
    reason = rejected(heartbeat(driver, "a", timeout_ms))
    assert reason is RejectReason.INVALID_TIMEOUT
    assert int(reason) == 603
    assert driver.engine.state_hash() == before
    assert driver.engine.deadlines == {}


def test_an_hour_is_the_longest_timeout() -> None:
    driver = two_markets()
    assert armed(driver, "a", MAX_HEARTBEAT_TIMEOUT_MS) == driver.ts + 3_600 * 10**9


def test_a_deadline_beyond_64_bits_is_invalid() -> None:
    driver = two_markets()
    assert rejected(heartbeat(driver, "a", 10, ts=2**63 - 5 * MS)) is RejectReason.INVALID_TIMEOUT


def test_a_heartbeat_needs_an_account() -> None:
    driver = two_markets()
    events = heartbeat(driver, "", 100)
    reason = rejected(events)
    assert reason is RejectReason.INVALID_ACCOUNT
    assert int(reason) == 602
    assert driver.engine.deadlines == {}


def test_a_rejected_heartbeat_leaves_the_armed_deadline_alone() -> None:
    driver = two_markets()
    deadline = armed(driver, "a", 100)
    rejected(heartbeat(driver, "a", -5))
    assert driver.engine.deadlines == {"a": deadline}


# ---------------------------------------------------------------------- the leader's clock


def test_next_expiry_is_the_earliest_of_gtd_expiries_and_deadlines() -> None:
    driver = two_markets()
    assert driver.engine.next_expiry() is None
    deadline = armed(driver, "a", 100)
    assert driver.engine.next_expiry() == deadline
    driver.place(BUY, 10, 1, account="b", tif=TimeInForce.GTD, expires_at=deadline + 1)
    assert driver.engine.next_expiry() == deadline
    later = armed(driver, "a", 200)  # the earlier deadline is stale now
    assert driver.engine.next_expiry() == deadline + 1
    driver.cancel(1)
    assert driver.engine.next_expiry() == later
    expires_at = driver.ts + 6
    driver.place(BUY, 10, 1, account="b", tif=TimeInForce.GTD, expires_at=expires_at)
    assert driver.engine.next_expiry() == expires_at
    heartbeat(driver, "a", 0)
    driver.cancel(2)
    assert driver.engine.next_expiry() is None


def test_the_leader_journals_the_tick_that_fires_an_idle_switch(redis_url: str, bus: Bus) -> None:
    journal = Journal(bus)
    with running_leader(redis_url):
        journal.submit(CreateMarket(seq=0, ts=0, market_id="m", scheme=TickScheme.BINARY))
        order = PlaceOrder(seq=0, ts=0, market_id="m", order_id=0, account="a", side=BUY, price=40, qty=3)
        order_id = journal.submit(order).order_id
        journal.submit(Heartbeat(seq=0, ts=0, account="a", timeout_ms=200))

        def events() -> list[Event]:
            entries: list[tuple[bytes, dict[bytes, bytes]]] = bus.client.xrange(bus.keys.events)  # type: ignore[assignment]
            return [decode_event(fields[b"event"]).event for _, fields in entries]

        wait_until(lambda: any(isinstance(e, DeadmanTriggered) for e in events()), message="the switch to fire")
    seen = events()
    (set_event,) = [e for e in seen if isinstance(e, HeartbeatSet)]
    (fired,) = [e for e in seen if isinstance(e, DeadmanTriggered)]
    assert (fired.account, fired.cancelled) == ("a", 1)
    assert fired.ts >= set_event.deadline
    assert cancels(seen) == [(order_id, "a", 3, DEADMAN)]


# ---------------------------------------------------------------------- state, replay, the bus


def script() -> list[Command]:
    """Two accounts, a heartbeat that is renewed, one that lapses, trades in between."""
    commands: list[Command] = []
    ts = 1_000

    def add(command_type: type[Command], **fields: Any) -> None:
        commands.append(command_type(seq=len(commands) + 1, ts=ts, **fields))

    add(CreateMarket, market_id="m", scheme=TickScheme.BINARY, collateral=True)
    add(CreateMarket, market_id="n", scheme=TickScheme.TICKS, max_tick=50)
    add(Deposit, account="a", amount=5_000)
    add(Deposit, account="b", amount=5_000)
    for order_id, (market_id, account, side, price) in enumerate(
        [("m", "a", BUY, 40), ("m", "b", SELL, 60), ("n", "a", SELL, 30), ("n", "b", BUY, 20), ("m", "a", SELL, 70)],
        start=1,
    ):
        add(PlaceOrder, market_id=market_id, order_id=order_id, account=account, side=side, price=price, qty=4)
    add(Heartbeat, account="a", timeout_ms=5)
    add(Heartbeat, account="b", timeout_ms=8)
    for step in range(1, 12):
        ts += MS
        if step % 2:
            add(Heartbeat, account="b", timeout_ms=8)  # b keeps its switch alive
        add(PlaceOrder, market_id="n", order_id=5 + step, account="ab"[step % 2], side=BUY, price=10 + step, qty=1)
        add(AdvanceTime)
    return commands


def run(engine: Engine, commands: list[Command]) -> list[Event]:
    events: list[Event] = []
    for command in commands:
        events.extend(engine.apply(command))
        engine.check_invariants()
    return events


def test_the_script_fires_a_and_not_b() -> None:
    engine = Engine()
    events = run(engine, script())
    assert triggered(events) == [("a", 5)]
    assert cancels(events) == [(i, "a", 4 if i < 6 else 1, DEADMAN) for i in (1, 3, 5, 7, 9)]  # 7, 9: in the loop
    assert engine.deadlines == {"b": max(e.deadline for e in events if isinstance(e, HeartbeatSet))}
    assert sorted(i for i, o in engine.orders.items() if o.account == "a") == [11, 13, 15]  # placed after it fired


def test_replaying_the_same_commands_gives_the_same_events_and_hash() -> None:
    first, second = Engine(), Engine()
    assert run(first, script()) == run(second, script())
    assert first.state_hash() == second.state_hash()


@pytest.mark.parametrize("cut", range(0, 40, 3))
def test_restoring_a_snapshot_midway_gives_the_same_hash_and_the_same_future(cut: int) -> None:
    commands = script()
    whole = Engine()
    events = run(whole, commands)
    engine = Engine()
    head = run(engine, commands[:cut])
    restored = Engine.restore(engine.snapshot())
    restored.check_invariants()
    assert restored.state_hash() == engine.state_hash()
    assert restored.deadlines == engine.deadlines
    assert restored.next_expiry() == engine.next_expiry()
    assert head + run(restored, commands[cut:]) == events
    assert restored.state_hash() == whole.state_hash()


def test_a_snapshot_carries_armed_switches_and_only_them() -> None:
    driver = two_markets()
    driver.place(BUY, 10, 5, account="a")
    plain = driver.engine.snapshot()
    assert plain[1:].startswith(b"\xafmatchbox.engine\x01")  # version 1, as before switches existed
    deadline = armed(driver, "a", 100)
    data = driver.engine.snapshot()
    assert data[1:].startswith(b"\xafmatchbox.engine\x03")
    restored = Engine.restore(data)
    assert restored.deadlines == {"a": deadline}
    assert triggered(restored.apply(AdvanceTime(seq=99, ts=deadline))) == [("a", 1)]
    heartbeat(driver, "a", 0)
    assert driver.engine.snapshot() == plain  # disarmed: the same bytes, the same hash


def test_a_snapshot_with_money_and_no_switch_is_still_version_2() -> None:
    engine = Engine()
    run(engine, script()[:4])
    assert engine.snapshot()[1:].startswith(b"\xafmatchbox.engine\x02")


def test_the_state_hash_tells_deadlines_apart() -> None:
    left, right = two_markets(), two_markets()
    armed(left, "a", 100)
    armed(right, "a", 101)
    assert left.engine.state_hash() != right.engine.state_hash()


def test_heartbeats_and_their_events_cross_the_bus() -> None:
    command = Heartbeat(seq=0, ts=0, account="a", timeout_ms=1500)
    raw = encode_command(command)
    assert msgspec.json.decode(raw)["type"] == "Heartbeat"
    assert decode_command(raw, seq=7, ts=9) == Heartbeat(seq=7, ts=9, account="a", timeout_ms=1500)
    for event in (
        HeartbeatSet(seq=7, ts=9, account="a", deadline=9 + 1500 * MS),
        DeadmanTriggered(seq=8, ts=10, account="a", cancelled=3),
        OrderCancelled(seq=8, ts=10, market_id="m", order_id=1, account="a", cancelled_qty=2, reason=DEADMAN),
    ):
        assert decode_event(encode_event(event, 5, "1-0")).event == event


# ---------------------------------------------------------------------- bookkeeping stays bounded


def test_an_armed_accounts_order_list_is_pruned_as_orders_finish() -> None:
    driver = two_markets()
    deadline = armed(driver, "a", 1000)
    driver.place(BUY, 9, 1, account="a")  # stays live through every pruning
    for _ in range(1_000):
        driver.place(BUY, 10, 1, account="a")
        driver.cancel(driver.next_order_id)
    driver.place(BUY, 10, 1, account="a")
    assert len(driver.engine._watched["a"].ids) <= 128
    events = advance(driver, deadline)
    assert [c[0] for c in cancels(events)] == [1, driver.next_order_id]


def test_renewed_deadlines_do_not_pile_up_in_the_timer_heap() -> None:
    driver = two_markets()
    for _ in range(1_000):
        armed(driver, "a", 1000)
    assert len(driver.engine._timers) <= 130
    assert driver.engine.next_expiry() == driver.engine.deadlines["a"]


def test_the_invariants_catch_a_deadline_without_its_timer() -> None:
    driver = two_markets()
    armed(driver, "a", 100)
    driver.engine.deadlines["a"] += 1
    with pytest.raises(BookIntegrityError, match="dead-man"):
        driver.engine.check_invariants()


# ---------------------------------------------------------------------- property

PROFILE = settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
HEARTBEATS = st.lists(
    st.tuples(st.integers(0, 80), st.sampled_from(("a", "b", "c")), st.sampled_from((0, 1, 2, 3, 5, 8))),
    max_size=40,
)


def with_heartbeats(commands: list[Command], beats: list[tuple[int, str, int]]) -> list[Command]:
    """The journal in milliseconds rather than nanoseconds, heartbeats slipped in, renumbered."""
    scaled: list[Command] = []
    for command in commands:
        fields: dict[str, Any] = {"ts": command.ts * MS}
        if isinstance(command, PlaceOrder):
            fields["expires_at"] = command.expires_at * MS
        scaled.append(msgspec.structs.replace(command, **fields))
    for position, account, timeout_ms in sorted(beats, reverse=True):
        at = min(position, len(scaled))
        ts = scaled[at - 1].ts if at else 0
        scaled.insert(at, Heartbeat(seq=0, ts=ts, account=account, timeout_ms=timeout_ms))
    return [msgspec.structs.replace(command, seq=seq) for seq, command in enumerate(scaled, start=1)]


@PROFILE
@given(journals(), HEARTBEATS, st.integers(0, 200))
def test_switches_fire_exactly_when_a_model_says_and_take_every_resting_order(
    commands: list[Command], beats: list[tuple[int, str, int]], cut: int
) -> None:
    commands = with_heartbeats(commands, beats)
    engine = Engine()
    model: dict[str, int] = {}  # account -> deadline
    outputs: list[list[Event]] = []
    for command in commands:
        due = sorted((deadline, account) for account, deadline in model.items() if deadline <= command.ts)
        live_before = {i: o.account for i, o in engine.orders.items()}
        events = engine.apply(command)
        engine.check_invariants()
        outputs.append(events)
        assert [e.account for e in _fired(events)] == [account for _, account in due]
        assert_each_switch_reports_its_own_cancels(events)
        for _, account in due:
            del model[account]
            assert account not in live_before.values() or not set(engine.orders) & {
                i for i, owner in live_before.items() if owner == account
            }
        if isinstance(command, Heartbeat):
            assert isinstance(events[-1], HeartbeatSet)
            if command.timeout_ms:
                model[command.account] = command.ts + command.timeout_ms * MS
            else:
                model.pop(command.account, None)
        assert engine.deadlines == model
        next_expiry = engine.next_expiry()
        if model:
            assert next_expiry is not None
            assert next_expiry <= min(model.values())
    # restoring midway changes nothing: same events afterwards, same final state
    cut = min(cut, len(commands))
    head = Engine()
    for command in commands[:cut]:
        head.apply(command)
    restored = Engine.restore(head.snapshot())
    assert [restored.apply(command) for command in commands[cut:]] == outputs[cut:]
    assert restored.state_hash() == engine.state_hash()


def _fired(events: list[Event]) -> list[DeadmanTriggered]:
    return [e for e in events if isinstance(e, DeadmanTriggered)]


def assert_each_switch_reports_its_own_cancels(events: list[Event]) -> None:
    """The DEADMAN cancels before each DeadmanTriggered are of its account, and it counts them."""
    pending: list[str] = []
    for event in events:
        if isinstance(event, OrderCancelled) and event.reason is DEADMAN:
            pending.append(event.account)
        elif isinstance(event, DeadmanTriggered):
            assert pending == [event.account] * event.cancelled
            pending = []
    assert pending == []
