"""Amended orders: an order's price and quantity may change after it was accepted
(``OrderAmended``), so ``orders`` and ``analytics_book_orders`` keep the ``n`` of the event that
last stated them (``price_n``), and the newest such event wins, whatever the order of arrival.
Rows written before have none: any amend is newer than them.

Revision 0006, after 0005. Keep ``matchbox/consumers/schema.py`` in step with it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("orders", sa.Column("price_n", sa.BigInteger))
    op.add_column("analytics_book_orders", sa.Column("price_n", sa.BigInteger))


def downgrade() -> None:
    op.drop_column("analytics_book_orders", "price_n")
    op.drop_column("orders", "price_n")
