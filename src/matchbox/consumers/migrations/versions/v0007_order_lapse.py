"""What an order does at a suspension of its market: ``orders.lapse`` (true: it is cancelled,
reason LAPSED; false: it persists), from its ``OrderAccepted``. Rows written before have none:
history shows them as persisting, which every order did before orders could lapse.

Revision 0007, after 0006. Keep ``matchbox/consumers/schema.py`` in step with it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("orders", sa.Column("lapse", sa.Boolean))


def downgrade() -> None:
    op.drop_column("orders", "lapse")
