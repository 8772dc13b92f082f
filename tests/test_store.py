"""The consumers' SQL store: one suite, run against SQLite (a file) and PostgreSQL (a fresh schema).

The events are real: the pure engine driven by a seeded random order flow (tests/store_support.py)
or by hand-built sequences, encoded as the leader writes them.
"""

from __future__ import annotations

import random
import threading
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from matchbox.bus.codec import encode_event
from matchbox.bus.connection import Entry
from matchbox.consumers import queries
from matchbox.consumers.analytics import AnalyticsSink
from matchbox.consumers.batch import read_newest
from matchbox.consumers.db import alembic_config, database_url, migrate, open_database, run_write, write_transaction
from matchbox.consumers.persistence import PersistenceSink
from matchbox.consumers.queries import Candle
from matchbox.consumers.runner import Poison, Sink
from matchbox.consumers.schema import CANDLE_INTERVALS_MS, balances, consumer_offsets, metadata
from matchbox.engine.queries import PriceLevel
from matchbox.engine.types import (
    AmendOrder,
    CancelOrder,
    CreateMarket,
    Event,
    OrderAccepted,
    OrderAmended,
    OrderCancelled,
    OrderReduced,
    ReduceOrder,
    Rejected,
    RejectReason,
    Side,
    TickScheme,
    TimeInForce,
    TradeExecuted,
)
from store_support import START_MS, Databases, Stream, build_alongside, head_revision, random_flow, split

TABLES = sorted(metadata.tables)


# --------------------------------------------------------------------------- helpers

FLOW = random_flow(seed=20240611, commands=700)


def sinks(engine: sa.Engine) -> list[Sink]:
    return [PersistenceSink(engine), AnalyticsSink(engine)]


def build(engine: sa.Engine, batches: Sequence[Sequence[Entry]]) -> None:
    """Both sinks fed the batches in the order given."""
    consumers = sinks(engine)
    for batch in batches:
        for sink in consumers:
            sink.apply(batch)


def tables(engine: sa.Engine, ignore: frozenset[str] | None = None) -> dict[str, list[dict[str, Any]]]:
    if ignore is None:
        return {name: queries.table_rows(engine, name) for name in TABLES}
    return {name: queries.table_rows(engine, name, ignore) for name in TABLES}


def in_order(databases: Databases) -> dict[str, list[dict[str, Any]]]:
    """The tables of the flow applied in one batch, in order: what every other build must equal."""
    engine = databases.open()
    build(engine, [FLOW.entries])
    return tables(engine)


def entry(stream_id: str, raw: bytes) -> Entry:
    return stream_id.encode(), {b"event": raw}


# --------------------------------------------------------------------------- migrations


def test_migrations_match_the_schema_and_run_twice_as_a_no_op(database: sa.Engine) -> None:
    migrate(database)
    migrate(database)
    with database.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), metadata) == []
        assert connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalars().all() == [
            head_revision()
        ]
        assert set(sa.inspect(connection).get_table_names()) == {*TABLES, "alembic_version"}


def test_a_database_from_before_shards_keeps_its_rows_as_shard_0_s(databases: Databases) -> None:
    """Revision 0004 re-keys the tracking rows and the balances by shard; what was there is shard 0's,
    and going back down keeps shard 0's rows alone."""
    engine = databases.open()
    config = alembic_config()
    with write_transaction(engine) as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0003")
    with write_transaction(engine) as connection:
        connection.exec_driver_sql(
            "INSERT INTO consumer_offsets (consumer_group, last_id, last_ms, last_seq, floor_id, floor_ms, floor_seq)"
            " VALUES ('persistence', '9-3', 9, 3, '9-1', 9, 1)"
        )
        connection.exec_driver_sql(
            "INSERT INTO balances (account, total, reserved, updated_ts, last_n) VALUES ('ann', 50, 5, 1, 3)"
        )
    migrate(engine)
    assert (read_newest(engine, "persistence"), PersistenceSink(engine).position()) == ("9-3", "9-1")
    assert read_newest(engine, "persistence", shard=1) is None
    assert queries.table_rows(engine, "balances") == [
        {"account": "ann", "shard": 0, "total": 50, "reserved": 5, "updated_ts": 1, "last_n": 3}
    ]
    with write_transaction(engine) as connection:
        connection.execute(
            sa.insert(balances), {"account": "ann", "shard": 2, "total": 7, "reserved": 0, "updated_ts": 2, "last_n": 4}
        )
        config.attributes["connection"] = connection
        command.downgrade(config, "0003")
    with engine.connect() as connection:
        rows = connection.exec_driver_sql("SELECT account, total FROM balances").all()
    assert [tuple(row) for row in rows] == [("ann", 50)]


def test_two_processes_opening_a_new_database_at_once_both_succeed(databases: Databases) -> None:
    url, data_dir = databases.location()
    opened: list[sa.Engine] = []
    failures: list[BaseException] = []
    start = threading.Barrier(2)

    def open_it() -> None:
        try:
            start.wait()
            opened.append(open_database(url, data_dir))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    databases.engines.extend(opened)
    assert not failures
    with opened[0].connect() as connection:
        assert connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalars().all() == [
            head_revision()
        ]


def test_the_default_database_is_a_sqlite_file_in_wal_mode_with_full_sync(tmp_path: Path) -> None:
    engine = open_database(None, tmp_path / "data")
    try:
        assert engine.url.database == str(tmp_path / "data" / "matchbox.db")
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
    finally:
        engine.dispose()


def test_postgres_urls_get_the_psycopg_driver() -> None:
    assert database_url("postgres://u@h/d").drivername == "postgresql+psycopg"
    assert database_url("postgresql://u@h/d").drivername == "postgresql+psycopg"
    assert database_url("sqlite:///x.db").drivername == "sqlite"


# --------------------------------------------------------------------------- exactly once


def test_batches_of_any_size_build_the_same_tables(databases: Databases) -> None:
    expected = in_order(databases)
    assert expected["trades"]
    assert expected["candles"]
    assert expected["orders"]
    rng = random.Random(1)
    for largest in (4, 50, 500):
        engine = databases.open()
        build(engine, list(split(FLOW.entries, rng, largest)))
        assert tables(engine) == expected, f"batches of up to {largest}"


def test_redelivered_batches_change_nothing(databases: Databases) -> None:
    expected = in_order(databases)
    engine = databases.open()
    batches = list(split(FLOW.entries, random.Random(2), 150))
    consumers = sinks(engine)
    for batch in batches:
        for sink in consumers:
            sink.apply(batch)
            sink.apply(batch)
    assert tables(engine) == expected
    everything = tables(engine, ignore=frozenset())  # the wall-clock columns too
    build(engine, batches)  # the whole history delivered again
    assert tables(engine, ignore=frozenset()) == everything


def test_two_consumers_applying_batches_in_any_order_build_the_same_tables(databases: Databases) -> None:
    expected = in_order(databases)
    rng = random.Random(3)
    engine = databases.open()
    first, second = sinks(engine), sinks(databases.another_engine(engine))
    deliveries = [batch for batch in split(FLOW.entries, rng, 120) for _ in range(rng.choice((1, 1, 1, 2)))]
    rng.shuffle(deliveries)
    for batch in deliveries:
        for sink in rng.choice((first, second)):
            sink.apply(batch)
    assert tables(engine) == expected


def test_two_consumers_running_concurrently_build_the_same_tables(databases: Databases) -> None:
    expected = in_order(databases)
    engine = databases.open()
    batches = list(split(FLOW.entries, random.Random(4), 60))
    covered = list(batches)  # every batch applied at least once, by someone
    random.Random(5).shuffle(covered)
    build_alongside(databases, engine, build, batches, covered)
    assert tables(engine) == expected


def test_a_transaction_that_lost_a_race_is_retried_on_postgres(databases: Databases) -> None:
    """A unique violation means a concurrent batch got there first (PostgreSQL): roll back, try again.

    SQLite's writers take turns (BEGIN IMMEDIATE), so there it can only be a bug, and it surfaces:
    as Poison, the database having refused the data, so the runner finds the entry at fault.
    """
    engine = databases.open()
    attempts: list[int] = []
    row = {"consumer_group": "g", "shard": 0, "last_id": "1-1", "last_ms": 1, "last_seq": 1}

    def work(connection: sa.Connection) -> int:
        attempts.append(len(attempts) + 1)
        connection.execute(sa.insert(consumer_offsets), row)
        if len(attempts) == 1:
            connection.execute(sa.insert(consumer_offsets), row)  # the same key again: a real violation
        return len(attempts)

    if databases.backend == "sqlite":
        with pytest.raises(Poison, match="UNIQUE constraint failed"):
            run_write(engine, work)
        assert attempts == [1]
        assert queries.table_rows(engine, "consumer_offsets") == []
    else:
        assert run_write(engine, work) == 2
        assert [r["consumer_group"] for r in queries.table_rows(engine, "consumer_offsets")] == ["g"]


# --------------------------------------------------------------------------- persistence vs the engine


def test_trades_exactly_once_and_orders_as_the_engine_saw_them(database: sa.Engine) -> None:
    build(database, list(split(FLOW.entries, random.Random(6), 250)))
    events = [event for _, event in FLOW.events]
    trades = [event for event in events if isinstance(event, TradeExecuted)]
    rows = queries.table_rows(database, "trades")
    assert [(r["trade_id"], r["price"], r["qty"], r["maker_order_id"], r["taker_order_id"]) for r in rows] == [
        (t.trade_id, t.price, t.qty, t.maker_order_id, t.taker_order_id) for t in trades
    ]
    orders = {row["order_id"]: row for row in queries.table_rows(database, "orders")}

    # the live orders, as the engine holds them now
    live = FLOW.engine.orders
    assert live, "the flow should leave some orders on the book"
    for order_id, order in live.items():
        row = orders[order_id]
        assert (row["remaining"], row["filled"], row["price"], row["side"]) == (
            order.remaining,
            order.filled,
            order.price,
            int(order.side),
        )
        assert row["status"] == ("partially_filled" if order.filled else "open")

    # every order, from its events in order
    filled: dict[int, int] = defaultdict(int)
    for trade in trades:
        filled[trade.maker_order_id] += trade.qty
        filled[trade.taker_order_id] += trade.qty
    accepted = {event.order_id: event for event in events if isinstance(event, OrderAccepted)}
    stated = {event.order_id: (event.price, event.qty) for event in events if isinstance(event, OrderAccepted)}
    for event in events:
        if isinstance(event, OrderAmended | OrderReduced):  # the newest price and quantity stand
            stated[event.order_id] = (event.price, event.qty)
    assert any(isinstance(event, OrderAmended) for event in events), "the flow should amend some orders"
    cancelled = {event.order_id: event for event in events if isinstance(event, OrderCancelled)}
    rejected = {
        event.order_id
        for event in events
        if isinstance(event, Rejected) and event.command == "PlaceOrder" and event.order_id
    }
    assert set(orders) == set(accepted) | rejected
    for order_id, row in orders.items():
        assert row["filled"] == filled[order_id]
        if order_id in rejected:
            assert row["status"] == "rejected"
            assert row["reject_reason"] is not None
        elif order_id in cancelled:
            assert (row["status"], row["remaining"]) == ("cancelled", 0)
            assert row["cancelled_qty"] == cancelled[order_id].cancelled_qty
        else:
            assert (row["price"], row["qty"]) == stated[order_id]
        if order_id not in rejected | set(cancelled) | set(live):
            assert (row["status"], row["remaining"], row["filled"]) == ("filled", 0, stated[order_id][1])


def test_markets_follow_their_lifecycle(database: sa.Engine) -> None:
    build(database, [FLOW.entries])
    markets = {row["market_id"]: row for row in queries.table_rows(database, "markets")}
    assert {name: (row["state"], row["outcome"]) for name, row in markets.items()} == {
        "rain": (2, ""),  # closed
        "derby": (3, "home"),  # settled
        "chess": (int(FLOW.engine.books["chess"].state), ""),
    }
    assert (markets["derby"]["scheme"], markets["derby"]["min_tick"], markets["derby"]["max_tick"]) == (1, 1, 350)


# --------------------------------------------------------------------------- analytics


def reference_candles(events: Sequence[Event]) -> list[dict[str, Any]]:
    """The candles of the flow's trades, computed the plain way."""
    groups: dict[tuple[str, str, int], list[TradeExecuted]] = defaultdict(list)
    for event in events:
        if isinstance(event, TradeExecuted):
            ms = event.ts // 1_000_000
            for interval, length in CANDLE_INTERVALS_MS.items():
                groups[(event.market_id, interval, ms // length * length)].append(event)
    return [
        {
            "market_id": market_id,
            "interval": interval,
            "start_ms": start_ms,
            "open": trades[0].price,
            "high": max(t.price for t in trades),
            "low": min(t.price for t in trades),
            "close": trades[-1].price,
            "volume": sum(t.qty for t in trades),
            "trade_count": len(trades),
            "notional": sum(t.price * t.qty for t in trades),
            "first_trade_id": trades[0].trade_id,
            "last_trade_id": trades[-1].trade_id,
        }
        for (market_id, interval, start_ms), trades in sorted(groups.items())
    ]


def stored_book(database: sa.Engine, market_id: str) -> tuple[list[PriceLevel], list[PriceLevel]]:
    """The analytics sink's resting orders summed into levels (bids highest first, asks lowest first)."""
    levels: dict[Side, dict[int, tuple[int, int]]] = {Side.BUY: {}, Side.SELL: {}}
    for row in queries.table_rows(database, "analytics_book_orders"):
        if row["market_id"] == market_id and row["remaining"] > 0:
            qty, count = levels[Side(row["side"])].get(row["price"], (0, 0))
            levels[Side(row["side"])][row["price"]] = (qty + row["remaining"], count + 1)
    bids = [PriceLevel(price, *levels[Side.BUY][price]) for price in sorted(levels[Side.BUY], reverse=True)]
    asks = [PriceLevel(price, *levels[Side.SELL][price]) for price in sorted(levels[Side.SELL])]
    return bids, asks


def test_flow_candles_and_book_match_a_plain_computation_and_the_engine(database: sa.Engine) -> None:
    rng = random.Random(7)
    batches = list(split(FLOW.entries, rng, 90))
    rng.shuffle(batches)  # order must not matter
    build(database, batches)
    assert queries.table_rows(database, "candles") == reference_candles([event for _, event in FLOW.events])
    for market_id in FLOW.engine.books:
        book = FLOW.engine.depth(market_id, max_levels=1000)
        assert book is not None
        assert stored_book(database, market_id) == (book.bids, book.asks)
        found = queries.stats(database, market_id, now_ms=FLOW.ms)
        assert found is not None
        assert (found.best_bid, found.best_ask) == FLOW.engine.best_bid_ask(market_id)
    assert FLOW.engine.depth("chess", 5) != FLOW.engine.depth("rain", 5)  # some book is not empty


@pytest.mark.parametrize("reverse", [False, True])
def test_an_amended_order_is_stored_where_and_as_it_was_moved(database: sa.Engine, reverse: bool) -> None:
    """An ask rests, is moved up and given more quantity, and moved again: the orders table holds
    its last price and quantity, the stored book has it at its last price only, whichever batch
    comes first."""
    stream = Stream()
    stream.apply(CreateMarket, market_id="m", scheme=TickScheme.TICKS, max_tick=100)
    order_id = stream.place("m", "ann", Side.SELL, 55, 10)[0].order_id  # type: ignore[attr-defined]
    stream.apply(AmendOrder, order_id=order_id, price=57, qty=12)
    stream.apply(AmendOrder, order_id=order_id, price=58)
    batches = [[entry] for entry in stream.entries]
    build(database, batches[::-1] if reverse else batches)
    row = next(r for r in queries.table_rows(database, "orders") if r["order_id"] == order_id)
    assert (row["price"], row["qty"], row["remaining"], row["status"]) == (58, 12, 12, "open")
    assert stored_book(database, "m") == ([], [PriceLevel(58, 12, 1)])


def known_trades() -> Stream:
    """Resting asks 10@50, 10@52, 10@55, then four buys that take them (see the test for the numbers)."""
    stream = Stream()
    stream.apply(CreateMarket, market_id="m", scheme=TickScheme.TICKS, max_tick=100)
    stream.ms = START_MS - 10  # START_MS is a whole minute (and hour)
    for price in (50, 52, 55):
        stream.place("m", "ann", Side.SELL, price, 10)
    stream.ms = START_MS
    stream.place("m", "bob", Side.BUY, 50, 4, step_ms=100)  # 4@50           at +100 ms
    stream.place("m", "bob", Side.BUY, 52, 8, step_ms=800)  # 6@50, 2@52     at +900 ms
    stream.place("m", "bob", Side.BUY, 55, 3, step_ms=600)  # 3@52           at +1.5 s
    stream.place("m", "bob", Side.BUY, 55, 10, step_ms=59_500)  # 5@52, 5@55 at +61 s
    return stream


def test_candles_of_a_known_trade_sequence(database: sa.Engine) -> None:
    stream = known_trades()
    assert [(t.price, t.qty) for _, t in stream.events if isinstance(t, TradeExecuted)] == [
        (50, 4),
        (50, 6),
        (52, 2),
        (52, 3),
        (52, 5),
        (55, 5),
    ]
    batches = [[item] for item in stream.entries]
    build(database, batches[::-1])  # newest first: open and close must still be right
    t0 = START_MS
    assert queries.candles(database, "m", "1s") == [
        Candle(t0, open=50, high=52, low=50, close=52, volume=12, trade_count=3, notional=604),
        Candle(t0 + 1_000, open=52, high=52, low=52, close=52, volume=3, trade_count=1, notional=156),
        Candle(t0 + 61_000, open=52, high=55, low=52, close=55, volume=10, trade_count=2, notional=535),
    ]
    minutes = queries.candles(database, "m", "1m")
    assert minutes == [
        Candle(t0, open=50, high=52, low=50, close=52, volume=15, trade_count=4, notional=760),
        Candle(t0 + 60_000, open=52, high=55, low=52, close=55, volume=10, trade_count=2, notional=535),
    ]
    assert minutes[0].vwap == pytest.approx(760 / 15)
    day_start = t0 // 86_400_000 * 86_400_000
    assert queries.candles(database, "m", "1h") == [Candle(t0, 50, 55, 50, 55, 25, 6, 1295)]
    assert queries.candles(database, "m", "1d") == [Candle(day_start, 50, 55, 50, 55, 25, 6, 1295)]

    # ranges and limits
    assert queries.candles(database, "m", "1s", start_ms=t0 + 1, end_ms=t0 + 61_000) == [
        Candle(t0 + 1_000, 52, 52, 52, 52, 3, 1, 156)
    ]
    assert [c.start_ms for c in queries.candles(database, "m", "1s", limit=2)] == [t0 + 1_000, t0 + 61_000]
    assert [c.start_ms for c in queries.candles(database, "m", "1s", start_ms=t0, limit=2)] == [t0, t0 + 1_000]
    assert queries.candles(database, "nowhere", "1m") == []
    with pytest.raises(ValueError, match="unknown interval"):
        queries.candles(database, "m", "5m")

    found = queries.stats(database, "m", now_ms=t0 + 61_000)
    assert found is not None
    assert (found.last_price, found.last_qty, found.last_trade_ms) == (55, 5, t0 + 61_000)
    assert (found.volume_24h, found.trades_24h, found.notional_24h) == (25, 6, 1295)
    assert found.vwap_24h == pytest.approx(51.8)
    assert (found.best_bid, found.best_ask, found.spread, found.mid) == (None, 55, None, None)
    later = queries.stats(database, "m", now_ms=t0 + 86_400_000 + 30_000)  # the first minute left the window
    assert later is not None
    assert (later.volume_24h, later.trades_24h) == (10, 2)
    assert queries.stats(database, "nowhere", now_ms=t0) is None


def test_best_bid_and_ask_follow_rests_fills_reductions_and_cancels(database: sa.Engine) -> None:
    stream = Stream()
    stream.apply(CreateMarket, market_id="m", scheme=TickScheme.BINARY)
    stream.place("m", "ann", Side.BUY, 45, 10)  # order 1
    stream.place("m", "bob", Side.BUY, 47, 5)  # 2
    stream.place("m", "cat", Side.SELL, 52, 7)  # 3
    stream.place("m", "dan", Side.SELL, 50, 3)  # 4
    sink = AnalyticsSink(database)

    def top() -> tuple[int | None, int | None, int | None, float | None]:
        sink.apply(stream.entries[sink_position[0] :])
        sink_position[0] = len(stream.entries)
        found = queries.stats(database, "m", now_ms=stream.ms)
        assert found is not None
        assert (found.best_bid, found.best_ask) == stream.engine.best_bid_ask("m")
        return found.best_bid, found.best_ask, found.spread, found.mid

    sink_position = [0]
    assert top() == (47, 50, 3, 48.5)
    stream.place("m", "eve", Side.SELL, 47, 5, tif=TimeInForce.IOC)  # takes bob's 5@47 whole
    assert top() == (45, 50, 5, 47.5)
    stream.apply(ReduceOrder, order_id=4, reduce_by=2)  # dan: 1 left at 50
    assert stored_book(database, "m")[1][0] == PriceLevel(50, 3, 1)  # not folded yet
    assert top() == (45, 50, 5, 47.5)
    assert stored_book(database, "m") == ([PriceLevel(45, 10, 1)], [PriceLevel(50, 1, 1), PriceLevel(52, 7, 1)])
    stream.place("m", "eve", Side.BUY, 50, 1)  # fills dan's last unit
    assert top() == (45, 52, 7, 48.5)
    stream.apply(ReduceOrder, order_id=1, reduce_by=10)  # the whole remainder: a cancel
    stream.place("m", "bob", Side.BUY, 60, 7)  # takes cat's 7@52
    assert top() == (None, None, None, None)


# --------------------------------------------------------------------------- poison and tracking


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b'{"v":1,"n":1,"in":"1-0","type":"NoSuchEvent","seq":1,"ts":1}',
        b'{"v":2,"n":1,"in":"1-0","type":"Rejected","seq":1,"ts":1,"command":"X","reason":500}',
        b'{"v":1,"n":1,"in":"1-0","type":"TradeExecuted","seq":1,"ts":1}',
    ],
    ids=["not-json", "unknown-type", "unknown-version", "missing-fields"],
)
def test_an_undecodable_entry_is_poison_and_nothing_is_written(database: sa.Engine, raw: bytes) -> None:
    good = FLOW.entries[:5]
    for sink in sinks(database):
        with pytest.raises(Poison):
            sink.apply([entry("1764000000000-9", raw)])
        with pytest.raises(Poison):
            sink.apply([*good, entry("1764000000000-9", raw)])
        with pytest.raises(Poison):
            sink.apply([(b"1764000000000-9", {b"other": raw})])
        assert sink.position() is None
    assert all(queries.table_rows(database, name) == [] for name in TABLES)


def test_the_tracking_row_moves_its_newest_id_and_its_floor_forward_only(database: sa.Engine) -> None:
    stream = Stream(start_ms=998)
    stream.apply(CreateMarket, market_id="m", scheme=TickScheme.BINARY)  # 999-1
    for _ in range(9):  # 999-2 .. 999-10, all in one millisecond: "999-10" sorts before "999-9" as text
        stream.apply(CancelOrder, order_id=7, step_ms=0)  # one Rejected event each
    stream.apply(CancelOrder, order_id=7)  # 1000-11: "1000-11" sorts before "999-9" as text
    ids = [entry_id.decode() for entry_id, _ in stream.entries]
    assert ids[8:] == ["999-9", "999-10", "1000-11"]
    for sink in sinks(database):
        assert sink.position() is None
        sink.apply(stream.entries[9:10], floor="999-8")  # 999-10
        assert (read_newest(database, sink.group), sink.position()) == ("999-10", "999-8")
        sink.apply(stream.entries[:9], floor="999-2")  # up to 999-9: neither moves back
        assert (read_newest(database, sink.group), sink.position()) == ("999-10", "999-8")
        sink.apply(stream.entries[10:], floor="999-10")
        assert (read_newest(database, sink.group), sink.position()) == ("1000-11", "999-10")
        sink.apply(stream.entries[:3])  # no floor (the group was gone): it stays
        assert (read_newest(database, sink.group), sink.position()) == ("1000-11", "999-10")
    offsets = queries.table_rows(database, "consumer_offsets")
    columns = ("consumer_group", "last_id", "last_ms", "last_seq", "floor_id", "floor_ms", "floor_seq")
    assert [tuple(row[column] for column in columns) for row in offsets] == [
        ("analytics", "1000-11", 1000, 11, "999-10", 999, 10),
        ("persistence", "1000-11", 1000, 11, "999-10", 999, 10),
    ]


def test_a_group_name_is_its_own_tracking_row(database: sa.Engine) -> None:
    PersistenceSink(database, group="replay-1").apply(FLOW.entries[:10], FLOW.entries[9][0].decode())
    assert PersistenceSink(database, group="replay-1").position() == FLOW.entries[9][0].decode()
    assert PersistenceSink(database).position() is None


def test_events_that_change_no_table_still_move_the_tracking_row(database: sa.Engine) -> None:
    rejected = Rejected(seq=1, ts=1, command="", reason=RejectReason.MALFORMED_COMMAND)
    for sink in sinks(database):
        sink.apply([entry("5-1", encode_event(rejected, 1, "5-0"))], "5-1")
        assert sink.position() == "5-1"
    assert queries.table_rows(database, "orders") == []
