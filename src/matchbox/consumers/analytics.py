"""The analytics sink: OHLCV candles, the last trade, and the resting orders behind the top of book.

Per market it keeps candles of 1 s, 1 m, 1 h and 1 d (open, high, low, close, volume, trade
count, and the sum of price times quantity, so a candle's VWAP is exact), the last trade, and every
order that rested with its side, price and remaining quantity; the best bid and ask of ``GET
/markets/{id}/stats`` are read from those (:func:`~matchbox.consumers.queries.stats`). The book
clients read is the API's own, folded from the event stream; these rows give the statistics
their top of book from the same transaction as their last trade and volume. A trade falls in the
candle of its ``ts`` floored to the interval, in milliseconds.

Exactly once, the same way as :mod:`~matchbox.consumers.persistence`, with one table of its own
for the additive part:

- Candles add volumes and counts, so a trade must be counted once. The sink keeps the ids of the
  trades it has counted (``analytics_trades``), inserts a batch's trades there with ON CONFLICT
  DO NOTHING and RETURNING, and folds into the candles only those this transaction inserted.
  Skipping every entry at or below the tracking row would be cheaper, but it is not sound: the
  tracking row is the *maximum* applied id, and two consumers of the group may commit batches
  out of order (one consumer's later batch first, then a redelivered or reclaimed earlier
  one), so an entry below the tracking row may never have been applied. The table of trade ids
  is the proof the tracking row cannot give.
- A candle's open and close are the prices of its lowest and highest trade ids, high and low are
  maxima and minima: none of these depend on the order in which trades arrive.
- The last trade is last-writer-wins by trade id.
- A resting order's remaining quantity is last-writer-wins by the event sequence number ``n``
  (OrderRested sets it, a fill as maker, a reduction, an amend or a cancellation to zero): the
  newest event wins whatever the order of arrival. Its side is set once; its price by the newest
  OrderRested (an amended order rests again at its new price), by ``price_n``. So the book tables need
  no de-duplication at all, and there is no in-memory state to lose or reload: each batch reads
  nothing and writes upserts only.

The book rows of finished orders are kept (remaining 0): dropping them would let an older event
applied late bring the order back.
"""

from __future__ import annotations

from typing import Any

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
    CANDLE_INTERVALS_MS,
    analytics_book_orders,
    analytics_markets,
    analytics_trades,
    candles,
)
from matchbox.engine.types import (
    CancelReason,
    MarketCreated,
    OrderAmended,
    OrderCancelled,
    OrderReduced,
    OrderRested,
    Side,
    TradeExecuted,
)

LAST_TRADE = ("last_trade_id", "last_price", "last_qty", "last_trade_ts")


class AnalyticsFold:
    """One batch folded in memory: trades to count, last trades, resting orders."""

    def __init__(self) -> None:
        self.trades: dict[int, tuple[TradeExecuted, int]] = {}  # trade id -> (event, n)
        self.markets: dict[str, Row] = {}
        self.book: dict[int, Row] = {}

    def add(self, item: Item) -> None:
        n = item.n
        match item.event:
            case TradeExecuted() as event:
                self._trade(n, event)
            case OrderRested(order_id=order_id, market_id=market_id, side=side, price=price) as event:
                self._book_order(order_id, market_id, n, event.remaining, side, price)
            case OrderReduced(order_id=order_id, market_id=market_id) as event:
                self._book_order(order_id, market_id, n, event.remaining)
            case OrderAmended(order_id=order_id, market_id=market_id):  # off the book; it may rest again
                self._book_order(order_id, market_id, n, 0)
            case OrderCancelled(order_id=order_id, market_id=market_id, reason=reason):
                if reason is not CancelReason.UNFILLED:  # an unfilled remainder never rested
                    self._book_order(order_id, market_id, n, 0)
            case MarketCreated(market_id=market_id):
                self._market(market_id)

    def _market(self, market_id: str) -> Row:
        row = self.markets.get(market_id)
        if row is None:
            row = self.markets[market_id] = dict.fromkeys(("market_id", *LAST_TRADE))
            row["market_id"] = market_id
        return row

    def _trade(self, n: int, event: TradeExecuted) -> None:
        self.trades[event.trade_id] = (event, n)
        row = self._market(event.market_id)
        if row["last_trade_id"] is None or event.trade_id > row["last_trade_id"]:
            row.update(last_trade_id=event.trade_id, last_price=event.price, last_qty=event.qty, last_trade_ts=event.ts)
        maker_side = Side.SELL if event.taker_side is Side.BUY else Side.BUY
        self._book_order(event.maker_order_id, event.market_id, n, event.maker_remaining, maker_side, event.price)

    def _book_order(
        self, order_id: int, market_id: str, n: int, remaining: int, side: Side | None = None, price: int | None = None
    ) -> None:
        row = self.book.get(order_id)
        if row is None:
            row = self.book[order_id] = {
                "order_id": order_id,
                "market_id": market_id,
                "side": None,
                "price": None,
                "price_n": None,
                "remaining": remaining,
                "last_n": n,
            }
        elif n > row["last_n"]:
            row["remaining"] = remaining
            row["last_n"] = n
        if side is not None and (row["price_n"] is None or n > row["price_n"]):  # where it rests now
            row["side"], row["price"], row["price_n"] = int(side), price, n

    def trade_rows(self) -> list[Row]:
        return [
            {"trade_id": trade_id, "market_id": event.market_id, "n": n}
            for trade_id, (event, n) in sorted(self.trades.items())
        ]

    def candle_rows(self, inserted_trades: set[int]) -> list[Row]:
        """The candles of the trades this transaction counted, one row per (market, interval, start)."""
        rows: dict[tuple[str, str, int], Row] = {}
        for trade_id in sorted(inserted_trades):
            event = self.trades[trade_id][0]
            price = event.price
            qty = event.qty
            ms = event.ts // 1_000_000
            for interval, length_ms in CANDLE_INTERVALS_MS.items():
                key = (event.market_id, interval, ms - ms % length_ms)
                row = rows.get(key)
                if row is None:
                    rows[key] = {
                        "market_id": key[0],
                        "interval": interval,
                        "start_ms": key[2],
                        "open": price,
                        "high": price,
                        "low": price,
                        "close": price,
                        "volume": qty,
                        "trade_count": 1,
                        "notional": price * qty,
                        "first_trade_id": trade_id,
                        "last_trade_id": trade_id,
                    }
                    continue
                if price > row["high"]:
                    row["high"] = price
                if price < row["low"]:
                    row["low"] = price
                row["close"] = price
                row["last_trade_id"] = trade_id
                row["volume"] += qty
                row["trade_count"] += 1
                row["notional"] += price * qty
        return [rows[key] for key in sorted(rows)]


class AnalyticsSink(FoldingSink[AnalyticsFold]):
    """Candles, last trades and resting orders (see the module docstring); a :class:`~.runner.Sink`."""

    def __init__(self, engine: sa.Engine, group: str = "analytics", shard: int = 0) -> None:
        super().__init__(engine, group, shard)
        dialect = engine.dialect
        self._trades = NewRows(dialect, analytics_trades, "trade_id")
        self._candles = RowWriter(dialect, _candles_upsert(insert(dialect.name, candles)), candles)
        self._markets = RowWriter(dialect, _markets_upsert(insert(dialect.name, analytics_markets)), analytics_markets)
        book = analytics_book_orders
        self._book = RowWriter(dialect, _book_upsert(insert(dialect.name, book)), book)

    def fold(self) -> AnalyticsFold:
        return AnalyticsFold()

    def write(self, connection: sa.Connection, fold: AnalyticsFold) -> None:
        write_sorted(connection, self._markets, fold.markets)
        if fold.trades:
            inserted = self._trades.insert(connection, fold.trade_rows())
            if inserted:
                self._candles.write(connection, fold.candle_rows(inserted))
        write_sorted(connection, self._book, fold.book)


def _markets_upsert(statement: Insert) -> Insert:
    stored = analytics_markets.c
    incoming = statement.excluded
    newer_trade = sa.or_(stored.last_trade_id.is_(None), incoming.last_trade_id > stored.last_trade_id)
    return statement.on_conflict_do_update(
        index_elements=["market_id"],
        set_={column: sa.case((newer_trade, incoming[column]), else_=stored[column]) for column in LAST_TRADE},
    )


def _book_upsert(statement: Insert) -> Insert:
    table = analytics_book_orders
    return statement.on_conflict_do_update(
        index_elements=["order_id"],
        set_={
            "side": first_known(statement, table, "side"),
            "price": newer_stated(statement, table, "price"),
            "price_n": newer_stated(statement, table, "price_n"),
            "remaining": newer(statement, table, "remaining"),
            "last_n": newer(statement, table, "last_n"),
        },
    )


def _candles_upsert(statement: Insert) -> Insert:
    stored = candles.c
    incoming = statement.excluded
    earlier = incoming.first_trade_id < stored.first_trade_id
    later = incoming.last_trade_id > stored.last_trade_id
    merged: dict[str, Any] = {
        "open": sa.case((earlier, incoming.open), else_=stored.open),
        "first_trade_id": sa.case((earlier, incoming.first_trade_id), else_=stored.first_trade_id),
        "close": sa.case((later, incoming.close), else_=stored.close),
        "last_trade_id": sa.case((later, incoming.last_trade_id), else_=stored.last_trade_id),
        "high": sa.case((incoming.high > stored.high, incoming.high), else_=stored.high),
        "low": sa.case((incoming.low < stored.low, incoming.low), else_=stored.low),
        "volume": stored.volume + incoming.volume,
        "trade_count": stored.trade_count + incoming.trade_count,
        "notional": stored.notional + incoming.notional,
    }
    return statement.on_conflict_do_update(index_elements=["market_id", "interval", "start_ms"], set_=merged)
