"""The cold path with real processes: ``matchbox consume`` killed mid-batch, restarted, and
``matchbox replay`` rebuilding the same tables, over a real Valkey, a real engine leader, and
SQLite or PostgreSQL.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from conftest import running_leader, wait_until
from matchbox.bus.codec import decode_event
from matchbox.bus.commit import read_offset
from matchbox.bus.connection import Bus
from matchbox.bus.durability import Durability
from matchbox.bus.journal import Journal, Request
from matchbox.bus.server import EmbeddedValkey
from matchbox.consumers import schema
from matchbox.consumers.batch import read_newest
from matchbox.consumers.db import open_database
from matchbox.consumers.persistence import PersistenceSink
from matchbox.consumers.queries import table_rows
from matchbox.engine.types import CreateMarket, PlaceOrder, Side, TickScheme, TradeExecuted
from store_support import Databases

pytestmark = pytest.mark.e2e  # multi-process: `matchbox consume` killed mid-batch and `matchbox replay`

ORDERS = 3000
COMPARED = sorted(name for name in schema.metadata.tables if name != "consumer_offsets")


@pytest.fixture
def traded_bus(tmp_path: Path) -> Iterator[Bus]:
    """A private Valkey and a leader that has matched a seeded flow of crossing orders."""
    with EmbeddedValkey(tmp_path / "valkey", fsync="everysec") as server, running_leader(server.url):
        bus = Bus.connect(server.url)
        journal = Journal(bus, Durability.EVERYSEC)
        journal.submit(CreateMarket(seq=0, ts=0, market_id="m", scheme=TickScheme.BINARY))
        rng = random.Random(11)
        requests = [
            Request(
                PlaceOrder(
                    seq=0,
                    ts=0,
                    market_id="m",
                    order_id=0,
                    account=f"a{rng.randrange(20)}",
                    side=Side.BUY if rng.random() < 0.5 else Side.SELL,
                    price=rng.randint(45, 55),
                    qty=rng.randint(1, 10),
                )
            )
            for _ in range(ORDERS)
        ]
        for start in range(0, ORDERS, 200):
            journal.submit_many(requests[start : start + 200])
        wait_until(lambda: (o := read_offset(bus)) is not None and o.inputs == ORDERS + 1, message="all matched")
        yield bus
        bus.close()


def consumer(bus: Bus, location: tuple[str | None, Path], name: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
    url, data_dir = location
    environment = {
        **os.environ,
        "REDIS_URL": _url(bus),
        "MATCHBOX_CONSUMER_BATCH": "20",
        "MATCHBOX_CLAIM_IDLE_MS": "300",
        **env,
    }
    environment.pop("DATABASE_URL", None)
    if url is not None:
        environment["DATABASE_URL"] = url
    command = [sys.executable, "-m", "matchbox", *args, "--data-dir", str(data_dir)]
    if args[0] == "consume":
        command += ["--name", name]
    with (data_dir.parent / f"{name}.log").open("wb") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            command, env=environment, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )


def _url(bus: Bus) -> str:
    kwargs = bus.client.get_connection_kwargs()
    return f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs.get('db', 0)}"


def pending_on(bus: Bus, group: str, name: str) -> int:
    """Entries delivered to consumer ``name`` and not acknowledged (0 before the group exists)."""
    try:
        return len(bus.client.xpending_range(bus.keys.events, group, "-", "+", 1000, consumername=name))
    except redis.ResponseError as exc:
        if str(exc).startswith("NOGROUP"):
            return 0
        raise


def stream_trades(bus: Bus) -> list[tuple[int, int, int, int, int]]:
    trades = []
    for _, fields in bus.range(bus.keys.events):
        event = decode_event(fields[b"event"]).event
        if isinstance(event, TradeExecuted):
            trades.append((event.trade_id, event.price, event.qty, event.maker_order_id, event.taker_order_id))
    return trades


def kill_holding_a_batch(bus: Bus, location: tuple[str | None, Path], name: str) -> bool:
    """Start a consumer, SIGKILL it as soon as it holds a batch; True if it died holding one
    (the kill may also land just after an acknowledgement: then the caller tries again)."""
    victim = consumer(bus, location, name, "consume", "persistence")
    try:
        wait_until(
            lambda: pending_on(bus, "persistence", name) > 0 or victim.poll() is not None,
            message="the victim holds a batch",
        )
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
    finally:
        if victim.poll() is None:
            victim.kill()
    return pending_on(bus, "persistence", name) > 0


def tables(engine: sa.Engine) -> dict[str, list[dict[str, Any]]]:
    return {name: table_rows(engine, name) for name in COMPARED}


def test_consumer_killed_mid_batch_restarts_with_every_trade_once(traded_bus: Bus, databases: Databases) -> None:
    bus = traded_bus
    location = databases.location()
    newest = bus.last(bus.keys.events)
    assert newest is not None
    last_id = newest[0].decode()
    died_holding_a_batch = any(kill_holding_a_batch(bus, location, f"victim{attempt}") for attempt in range(5))
    assert died_holding_a_batch, "no kill landed in the middle of a batch"

    survivor = consumer(bus, location, "survivor", "consume", "persistence")
    database = open_database(*location)
    databases.engines.append(database)
    try:
        wait_until(
            lambda: (
                read_newest(database, "persistence") == last_id
                and not bus.client.xpending(bus.keys.events, "persistence")["pending"]
            ),
            timeout=60,
            message="the survivor caught up, reclaiming the victim's batch",
        )
        survivor.send_signal(signal.SIGTERM)
        assert survivor.wait(20) == 0
    finally:
        if survivor.poll() is None:
            survivor.kill()

    expected = stream_trades(bus)
    trades = schema.trades.c
    with database.connect() as connection:
        stored = connection.execute(
            sa.select(trades.trade_id, trades.price, trades.qty, trades.maker_order_id, trades.taker_order_id).order_by(
                trades.trade_id
            )
        ).all()
    assert len(expected) > 100
    assert [tuple(row) for row in stored] == sorted(expected)  # each trade once, none missing

    reference = databases.open()  # the same stream applied in one batch, in process
    PersistenceSink(reference).apply(bus.range(bus.keys.events))
    assert tables(database) == tables(reference)

    rebuilt_location = databases.location()
    replay = consumer(bus, rebuilt_location, "replay", "replay", "--group", "rebuilt", "--sink", "persistence")
    assert replay.wait(120) == 0
    rebuilt = open_database(*rebuilt_location)
    databases.engines.append(rebuilt)
    assert read_newest(rebuilt, "rebuilt") == last_id
    assert tables(rebuilt) == tables(database)  # replay equals live, row for row
    groups = {group["name"].decode() for group in bus.client.xinfo_groups(bus.keys.events)}
    assert "rebuilt" not in groups  # a finished replay leaves no group behind to hold back trimming
    assert bus.client.hget(bus.keys.floors, "rebuilt") is None
