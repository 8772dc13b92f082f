"""What an order does at a suspension of its market, and what a market is about.

``orders.lapse``: true, it is cancelled (reason LAPSED) when its market is suspended; false, it
persists (from its ``OrderAccepted``). Rows written before have none: history shows them as
persisting, which every order did before orders could lapse.

``markets``: ``title``, ``question``, ``rules``, ``category``, ``outcomes`` (the outcome names, a
JSON list), ``opens_at`` and ``closes_at`` (engine time, ns; null: none) and ``fees`` (its fee
schedule, a JSON object; null: none), from its ``MarketCreated``.

``trades``: ``maker_fee`` and ``taker_fee``, what each side paid for the fill (null before: none).

Revision 0007, after 0006. Keep ``matchbox/consumers/schema.py`` in step with it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

MARKET_COLUMNS = (
    ("title", sa.String(256)),
    ("question", sa.Text),
    ("rules", sa.Text),
    ("category", sa.String(256)),
    ("outcomes", sa.Text),
    ("opens_at", sa.BigInteger),
    ("closes_at", sa.BigInteger),
    ("fees", sa.Text),
)


def upgrade() -> None:
    op.add_column("orders", sa.Column("lapse", sa.Boolean))
    for name, kind in MARKET_COLUMNS:
        op.add_column("markets", sa.Column(name, kind))
    for name in ("maker_fee", "taker_fee"):
        op.add_column("trades", sa.Column(name, sa.BigInteger))


def downgrade() -> None:
    for name in ("taker_fee", "maker_fee"):
        op.drop_column("trades", name)
    for name, _ in reversed(MARKET_COLUMNS):
        op.drop_column("markets", name)
    op.drop_column("orders", "lapse")
