"""The faster restore reads exactly what was written before it: same bytes, same hashes, same timers.

``Engine.restore`` now builds orders straight from the bytes and puts each price level back in
one step; the snapshot bytes (and so every state hash already committed in a Redis) must not
change, and every version written so far must still restore.
"""

from __future__ import annotations

import msgspec
import pytest

from matchbox.engine import Engine, SnapshotError
from matchbox.engine.types import (
    CancelOrder,
    CancelReason,
    Command,
    CreateMarket,
    Deposit,
    Heartbeat,
    OrderCancelled,
    PlaceOrder,
    SelfTradePrevention,
    Side,
    SuspendMarket,
    TickScheme,
    TimeInForce,
)
from test_snapshot import flow, run

# state_hash() of the engines below, as the snapshot code before this change wrote them
HASHES = {
    1: "66c8ee33b33767c50d36658f50b6cf22785a3344cee33d196f15cd911b676b9d",
    2: "a7a70344fed052a82889fe424273a7a332ce2dc6b62eb36ae3f94dd150876d48",
    3: "86bbfda16e3d3760e157f62071ef645cff3188914e21d16f5334afb88cb707cb",
}


def engine_of_version(version: int) -> Engine:
    """An engine whose snapshot is ``version``: 1 plain books, 2 with money, 3 with a dead-man switch."""
    commands: list[Command] = flow()
    if version >= 2:
        commands += [
            Deposit(seq=1000, ts=10**6, account="acct1", amount=10_000),
            CreateMarket(seq=1001, ts=10**6, market_id="c", scheme=TickScheme.BINARY, collateral=True),
            PlaceOrder(
                seq=1002, ts=10**6, market_id="c", order_id=500, account="acct1", side=Side.BUY, price=40, qty=5
            ),
        ]
    if version >= 3:
        commands.append(Heartbeat(seq=1003, ts=10**6, account="acct1", timeout_ms=5000))
    engine = Engine()
    run(engine, commands)
    return engine


@pytest.mark.parametrize("version", [1, 2, 3])
def test_every_version_writes_the_same_bytes_and_restores(version: int) -> None:
    engine = engine_of_version(version)
    data = engine.snapshot()
    assert msgspec.msgpack.decode(data)[1] == version
    assert engine.state_hash() == HASHES[version]
    restored = Engine.restore(data)
    restored.check_invariants()
    assert restored.snapshot() == data
    assert restored.orders.keys() == engine.orders.keys()
    assert restored.next_expiry() == engine.next_expiry()


def test_an_order_that_lapses_is_written_as_version_5_and_lapses_after_a_restore() -> None:
    engine = Engine()
    engine.apply(CreateMarket(seq=1, ts=1, market_id="m", scheme=TickScheme.TICKS, max_tick=100))
    for order_id, lapse in ((1, True), (2, False)):
        seq = 1 + order_id
        engine.apply(
            PlaceOrder(
                seq=seq,
                ts=seq,
                market_id="m",
                order_id=order_id,
                account="a",
                side=Side.BUY,
                price=10,
                qty=5,
                lapse=lapse,
            )
        )
    data = engine.snapshot()
    assert msgspec.msgpack.decode(data)[1] == 5
    restored = Engine.restore(data)
    assert restored.snapshot() == data
    events = restored.apply(SuspendMarket(seq=4, ts=4, market_id="m"))
    assert [(e.order_id, e.reason) for e in events if isinstance(e, OrderCancelled)] == [(1, CancelReason.LAPSED)]
    assert msgspec.msgpack.decode(restored.snapshot())[1] == 1  # none lapses now: as before lapsing existed


def test_an_order_with_its_own_self_trade_rule_is_written_as_version_6_while_it_lives() -> None:
    engine = Engine()
    engine.apply(CreateMarket(seq=1, ts=1, market_id="m", scheme=TickScheme.TICKS, max_tick=100))
    rule = SelfTradePrevention.CANCEL_BOTH
    engine.apply(
        PlaceOrder(seq=2, ts=2, market_id="m", order_id=1, account="a", side=Side.BUY, price=10, qty=5, stp=rule)
    )
    data = engine.snapshot()
    assert msgspec.msgpack.decode(data)[1] == 6
    restored = Engine.restore(data)
    assert restored.snapshot() == data
    assert restored.own_stp.ids == {1: rule}
    restored.apply(CancelOrder(seq=3, ts=3, order_id=1))
    assert msgspec.msgpack.decode(restored.snapshot())[1] == 1  # none has its own rule now: as before


def test_gtd_orders_expire_in_the_same_order_after_a_restore() -> None:
    engine = Engine()
    engine.apply(CreateMarket(seq=1, ts=1, market_id="m", scheme=TickScheme.BINARY))
    expiries = [70, 20, 90, 20, 50, 10, 80, 30]  # out of order, one tie (broken by order id)
    for order_id, expires in enumerate(expiries, start=1):
        engine.apply(
            PlaceOrder(
                seq=1 + order_id,
                ts=2,
                market_id="m",
                order_id=order_id,
                account="a",
                side=Side.BUY,
                price=10 + order_id,
                qty=1,
                tif=TimeInForce.GTD,
                expires_at=expires * 1000,
            )
        )
    restored = Engine.restore(engine.snapshot())
    for e in (engine, restored):
        events = e.apply(CreateMarket(seq=100, ts=10**6, market_id="n", scheme=TickScheme.BINARY))
        cancelled = [event.order_id for event in events if isinstance(event, OrderCancelled)]
        assert cancelled == [6, 2, 4, 8, 5, 1, 7, 3]


def test_a_level_split_in_two_runs_is_put_back_whole() -> None:
    engine = Engine()
    engine.apply(CreateMarket(seq=1, ts=1, market_id="m", scheme=TickScheme.BINARY))
    for order_id, price in enumerate((40, 40, 39), start=1):
        engine.apply(
            PlaceOrder(
                seq=1 + order_id,
                ts=2,
                market_id="m",
                order_id=order_id,
                account="a",
                side=Side.BUY,
                price=price,
                qty=order_id,
            )
        )
    document = msgspec.msgpack.decode(engine.snapshot())
    rows = document[4][0][8]
    document[4][0][8] = [rows[0], rows[2], rows[1]]  # 40, 39, 40: not canonical, still readable
    restored = Engine.restore(msgspec.msgpack.encode(document))
    restored.check_invariants()
    assert restored.depth("m", 5) == engine.depth("m", 5)


def test_a_row_with_a_bad_enum_is_a_snapshot_error() -> None:
    engine = engine_of_version(1)
    document = msgspec.msgpack.decode(engine.snapshot())
    document[4][0][8][0][2] = 7  # no such side
    with pytest.raises(SnapshotError, match="corrupt"):
        Engine.restore(msgspec.msgpack.encode(document))
