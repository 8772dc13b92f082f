"""Alembic migrations of the consumers' schema, run by :func:`matchbox.consumers.db.migrate`."""
