"""The first schema: tracking, persistence (markets, orders, trades) and analytics tables.

Revision 0001, the first. Keep ``matchbox/consumers/schema.py`` in step with it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # the rowid itself on SQLite
Name = sa.String(256)
StreamId = sa.String(64)
NOW = sa.text("CURRENT_TIMESTAMP")


def ingested_at() -> sa.Column[object]:
    return sa.Column("ingested_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW)


def upgrade() -> None:
    op.create_table(
        "consumer_offsets",
        sa.Column("consumer_group", Name, primary_key=True),
        sa.Column("last_id", StreamId, nullable=False),
        sa.Column("last_ms", sa.BigInteger, nullable=False),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    )
    op.create_table(
        "markets",
        sa.Column("market_id", Name, primary_key=True),
        sa.Column("scheme", sa.SmallInteger),
        sa.Column("min_tick", sa.BigInteger),
        sa.Column("max_tick", sa.BigInteger),
        sa.Column("max_qty", sa.BigInteger),
        sa.Column("stp", sa.SmallInteger),
        sa.Column("created_ts", sa.BigInteger),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("outcome", Name, nullable=False),
        sa.Column("updated_ts", sa.BigInteger, nullable=False),
        sa.Column("last_n", sa.BigInteger, nullable=False),
        ingested_at(),
    )
    op.create_table(
        "orders",
        sa.Column("order_id", Id, primary_key=True, autoincrement=False),
        sa.Column("market_id", Name, nullable=False),
        sa.Column("account", Name, nullable=False),
        sa.Column("side", sa.SmallInteger),
        sa.Column("price", sa.BigInteger),
        sa.Column("qty", sa.BigInteger),
        sa.Column("kind", sa.SmallInteger),
        sa.Column("tif", sa.SmallInteger),
        sa.Column("post_only", sa.Boolean),
        sa.Column("expires_at", sa.BigInteger),
        sa.Column("created_ts", sa.BigInteger),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("filled", sa.BigInteger, nullable=False),
        sa.Column("remaining", sa.BigInteger, nullable=False),
        sa.Column("cancelled_qty", sa.BigInteger),
        sa.Column("cancel_reason", sa.SmallInteger),
        sa.Column("reject_reason", sa.SmallInteger),
        sa.Column("updated_ts", sa.BigInteger, nullable=False),
        sa.Column("last_n", sa.BigInteger, nullable=False),
        ingested_at(),
    )
    op.create_index("ix_orders_account", "orders", ["account", "order_id"])
    op.create_index("ix_orders_market", "orders", ["market_id", "order_id"])
    op.create_table(
        "trades",
        sa.Column("trade_id", Id, primary_key=True, autoincrement=False),
        sa.Column("market_id", Name, nullable=False),
        sa.Column("price", sa.BigInteger, nullable=False),
        sa.Column("qty", sa.BigInteger, nullable=False),
        sa.Column("taker_side", sa.SmallInteger, nullable=False),
        sa.Column("maker_order_id", sa.BigInteger, nullable=False),
        sa.Column("taker_order_id", sa.BigInteger, nullable=False),
        sa.Column("maker_account", Name, nullable=False),
        sa.Column("taker_account", Name, nullable=False),
        sa.Column("ts", sa.BigInteger, nullable=False),
        sa.Column("n", sa.BigInteger, nullable=False),
        sa.Column("stream_id", StreamId, nullable=False),
        ingested_at(),
    )
    op.create_index("ix_trades_market", "trades", ["market_id", "trade_id"])
    op.create_table(
        "analytics_markets",
        sa.Column("market_id", Name, primary_key=True),
        sa.Column("last_trade_id", sa.BigInteger),
        sa.Column("last_price", sa.BigInteger),
        sa.Column("last_qty", sa.BigInteger),
        sa.Column("last_trade_ts", sa.BigInteger),
        ingested_at(),
    )
    op.create_table(
        "analytics_trades",
        sa.Column("trade_id", Id, primary_key=True, autoincrement=False),
        sa.Column("market_id", Name, nullable=False),
        sa.Column("n", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "analytics_book_orders",
        sa.Column("order_id", Id, primary_key=True, autoincrement=False),
        sa.Column("market_id", Name, nullable=False),
        sa.Column("side", sa.SmallInteger),
        sa.Column("price", sa.BigInteger),
        sa.Column("remaining", sa.BigInteger, nullable=False),
        sa.Column("last_n", sa.BigInteger, nullable=False),
    )
    op.create_index(
        "ix_book_orders_level",
        "analytics_book_orders",
        ["market_id", "side", "price"],
        sqlite_where=sa.text("remaining > 0"),
        postgresql_where=sa.text("remaining > 0"),
    )
    op.create_table(
        "candles",
        sa.Column("market_id", Name, primary_key=True),
        sa.Column("interval", sa.String(4), primary_key=True),
        sa.Column("start_ms", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("open", sa.BigInteger, nullable=False),
        sa.Column("high", sa.BigInteger, nullable=False),
        sa.Column("low", sa.BigInteger, nullable=False),
        sa.Column("close", sa.BigInteger, nullable=False),
        sa.Column("volume", sa.BigInteger, nullable=False),
        sa.Column("trade_count", sa.BigInteger, nullable=False),
        sa.Column("notional", sa.BigInteger, nullable=False),
        sa.Column("first_trade_id", sa.BigInteger, nullable=False),
        sa.Column("last_trade_id", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    for table in (
        "candles",
        "analytics_book_orders",
        "analytics_trades",
        "analytics_markets",
        "trades",
        "orders",
        "markets",
        "consumer_offsets",
    ):
        op.drop_table(table)
