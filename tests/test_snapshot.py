"""Snapshots: versioned, canonical, and restoring mid-flow changes nothing."""

from __future__ import annotations

import msgspec
import pytest

from conftest import Driver
from matchbox.engine import Engine, SnapshotError
from matchbox.engine.types import (
    CancelOrder,
    Command,
    CreateMarket,
    PlaceOrder,
    SelfTradePrevention,
    Side,
    TickScheme,
    TimeInForce,
)


def flow() -> list[Command]:
    """A small flow with every kind of resting state: partial fills, GTD, cancels, two markets."""
    commands: list[Command] = [
        CreateMarket(seq=1, ts=10, market_id="b", scheme=TickScheme.BINARY),
        CreateMarket(seq=2, ts=11, market_id="o", scheme=TickScheme.ODDS, stp=SelfTradePrevention.CANCEL_RESTING),
    ]
    seq = 2
    for i in range(1, 41):
        seq += 1
        side = Side.BUY if i % 2 else Side.SELL
        price = 50 + (i % 7) - 3 if side is Side.BUY else 52 - (i % 5)
        tif = TimeInForce.GTD if i % 6 == 0 else TimeInForce.GTC
        expires = 10_000 + i * 10 if tif is TimeInForce.GTD else 0
        market = "b" if i % 3 else "o"
        commands.append(
            PlaceOrder(
                seq=seq,
                ts=seq * 100,
                market_id=market,
                order_id=i,
                account=f"acct{i % 4}",
                side=side,
                price=price,
                qty=1 + i % 9,
                tif=tif,
                expires_at=expires,
            )
        )
        if i % 5 == 0:
            seq += 1
            commands.append(CancelOrder(seq=seq, ts=seq * 100, order_id=i - 2))
    return commands


def run(engine: Engine, commands: list[Command]) -> list[object]:
    events: list[object] = []
    for command in commands:
        events.extend(engine.apply(command))
    return events


def test_restore_mid_flow_gives_exactly_the_uninterrupted_events() -> None:
    commands = flow()
    whole = Engine()
    per_command = [whole.apply(command) for command in commands]
    for cut in (0, 5, len(commands) // 2, len(commands) - 1):
        first = Engine()
        run(first, commands[:cut])
        restored = Engine.restore(first.snapshot())
        assert restored.state_hash() == first.state_hash()
        expected_tail = [event for events in per_command[cut:] for event in events]
        assert run(restored, commands[cut:]) == expected_tail
        assert restored.state_hash() == whole.state_hash()
        restored.check_invariants()


def test_same_commands_same_events_same_hash() -> None:
    commands = flow()
    one, two = Engine(), Engine()
    assert run(one, commands) == run(two, commands)
    assert one.state_hash() == two.state_hash()
    assert one.snapshot() == two.snapshot()


def test_state_hash_tells_different_books_apart() -> None:
    commands = flow()
    one, two = Engine(), Engine()
    run(one, commands)
    run(two, commands[:-1])
    assert one.state_hash() != two.state_hash()


def test_snapshot_keeps_time_priority_and_partial_fills() -> None:
    driver = Driver()
    driver.market()
    driver.place(Side.SELL, 50, 10, account="s1")
    driver.place(Side.SELL, 50, 10, account="s2")
    driver.place(Side.BUY, 50, 4, account="b")
    restored = Engine.restore(driver.engine.snapshot())
    status = restored.order_status(1)
    assert status is not None
    assert (status.filled, status.remaining) == (4, 6)
    events = restored.apply(
        PlaceOrder(seq=99, ts=99_000, market_id="m", order_id=4, account="b", side=Side.BUY, price=50, qty=8)
    )
    assert [getattr(e, "maker_order_id", None) for e in events[1:]] == [1, 2]


def test_restore_keeps_gtd_expiry() -> None:
    driver = Driver()
    driver.market()
    driver.place(Side.BUY, 50, 5, tif=TimeInForce.GTD, expires_at=50_000)
    restored = Engine.restore(driver.engine.snapshot())
    events = restored.apply(
        PlaceOrder(seq=9, ts=60_000, market_id="m", order_id=2, account="s", side=Side.SELL, price=50, qty=5)
    )
    assert type(events[0]).__name__ == "OrderCancelled"


def test_restore_refuses_what_is_not_a_snapshot() -> None:
    with pytest.raises(SnapshotError, match="not a matchbox"):
        Engine.restore(msgspec.msgpack.encode(["something else", 1]))
    with pytest.raises(SnapshotError, match="corrupt"):
        Engine.restore(b"\x93garbage")
    future = msgspec.msgpack.decode(Engine().snapshot())
    future[1] = 99
    with pytest.raises(SnapshotError, match="version 99"):
        Engine.restore(msgspec.msgpack.encode(future))
