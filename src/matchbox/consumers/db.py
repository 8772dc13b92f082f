"""Opening the consumers' database, migrating it, and the write transactions the sinks use.

SQLite (the default, one file in the data folder) runs in WAL mode with ``synchronous=FULL``: a
committed batch survives a power cut, and readers (the API) never wait for the writer. Its
transactions are opened by us, not by the driver: a sink's write transaction starts with
``BEGIN IMMEDIATE``, so two writers queue on the busy timeout at the start instead of failing
halfway through; a read starts with a plain ``BEGIN``.

PostgreSQL is reached through psycopg 3 (``postgres://`` and ``postgresql://`` URLs get the
driver name). Write transactions run at READ COMMITTED: the sinks' upserts are written so that
concurrent batches of one group converge (see :mod:`~matchbox.consumers.persistence`), and a
deadlock or a unique violation between two of them is retried by :func:`run_write`.

A write the database refuses for the data itself (a DataError or IntegrityError other than a lost
race: a NUL byte in text on PostgreSQL, an integer beyond 64 bits), or one the driver cannot even
send (an integer beyond 64 bits, on SQLite), fails the same way every time:
:func:`run_write` raises it as :class:`~matchbox.consumers.runner.Poison`, so the consumer runner
looks for the entry at fault instead of waiting for the database to come back.

Migrations run to head on open, under a lock (an advisory lock on PostgreSQL, the write lock of
``BEGIN IMMEDIATE`` on SQLite), so two processes starting at once migrate once.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from psycopg.types.array import ListBinaryDumper

from matchbox.consumers.runner import Poison

log = logging.getLogger(__name__)

SQLITE_FILE = "matchbox.db"
SQLITE_BUSY_TIMEOUT_S = 30.0
WRITE_OPTION = "matchbox_write"  # execution option: this connection's transaction will write
MIGRATION_LOCK = 0x6D62_6D69_6772  # "mbmigr": the PostgreSQL advisory lock key of migrations
WRITE_ATTEMPTS = 5
# deadlock, serialization failure, unique violation: a concurrent batch of the same group won
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001", "23505"})
REFUSED_DATA = (sa.exc.DataError, sa.exc.IntegrityError)  # the statement's values, not the database's state
DOWN = (sa.exc.OperationalError, sa.exc.InterfaceError)  # the database cannot be reached, for now

T = TypeVar("T")


def open_database(url: str | None, data_dir: Path) -> sa.Engine:
    """The consumers' database, migrated to head: ``url``, or SQLite in ``data_dir`` when None."""
    if url is None:
        data_dir.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{data_dir / SQLITE_FILE}"
    engine = create_engine(url)
    migrate(engine)
    return engine


def database_url(url: str) -> sa.URL:
    """``url`` with the psycopg 3 driver named for PostgreSQL (``postgres://`` too)."""
    parsed = sa.make_url(url)
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def create_engine(url: str, *, timeout_s: int | None = None) -> sa.Engine:
    """An engine for ``url``, SQLite connections set up as the module docstring says; no migration.

    ``timeout_s`` bounds PostgreSQL's connect and each statement (for a reader that must not hang,
    such as a leader reading its rollback witnesses); SQLite is a local file, read under WAL."""
    parsed = database_url(url)
    if parsed.get_backend_name() != "sqlite":
        bounded: dict[str, Any] = {}
        if timeout_s:
            bounded = {"connect_timeout": timeout_s, "options": f"-c statement_timeout={timeout_s * 1000}"}
        engine = sa.create_engine(parsed, pool_pre_ping=True, connect_args=bounded)
        sa.event.listen(engine, "connect", _postgres_connect)
        return engine
    engine = sa.create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False})
    sa.event.listen(engine, "connect", _sqlite_connect)
    sa.event.listen(engine, "begin", _sqlite_begin)
    return engine


def _postgres_connect(dbapi_connection: Any, _record: object) -> None:
    """Send the sinks' column arrays in PostgreSQL's binary format: psycopg's text format quotes
    every element in Python (a regular expression per string), which cost a quarter of a batch."""
    dbapi_connection.adapters.register_dumper(list, ListBinaryDumper)


def _sqlite_connect(dbapi_connection: Any, _record: object) -> None:
    dbapi_connection.isolation_level = None  # the driver begins nothing itself: _sqlite_begin does
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
    cursor.execute("PRAGMA synchronous = FULL")
    _sqlite_wal(cursor)
    cursor.close()


def _sqlite_wal(cursor: Any) -> None:
    """Switch a new database file to WAL (kept in the file: later connections find it set).

    The switch needs the file to itself and fails at once, without the busy timeout, while
    another connection is opening the same new file; so it is tried again for a while.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode = WAL").fetchone()[0] in ("wal", "memory"):
                return
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise sqlite3.OperationalError("the database did not switch to WAL")
        time.sleep(0.01)


def _sqlite_begin(connection: sa.Connection) -> None:
    mode = "IMMEDIATE" if connection.get_execution_options().get(WRITE_OPTION) else "DEFERRED"
    connection.exec_driver_sql(f"BEGIN {mode}")


@contextmanager
def write_transaction(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection in a transaction that will write; committed on exit, rolled back on error."""
    with engine.connect() as connection:
        connection.execution_options(**{WRITE_OPTION: True})
        with connection.begin():
            yield connection


def run_write(engine: sa.Engine, work: Callable[[sa.Connection], T]) -> T:
    """``work`` in a write transaction, retried when it lost a race with a concurrent transaction;
    :class:`Poison` when the database refuses its data (see the module docstring)."""
    for attempt in range(1, WRITE_ATTEMPTS + 1):
        try:
            with write_transaction(engine) as connection:
                return work(connection)
        except sa.exc.DBAPIError as exc:
            state = getattr(exc.orig, "sqlstate", None)
            if state in RETRYABLE_SQLSTATES and attempt < WRITE_ATTEMPTS:
                log.info("write transaction retried", extra={"sqlstate": state, "attempt": attempt})
                continue
            if isinstance(exc, REFUSED_DATA) and state not in RETRYABLE_SQLSTATES:
                raise Poison(f"the database refused the data: {_first_line(exc.orig)}") from exc
            raise
        except OverflowError as exc:  # sqlite3's, for an integer it cannot hold: SQLAlchemy wraps only DB-API errors
            raise Poison(f"the driver cannot send a value: {_first_line(exc)}") from exc
    raise AssertionError("unreachable")


def _first_line(error: BaseException | None) -> str:
    """An error's type and the first line of its message (PostgreSQL's go on with context)."""
    text = str(error).splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


# --------------------------------------------------------------------------- migrations


def alembic_config() -> Config:
    """Alembic's configuration, pointing into this package: no alembic.ini is needed."""
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    return config


def migrate(engine: sa.Engine) -> None:
    """Bring the schema to head; a no-op at head. Safe when several processes run it at once."""
    config = alembic_config()
    with write_transaction(engine) as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK)))
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
