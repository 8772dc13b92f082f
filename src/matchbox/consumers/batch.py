"""What both sinks share: a batch decoded, folded and written with its tracking row in one
transaction (:class:`FoldingSink`), and the dialects' upserts.

A batch is decoded whole before any transaction opens: an entry that does not decode (no
``event`` field, not JSON, an unknown event or schema version, a malformed stream id) raises
:class:`~matchbox.consumers.runner.Poison` and nothing is written. In a batch of several entries the
runner then retries them one at a time, and only the bad one is dead-lettered.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Sequence
from typing import Any, Generic, Protocol, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from matchbox.bus.codec import CodecError, decode_event
from matchbox.bus.connection import Entry, id_order
from matchbox.bus.rollback import Witness
from matchbox.consumers.db import run_write
from matchbox.consumers.runner import Poison
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


class Fold(Protocol):
    """A batch's effects gathered in memory, one event at a time, before anything is written."""

    def add(self, item: Item) -> None: ...


F = TypeVar("F", bound=Fold)


class FoldingSink(Generic[F]):
    """A :class:`~matchbox.consumers.runner.Sink` that folds each batch (:meth:`fold`) and writes the
    fold (:meth:`write`) and the group's tracking row in one transaction, retried whole by
    :func:`~matchbox.consumers.db.run_write`."""

    def __init__(self, engine: sa.Engine, group: str, shard: int = 0) -> None:
        self.engine = engine
        self.group = group
        self.shard = shard  # whose stream it reads: its tracking row is (group, shard)
        self._track = tracking_writer(engine.dialect)

    def position(self) -> str | None:
        return read_position(self.engine, self.group, self.shard)

    def apply(self, entries: Sequence[Entry], floor: str | None = None) -> None:
        items = decode_entries(entries)
        if not items:
            return
        fold = self.fold()
        for item in items:
            fold.add(item)
        tracking = tracking_row(self.group, self.shard, items, floor)

        def write(connection: sa.Connection) -> None:
            self.write(connection, fold)
            self._track.write(connection, [tracking])

        run_write(self.engine, write)

    def fold(self) -> F:
        raise NotImplementedError

    def write(self, connection: sa.Connection, fold: F) -> None:
        raise NotImplementedError


def write_sorted(connection: sa.Connection, writer: RowWriter, rows: dict[Any, Row]) -> None:
    """``rows`` in key order (so concurrent transactions lock rows in the same order), if any."""
    if rows:
        writer.write(connection, [rows[key] for key in sorted(rows)])


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
    """A multi-row INSERT of ``table``, to finish with an ON CONFLICT clause and run by a :class:`RowWriter`.

    On PostgreSQL each column comes as one array parameter: ``INSERT ... SELECT unnest(:a),
    unnest(:b) ...``, one statement of constant text, prepared once, one round trip for the
    whole batch (an executemany sends a statement per row, a multi-row VALUES a new text per
    batch). The columns are those without a server default (``ingested_at`` is the database's).
    """
    if dialect_name == "sqlite":
        return sqlite.insert(table)
    if dialect_name != "postgresql":
        raise ValueError(f"unsupported database: {dialect_name} (SQLite or PostgreSQL)")
    columns = written_columns(table)
    arrays = [sa.func.unnest(sa.bindparam(name, type_=postgresql.ARRAY(table.c[name].type))) for name in columns]
    return postgresql.insert(table).from_select(columns, sa.select(*arrays))


def written_columns(table: sa.Table) -> list[str]:
    return [column.name for column in table.columns if column.server_default is None]


class RowWriter:
    """One statement from :func:`insert` run over a batch's rows (dicts of every written column).

    On SQLite the statement is compiled once and the rows go to the driver's executemany as
    tuples: SQLAlchemy's per-row parameter processing would cost about three times SQLite's own
    work, and these columns hold only integers, texts, booleans and nulls, which the driver
    takes as they are. Constants in the statement must therefore be literal SQL, not parameters.
    """

    def __init__(self, dialect: sa.Dialect, statement: sa.Insert, table: sa.Table) -> None:
        self.statement = statement
        self.columns = written_columns(table)
        self.postgres = dialect.name == "postgresql"
        if self.postgres:
            return
        compiled = statement.compile(dialect=dialect, column_keys=self.columns)
        order = list(compiled.positiontup or ())
        if unknown := set(order) - set(self.columns):
            raise ValueError(f"{table.name}: the statement binds {sorted(unknown)}: write constants as literal SQL")
        self.sql = compiled.string
        self.values = operator.itemgetter(*order)

    def write(self, connection: sa.Connection, rows: Sequence[Row]) -> sa.CursorResult[Any]:
        if self.postgres:
            return connection.execute(self.statement, {name: [row[name] for row in rows] for name in self.columns})
        return connection.exec_driver_sql(self.sql, list(map(self.values, rows)))


class NewRows:
    """Inserts the rows whose ``key`` is not in ``table`` yet, and says which keys it inserted.

    PostgreSQL: ON CONFLICT DO NOTHING RETURNING the key; a concurrent transaction inserting the
    same key makes this one wait for it, then skip the row. SQLite: the keys already there are
    read, then the others inserted; nothing can come in between, since a write transaction holds
    the database's write lock from its start (BEGIN IMMEDIATE, see :mod:`~matchbox.consumers.db`),
    and a plain INSERT would fail loudly rather than count a row twice if that ever changed.
    """

    def __init__(self, dialect: sa.Dialect, table: sa.Table, key: str) -> None:
        self.key = key
        if dialect.name == "postgresql":
            statement = insert(dialect.name, table).on_conflict_do_nothing(index_elements=[key]).returning(table.c[key])
            self.writer = RowWriter(dialect, statement, table)
        else:
            self.writer = RowWriter(dialect, insert(dialect.name, table), table)
            self.existing = f"SELECT {key} FROM {table.name} WHERE {key} IN (SELECT value FROM json_each(?))"

    def insert(self, connection: sa.Connection, rows: Sequence[Row]) -> set[Any]:
        key = self.key
        if self.writer.postgres:
            return set(self.writer.write(connection, rows).scalars())
        wanted = json.dumps([row[key] for row in rows])
        existing = set(connection.exec_driver_sql(self.existing, (wanted,)).scalars())
        new = [row for row in rows if row[key] not in existing]
        if new:
            self.writer.write(connection, new)
        return {row[key] for row in new}


def newer(statement: Insert, table: sa.Table, column: str, by: str = "last_n") -> sa.ColumnElement[Any]:
    """On conflict: the incoming value if its ``by`` is higher, else the stored one."""
    excluded = statement.excluded
    return sa.case((excluded[by] > table.c[by], excluded[column]), else_=table.c[column])


def newer_stated(statement: Insert, table: sa.Table, column: str, by: str = "price_n") -> sa.ColumnElement[Any]:
    """On conflict: the incoming value if its ``by`` is higher than the stored one, a stored null
    counting as older than any (a row written before the column existed); else the stored one."""
    excluded = statement.excluded
    older = sa.func.coalesce(table.c[by], sa.literal_column("-1"))
    return sa.case((excluded[by] > older, excluded[column]), else_=table.c[column])


def first_known(statement: Insert, table: sa.Table, column: str) -> sa.ColumnElement[Any]:
    """On conflict: the stored value unless it is null (a column set once by one event)."""
    return sa.func.coalesce(table.c[column], statement.excluded[column])


# --------------------------------------------------------------------------- tracking


def read_position(engine: sa.Engine, group: str, shard: int = 0) -> str | None:
    """The group's floor on ``shard``'s stream: every entry at or below this stream id is stored; None if untracked."""
    return _read_tracking(engine, group, shard, consumer_offsets.c.floor_id)


def read_newest(engine: sa.Engine, group: str, shard: int = 0) -> str | None:
    """The stream id of the newest entry of ``shard``'s stream the group has stored, None if none."""
    return _read_tracking(engine, group, shard, consumer_offsets.c.last_id)


def _read_tracking(engine: sa.Engine, group: str, shard: int, column: sa.Column[str]) -> str | None:
    tracked = consumer_offsets.c
    query = sa.select(column).where(tracked.consumer_group == group, tracked.shard == shard)
    with engine.connect() as connection:
        found: str | None = connection.execute(query).scalar_one_or_none()
    return found


def tracked_witnesses(engine: sa.Engine, shard: int = 0) -> list[Witness]:
    """Each group's tracking row of ``shard`` as a rollback witness (:mod:`matchbox.bus.rollback`):
    a group stores only committed events, so the shard's Redis must hold at least the newest one it stored."""
    tracked = consumer_offsets.c
    query = sa.select(tracked.consumer_group, tracked.last_id).where(tracked.shard == shard)
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    return [tracking_witness(group, last) for group, last in rows]


def tracking_witness(group: str, last_id: str | None) -> Witness:
    return Witness(f"consumer group {group} (its SQL tracking row)", last_event=last_id or "")


def tracking_writer(dialect: sa.Dialect) -> RowWriter:
    """Moves a group's tracking row forward: its newest id and its floor, each never back (by
    stream-id order). Two consumers of a group commit in any order, so each is taken on its own."""
    statement = insert(dialect.name, consumer_offsets)
    stored = consumer_offsets.c
    incoming = statement.excluded

    def ahead(name: str) -> sa.ColumnElement[bool]:
        ms, seq = f"{name}_ms", f"{name}_seq"
        return sa.or_(incoming[ms] > stored[ms], sa.and_(incoming[ms] == stored[ms], incoming[seq] > stored[seq]))

    def forward(name: str) -> dict[str, sa.ColumnElement[Any]]:
        columns = (f"{name}_id", f"{name}_ms", f"{name}_seq")
        return {column: sa.case((ahead(name), incoming[column]), else_=stored[column]) for column in columns}

    upsert = statement.on_conflict_do_update(
        index_elements=[stored.consumer_group, stored.shard],
        set_={**forward("last"), **forward("floor"), "updated_at": sa.func.current_timestamp()},
        where=sa.or_(ahead("last"), ahead("floor")),  # a batch applied again changes nothing, its time included
    )
    return RowWriter(dialect, upsert, consumer_offsets)


def tracking_row(group: str, shard: int, items: Sequence[Item], floor: str | None) -> Row:
    """The tracking row after ``items`` of ``shard``'s stream; a ``floor`` of None (the group was
    gone) moves nothing."""
    last = max(items, key=_position)
    ms, seq = last.position
    floor_ms, floor_seq = id_order(floor) if floor is not None else (0, 0)
    return {
        "consumer_group": group,
        "shard": shard,
        "last_id": last.stream_id,
        "last_ms": ms,
        "last_seq": seq,
        "floor_id": floor or "0-0",
        "floor_ms": floor_ms,
        "floor_seq": floor_seq,
    }


def _position(item: Item) -> tuple[int, int]:
    return item.position
