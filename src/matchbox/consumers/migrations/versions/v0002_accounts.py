"""Accounts: balances and positions of collateral markets (current and history), and an account's trades.

Revision 0002, after 0001. Keep ``matchbox/consumers/schema.py`` in step with it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # the rowid itself on SQLite
Name = sa.String(256)


def position_columns() -> list[sa.Column[int]]:
    return [sa.Column(name, sa.BigInteger, nullable=False) for name in ("yes", "no", "committed", "stake", "liability")]


def upgrade() -> None:
    op.create_table(
        "balances",
        sa.Column("account", Name, primary_key=True),
        sa.Column("total", sa.BigInteger, nullable=False),
        sa.Column("reserved", sa.BigInteger, nullable=False),
        sa.Column("updated_ts", sa.BigInteger, nullable=False),
        sa.Column("last_n", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "balance_history",
        sa.Column("n", Id, primary_key=True, autoincrement=False),
        sa.Column("account", Name, nullable=False),
        sa.Column("total", sa.BigInteger, nullable=False),
        sa.Column("reserved", sa.BigInteger, nullable=False),
        sa.Column("reason", sa.SmallInteger, nullable=False),
        sa.Column("market_id", Name, nullable=False),
        sa.Column("ts", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_balance_history_account", "balance_history", ["account", "n"])
    op.create_table(
        "positions",
        sa.Column("account", Name, primary_key=True),
        sa.Column("market_id", Name, primary_key=True),
        *position_columns(),
        sa.Column("updated_ts", sa.BigInteger, nullable=False),
        sa.Column("last_n", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "position_history",
        sa.Column("n", Id, primary_key=True, autoincrement=False),
        sa.Column("account", Name, nullable=False),
        sa.Column("market_id", Name, nullable=False),
        *position_columns(),
        sa.Column("reason", sa.SmallInteger, nullable=False),
        sa.Column("ts", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_position_history_account", "position_history", ["account", "n"])
    op.create_index("ix_trades_maker_account", "trades", ["maker_account", "trade_id"])
    op.create_index("ix_trades_taker_account", "trades", ["taker_account", "trade_id"])


def downgrade() -> None:
    op.drop_index("ix_trades_taker_account", "trades")
    op.drop_index("ix_trades_maker_account", "trades")
    for table in ("position_history", "positions", "balance_history", "balances"):
        op.drop_table(table)
