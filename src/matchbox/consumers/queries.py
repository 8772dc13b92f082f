"""The read side of the consumers' tables, for the HTTP API: candles, market statistics (with
the top of book), and an account's trades, orders, balance and positions.

Plain synchronous functions over an Engine; results are frozen dataclasses. Prices are ticks and
quantities units, money minor units, as everywhere below the API, which converts them to cents or
odds.

The account lists are newest first and paged by key: a page holds at most ``limit`` rows whose
key (trade id, order id, event number) is below ``before``; the next page passes the last row's
key as ``before``. Rows that arrive in between never shift a page, as an offset would.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Literal, TypeVar

import sqlalchemy as sa

from matchbox.consumers import schema
from matchbox.consumers.schema import (
    CANDLE_INTERVALS_MS,
    WALL_CLOCK_COLUMNS,
    analytics_book_orders,
    analytics_markets,
    balance_history,
    balances,
    orders,
    position_history,
    positions,
    trades,
)
from matchbox.engine.ids import SHARD_SHIFT
from matchbox.engine.rules import LIVE_STATUSES
from matchbox.engine.types import BalanceReason, CancelReason, OrderKind, OrderStatus, RejectReason, Side, TimeInForce

DAY_MS = 86_400_000
E = TypeVar("E", bound=IntEnum)


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


# --------------------------------------------------------------------------- accounts

TimeRange = tuple[int | None, int | None]  # [start, end) in engine time (ns); None: open on that side
OrderFilter = Literal["open", "closed", "all"]  # which of an account's orders: live ones, finished ones, or both


@dataclass(frozen=True, slots=True)
class AccountTrade:
    """A trade seen from one of its two accounts."""

    trade_id: int
    market_id: str
    price: int  # the maker's tick
    qty: int
    side: Side  # this account's side: the taker's side if it took, the other one if it made
    role: Literal["maker", "taker"]
    order_id: int  # this account's order
    ts: int
    fee: int = 0  # what this account paid for it


@dataclass(frozen=True, slots=True)
class AccountOrder:
    """An order's row. Fields an event states once are None until it is folded (and on a rejected
    order: a rejection carries none of them)."""

    order_id: int
    market_id: str
    status: OrderStatus
    side: Side | None
    price: int | None  # the limit tick; a market order's worst acceptable tick
    qty: int | None
    filled: int
    remaining: int
    kind: OrderKind | None
    tif: TimeInForce | None
    post_only: bool | None
    expires_at: int | None
    lapse: bool | None  # cancelled at a suspension of its market (null: stored before it was kept)
    cancelled_qty: int | None
    cancel_reason: CancelReason | None
    reject_reason: RejectReason | None
    created_ts: int | None
    updated_ts: int


@dataclass(frozen=True, slots=True)
class Balance:
    account: str
    total: int  # cash owned, minor units
    reserved: int  # of it, held for resting orders
    updated_ts: int
    last_n: int  # the event number of the last change

    @property
    def free(self) -> int:
        return self.total - self.reserved


@dataclass(frozen=True, slots=True)
class BalanceEntry:
    """One balance change: the values after it, and how much ``total`` moved."""

    n: int
    ts: int
    total: int
    reserved: int
    change: int  # total minus the account's previous total (0 before the first change)
    reason: BalanceReason
    market_id: str  # "" for deposits and withdrawals


@dataclass(frozen=True, slots=True)
class Position:
    """An account's position in a collateral market (see ``PositionChanged`` for the fields)."""

    market_id: str
    yes: int
    no: int
    committed: int
    stake: int
    liability: int
    updated_ts: int
    last_n: int


@dataclass(frozen=True, slots=True)
class PositionEntry:
    n: int
    ts: int
    market_id: str
    yes: int
    no: int
    committed: int
    stake: int
    liability: int
    reason: BalanceReason


def _check_limit(limit: int) -> None:
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")


def account_trades(
    engine: sa.Engine,
    account: str,
    *,
    before: int | None = None,
    limit: int = 100,
    market_id: str | None = None,
    since: TimeRange = (None, None),
) -> list[AccountTrade]:
    """The account's trades, as maker or taker, newest ``trade_id`` first, ids below ``before``
    (in ``market_id`` only, if given; traded within ``since``, if given).

    Each side is read through its own index and cut at ``limit`` before the two are merged. An
    account is never on both sides of one trade (self-trade prevention); if it were, the trade
    would come twice, once per role.
    """
    _check_limit(limit)
    t = trades.c
    sides = []
    for role, mine, order_id, fee in (
        ("maker", t.maker_account, t.maker_order_id, t.maker_fee),
        ("taker", t.taker_account, t.taker_order_id, t.taker_fee),
    ):
        query = sa.select(
            t.trade_id,
            t.market_id,
            t.price,
            t.qty,
            t.taker_side,
            sa.literal(role).label("role"),
            order_id.label("order_id"),
            t.ts,
            fee.label("fee"),
        ).where(mine == account, *_trade_filters(before, market_id, since))
        sides.append(query.order_by(t.trade_id.desc()).limit(limit).subquery())
    merged = sa.union_all(*(sa.select(side) for side in sides)).subquery()
    query = sa.select(merged).order_by(merged.c.trade_id.desc(), merged.c.role).limit(limit)
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    return [
        AccountTrade(
            trade_id=trade_id,
            market_id=market_id,
            price=price,
            qty=qty,
            side=Side(taker_side) if role == "taker" else Side(1 - taker_side),
            role=role,
            order_id=order_id,
            ts=ts,
            fee=fee or 0,
        )
        for trade_id, market_id, price, qty, taker_side, role, order_id, ts, fee in rows
    ]


@dataclass(frozen=True, slots=True)
class MarketTrade:
    trade_id: int
    price: int  # the maker's tick
    qty: int
    taker_side: Side
    maker_order_id: int
    taker_order_id: int
    ts: int


def market_trades(
    engine: sa.Engine,
    market_id: str,
    *,
    before: int | None = None,
    limit: int = 100,
    since: TimeRange = (None, None),
) -> list[MarketTrade]:
    """A market's trades, newest ``trade_id`` first, ids below ``before``, traded within ``since``.

    A market's trade ids grow with its (journal) time, so a time range is first made the range of
    ids it spans, each end found through the ``(market_id, ts)`` index; the page is then read
    through ``(market_id, trade_id)``: never a walk through the market's whole history."""
    _check_limit(limit)
    t = trades.c
    start, end = since
    with engine.connect() as connection:
        bounds = []
        if start is not None:
            first = sa.select(t.trade_id).where(t.market_id == market_id, t.ts >= start).order_by(t.ts, t.trade_id)
            low = connection.execute(first.limit(1)).scalar()
            if low is None:
                return []
            bounds.append(t.trade_id >= low)
        if end is not None:
            last = (
                sa.select(t.trade_id)
                .where(t.market_id == market_id, t.ts < end)
                .order_by(t.ts.desc(), t.trade_id.desc())
            )
            high = connection.execute(last.limit(1)).scalar()
            if high is None:
                return []
            bounds.append(t.trade_id <= high)
        query = sa.select(t.trade_id, t.price, t.qty, t.taker_side, t.maker_order_id, t.taker_order_id, t.ts)
        query = query.where(t.market_id == market_id, *bounds, *_trade_filters(before, None, since))
        rows = connection.execute(query.order_by(t.trade_id.desc()).limit(limit)).all()
    return [MarketTrade(r[0], r[1], r[2], Side(r[3]), r[4], r[5], r[6]) for r in rows]


def has_trade(engine: sa.Engine, trade_id: int) -> bool:
    """Whether the trade is stored."""
    with engine.connect() as connection:
        return connection.execute(sa.select(trades.c.trade_id).where(trades.c.trade_id == trade_id)).first() is not None


def _trade_filters(before: int | None, market_id: str | None, since: TimeRange) -> list[sa.ColumnElement[bool]]:
    t = trades.c
    start, end = since
    found = [] if before is None else [t.trade_id < before]
    found += [] if market_id is None else [t.market_id == market_id]
    found += [] if start is None else [t.ts >= start]
    found += [] if end is None else [t.ts < end]
    return found


def account_orders(
    engine: sa.Engine,
    account: str,
    *,
    state: OrderFilter = "all",
    before: int | None = None,
    limit: int = 100,
    market_id: str | None = None,
) -> list[AccountOrder]:
    """The account's orders, newest ``order_id`` first, ids below ``before`` (in ``market_id`` only, if given).

    ``open``: the live statuses (``LIVE_STATUSES``: still on the book); ``closed``: the others;
    ``all``: both. Raises ValueError for another filter.
    """
    _check_limit(limit)
    o = orders.c
    query = sa.select(
        o.order_id,
        o.market_id,
        o.status,
        o.side,
        o.price,
        o.qty,
        o.filled,
        o.remaining,
        o.kind,
        o.tif,
        o.post_only,
        o.expires_at,
        o.lapse,
        o.cancelled_qty,
        o.cancel_reason,
        o.reject_reason,
        o.created_ts,
        o.updated_ts,
    ).where(o.account == account)
    if state == "open":
        query = query.where(o.status.in_(LIVE_STATUSES))
    elif state == "closed":
        query = query.where(o.status.not_in(LIVE_STATUSES))
    elif state != "all":
        raise ValueError(f"unknown order state {state!r}: open, closed or all")
    if before is not None:
        query = query.where(o.order_id < before)
    if market_id is not None:
        query = query.where(o.market_id == market_id)
    query = query.order_by(o.order_id.desc()).limit(limit)
    with engine.connect() as connection:
        return [_account_order(row._mapping) for row in connection.execute(query)]


def _account_order(r: sa.RowMapping) -> AccountOrder:
    return AccountOrder(
        order_id=r["order_id"],
        market_id=r["market_id"],
        status=OrderStatus(r["status"]),
        side=_enum(Side, r["side"]),
        price=r["price"],
        qty=r["qty"],
        filled=r["filled"],
        remaining=r["remaining"],
        kind=_enum(OrderKind, r["kind"]),
        tif=_enum(TimeInForce, r["tif"]),
        post_only=r["post_only"],
        expires_at=r["expires_at"],
        lapse=r["lapse"],
        cancelled_qty=r["cancelled_qty"],
        cancel_reason=_enum(CancelReason, r["cancel_reason"]),
        reject_reason=_enum(RejectReason, r["reject_reason"]),
        created_ts=r["created_ts"],
        updated_ts=r["updated_ts"],
    )


def _enum(kind: type[E], value: int | None) -> E | None:
    return None if value is None else kind(value)


def account_balance(engine: sa.Engine, account: str) -> Balance | None:
    """The account's current cash on every shard together (``last_n``: the newest of the shards'
    own numbers); None if no money event has named it."""
    b = balances.c
    query = (
        sa.select(
            b.account, sa.func.sum(b.total), sa.func.sum(b.reserved), sa.func.max(b.updated_ts), sa.func.max(b.last_n)
        )
        .where(b.account == account)
        .group_by(b.account)
    )
    with engine.connect() as connection:
        row = connection.execute(query).one_or_none()
    return None if row is None else Balance(row[0], *(int(value) for value in row[1:]))


def account_positions(engine: sa.Engine, account: str, *, include_empty: bool = False) -> list[Position]:
    """The account's positions, the most recently changed first (then by market id).

    A position emptied (settled, voided, closed out) keeps its row, all zeros; it is left out
    unless ``include_empty``.
    """
    p = positions.c
    query = sa.select(p.market_id, p.yes, p.no, p.committed, p.stake, p.liability, p.updated_ts, p.last_n).where(
        p.account == account
    )
    if not include_empty:
        query = query.where(sa.or_(p.yes != 0, p.no != 0, p.committed != 0, p.stake != 0, p.liability != 0))
    query = query.order_by(p.last_n.desc(), p.market_id)
    with engine.connect() as connection:
        return [Position(*row) for row in connection.execute(query)]


def account_balance_history(
    engine: sa.Engine, account: str, *, before: int | None = None, limit: int = 100
) -> list[BalanceEntry]:
    """The account's balance changes, newest event number ``n`` first, ``n`` below ``before``.

    ``n`` carries its shard in its high bits (as ids do: shard 0's are the engine's own numbers),
    so with several shards the pages go shard by shard, newest first in each. ``change`` is read
    from the account's previous row on the same shard (through its index), so it is exact once
    every earlier change has been folded.
    """
    _check_limit(limit)
    h = balance_history.c
    earlier = balance_history.alias("earlier")
    shard_start = h.n - h.n % (1 << SHARD_SHIFT)
    previous = (
        sa.select(earlier.c.total)
        .where(earlier.c.account == h.account, earlier.c.n < h.n, earlier.c.n >= shard_start)
        .order_by(earlier.c.n.desc())
        .limit(1)
        .scalar_subquery()
    )
    query = sa.select(h.n, h.ts, h.total, h.reserved, h.total - sa.func.coalesce(previous, 0), h.reason, h.market_id)
    query = query.where(h.account == account)
    if before is not None:
        query = query.where(h.n < before)
    query = query.order_by(h.n.desc()).limit(limit)
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    return [
        BalanceEntry(n, ts, total, reserved, int(change), BalanceReason(reason), market_id)
        for n, ts, total, reserved, change, reason, market_id in rows
    ]


def account_position_history(
    engine: sa.Engine,
    account: str,
    *,
    market_id: str | None = None,
    before: int | None = None,
    limit: int = 100,
) -> list[PositionEntry]:
    """The account's position changes (in one market if ``market_id``), newest ``n`` first, below ``before``."""
    _check_limit(limit)
    h = position_history.c
    query = sa.select(h.n, h.ts, h.market_id, h.yes, h.no, h.committed, h.stake, h.liability, h.reason).where(
        h.account == account
    )
    if market_id is not None:
        query = query.where(h.market_id == market_id)
    if before is not None:
        query = query.where(h.n < before)
    query = query.order_by(h.n.desc()).limit(limit)
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    return [PositionEntry(*row[:-1], reason=BalanceReason(row[-1])) for row in rows]


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
