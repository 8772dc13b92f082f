"""Alembic's entry point: migrate over the connection that ``migrate`` opened and locked.

``matchbox.consumers.db.migrate`` passes its connection (already in a write transaction, with
the migration lock held) in ``config.attributes["connection"]``; the migration runs inside that
transaction, which ``migrate`` commits. There is no offline (SQL script) mode.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

connection = context.config.attributes.get("connection")
if not isinstance(connection, sa.Connection):
    raise RuntimeError("run migrations with matchbox.consumers.db.migrate(engine)")
context.configure(connection=connection, transactional_ddl=True)
with context.begin_transaction():
    context.run_migrations()
