"""The tracking row's floor: every entry at or below it is stored (a contiguous low watermark).

Revision 0003, after 0002. A row from before knows no floor: it gets ``0-0``, so a group lost
before its consumer's next batch is created again at the start of the stream (the sinks are
idempotent) rather than at its newest entry, past entries that may have been pending. Keep
``matchbox/consumers/schema.py`` in step with it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("consumer_offsets", sa.Column("floor_id", sa.String(64), nullable=False, server_default="0-0"))
    op.add_column("consumer_offsets", sa.Column("floor_ms", sa.BigInteger, nullable=False, server_default="0"))
    op.add_column("consumer_offsets", sa.Column("floor_seq", sa.BigInteger, nullable=False, server_default="0"))


def downgrade() -> None:
    for column in ("floor_seq", "floor_ms", "floor_id"):
        op.drop_column("consumer_offsets", column)
