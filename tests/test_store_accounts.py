"""Balances, positions and an account's history in the SQL store, on SQLite and PostgreSQL.

The events are real: the pure engine with collateral markets (its ledger emits BalanceChanged and
PositionChanged), driven by hand or by a seeded random flow, fed through the real persistence
sink as the leader writes them. The tables must equal the engine's ledger to the unit, whatever
the batching, redelivery or order of the batches.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from alembic import command

from matchbox.bus.connection import Entry
from matchbox.consumers import queries
from matchbox.consumers.db import alembic_config, create_engine, migrate, write_transaction
from matchbox.consumers.persistence import PersistenceSink
from matchbox.consumers.queries import AccountTrade, Balance, BalanceEntry, Position, PositionEntry
from matchbox.consumers.schema import trades
from matchbox.engine.types import (
    IDS_PER_MS,
    BalanceChanged,
    BalanceReason,
    CancelAll,
    CancelOrder,
    CreateMarket,
    Deposit,
    FeeSchedule,
    OrderAccepted,
    OrderStatus,
    PositionChanged,
    ReduceOrder,
    Rejected,
    SettleMarket,
    Side,
    TickScheme,
    TimeInForce,
    TradeExecuted,
    TransferIn,
    TransferOut,
    Withdraw,
)
from store_support import Databases, Stream, build_alongside, head_revision, split

ACCOUNTS = ("ann", "bob", "cat", "dan")
MONEY_TABLES = ("balances", "balance_history", "positions", "position_history")
TABLES = (*MONEY_TABLES, "orders", "trades", "markets")
T = TypeVar("T")


# --------------------------------------------------------------------------- flows


def money_flow(seed: int, commands: int) -> Stream:
    """Two collateral markets (binary ``rain``, odds ``derby``) and a plain one (``chess``), funded
    accounts, ``commands`` random orders, cancels, reductions, deposits and withdrawals; then
    ``rain`` settles ``yes`` and ``derby`` stays open (its positions remain). Some cash goes to and
    comes from another shard (transfers)."""
    rng = random.Random(seed)
    stream = Stream()
    fees = FeeSchedule(maker_bps=50, taker_bps=100, taker_per_contract=1, account="house")
    stream.apply(CreateMarket, market_id="rain", scheme=TickScheme.BINARY, collateral=True, fees=fees)
    stream.apply(CreateMarket, market_id="derby", scheme=TickScheme.ODDS, collateral=True)
    stream.apply(CreateMarket, market_id="chess", scheme=TickScheme.TICKS, max_tick=100)
    for account in ACCOUNTS:
        stream.apply(Deposit, account=account, amount=rng.randint(2_000, 20_000))
    mids = {"rain": 50, "derby": 40, "chess": 50}
    for _ in range(commands):
        _random_command(rng, stream, mids)
    stream.apply(SettleMarket, market_id="rain", outcome="yes", step_ms=10)
    return stream


def _random_command(rng: random.Random, stream: Stream, mids: dict[str, int]) -> None:
    step_ms = rng.choice((1, 2, 40, 900))
    roll = rng.random()
    account = rng.choice(ACCOUNTS)
    live = sorted(stream.engine.orders)
    if roll < 0.65:
        market_id = rng.choice(list(mids))
        mids[market_id] = max(5, min(95, mids[market_id] + rng.randint(-2, 2)))
        tif = TimeInForce.IOC if rng.random() < 0.15 else TimeInForce.GTC
        qty = rng.randint(1, 40) * (10 if market_id == "derby" else 1)  # a stake in cents on odds
        price = mids[market_id] + rng.randint(-3, 3)
        stream.place(market_id, account, rng.choice((Side.BUY, Side.SELL)), price, qty, tif=tif, step_ms=step_ms)
    elif roll < 0.78 and live:
        stream.apply(CancelOrder, order_id=rng.choice(live), step_ms=step_ms)
    elif roll < 0.86 and live:
        order = stream.engine.orders[rng.choice(live)]
        stream.apply(ReduceOrder, order_id=order.order_id, reduce_by=rng.randint(1, order.remaining), step_ms=step_ms)
    elif roll < 0.88:
        stream.apply(CancelAll, market_id=rng.choice(list(mids)), account=account, step_ms=step_ms)
    elif roll < 0.92:
        stream.apply(Deposit, account=account, amount=rng.randint(1, 3_000), step_ms=step_ms)
    elif roll < 0.96:
        stream.apply(Withdraw, account=account, amount=rng.randint(1, 3_000), step_ms=step_ms)  # some refused
    elif roll < 0.98:  # cash to and from another shard (this engine is shard 0's): the saga's two halves here
        transfer_id = f"{account}:{rng.getrandbits(40)}"
        stream.apply(TransferOut, account=account, amount=rng.randint(1, 3_000), transfer_id=transfer_id, to_shard=1)
    else:
        transfer_id = f"{account}:{rng.getrandbits(40)}"
        stream.apply(TransferIn, account=account, amount=rng.randint(1, 3_000), transfer_id=transfer_id, from_shard=1)


FLOW = money_flow(seed=20250107, commands=600)


def of_type(kind: type[T]) -> list[tuple[int, T]]:
    return [(n, event) for n, event in FLOW.events if isinstance(event, kind)]


def test_the_flow_moves_money_in_every_way() -> None:
    reasons = {event.reason for _, event in of_type(BalanceChanged)}
    assert reasons == set(BalanceReason) - {BalanceReason.VOID}
    assert any(event.reason is BalanceReason.SETTLEMENT for _, event in of_type(PositionChanged))
    assert FLOW.engine.ledger.positions, "derby should keep open positions"
    assert any(key[0] == "rain" for key in _zero_keys())  # settled positions
    assert any(event.command == "Withdraw" for _, event in of_type(Rejected))  # beyond the free balance
    assert {event.market_id for _, event in of_type(TradeExecuted)} == {"rain", "derby", "chess"}


def _zero_keys() -> set[tuple[str, str]]:
    """(market, account) of the positions the flow opened and the ledger has since forgotten (empty)."""
    opened = {(event.market_id, event.account) for _, event in of_type(PositionChanged)}
    return opened - set(FLOW.engine.ledger.positions)


# --------------------------------------------------------------------------- helpers


def build(engine: sa.Engine, batches: Sequence[Sequence[Entry]]) -> None:
    sink = PersistenceSink(engine)
    for batch in batches:
        sink.apply(batch)


def tables(engine: sa.Engine) -> dict[str, list[dict[str, Any]]]:
    return {name: queries.table_rows(engine, name) for name in TABLES}


def in_order(databases: Databases) -> dict[str, list[dict[str, Any]]]:
    engine = databases.open()
    build(engine, [FLOW.entries])
    found = tables(engine)
    assert all(found[name] for name in TABLES)
    return found


def pages(fetch: Callable[..., list[T]], key: Callable[[T], int], *args: Any, **kwargs: Any) -> list[list[T]]:
    """Every page of a keyset-paged list, ``fetch(*args, before=..., limit=..., **kwargs)`` from
    ``before=None`` on, each next page before the last key of the one before, until a short page;
    asserts every page but the last is full."""
    limit = kwargs["limit"]
    found: list[list[T]] = []
    before: int | None = None
    while not found or len(found[-1]) == limit:
        page = fetch(*args, before=before, **kwargs)
        found.append(page)
        if page:
            before = key(page[-1])
        assert len(found) < 1_000
    assert all(len(page) == limit for page in found[:-1])
    return found


# --------------------------------------------------------------------------- the tables vs the engine


def test_balances_and_positions_equal_the_engine_ledger(database: sa.Engine) -> None:
    build(database, list(split(FLOW.entries, random.Random(1), 200)))
    ledger = FLOW.engine.ledger
    balances = {row["account"]: row for row in queries.table_rows(database, "balances")}
    assert {account: (row["total"], row["reserved"]) for account, row in balances.items()} == {
        account: (balance.total, balance.reserved) for account, balance in ledger.accounts.items()
    }
    last_change = {event.account: (n, event.ts) for n, event in of_type(BalanceChanged)}
    assert {account: (row["last_n"], row["updated_ts"]) for account, row in balances.items()} == last_change

    rows = {(row["market_id"], row["account"]): row for row in queries.table_rows(database, "positions")}
    fields = ("yes", "no", "committed", "stake", "liability")
    held = {key: tuple(row[name] for name in fields) for key, row in rows.items() if any(row[name] for name in fields)}
    assert held == {
        key: tuple(getattr(position, name) for name in fields) for key, position in ledger.positions.items()
    }
    assert set(rows) - set(held) == _zero_keys()  # an emptied position keeps its row, all zeros


def test_history_has_one_row_per_money_event(database: sa.Engine) -> None:
    batches = list(split(FLOW.entries, random.Random(2), 60))
    build(database, batches)
    build(database, batches[::3])  # some redelivered
    assert queries.table_rows(database, "balance_history") == [
        {
            "n": n,
            "account": event.account,
            "total": event.total,
            "reserved": event.reserved,
            "reason": int(event.reason),
            "market_id": event.market_id,
            "ts": event.ts,
        }
        for n, event in of_type(BalanceChanged)
    ]
    assert queries.table_rows(database, "position_history") == [
        {
            "n": n,
            "account": event.account,
            "market_id": event.market_id,
            "yes": event.yes,
            "no": event.no,
            "committed": event.committed,
            "stake": event.stake,
            "liability": event.liability,
            "reason": int(event.reason),
            "ts": event.ts,
        }
        for n, event in of_type(PositionChanged)
    ]


def test_a_known_sequence_to_the_unit(database: sa.Engine) -> None:
    stream = Stream()
    stream.apply(CreateMarket, market_id="rain", scheme=TickScheme.BINARY, collateral=True)
    stream.apply(Deposit, account="ann", amount=10_000)  # n 2
    stream.apply(Deposit, account="bob", amount=10_000)  # n 3
    stream.place("rain", "ann", Side.BUY, 40, 10)  # reserves 400 (n 5)
    stream.place("rain", "bob", Side.SELL, 40, 4)  # reserves 4 * 60 (n 8); 4 @ 40: ann pays 160, bob 240
    stream.apply(CancelOrder, order_id=1)  # ann's 6 left: 240 released
    stream.apply(SettleMarket, market_id="rain", outcome="yes")  # ann's 4 YES pay 400
    build(database, [[item] for item in stream.entries][::-1])  # newest first
    ts = [stream.events[n - 1][1].ts for n in range(1, len(stream.events) + 1)]

    assert queries.account_balance(database, "ann") == Balance("ann", 10_240, 0, ts[16], 17)
    assert queries.account_balance(database, "bob") == Balance("bob", 9_760, 0, ts[18], 19)
    assert queries.account_balance(database, "nobody") is None
    assert [(e.n, e.total, e.reserved, e.change, e.reason, e.market_id) for e in _history(database, "ann")] == [
        (17, 10_240, 0, 400, BalanceReason.SETTLEMENT, "rain"),
        (15, 9_840, 0, 0, BalanceReason.RELEASE, "rain"),
        (10, 9_840, 240, -160, BalanceReason.TRADE, "rain"),
        (5, 10_000, 400, 0, BalanceReason.RESERVE, "rain"),
        (2, 10_000, 0, 10_000, BalanceReason.DEPOSIT, ""),
    ]
    assert queries.account_positions(database, "ann") == []  # settled
    assert queries.account_positions(database, "ann", include_empty=True) == [
        Position("rain", 0, 0, 0, 0, 0, ts[17], 18)
    ]
    assert queries.account_position_history(database, "bob") == [
        PositionEntry(20, ts[19], "rain", 0, 0, 0, 0, 0, BalanceReason.SETTLEMENT),
        PositionEntry(13, ts[12], "rain", 0, 4, 0, 0, 0, BalanceReason.TRADE),
    ]
    trade_id = ts[8] // 1_000_000 * IDS_PER_MS  # the first trade: its time's floor (engine.py, "Trade ids")
    assert queries.account_trades(database, "ann") == [
        AccountTrade(trade_id, "rain", 40, 4, Side.BUY, "maker", order_id=1, ts=ts[8])
    ]
    assert queries.account_trades(database, "bob") == [
        AccountTrade(trade_id, "rain", 40, 4, Side.SELL, "taker", order_id=2, ts=ts[8])
    ]
    ann_orders = queries.account_orders(database, "ann")
    assert [(o.order_id, o.status, o.filled, o.remaining, o.cancelled_qty) for o in ann_orders] == [
        (1, OrderStatus.CANCELLED, 4, 0, 6)
    ]
    assert queries.account_orders(database, "ann", state="open") == []


def _history(engine: sa.Engine, account: str) -> list[BalanceEntry]:
    return queries.account_balance_history(engine, account, limit=1_000)


# --------------------------------------------------------------------------- exactly once, any order


def test_batches_redelivered_and_in_any_order_build_the_same_tables(databases: Databases) -> None:
    expected = in_order(databases)
    rng = random.Random(3)
    for largest in (1, 30, 400):
        engine = databases.open()
        batches = list(split(FLOW.entries, rng, largest))
        deliveries = [batch for batch in batches for _ in range(rng.choice((1, 2)))]
        rng.shuffle(deliveries)
        first, second = PersistenceSink(engine), PersistenceSink(databases.another_engine(engine))
        for batch in deliveries:
            rng.choice((first, second)).apply(batch)
        assert tables(engine) == expected, f"batches of up to {largest}"
        build(engine, batches)  # the whole history once more
        assert tables(engine) == expected


def test_concurrent_consumers_build_the_same_tables(databases: Databases) -> None:
    expected = in_order(databases)
    engine = databases.open()
    batches = list(split(FLOW.entries, random.Random(4), 40))
    build_alongside(databases, engine, build, batches, batches[::-1])  # ours: every batch, newest first
    assert tables(engine) == expected


# --------------------------------------------------------------------------- queries


@pytest.fixture
def built(database: sa.Engine) -> sa.Engine:
    build(database, list(split(FLOW.entries, random.Random(8), 300)))
    return database


def test_account_trades_page_newest_first_and_only_the_accounts_own(built: sa.Engine) -> None:
    seen: set[int] = set()
    for account in (*ACCOUNTS, "nobody"):
        expected = [
            AccountTrade(
                trade_id=t.trade_id,
                market_id=t.market_id,
                price=t.price,
                qty=t.qty,
                side=t.taker_side if t.taker_account == account else Side(1 - t.taker_side),
                role="taker" if t.taker_account == account else "maker",
                order_id=t.taker_order_id if t.taker_account == account else t.maker_order_id,
                ts=t.ts,
                fee=t.taker_fee if t.taker_account == account else t.maker_fee,
            )
            for _, t in of_type(TradeExecuted)[::-1]
            if account in (t.maker_account, t.taker_account)
        ]
        assert len(expected) > 20 or account == "nobody"
        found = pages(queries.account_trades, _trade_id, built, account, limit=7)
        assert [trade for page in found for trade in page] == expected
        assert queries.account_trades(built, account, limit=10_000) == expected
        seen.update(trade.trade_id for trade in expected)
    assert seen == {t.trade_id for _, t in of_type(TradeExecuted)}
    middle = of_type(TradeExecuted)[len(of_type(TradeExecuted)) // 2][1].trade_id
    assert all(t.trade_id < middle for t in queries.account_trades(built, "ann", before=middle, limit=10_000))


def _trade_id(trade: AccountTrade) -> int:
    return trade.trade_id


def test_account_orders_by_state_page_newest_first(built: sa.Engine) -> None:
    accepted = {event.order_id: event.account for _, event in of_type(OrderAccepted)}
    rejected = {e.order_id: e.account for _, e in of_type(Rejected) if e.command == "PlaceOrder" and e.order_id}
    owners = {**accepted, **rejected}
    live = FLOW.engine.orders
    for account in ACCOUNTS:
        mine = sorted((order_id for order_id, owner in owners.items() if owner == account), reverse=True)
        expected = {
            "all": mine,
            "open": [order_id for order_id in mine if order_id in live],
            "closed": [order_id for order_id in mine if order_id not in live],
        }
        assert expected["open"]
        assert expected["closed"]
        for state, order_ids in expected.items():
            found = pages(queries.account_orders, _order_id, built, account, state=state, limit=5)
            assert [order.order_id for page in found for order in page] == order_ids, (account, state)
        for order in queries.account_orders(built, account, state="open", limit=10_000):
            engine_order = live[order.order_id]
            assert (order.remaining, order.filled, order.price, order.side) == (
                engine_order.remaining,
                engine_order.filled,
                engine_order.price,
                engine_order.side,
            )
            assert order.status in (OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED)
    assert queries.account_orders(built, "nobody") == []


def _order_id(order: queries.AccountOrder) -> int:
    return order.order_id


def test_balance_and_positions_per_account(built: sa.Engine) -> None:
    ledger = FLOW.engine.ledger
    for account, balance in ledger.accounts.items():
        found = queries.account_balance(built, account)
        assert found is not None
        assert (found.account, found.total, found.reserved, found.free) == (
            account,
            balance.total,
            balance.reserved,
            balance.total - balance.reserved,
        )
        positions = queries.account_positions(built, account)
        assert {p.market_id: (p.yes, p.no, p.committed, p.stake, p.liability) for p in positions} == {
            market_id: (held.yes, held.no, held.committed, held.stake, held.liability)
            for (market_id, owner), held in ledger.positions.items()
            if owner == account
        }
        assert [p.last_n for p in positions] == sorted((p.last_n for p in positions), reverse=True)
        everything = queries.account_positions(built, account, include_empty=True)
        assert {p.market_id for p in everything} - {p.market_id for p in positions} == {
            market_id for market_id, owner in _zero_keys() if owner == account
        }


def test_balance_history_pages_newest_first_with_each_change(built: sa.Engine) -> None:
    for account in ACCOUNTS:
        events = [(n, event) for n, event in of_type(BalanceChanged) if event.account == account]
        previous = [0] + [event.total for _, event in events[:-1]]
        expected = [
            BalanceEntry(n, event.ts, event.total, event.reserved, event.total - before, event.reason, event.market_id)
            for (n, event), before in zip(events, previous, strict=True)
        ][::-1]
        found = pages(queries.account_balance_history, _entry_n, built, account, limit=9)
        assert [entry for page in found for entry in page] == expected
    assert queries.account_balance_history(built, "nobody") == []


def _entry_n(entry: BalanceEntry) -> int:
    return entry.n


def test_position_history_pages_per_market(built: sa.Engine) -> None:
    for account in ACCOUNTS:
        for market_id in ("rain", "derby", None):
            expected = [
                n
                for n, event in of_type(PositionChanged)[::-1]
                if event.account == account and market_id in (None, event.market_id)
            ]
            assert expected
            found = pages(queries.account_position_history, _position_n, built, account, market_id=market_id, limit=4)
            assert [entry.n for page in found for entry in page] == expected


def _position_n(entry: PositionEntry) -> int:
    return entry.n


def test_a_page_size_below_one_and_an_unknown_state_are_refused(database: sa.Engine) -> None:
    with pytest.raises(ValueError, match="limit"):
        queries.account_trades(database, "ann", limit=0)
    with pytest.raises(ValueError, match="limit"):
        queries.account_balance_history(database, "ann", limit=0)
    with pytest.raises(ValueError, match="unknown order state"):
        queries.account_orders(database, "ann", state="pending")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- migration


def test_a_database_at_the_first_revision_migrates_with_its_trades(databases: Databases) -> None:
    url, data_dir = databases.location()
    if url is None:
        data_dir.mkdir(parents=True)
        url = f"sqlite:///{data_dir / 'old.db'}"
    engine = create_engine(url)
    databases.engines.append(engine)
    config = alembic_config()
    with write_transaction(engine) as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
    with write_transaction(engine) as connection:
        connection.execute(
            sa.insert(trades),
            {
                "trade_id": 1,
                "market_id": "m",
                "price": 40,
                "qty": 3,
                "taker_side": int(Side.BUY),
                "maker_order_id": 1,
                "taker_order_id": 2,
                "maker_account": "ann",
                "taker_account": "bob",
                "ts": 5,
                "n": 4,
                "stream_id": "1-4",
            },
        )
    migrate(engine)
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalars().all() == [
            head_revision()
        ]
        assert {"balances", "balance_history", "positions", "position_history"} <= set(
            sa.inspect(connection).get_table_names()
        )
    assert queries.account_trades(engine, "ann") == [AccountTrade(1, "m", 40, 3, Side.SELL, "maker", 1, 5)]
    assert queries.account_balance(engine, "ann") is None
