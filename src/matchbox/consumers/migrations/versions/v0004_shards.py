"""Shards: a group's tracking row and an account's cash are per shard.

Revision 0004, after 0003. ``consumer_offsets`` is keyed by (consumer_group, shard): a group reads
every shard's stream, each with its own place. ``balances`` by (account, shard): cash lives on
a shard, with the engine that matches the markets it backs. Rows from before are shard 0's.

(The history tables keep their key: a history row's ``n`` carries its shard in its high bits,
as order and trade ids do, see :mod:`matchbox.engine.ids`; shard 0's are the numbers they were.)

A primary key cannot be altered in SQLite, so each table is moved and copied: made anew under
a temporary name, filled from the old, the old dropped, the new renamed. Keep
``matchbox/consumers/schema.py`` in step with it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

Name = sa.String(256)
StreamId = sa.String(64)
NOW = sa.text("CURRENT_TIMESTAMP")


def _tracking(name: str, sharded: bool) -> None:
    op.create_table(
        name,
        sa.Column("consumer_group", Name, primary_key=True),
        *([sa.Column("shard", sa.Integer, primary_key=True, autoincrement=False)] if sharded else []),
        sa.Column("last_id", StreamId, nullable=False),
        sa.Column("last_ms", sa.BigInteger, nullable=False),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
        # as revision 0003 added them: a row written without a floor has "0-0"
        sa.Column("floor_id", StreamId, nullable=False, server_default="0-0"),
        sa.Column("floor_ms", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("floor_seq", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    )


def _balances(name: str, sharded: bool) -> None:
    op.create_table(
        name,
        sa.Column("account", Name, primary_key=True),
        *([sa.Column("shard", sa.Integer, primary_key=True, autoincrement=False)] if sharded else []),
        sa.Column("total", sa.BigInteger, nullable=False),
        sa.Column("reserved", sa.BigInteger, nullable=False),
        sa.Column("updated_ts", sa.BigInteger, nullable=False),
        sa.Column("last_n", sa.BigInteger, nullable=False),
    )


TRACKING = "consumer_group, last_id, last_ms, last_seq, floor_id, floor_ms, floor_seq, updated_at"
BALANCES = "account, total, reserved, updated_ts, last_n"


def _move(table: str, make: object, columns: str, sharded: bool) -> None:
    """``table`` made again by ``make`` (sharded or not), its rows copied over (as shard 0's)."""
    new = f"{table}_new"
    make(new, sharded)  # type: ignore[operator]
    shard = ", shard" if sharded else ""
    value = ", 0" if sharded else ""
    if sharded:
        op.execute(f"INSERT INTO {new} ({columns}{shard}) SELECT {columns}{value} FROM {table}")
    else:  # shard 0's rows alone: the others have no place in an unsharded table
        op.execute(f"INSERT INTO {new} ({columns}) SELECT {columns} FROM {table} WHERE shard = 0")
    op.drop_table(table)
    op.rename_table(new, table)


def upgrade() -> None:
    _move("consumer_offsets", _tracking, TRACKING, sharded=True)
    _move("balances", _balances, BALANCES, sharded=True)


def downgrade() -> None:
    _move("balances", _balances, BALANCES, sharded=False)
    _move("consumer_offsets", _tracking, TRACKING, sharded=False)
