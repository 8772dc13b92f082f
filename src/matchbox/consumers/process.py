"""``matchbox consume`` and ``matchbox replay``: the cold path's processes.

Each builds one sink (persistence or analytics over the SQL database, or the relay of transfers
between shards) and feeds it from a consumer group on one shard's output stream. ``consume``
runs until SIGINT/SIGTERM (or, with ``--burst``, until it has caught up); ``replay`` starts a
group at ``0`` and rebuilds the sink's tables from the whole history, with a progress bar.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
from collections.abc import Callable, Iterator
from enum import StrEnum

import redis
import sqlalchemy as sa
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from matchbox.bus.cluster import connect_bus
from matchbox.bus.connection import Bus
from matchbox.bus.outage import wait_out
from matchbox.bus.rollback import Witness, check_witness
from matchbox.consumers.analytics import AnalyticsSink
from matchbox.consumers.batch import read_newest, tracked_witnesses, tracking_witness
from matchbox.consumers.db import DOWN, SQLITE_FILE, create_engine, open_database
from matchbox.consumers.persistence import PersistenceSink
from matchbox.consumers.runner import ConsumerConfig, GroupConsumer, Sink
from matchbox.consumers.transfers import TransferRelay, journal_cache
from matchbox.metrics import StatsCollector
from matchbox.metrics import serve as serve_metrics
from matchbox.settings import Settings

log = logging.getLogger(__name__)


class SinkKind(StrEnum):
    PERSISTENCE = "persistence"
    ANALYTICS = "analytics"
    TRANSFERS = "transfers"  # the relay of transfers between shards: no table of its own


def make_sink(
    kind: SinkKind, database: sa.Engine | None, group: str, settings: Settings, stop: threading.Event
) -> Sink:
    if kind is SinkKind.TRANSFERS:

        def connect(shard: int) -> Bus:
            return connect_bus(settings.redis_url or "", shard, cluster=settings.cluster)

        return TransferRelay(settings.shard, journal_cache(connect, settings.durability), stop, group=group)
    if database is None:
        raise ValueError(f"the {kind.value} sink needs its database")
    if kind is SinkKind.PERSISTENCE:
        return PersistenceSink(database, group=group, shard=settings.shard)
    return AnalyticsSink(database, group=group, shard=settings.shard)


def consumer_config(settings: Settings, group: str, name: str = "") -> ConsumerConfig:
    config = ConsumerConfig(
        group=group,
        batch=settings.consumer_batch,
        claim_idle_ms=settings.claim_idle_ms,
        max_deliveries=settings.max_deliveries,
        retention=settings.trim_events,
    )
    return dataclasses.replace(config, consumer=name) if name else config


def run_consumer(settings: Settings, kind: SinkKind, group: str, name: str, burst: bool, stop: threading.Event) -> int:
    """Feed one sink until stopped (or caught up, in burst mode); the entries applied.

    Started while the database or Redis cannot be reached, it waits for them (logged, with a
    capped backoff) until stopped, as it waits out an outage later on; in burst mode, a one-off
    job, it raises instead.
    """
    with _connections(settings, None if burst else stop, tables=kind is not SinkKind.TRANSFERS) as connections:
        if connections is None:
            return 0  # stopped while waiting for the database
        database, bus = connections
        sink = make_sink(kind, database, group, settings, stop)
        consumer = GroupConsumer(bus, sink, consumer_config(settings, group, name), stop)
        labels = {"group": group, "sink": kind.value, "shard": str(settings.shard)}
        serve_metrics(
            settings.metrics_port, settings.metrics_host, StatsCollector("consumer", lambda: consumer.stats, labels)
        )

        def start() -> bool:
            # a group that stored more than Redis holds: halt everything rather than skip or repeat
            if database is not None:
                check_witness(bus, tracking_witness(group, read_newest(database, group, settings.shard)))
            consumer.ensure_group()
            return True

        if burst:
            start()
        elif wait_out(f"Redis at {bus.where()}", start, stop) is None:
            return 0
        where = "none" if database is None else _where(database)
        log.info("consumer started", extra={"group": group, "sink": kind.value, "database": where})
        if burst:
            return consumer.drain()
        consumer.run()
        return 0


def replay(settings: Settings, kind: SinkKind, group: str, console: Console, keep_group: bool = False) -> int:
    """Recreate ``group`` at 0 and drain the whole output stream into the sink; the entries applied.

    The group is removed when the replay is done (and its floor with it, so that a finished
    replay never holds back trimming), unless ``keep_group``; a consumer of that group started
    later makes it again from its tracking row."""
    with _connections(settings, tables=kind is not SinkKind.TRANSFERS) as connections:
        assert connections is not None  # waits for nothing
        database, bus = connections
        stream = bus.keys.events
        with contextlib.suppress(redis.ResponseError):  # no stream yet
            bus.client.xgroup_destroy(stream, group)
        bus.client.xgroup_create(stream, group, id="0", mkstream=True)
        sink = make_sink(kind, database, group, settings, threading.Event())
        consumer = GroupConsumer(bus, sink, consumer_config(settings, group))
        columns = (TextColumn("replay {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task(f"{group} ({kind.value})", total=int(bus.client.xlen(stream)))
            applied = consumer.drain(lambda applied: progress.update(task, completed=applied))
        if not keep_group:
            bus.client.xgroup_destroy(stream, group)
            bus.client.hdel(bus.keys.floors, group)
        return applied


@contextlib.contextmanager
def _connections(
    settings: Settings, wait: threading.Event | None = None, *, tables: bool = True
) -> Iterator[tuple[sa.Engine | None, Bus] | None]:
    """The consumers' database (migrated; with ``tables`` False, none: the transfer relay keeps no
    table) and the bus, closed on the way out. With ``wait``, a database or a cluster that cannot
    be reached is waited for until ``wait`` is set (then None)."""
    database: sa.Engine | None = None
    if tables:
        if wait is None:
            database = open_database(settings.database_url, settings.data_dir)
        else:
            database = wait_out(
                "the database", lambda: open_database(settings.database_url, settings.data_dir), wait, DOWN
            )
        if database is None:
            yield None
            return

    def connect() -> Bus:
        return connect_bus(settings.redis_url or "", settings.shard, cluster=settings.cluster)

    bus = connect() if wait is None else wait_out(f"Redis at {settings.redis_url}", connect, wait)
    if bus is None:  # stopped while waiting for a cluster that did not answer
        if database is not None:
            database.dispose()
        yield None
        return
    try:
        yield database, bus
    finally:
        bus.close()
        if database is not None:
            database.dispose()


WITNESS_TIMEOUT_S = 3  # a database slower than this is no witness this time (the leader keeps its lease meanwhile)


def sql_witnesses(settings: Settings) -> Callable[[], list[Witness]]:
    """The consumers' tracking rows as rollback witnesses for an engine leader, read at each
    election: from ``DATABASE_URL``, or the SQLite file in the data folder if there is one (never
    made by this). A database that cannot be read is no witness (logged): the hot path does not
    wait for the cold path."""
    sqlite_file = settings.data_dir / SQLITE_FILE

    def read() -> list[Witness]:
        if settings.database_url is None and not sqlite_file.exists():
            return []
        database = create_engine(settings.database_url or f"sqlite:///{sqlite_file}", timeout_s=WITNESS_TIMEOUT_S)
        try:
            return tracked_witnesses(database, settings.shard)
        except sa.exc.SQLAlchemyError as exc:
            log.warning("the consumers' tracking rows are no witness this time: %s", exc)
            return []
        finally:
            database.dispose()

    return read


def _where(database: sa.Engine) -> str:
    return database.url.render_as_string(hide_password=True)
