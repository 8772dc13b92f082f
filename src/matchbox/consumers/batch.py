"""What both sinks share: decoding a batch, the tracking row, and the dialects' upserts.

A batch is decoded whole before any transaction opens: an entry that does not decode (no
``event`` field, not JSON, an unknown event or schema version, a malformed stream id) raises
:class:`~matchbox.bus.consumer.Poison` and nothing is written. In a batch of several entries the
runner then retries them one at a time, and only the bad one is dead-lettered.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from matchbox.bus.codec import CodecError, decode_event
from matchbox.bus.connection import Entry, id_order
from matchbox.bus.consumer import Poison
from matchbox.consumers.schema import consumer_offsets
from matchbox.engine.types import Event

Insert = sqlite.Insert | postgresql.Insert
Row = dict[str, Any]


class Item:
    """One decoded entry: its stream id (and the id as a sortable pair), the event's ``n``, the event."""

    __slots__ = ("stream_id", "position", "n", "event")

    def __init__(self, stream_id: str, position: tuple[int, int], n: int, event: Event) -> None:
        self.stream_id = stream_id
        self.position = position
        self.n = n
        self.event = event


def decode_entries(entries: Sequence[Entry]) -> list[Item]:
    """The batch's events in stream order; :class:`Poison` if any entry is not one."""
    items: list[Item] = []
    for entry_id, fields in entries:
        stream_id = entry_id.decode("utf-8", "replace")
        raw = fields.get(b"event")
        if raw is None:
            raise Poison(f"entry {stream_id} has no event field")
        try:
            position = id_order(stream_id)
            decoded = decode_event(raw)
        except (CodecError, ValueError) as exc:
            raise Poison(f"entry {stream_id}: {exc}") from None
        items.append(Item(stream_id, position, decoded.n, decoded.event))
    return items


def insert(dialect_name: str, table: sa.Table) -> Insert:
    """A multi-row INSERT of ``table``'s rows, to finish with the dialect's ON CONFLICT clause.

    Execute it with :func:`write_rows`. On SQLite the rows go as an executemany (the driver
    steps one prepared statement over them, in C). On PostgreSQL each column goes as one array
    parameter, and the statement is ``INSERT ... SELECT unnest(...), unnest(...) ...``: one
    statement of constant text, prepared once, one round trip for the whole batch, where an
    executemany would send a statement per row and a multi-row VALUES a new text per batch.
    The columns are those without a server default (``ingested_at`` is the database's clock).
    """
    if dialect_name == "sqlite":
        return sqlite.insert(table)
    if dialect_name != "postgresql":
        raise ValueError(f"unsupported database: {dialect_name} (SQLite or PostgreSQL)")
    columns = written_columns(table)
    arrays = [sa.func.unnest(sa.bindparam(c.name, type_=postgresql.ARRAY(c.type))) for c in columns]
    return postgresql.insert(table).from_select([c.name for c in columns], sa.select(*arrays))


def written_columns(table: sa.Table) -> list[sa.Column[Any]]:
    return [column for column in table.columns if column.server_default is None]


def write_rows(connection: sa.Connection, statement: sa.Executable, rows: Sequence[Row]) -> sa.CursorResult[Any]:
    """Execute an :func:`insert` statement over ``rows`` (dicts with every written column)."""
    if connection.dialect.name == "postgresql":
        return connection.execute(statement, {name: [row[name] for row in rows] for name in rows[0]})
    return connection.execute(statement, rows)


def newer(statement: Insert, table: sa.Table, column: str, by: str = "last_n") -> sa.ColumnElement[Any]:
    """On conflict: the incoming value if its ``by`` is higher, else the stored one."""
    excluded = statement.excluded
    return sa.case((excluded[by] > table.c[by], excluded[column]), else_=table.c[column])


def first_known(statement: Insert, table: sa.Table, column: str) -> sa.ColumnElement[Any]:
    """On conflict: the stored value unless it is null (a column set once by one event)."""
    return sa.func.coalesce(table.c[column], statement.excluded[column])


# --------------------------------------------------------------------------- tracking


def read_position(engine: sa.Engine, group: str) -> str | None:
    """The stream id of the newest entry the group has applied, None if none."""
    query = sa.select(consumer_offsets.c.last_id).where(consumer_offsets.c.consumer_group == group)
    with engine.connect() as connection:
        found: str | None = connection.execute(query).scalar_one_or_none()
    return found


def tracking_statement(dialect_name: str) -> sa.Executable:
    """Move a group's tracking row forward to ``last_id``, never back (by stream-id order)."""
    statement = insert(dialect_name, consumer_offsets)
    stored = consumer_offsets.c
    incoming = statement.excluded
    ahead = sa.or_(
        incoming.last_ms > stored.last_ms,
        sa.and_(incoming.last_ms == stored.last_ms, incoming.last_seq > stored.last_seq),
    )
    return statement.on_conflict_do_update(
        index_elements=[stored.consumer_group],
        set_={
            "last_id": incoming.last_id,
            "last_ms": incoming.last_ms,
            "last_seq": incoming.last_seq,
            "updated_at": sa.func.current_timestamp(),
        },
        where=ahead,
    )


def tracking_row(group: str, items: Sequence[Item]) -> Row:
    last = max(items, key=_position)
    ms, seq = last.position
    return {"consumer_group": group, "last_id": last.stream_id, "last_ms": ms, "last_seq": seq}


def _position(item: Item) -> tuple[int, int]:
    return item.position
