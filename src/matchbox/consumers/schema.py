"""The consumers' tables, as SQLAlchemy Core ``Table`` objects (the migrations create them).

Conventions: prices are ticks and quantities units (integers); ``*_ts`` columns are event times
in nanoseconds (the ``ts`` of the causing command), ``*_ms`` columns milliseconds; the wire
enums (side, tif, kind, scheme, stp, market state, cancel, reject and balance reasons) are stored as
their integer values, as in ``docs/events.md``. ``last_n`` is the event sequence number of the
newest event folded into a row: the changing columns are last-writer-wins by it.

``ingested_at`` and ``consumer_offsets.updated_at`` are wall-clock times of the database, the
only columns allowed to differ between a live build and a replay (:data:`WALL_CLOCK_COLUMNS`).

There are no foreign keys between these tables on purpose: two consumers of one group may
commit batches in any order, so an order's row can be written before its market's.

Keep this file and ``migrations/versions`` in step: the tests compare them.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

metadata = sa.MetaData()

WALL_CLOCK_COLUMNS = frozenset({"ingested_at", "updated_at"})
# the candles kept for every market, by their length; a candle starts at a multiple of it
CANDLE_INTERVALS_MS = {"1s": 1_000, "1m": 60_000, "1h": 3_600_000, "1d": 86_400_000}

# An integer primary key: BIGINT on PostgreSQL, and on SQLite the rowid itself (INTEGER PRIMARY
# KEY, 64 bits there too), which saves a separate index on every insert.
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Name = sa.String(256)  # market ids, accounts, outcomes: the codec caps texts at 256 characters
StreamId = sa.String(64)
NOW = sa.text("CURRENT_TIMESTAMP")  # the database's clock, on insert


def _ingested_at() -> sa.Column[datetime]:
    return sa.Column("ingested_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW)


# --------------------------------------------------------------------------- tracking

consumer_offsets = sa.Table(
    "consumer_offsets",
    metadata,
    sa.Column("consumer_group", Name, primary_key=True),
    sa.Column("shard", sa.Integer, primary_key=True, autoincrement=False),  # whose stream: a group reads each
    sa.Column("last_id", StreamId, nullable=False),  # the newest stream id applied
    sa.Column("last_ms", sa.BigInteger, nullable=False),  # last_id as a sortable pair
    sa.Column("last_seq", sa.BigInteger, nullable=False),
    # the floor: every entry at or below it is stored (a contiguous low watermark); a recreated
    # group starts there. "0-0" for a row from before revision 0003 (nothing was known then).
    sa.Column("floor_id", StreamId, nullable=False),
    sa.Column("floor_ms", sa.BigInteger, nullable=False),
    sa.Column("floor_seq", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
)

# --------------------------------------------------------------------------- persistence

markets = sa.Table(
    "markets",
    metadata,
    sa.Column("market_id", Name, primary_key=True),
    # from MarketCreated (null until it is folded)
    sa.Column("scheme", sa.SmallInteger),
    sa.Column("min_tick", sa.BigInteger),
    sa.Column("max_tick", sa.BigInteger),
    sa.Column("max_qty", sa.BigInteger),
    sa.Column("stp", sa.SmallInteger),
    sa.Column("created_ts", sa.BigInteger),
    # what it is about, from its MarketCreated too (0007; null on rows written before)
    sa.Column("title", sa.String(256)),
    sa.Column("question", sa.Text),
    sa.Column("rules", sa.Text),
    sa.Column("category", sa.String(256)),
    sa.Column("outcomes", sa.Text),  # the outcome names, a JSON list
    sa.Column("opens_at", sa.BigInteger),  # engine time (ns); null: none
    sa.Column("closes_at", sa.BigInteger),
    sa.Column("fees", sa.Text),  # its fee schedule, a JSON object (null: it charges nothing)
    # last-writer-wins by last_n
    sa.Column("state", sa.SmallInteger, nullable=False),
    sa.Column("outcome", Name, nullable=False),
    sa.Column("updated_ts", sa.BigInteger, nullable=False),
    sa.Column("last_n", sa.BigInteger, nullable=False),
    _ingested_at(),
)

orders = sa.Table(
    "orders",
    metadata,
    sa.Column("order_id", Id, primary_key=True, autoincrement=False),
    sa.Column("market_id", Name, nullable=False),
    sa.Column("account", Name, nullable=False),
    # from OrderAccepted (null until it is folded, and on a rejected order)
    sa.Column("side", sa.SmallInteger),
    sa.Column("price", sa.BigInteger),  # a market order's worst acceptable tick; an amend's new price
    sa.Column("qty", sa.BigInteger),  # as accepted, or as last amended
    sa.Column("price_n", sa.BigInteger),  # the n of the event that last stated price and qty (0006)
    sa.Column("kind", sa.SmallInteger),
    sa.Column("tif", sa.SmallInteger),
    sa.Column("post_only", sa.Boolean),
    sa.Column("expires_at", sa.BigInteger),
    sa.Column("created_ts", sa.BigInteger),
    sa.Column("lapse", sa.Boolean),  # cancelled at a suspension (else it persists; null before 0007)
    # an OrderStatus value, by matchbox.engine.rules.order_status (persistence states it in SQL too)
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("filled", sa.BigInteger, nullable=False),  # the sum of the order's trades
    sa.Column("remaining", sa.BigInteger, nullable=False),  # last-writer-wins by last_n; 0 once done
    sa.Column("cancelled_qty", sa.BigInteger),
    sa.Column("cancel_reason", sa.SmallInteger),  # terminal: once set, never cleared
    sa.Column("reject_reason", sa.SmallInteger),  # terminal
    sa.Column("updated_ts", sa.BigInteger, nullable=False),
    sa.Column("last_n", sa.BigInteger, nullable=False),
    _ingested_at(),
    sa.Index("ix_orders_account", "account", "order_id"),
    sa.Index("ix_orders_market", "market_id", "order_id"),
)

trades = sa.Table(
    "trades",
    metadata,
    sa.Column("trade_id", Id, primary_key=True, autoincrement=False),
    sa.Column("market_id", Name, nullable=False),
    sa.Column("price", sa.BigInteger, nullable=False),  # the maker's price
    sa.Column("qty", sa.BigInteger, nullable=False),
    sa.Column("taker_side", sa.SmallInteger, nullable=False),  # the aggressor
    sa.Column("maker_order_id", sa.BigInteger, nullable=False),
    sa.Column("taker_order_id", sa.BigInteger, nullable=False),
    sa.Column("maker_account", Name, nullable=False),
    sa.Column("taker_account", Name, nullable=False),
    sa.Column("maker_fee", sa.BigInteger),  # what each side paid (0007; null on rows written before: none)
    sa.Column("taker_fee", sa.BigInteger),
    sa.Column("ts", sa.BigInteger, nullable=False),
    sa.Column("n", sa.BigInteger, nullable=False),
    sa.Column("stream_id", StreamId, nullable=False),
    _ingested_at(),
    sa.Index("ix_trades_market", "market_id", "trade_id"),
    sa.Index("ix_trades_market_ts", "market_id", "ts"),  # a time range's bounds (revision 0005)
    sa.Index("ix_trades_maker_account", "maker_account", "trade_id"),  # an account's trades
    sa.Index("ix_trades_taker_account", "taker_account", "trade_id"),
)

# Money in collateral markets (BalanceChanged, PositionChanged): the current row per (account,
# shard) and per (account, market), last-writer-wins by last_n, and every change once, keyed by
# its n with the shard in the high bits (matchbox.engine.ids.shard_id: shard 0's n as it is).
# Amounts are minor units; ``reason`` is the BalanceReason integer.

balances = sa.Table(
    "balances",
    metadata,
    sa.Column("account", Name, primary_key=True),
    sa.Column("shard", sa.Integer, primary_key=True, autoincrement=False),  # cash lives per shard
    sa.Column("total", sa.BigInteger, nullable=False),  # cash owned
    sa.Column("reserved", sa.BigInteger, nullable=False),  # of it, held for resting orders
    sa.Column("updated_ts", sa.BigInteger, nullable=False),
    sa.Column("last_n", sa.BigInteger, nullable=False),
)

balance_history = sa.Table(
    "balance_history",
    metadata,
    sa.Column("n", Id, primary_key=True, autoincrement=False),  # the BalanceChanged's event number
    sa.Column("account", Name, nullable=False),
    sa.Column("total", sa.BigInteger, nullable=False),  # after the change
    sa.Column("reserved", sa.BigInteger, nullable=False),
    sa.Column("reason", sa.SmallInteger, nullable=False),
    sa.Column("market_id", Name, nullable=False),  # "" for deposits and withdrawals
    sa.Column("ts", sa.BigInteger, nullable=False),
    sa.Index("ix_balance_history_account", "account", "n"),
)

positions = sa.Table(  # a position emptied (closed out, settled) keeps its row, all zeros
    "positions",
    metadata,
    sa.Column("account", Name, primary_key=True),
    sa.Column("market_id", Name, primary_key=True),
    sa.Column("yes", sa.BigInteger, nullable=False),
    sa.Column("no", sa.BigInteger, nullable=False),
    sa.Column("committed", sa.BigInteger, nullable=False),
    sa.Column("stake", sa.BigInteger, nullable=False),
    sa.Column("liability", sa.BigInteger, nullable=False),
    sa.Column("updated_ts", sa.BigInteger, nullable=False),
    sa.Column("last_n", sa.BigInteger, nullable=False),
)

position_history = sa.Table(
    "position_history",
    metadata,
    sa.Column("n", Id, primary_key=True, autoincrement=False),  # the PositionChanged's event number
    sa.Column("account", Name, nullable=False),
    sa.Column("market_id", Name, nullable=False),
    sa.Column("yes", sa.BigInteger, nullable=False),
    sa.Column("no", sa.BigInteger, nullable=False),
    sa.Column("committed", sa.BigInteger, nullable=False),
    sa.Column("stake", sa.BigInteger, nullable=False),
    sa.Column("liability", sa.BigInteger, nullable=False),
    sa.Column("reason", sa.SmallInteger, nullable=False),
    sa.Column("ts", sa.BigInteger, nullable=False),
    sa.Index("ix_position_history_account", "account", "n"),
)

# --------------------------------------------------------------------------- analytics

analytics_markets = sa.Table(
    "analytics_markets",
    metadata,
    sa.Column("market_id", Name, primary_key=True),
    # the trade with the highest id (last-writer-wins by it); null before the first trade
    sa.Column("last_trade_id", sa.BigInteger),
    sa.Column("last_price", sa.BigInteger),
    sa.Column("last_qty", sa.BigInteger),
    sa.Column("last_trade_ts", sa.BigInteger),
    _ingested_at(),
)

analytics_trades = sa.Table(  # the trades the analytics sink has counted: a candle counts each once
    "analytics_trades",
    metadata,
    sa.Column("trade_id", Id, primary_key=True, autoincrement=False),
    sa.Column("market_id", Name, nullable=False),
    sa.Column("n", sa.BigInteger, nullable=False),
)

analytics_book_orders = sa.Table(  # every order that rested: where, and how much is left
    "analytics_book_orders",
    metadata,
    sa.Column("order_id", Id, primary_key=True, autoincrement=False),
    sa.Column("market_id", Name, nullable=False),
    sa.Column("side", sa.SmallInteger),  # null until the OrderRested (or a fill as maker) is folded
    sa.Column("price", sa.BigInteger),  # where it rests now: an amended order rests again elsewhere
    sa.Column("price_n", sa.BigInteger),  # the n of the OrderRested that set it (0006)
    sa.Column("remaining", sa.BigInteger, nullable=False),  # last-writer-wins by last_n; 0 once off
    sa.Column("last_n", sa.BigInteger, nullable=False),
    sa.Index(
        "ix_book_orders_level",
        "market_id",
        "side",
        "price",
        sqlite_where=sa.text("remaining > 0"),
        postgresql_where=sa.text("remaining > 0"),
    ),
)

candles = sa.Table(
    "candles",
    metadata,
    sa.Column("market_id", Name, primary_key=True),
    sa.Column("interval", sa.String(4), primary_key=True),  # 1s, 1m, 1h, 1d
    sa.Column("start_ms", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("open", sa.BigInteger, nullable=False),  # the price of first_trade_id
    sa.Column("high", sa.BigInteger, nullable=False),
    sa.Column("low", sa.BigInteger, nullable=False),
    sa.Column("close", sa.BigInteger, nullable=False),  # the price of last_trade_id
    sa.Column("volume", sa.BigInteger, nullable=False),
    sa.Column("trade_count", sa.BigInteger, nullable=False),
    sa.Column("notional", sa.BigInteger, nullable=False),  # sum of price * qty: VWAP = notional / volume
    sa.Column("first_trade_id", sa.BigInteger, nullable=False),
    sa.Column("last_trade_id", sa.BigInteger, nullable=False),
)
