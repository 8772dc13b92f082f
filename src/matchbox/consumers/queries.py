"""The read side of the consumers' tables, for the HTTP API: candles, market statistics, depth.

Plain synchronous functions over an Engine; results are frozen dataclasses. Prices are ticks and
quantities units, as everywhere below the API, which converts them to cents or odds.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from matchbox.consumers import schema
from matchbox.consumers.schema import CANDLE_INTERVALS_MS, WALL_CLOCK_COLUMNS, analytics_book_orders, analytics_markets
from matchbox.engine.types import Side

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class Candle:
    start_ms: int  # the candle covers [start_ms, start_ms + its interval)
    open: int
    high: int
    low: int
    close: int
    volume: int
    trade_count: int
    notional: int  # sum of price * qty over the candle's trades

    @property
    def vwap(self) -> float:
        return self.notional / self.volume


@dataclass(frozen=True, slots=True)
class Level:
    price: int
    qty: int
    orders: int


@dataclass(frozen=True, slots=True)
class MarketStats:
    market_id: str
    last_price: int | None
    last_qty: int | None
    last_trade_ms: int | None
    # over the one-minute candles that start in the last 24 hours
    volume_24h: int
    trades_24h: int
    notional_24h: int
    best_bid: int | None
    best_ask: int | None

    @property
    def vwap_24h(self) -> float | None:
        return self.notional_24h / self.volume_24h if self.volume_24h else None

    @property
    def spread(self) -> int | None:
        if self.best_bid is None or self.best_ask is None:
            return None
        return self.best_ask - self.best_bid

    @property
    def mid(self) -> float | None:
        if self.best_bid is None or self.best_ask is None:
            return None
        return (self.best_bid + self.best_ask) / 2


def candles(
    engine: sa.Engine,
    market_id: str,
    interval: str,
    start_ms: int | None = None,
    end_ms: int | None = None,
    limit: int = 500,
) -> list[Candle]:
    """A market's candles of ``interval`` starting in [start_ms, end_ms), ascending, at most ``limit``.

    Without ``start_ms``, the latest ``limit`` candles before ``end_ms`` (or overall). Raises
    ValueError for an interval other than 1s, 1m, 1h, 1d. Minutes with no trade have no candle.
    """
    if interval not in CANDLE_INTERVALS_MS:
        raise ValueError(f"unknown interval {interval!r}: one of {', '.join(CANDLE_INTERVALS_MS)}")
    c = schema.candles.c
    query = sa.select(c.start_ms, c.open, c.high, c.low, c.close, c.volume, c.trade_count, c.notional).where(
        c.market_id == market_id, c.interval == interval
    )
    if start_ms is not None:
        query = query.where(c.start_ms >= start_ms)
    if end_ms is not None:
        query = query.where(c.start_ms < end_ms)
    newest_first = start_ms is None
    query = query.order_by(c.start_ms.desc() if newest_first else c.start_ms).limit(limit)
    with engine.connect() as connection:
        found = [Candle(*row) for row in connection.execute(query)]
    return found[::-1] if newest_first else found


def stats(engine: sa.Engine, market_id: str, now_ms: int) -> MarketStats | None:
    """The market's last trade, 24-hour volume and VWAP, and top of book; None if it is unknown."""
    m = analytics_markets.c
    c = schema.candles.c
    day = sa.select(
        sa.func.coalesce(sa.func.sum(c.volume), 0),
        sa.func.coalesce(sa.func.sum(c.trade_count), 0),
        sa.func.coalesce(sa.func.sum(c.notional), 0),
    ).where(c.market_id == market_id, c.interval == "1m", c.start_ms > now_ms - DAY_MS, c.start_ms <= now_ms)
    query = sa.select(
        m.last_price,
        m.last_qty,
        m.last_trade_ts,
        _best(market_id, Side.BUY).scalar_subquery(),
        _best(market_id, Side.SELL).scalar_subquery(),
    ).where(m.market_id == market_id)
    with engine.connect() as connection:
        market = connection.execute(query).one_or_none()
        if market is None:
            return None
        volume, count, notional = connection.execute(day).one()
    last_price, last_qty, last_trade_ts, best_bid, best_ask = market
    return MarketStats(
        market_id=market_id,
        last_price=last_price,
        last_qty=last_qty,
        last_trade_ms=None if last_trade_ts is None else last_trade_ts // 1_000_000,
        volume_24h=int(volume),
        trades_24h=int(count),
        notional_24h=int(notional),
        best_bid=best_bid,
        best_ask=best_ask,
    )


def _best(market_id: str, side: Side) -> sa.Select[tuple[int | None]]:
    o = analytics_book_orders.c
    best = sa.func.max(o.price) if side is Side.BUY else sa.func.min(o.price)
    return sa.select(best).where(o.market_id == market_id, o.side == int(side), o.remaining > 0)


def depth(engine: sa.Engine, market_id: str, max_levels: int = 10) -> tuple[list[Level], list[Level]]:
    """(bids highest first, asks lowest first): price, total remaining, order count per level."""
    o = analytics_book_orders.c
    sides: list[list[Level]] = []
    with engine.connect() as connection:
        for side in (Side.BUY, Side.SELL):
            query = (
                sa.select(o.price, sa.func.sum(o.remaining), sa.func.count())
                .where(o.market_id == market_id, o.side == int(side), o.remaining > 0)
                .group_by(o.price)
                .order_by(o.price.desc() if side is Side.BUY else o.price)
                .limit(max_levels)
            )
            sides.append([Level(price, int(qty), count) for price, qty, count in connection.execute(query)])
    return sides[0], sides[1]


def table_rows(engine: sa.Engine, table: str, ignore: Collection[str] = WALL_CLOCK_COLUMNS) -> list[dict[str, Any]]:
    """Every row of one of the consumers' tables, ordered by its primary key, without ``ignore``'s columns.

    For comparing two databases (a live build and a replay): everything but the wall-clock
    columns must be equal.
    """
    schema_table = schema.metadata.tables[table]
    columns = [column for column in schema_table.columns if column.name not in ignore]
    query = sa.select(*columns).order_by(*schema_table.primary_key.columns)
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query)]
