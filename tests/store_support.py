"""Real events for the store tests: the pure engine driven by a seeded random order flow.

Every command gets the journal's numbering (``seq`` from 1, ``ts`` the millisecond of its input
id in nanoseconds), and every event becomes an output entry ``<ms>-<n>`` with its JSON in the
``event`` field, exactly as the leader writes them.
"""

from __future__ import annotations

import os
import random
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory

from matchbox.bus.codec import encode_event
from matchbox.bus.connection import Entry
from matchbox.consumers.db import alembic_config, create_engine, database_url, open_database
from matchbox.engine import Engine
from matchbox.engine.types import (
    AdvanceTime,
    AmendOrder,
    CancelAll,
    CancelOrder,
    CloseMarket,
    Command,
    CreateMarket,
    Event,
    MarketState,
    OrderKind,
    PlaceOrder,
    ReduceOrder,
    ResumeMarket,
    SelfTradePrevention,
    SettleMarket,
    Side,
    SuspendMarket,
    TickScheme,
    TimeInForce,
)

START_MS = 1_764_000_000_000


def head_revision() -> str:
    """The newest migration's revision: where a database stands once opened."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


ACCOUNTS = ("ann", "bob", "cat", "dan", "eve")
# (market, scheme, max_tick for TICKS, the tick the flow's prices wander around)
MARKETS = (
    ("rain", TickScheme.BINARY, 0, 50),
    ("derby", TickScheme.ODDS, 0, 120),
    ("chess", TickScheme.TICKS, 400, 200),
)


class Stream:
    """An engine and the output stream it has written so far."""

    def __init__(self, start_ms: int = START_MS) -> None:
        self.engine = Engine()
        self.ms = start_ms
        self.seq = 0
        self.n = 0
        self.next_order_id = 0
        self.entries: list[Entry] = []
        self.events: list[tuple[int, Event]] = []  # (n, event)

    def apply(self, command_type: type[Command], *, step_ms: int = 1, **fields: Any) -> list[Event]:
        self.seq += 1
        self.ms += step_ms
        in_id = f"{self.ms}-0"
        events = self.engine.apply(command_type(seq=self.seq, ts=self.ms * 1_000_000, **fields))
        self.engine.check_invariants()
        for event in events:
            self.n += 1
            self.entries.append((f"{self.ms}-{self.n}".encode(), {b"event": encode_event(event, self.n, in_id)}))
            self.events.append((self.n, event))
        return events

    def place(self, market_id: str, account: str, side: Side, price: int, qty: int, **fields: Any) -> list[Event]:
        self.next_order_id += 1
        return self.apply(
            PlaceOrder,
            market_id=market_id,
            order_id=self.next_order_id,
            account=account,
            side=side,
            price=price,
            qty=qty,
            **fields,
        )


def random_flow(seed: int, commands: int) -> Stream:
    """Three markets (binary, odds, ticks), ``commands`` random commands, then one closed, one settled."""
    rng = random.Random(seed)
    stream = Stream()
    mids: dict[str, int] = {}
    for market_id, scheme, max_tick, mid in MARKETS:
        stp = SelfTradePrevention.CANCEL_RESTING if scheme is TickScheme.TICKS else SelfTradePrevention.CANCEL_TAKER
        stream.apply(CreateMarket, market_id=market_id, scheme=scheme, max_tick=max_tick, max_qty=500, stp=stp)
        mids[market_id] = mid
    for _ in range(commands):
        _random_command(rng, stream, mids)
    stream.apply(CloseMarket, market_id="rain", step_ms=10)
    stream.apply(SettleMarket, market_id="derby", outcome="home", step_ms=10)
    return stream


def _random_command(rng: random.Random, stream: Stream, mids: dict[str, int]) -> None:
    step_ms = rng.choice((1, 3, 20, 150, 700, 2500))
    market_id = rng.choice(list(mids))
    roll = rng.random()
    live = sorted(stream.engine.orders)
    if stream.engine.books[market_id].state is MarketState.SUSPENDED and rng.random() < 0.4:
        stream.apply(ResumeMarket, market_id=market_id, step_ms=step_ms)
    elif roll < 0.62:
        mids[market_id] = max(5, min(95, mids[market_id] + rng.randint(-2, 2)))
        _random_place(rng, stream, market_id, mids[market_id], step_ms)
    elif roll < 0.73 and live:
        order_id = rng.choice(live) if rng.random() < 0.9 else rng.randint(1, stream.next_order_id + 3)
        stream.apply(CancelOrder, order_id=order_id, step_ms=step_ms)
    elif roll < 0.77 and live:  # a new price (it may cross), more or less quantity
        order = stream.engine.orders[rng.choice(live)]
        price = order.price + rng.randint(-3, 3) if rng.random() < 0.7 else 0
        qty = rng.randint(1, 30) if rng.random() < 0.6 else 0
        stream.apply(AmendOrder, order_id=order.order_id, price=max(0, price), qty=qty, step_ms=step_ms)
    elif roll < 0.88 and live:
        order = stream.engine.orders[rng.choice(live)]
        stream.apply(ReduceOrder, order_id=order.order_id, reduce_by=rng.randint(1, order.remaining), step_ms=step_ms)
    elif roll < 0.91:
        stream.apply(CancelAll, market_id=market_id, account=rng.choice(ACCOUNTS), step_ms=step_ms)
    elif roll < 0.92:
        stream.apply(SuspendMarket, market_id=market_id, step_ms=step_ms)  # rejected if suspended already
    else:
        stream.apply(AdvanceTime, step_ms=step_ms)


def _random_place(rng: random.Random, stream: Stream, market_id: str, mid: int, step_ms: int) -> None:
    side = rng.choice((Side.BUY, Side.SELL))
    price = mid + rng.randint(-3, 3)
    fields: dict[str, Any] = {}
    kind = rng.random()
    if kind < 0.10:
        fields["tif"] = TimeInForce.IOC
    elif kind < 0.15:
        fields["tif"] = TimeInForce.FOK
    elif kind < 0.22:
        fields.update(tif=TimeInForce.GTD, expires_at=(stream.ms + rng.randint(1, 8000)) * 1_000_000)
    elif kind < 0.26:
        fields.update(kind=OrderKind.MARKET, tif=TimeInForce.IOC)
    elif kind < 0.31:
        fields["post_only"] = True
    elif kind < 0.33:
        price = 10_000  # off every ladder: rejected
    qty = rng.randint(1, 30) if rng.random() < 0.98 else 0  # a zero quantity is rejected
    stream.place(market_id, rng.choice(ACCOUNTS), side, price, qty, step_ms=step_ms, **fields)


def split(entries: Sequence[Entry], rng: random.Random, largest: int) -> Iterator[list[Entry]]:
    """``entries`` in consecutive batches of random sizes from 1 to ``largest``."""
    start = 0
    while start < len(entries):
        size = rng.randint(1, largest)
        yield list(entries[start : start + size])
        start += size


Batches = Sequence[Sequence[Entry]]
Build = Callable[[sa.Engine, Batches], None]


def build_alongside(databases: Databases, engine: sa.Engine, build: Build, batches: Batches, ours: Batches) -> None:
    """``ours`` built into ``engine`` here while three other consumers, each on a connection of
    its own, build an overlapping, shuffled share of ``batches`` (some batches more than once);
    raises if a consumer failed or did not finish."""
    failures: list[BaseException] = []

    def consume(seed: int, sink_engine: sa.Engine) -> None:
        rng = random.Random(seed)
        mine = [batch for batch in batches if rng.random() < 0.7]
        rng.shuffle(mine)
        try:
            build(sink_engine, mine)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=consume, args=(seed, databases.another_engine(engine))) for seed in (10, 11, 12)]
    for thread in threads:
        thread.start()
    build(engine, ours)
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)
    assert not failures


# --------------------------------------------------------------------------- databases

POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://127.0.0.1:5432/test")


class Databases:
    """Fresh, empty databases of one backend: SQLite files, or PostgreSQL schemas dropped at the end."""

    def __init__(self, backend: str, tmp_path: Path) -> None:
        self.backend = backend
        self.tmp_path = tmp_path
        self.schemas: list[str] = []
        self.engines: list[sa.Engine] = []

    def location(self) -> tuple[str | None, Path]:
        """(url, data_dir) for ``open_database``, naming a database nobody has opened yet."""
        data_dir = self.tmp_path / f"db{len(self.schemas)}-{uuid.uuid4().hex[:6]}"
        if self.backend == "sqlite":
            self.schemas.append("")
            return None, data_dir
        schema = f"mbtest_{uuid.uuid4().hex[:12]}"
        with admin() as connection:
            connection.exec_driver_sql(f"CREATE SCHEMA {schema}")
        self.schemas.append(schema)
        url = sa.make_url(POSTGRES_URL).update_query_dict(
            {"options": f"-csearch_path={schema} -csynchronous_commit=off"}
        )
        return url.render_as_string(hide_password=False), data_dir

    def open(self) -> sa.Engine:
        engine = open_database(*self.location())
        self.engines.append(engine)
        return engine

    def another_engine(self, engine: sa.Engine) -> sa.Engine:
        """A second engine (its own pool) on the same database, as a second consumer process has."""
        other = create_engine(engine.url.render_as_string(hide_password=False))
        self.engines.append(other)
        return other

    def close(self) -> None:
        for engine in self.engines:
            engine.dispose()
        if self.backend == "postgresql":
            with admin() as connection:
                for schema in self.schemas:
                    connection.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def admin() -> sa.Connection:
    engine = sa.create_engine(database_url(POSTGRES_URL), poolclass=sa.NullPool, isolation_level="AUTOCOMMIT")
    return engine.connect()


def require_postgres() -> None:
    try:
        with admin() as connection:
            connection.exec_driver_sql("SELECT 1")
    except sa.exc.OperationalError as exc:
        reason = f"PostgreSQL is not reachable at {POSTGRES_URL} (set TEST_POSTGRES_URL): {exc.orig}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
