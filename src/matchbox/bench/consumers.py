"""``matchbox bench consumers``: the persistence consumer draining a preloaded output stream.

N events of the engine benchmark's seeded flow (accepts, rests, trades, cancels, as the engine
emits them) are written to the output stream of a private Valkey, then a ``GroupConsumer`` with
the ``PersistenceSink`` drains them, one transaction per batch, into SQLite (a file in a
temporary folder) and into PostgreSQL when one answers at ``--postgres-url``.

The baseline, timed in the same run against the same database: the same events written as one
row each (stream id, raw JSON) by ``executemany``, one transaction per batch, with nothing read
from Redis and nothing decoded. That is the ceiling of any consumer writing one row per event; the
ratio says how close the real consumer comes to it.
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import msgspec
import sqlalchemy as sa
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from matchbox.bench.engine import MARKET, generate
from matchbox.bus.codec import encode_event
from matchbox.bus.connection import Bus
from matchbox.bus.server import EmbeddedValkey
from matchbox.consumers.db import open_database
from matchbox.consumers.persistence import PersistenceSink
from matchbox.consumers.runner import ConsumerConfig, GroupConsumer
from matchbox.engine import Engine
from matchbox.engine.types import CreateMarket, TickScheme

CHUNK = 2000
GROUP = "bench-persistence"


@dataclass(frozen=True, slots=True)
class Run:
    database: str
    events: int
    trades: int
    seconds: float
    events_per_s: float
    baseline_events_per_s: float
    ratio: float


def preload_events(events: int, seed: int) -> list[tuple[str, bytes]]:
    """The first ``events`` events of the seeded flow, as (stream id, JSON) like the engine writes them."""
    engine = Engine()
    out: list[tuple[str, bytes]] = []
    n = 0
    ms = 1_700_000_000_000
    for event in engine.apply(CreateMarket(seq=1, ts=ms * 1_000_000, market_id=MARKET, scheme=TickScheme.BINARY)):
        n += 1
        out.append((f"{ms}-{n}", encode_event(event, n, f"{ms}-0")))
    ops = max(1_000, events)  # the flow gives about two events per command
    for command in generate(ops, seed).commands:
        ms += 1
        for event in engine.apply(command):
            n += 1
            out.append((f"{ms}-{n}", encode_event(event, n, f"{ms}-0")))
            if len(out) == events:
                return out
    return out


def _write_stream(bus: Bus, events: list[tuple[str, bytes]], progress: Progress) -> None:
    task = progress.add_task("preloading the output stream", total=len(events))
    for start in range(0, len(events), CHUNK):
        pipe = bus.client.pipeline(transaction=False)
        for stream_id, raw in events[start : start + CHUNK]:
            pipe.xadd(bus.keys.events, {"event": raw}, id=stream_id)
        pipe.execute()
        progress.advance(task, min(CHUNK, len(events) - start))
    progress.remove_task(task)


def _drain(url: str, database: sa.Engine, total: int, batch: int, label: str, progress: Progress) -> float:
    """Seconds for a new group to drain the stream into ``database`` through the persistence sink."""
    bus = Bus.connect(url)
    sink = PersistenceSink(database, group=GROUP)
    consumer = GroupConsumer(bus, sink, ConsumerConfig(group=GROUP, consumer="bench", batch=batch, block_ms=10))
    task = progress.add_task(f"persistence → {label}", total=total)
    started = time.perf_counter()
    consumer.drain(lambda applied: progress.update(task, completed=applied))
    elapsed = time.perf_counter() - started
    bus.client.xgroup_destroy(bus.keys.events, GROUP)
    bus.close()
    return elapsed


def _baseline(database: sa.Engine, events: list[tuple[str, bytes]], batch: int) -> float:
    """Seconds to write the same events as one raw row each, one transaction per batch."""
    metadata = sa.MetaData()
    raw = sa.Table(
        "bench_raw_events",
        metadata,
        sa.Column("stream_id", sa.String(40), primary_key=True),
        sa.Column("event", sa.Text, nullable=False),
    )
    metadata.drop_all(database)
    metadata.create_all(database)
    rows = [{"stream_id": stream_id, "event": body.decode()} for stream_id, body in events]
    started = time.perf_counter()
    for start in range(0, len(rows), batch):
        with database.begin() as connection:
            connection.execute(raw.insert(), rows[start : start + batch])
    elapsed = time.perf_counter() - started
    metadata.drop_all(database)
    return elapsed


def _fresh_postgres(url: str) -> sa.Engine | None:
    """PostgreSQL in a schema of its own (dropped first), or None when it does not answer."""
    try:
        admin = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
        with admin.begin() as connection:
            connection.execute(sa.text("DROP SCHEMA IF EXISTS matchbox_bench CASCADE"))
            connection.execute(sa.text("CREATE SCHEMA matchbox_bench"))
        admin.dispose()
    except sa.exc.OperationalError:
        return None
    separator = "&" if "?" in url else "?"
    return open_database(f"{url}{separator}options=-csearch_path%3Dmatchbox_bench", Path("."))


def measure(
    events: int, seed: int, batch: int, postgres_url: str | None, console: Console
) -> tuple[list[Run], list[str]]:
    flow = preload_events(events, seed)
    trades = sum(1 for _, raw in flow if b'"type":"TradeExecuted"' in raw)
    runs: list[Run] = []
    notes: list[str] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with tempfile.TemporaryDirectory() as scratch, EmbeddedValkey(Path(scratch) / "valkey") as server:
        bus = Bus.connect(server.url)
        with Progress(*columns, console=console, transient=True) as progress:
            _write_stream(bus, flow, progress)
            targets: list[tuple[str, sa.Engine]] = [("sqlite", open_database(None, Path(scratch)))]
            if postgres_url:
                postgres = _fresh_postgres(postgres_url)
                if postgres is None:
                    notes.append(f"PostgreSQL at {postgres_url} did not answer: not measured")
                else:
                    targets.append(("postgresql", postgres))
            for label, database in targets:
                seconds = _drain(server.url, database, len(flow), batch, label, progress)
                baseline = _baseline(database, flow, batch)
                runs.append(
                    Run(
                        database=label,
                        events=len(flow),
                        trades=trades,
                        seconds=round(seconds, 3),
                        events_per_s=round(len(flow) / seconds),
                        baseline_events_per_s=round(len(flow) / baseline),
                        ratio=round(baseline / seconds, 3),
                    )
                )
                database.dispose()
        bus.close()
    return runs, notes


def render(runs: list[Run], notes: list[str], console: Console) -> None:
    table = Table(title="matchbox bench consumers: the persistence consumer draining the output stream")
    for column in ("database", "events", "trades", "seconds", "events/s", "baseline: raw rows/s", "ratio"):
        table.add_column(column, justify="left" if column == "database" else "right")
    for r in runs:
        table.add_row(
            r.database,
            f"{r.events:,}",
            f"{r.trades:,}",
            f"{r.seconds:.2f}",
            f"{r.events_per_s:,}",
            f"{r.baseline_events_per_s:,}",
            f"{r.ratio:.2f}",
        )
    console.print(table)
    for note in notes:
        console.print(f"[yellow]{note}[/]")


def run(*, events: int, seed: int, batch: int, postgres_url: str | None, json_output: bool) -> int:
    console = Console(stderr=json_output)
    runs, notes = measure(events, seed, batch, postgres_url, console)
    render(runs, notes, console)
    if json_output:
        figures = {"runs": [asdict(r) for r in runs], "notes": notes, "batch": batch, "python": sys.version.split()[0]}
        sys.stdout.write(msgspec.json.encode(figures).decode() + "\n")
    return 0
