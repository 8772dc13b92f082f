"""A market's trades by time: ``GET /v1/markets/{id}/trades?from_ms=&to_ms=`` finds its range
through this index, rather than walking the market's whole history.

Revision 0005, after 0004. Keep ``matchbox/consumers/schema.py`` in step with it.
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_trades_market_ts", "trades", ["market_id", "ts"])


def downgrade() -> None:
    op.drop_index("ix_trades_market_ts", table_name="trades")
