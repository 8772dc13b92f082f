"""The persistence sink: markets, orders, trades, balances and positions as SQL rows, exactly once in effect.

One transaction per batch. The batch is decoded and folded in memory into one row per market,
per order, per trade, per account's balance, per position and per money event, then written with
one multi-row statement per table, and the group's tracking row moves forward in the same
transaction.

Why a batch applied twice, or batches of two consumers committed in any order, leave the same
tables as one in-order build:

- A trade is inserted only if its ``trade_id`` is not there yet, and the transaction learns
  which trades it inserted (:class:`~matchbox.consumers.batch.NewRows`: ON CONFLICT DO NOTHING
  RETURNING on PostgreSQL, where a concurrent insert of the same trade waits for the other
  transaction and is then skipped; on SQLite, read then insert under the write lock).
- An order's ``filled`` grows only by the trades this transaction inserted, so every trade is
  counted once, by whichever transaction inserted it; addition does not care about order.
- ``remaining`` (and ``updated_ts``, a market's ``state`` and ``outcome``) are last-writer-wins
  by the event sequence number ``n``: the row keeps ``last_n`` and takes an incoming value only
  from a newer event. The newest event of an order or a market wins whatever the order of
  arrival, which is what an in-order build ends with.
- The fields an event states once (an order's side, price, quantity…; a market's scheme and
  ticks) are kept from whichever event brought them first; they never change.
- Cancellation and rejection are terminal: once a reason is stored it stays.
- ``status`` is derived from those merged values in the same statement, by the SQL twin of
  :func:`matchbox.engine.rules.order_status` (rejected, cancelled, then filled when nothing
  remains and something filled, partially filled, open).
- Money events (``BalanceChanged``, ``PositionChanged``) carry absolute values: ``balances`` and
  ``positions`` take an incoming row only from a newer event (an upsert whose update is guarded
  by ``last_n``), and every event is inserted once into ``balance_history`` /
  ``position_history``, keyed by its ``n`` (ON CONFLICT DO NOTHING).
- The tracking row moves to max(stored, the batch's last id), comparing stream ids as
  (milliseconds, sequence) integers.

Rows are sorted by key in every statement, so two concurrent transactions lock rows in the same
order; a deadlock or unique violation that still happens is retried by
:func:`~matchbox.consumers.db.run_write`.

A rejected new order gets a row with status ``rejected``, except for ``DUPLICATE_ORDER_ID``: that
id belongs to another order. Other rejections (cancels, market commands) leave no row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import sqlalchemy as sa

from matchbox.consumers.batch import (
    FoldingSink,
    Insert,
    Item,
    NewRows,
    Row,
    RowWriter,
    first_known,
    insert,
    newer,
    newer_stated,
    write_sorted,
)
from matchbox.consumers.schema import (
    balance_history,
    balances,
    markets,
    orders,
    position_history,
    positions,
    trades,
)
from matchbox.engine.ids import shard_id
from matchbox.engine.rules import order_status
from matchbox.engine.types import (
    BalanceChanged,
    MarketCreated,
    MarketState,
    MarketStateChanged,
    OrderAccepted,
    OrderAmended,
    OrderCancelled,
    OrderReduced,
    OrderRested,
    OrderStatus,
    PositionChanged,
    Rejected,
    RejectReason,
    TradeExecuted,
)

MARKET_ONCE = (
    "scheme",
    "min_tick",
    "max_tick",
    "max_qty",
    "stp",
    "created_ts",
    "title",
    "question",
    "rules",
    "category",
    "outcomes",
    "opens_at",
    "closes_at",
    "fees",
)
MARKET_LATEST = ("state", "outcome", "updated_ts", "last_n")
ORDER_ONCE = (
    "side",
    "kind",
    "tif",
    "post_only",
    "expires_at",
    "created_ts",
    "lapse",
    "cancelled_qty",
    "cancel_reason",
    "reject_reason",
)
ORDER_LATEST = ("remaining", "updated_ts", "last_n")
ORDER_STATED = ("price", "qty", "price_n")  # by the OrderAccepted, then by each OrderAmended
BALANCE_LATEST = ("total", "reserved", "updated_ts", "last_n")
POSITION_LATEST = ("yes", "no", "committed", "stake", "liability", "updated_ts", "last_n")


class Fold:
    """One batch folded in memory: a row per market, order, trade, balance, position and money event."""

    def __init__(self, shard: int = 0) -> None:
        self.shard = shard  # whose stream: money rows are keyed by it
        self.markets: dict[str, Row] = {}
        self.orders: dict[int, Row] = {}
        self.trades: dict[int, Row] = {}
        self.balances: dict[str, Row] = {}  # the newest per account (on this shard)
        self.balance_history: dict[int, Row] = {}  # by n (with the shard in its high bits)
        self.positions: dict[tuple[str, str], Row] = {}  # the newest per (account, market)
        self.position_history: dict[int, Row] = {}

    def add(self, item: Item) -> None:
        n = item.n
        match item.event:
            case TradeExecuted() as event:
                self._trade(item, event)
            case OrderAccepted() as event:
                self._accepted(n, event)
            case OrderRested(order_id=order_id, market_id=market_id, account=account) as event:
                _latest(self._order(order_id, market_id, account), n, event.ts, event.remaining)
            case OrderReduced(order_id=order_id, market_id=market_id, account=account) as event:
                row = self._order(order_id, market_id, account)
                if event.qty:  # its quantity now, as an amend states it
                    _stated(row, n, event.price, event.qty)
                _latest(row, n, event.ts, event.remaining)
            case OrderAmended(order_id=order_id, market_id=market_id, account=account) as event:
                row = self._order(order_id, market_id, account)
                _stated(row, n, event.price, event.qty)
                _latest(row, n, event.ts, event.remaining)
            case OrderCancelled() as event:
                self._cancelled(n, event)
            case Rejected() as event:
                self._rejected(n, event)
            case MarketCreated() as event:
                self._market_created(n, event)
            case MarketStateChanged() as event:
                self._market_changed(n, event)
            case BalanceChanged() as event:
                self._balance(n, event)
            case PositionChanged() as event:
                self._position(n, event)

    # ------------------------------------------------------------------ orders and trades

    def _order(self, order_id: int, market_id: str, account: str) -> Row:
        row = self.orders.get(order_id)
        if row is None:
            row = self.orders[order_id] = {
                "order_id": order_id,
                "market_id": market_id,
                "account": account,
                "side": None,
                "price": None,
                "qty": None,
                "price_n": None,
                "kind": None,
                "tif": None,
                "post_only": None,
                "expires_at": None,
                "created_ts": None,
                "lapse": None,
                "status": OrderStatus.OPEN.value,
                "filled": 0,
                "remaining": 0,
                "cancelled_qty": None,
                "cancel_reason": None,
                "reject_reason": None,
                "updated_ts": 0,
                "last_n": 0,
            }
        return row

    def _accepted(self, n: int, event: OrderAccepted) -> None:
        row = self._order(event.order_id, event.market_id, event.account)
        row["side"] = int(event.side)
        _stated(row, n, event.price, event.qty)
        row["kind"] = int(event.kind)
        row["tif"] = int(event.tif)
        row["post_only"] = event.post_only
        row["expires_at"] = event.expires_at
        row["created_ts"] = event.ts
        row["lapse"] = event.lapse
        _latest(row, n, event.ts, event.qty)

    def _trade(self, item: Item, event: TradeExecuted) -> None:
        n = item.n
        self.trades[event.trade_id] = {
            "trade_id": event.trade_id,
            "market_id": event.market_id,
            "price": event.price,
            "qty": event.qty,
            "taker_side": int(event.taker_side),
            "maker_order_id": event.maker_order_id,
            "taker_order_id": event.taker_order_id,
            "maker_account": event.maker_account,
            "taker_account": event.taker_account,
            "maker_fee": event.maker_fee,
            "taker_fee": event.taker_fee,
            "ts": event.ts,
            "n": n,
            "stream_id": item.stream_id,
        }
        maker = self._order(event.maker_order_id, event.market_id, event.maker_account)
        _latest(maker, n, event.ts, event.maker_remaining)
        taker = self._order(event.taker_order_id, event.market_id, event.taker_account)
        _latest(taker, n, event.ts, event.taker_remaining)

    def _cancelled(self, n: int, event: OrderCancelled) -> None:
        row = self._order(event.order_id, event.market_id, event.account)
        row["cancelled_qty"] = event.cancelled_qty
        row["cancel_reason"] = int(event.reason)
        _latest(row, n, event.ts, 0)

    def _rejected(self, n: int, event: Rejected) -> None:
        if event.command != "PlaceOrder" or not event.order_id or event.reason is RejectReason.DUPLICATE_ORDER_ID:
            return
        row = self._order(event.order_id, event.market_id, event.account)
        row["reject_reason"] = int(event.reason)
        row["created_ts"] = event.ts
        _latest(row, n, event.ts, 0)

    # ------------------------------------------------------------------ markets

    def _market(self, market_id: str) -> Row:
        row = self.markets.get(market_id)
        if row is None:
            row = self.markets[market_id] = dict.fromkeys(("market_id", *MARKET_ONCE, *MARKET_LATEST))
            row.update(market_id=market_id, last_n=0)
        return row

    def _market_created(self, n: int, event: MarketCreated) -> None:
        row = self._market(event.market_id)
        row.update(
            scheme=int(event.scheme),
            min_tick=event.min_tick,
            max_tick=event.max_tick,
            max_qty=event.max_qty,
            stp=int(event.stp),
            created_ts=event.ts,
            opens_at=event.opens_at or None,
            closes_at=event.closes_at or None,
            fees=None if event.fees is None else msgspec.json.encode(event.fees).decode(),
        )
        info = event.info
        if info is not None:
            outcomes = msgspec.json.encode(list(info.outcomes)).decode()
            row.update(
                title=info.title, question=info.question, rules=info.rules, category=info.category, outcomes=outcomes
            )
        if n > row["last_n"]:
            row.update(state=int(MarketState.OPEN), outcome="", updated_ts=event.ts, last_n=n)

    def _market_changed(self, n: int, event: MarketStateChanged) -> None:
        row = self._market(event.market_id)
        if n > row["last_n"]:
            row.update(state=int(event.state), outcome=event.outcome, updated_ts=event.ts, last_n=n)

    # ------------------------------------------------------------------ money

    def _balance(self, n: int, event: BalanceChanged) -> None:
        account = event.account
        key = shard_id(self.shard, n)
        self.balance_history[key] = {
            "n": key,
            "account": account,
            "total": event.total,
            "reserved": event.reserved,
            "reason": int(event.reason),
            "market_id": event.market_id,
            "ts": event.ts,
        }
        current = self.balances.get(account)
        if current is None or n > current["last_n"]:
            self.balances[account] = {
                "account": account,
                "shard": self.shard,
                "total": event.total,
                "reserved": event.reserved,
                "updated_ts": event.ts,
                "last_n": n,
            }

    def _position(self, n: int, event: PositionChanged) -> None:
        key = (event.account, event.market_id)
        values = {
            "account": event.account,
            "market_id": event.market_id,
            "yes": event.yes,
            "no": event.no,
            "committed": event.committed,
            "stake": event.stake,
            "liability": event.liability,
        }
        number = shard_id(self.shard, n)
        self.position_history[number] = {"n": number, **values, "reason": int(event.reason), "ts": event.ts}
        current = self.positions.get(key)
        if current is None or n > current["last_n"]:
            self.positions[key] = {**values, "updated_ts": event.ts, "last_n": n}

    # ------------------------------------------------------------------ after the trades are in

    def order_rows(self, inserted_trades: set[int]) -> list[Row]:
        """The order rows, sorted by id, ``filled`` counting only ``inserted_trades``."""
        filled: dict[int, int] = dict.fromkeys(self.orders, 0)
        for trade_id in inserted_trades:
            trade = self.trades[trade_id]
            filled[trade["maker_order_id"]] += trade["qty"]
            filled[trade["taker_order_id"]] += trade["qty"]
        rows = []
        for order_id in sorted(self.orders):
            row = self.orders[order_id]
            row["filled"] = filled[order_id]  # set, not added to: a retried transaction asks again
            row["status"] = order_status(
                rejected=row["reject_reason"] is not None,
                cancelled=row["cancel_reason"] is not None,
                filled=row["filled"],
                remaining=row["remaining"],
            )
            rows.append(row)
        return rows


def _stated(row: Row, n: int, price: int, qty: int) -> None:
    if row["price_n"] is None or n > row["price_n"]:
        row["price"], row["qty"], row["price_n"] = price, qty, n


def _latest(row: Row, n: int, ts: int, remaining: int) -> None:
    if n > row["last_n"]:
        row["remaining"] = remaining
        row["updated_ts"] = ts
        row["last_n"] = n


class PersistenceSink(FoldingSink[Fold]):
    """Markets, orders, trades, balances and positions (see the module docstring); a
    :class:`~matchbox.consumers.runner.Sink`."""

    def __init__(self, engine: sa.Engine, group: str = "persistence", shard: int = 0) -> None:
        super().__init__(engine, group, shard)
        dialect = engine.dialect
        self._trades = NewRows(dialect, trades, "trade_id")
        self._orders = RowWriter(dialect, _orders_upsert(insert(dialect.name, orders)), orders)
        self._markets = RowWriter(dialect, _markets_upsert(insert(dialect.name, markets)), markets)
        self._balances = _latest_writer(dialect, balances, ["account", "shard"], BALANCE_LATEST)
        self._positions = _latest_writer(dialect, positions, ["account", "market_id"], POSITION_LATEST)
        self._balance_history = _once_writer(dialect, balance_history)
        self._position_history = _once_writer(dialect, position_history)

    def fold(self) -> Fold:
        return Fold(self.shard)

    def write(self, connection: sa.Connection, fold: Fold) -> None:
        write_sorted(connection, self._markets, fold.markets)
        inserted: set[int] = set()
        if fold.trades:
            inserted = self._trades.insert(connection, [fold.trades[key] for key in sorted(fold.trades)])
        if fold.orders:
            self._orders.write(connection, fold.order_rows(inserted))
        write_sorted(connection, self._balances, fold.balances)
        write_sorted(connection, self._balance_history, fold.balance_history)
        write_sorted(connection, self._positions, fold.positions)
        write_sorted(connection, self._position_history, fold.position_history)


def _latest_writer(dialect: sa.Dialect, table: sa.Table, key: list[str], latest: Sequence[str]) -> RowWriter:
    """An upsert that takes the incoming ``latest`` columns only from a newer event (by ``last_n``)."""
    statement = insert(dialect.name, table)
    incoming = statement.excluded
    upsert = statement.on_conflict_do_update(
        index_elements=key,
        set_={column: incoming[column] for column in latest},
        where=incoming.last_n > table.c.last_n,
    )
    return RowWriter(dialect, upsert, table)


def _once_writer(dialect: sa.Dialect, table: sa.Table) -> RowWriter:
    """An insert of the rows whose primary key (the event's ``n``) is not there yet."""
    return RowWriter(dialect, insert(dialect.name, table).on_conflict_do_nothing(index_elements=["n"]), table)


def _markets_upsert(statement: Insert) -> Insert:
    return statement.on_conflict_do_update(
        index_elements=["market_id"],
        set_={
            **{column: first_known(statement, markets, column) for column in MARKET_ONCE},
            **{column: newer(statement, markets, column) for column in MARKET_LATEST},
        },
    )


def _orders_upsert(statement: Insert) -> Insert:
    merged: dict[str, sa.ColumnElement[Any]] = {
        **{column: first_known(statement, orders, column) for column in ORDER_ONCE},
        **{column: newer(statement, orders, column) for column in ORDER_LATEST},
        **{column: newer_stated(statement, orders, column) for column in ORDER_STATED},
        "filled": orders.c.filled + statement.excluded.filled,
    }
    merged["status"] = _status_sql(merged)
    return statement.on_conflict_do_update(index_elements=["order_id"], set_=merged)


def _status_sql(merged: dict[str, sa.ColumnElement[Any]]) -> sa.ColumnElement[Any]:
    """:func:`matchbox.engine.rules.order_status` over the merged values of an upsert, in SQL: the
    table keeps no flag for an order whose placement the engine has not told to its end, so
    ``told`` is always true here (tests/test_status_sql.py runs both over every input)."""
    filled = merged["filled"]
    zero: sa.ColumnElement[int] = sa.literal_column("0")  # literal SQL: see RowWriter
    return sa.case(
        (merged["reject_reason"].is_not(None), sa.literal_column(f"'{OrderStatus.REJECTED}'")),
        (merged["cancel_reason"].is_not(None), sa.literal_column(f"'{OrderStatus.CANCELLED}'")),
        (sa.and_(filled > zero, merged["remaining"] == zero), sa.literal_column(f"'{OrderStatus.FILLED}'")),
        (filled > zero, sa.literal_column(f"'{OrderStatus.PARTIALLY_FILLED}'")),
        else_=sa.literal_column(f"'{OrderStatus.OPEN}'"),
    )
