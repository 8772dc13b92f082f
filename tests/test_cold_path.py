"""The cold path never skips an event: a group lost with entries pending, a Redis or a database
that is down when a process starts, consumers that died. SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from conftest import deliver_to_ghost, in_thread, running_leader, wait_until
from matchbox.api.app import create_app
from matchbox.bus.connection import Bus
from matchbox.bus.durability import Durability
from matchbox.bus.journal import Journal
from matchbox.bus.server import EmbeddedValkey, free_port
from matchbox.consumers.db import open_database
from matchbox.consumers.persistence import PersistenceSink
from matchbox.consumers.process import SinkKind, run_consumer
from matchbox.consumers.runner import FORGET_AFTER_CLAIMS, ConsumerConfig, GroupConsumer
from matchbox.engine.types import CreateMarket, TickScheme, TradeExecuted
from matchbox.leader.runner import EngineLeader, LeaderConfig
from matchbox.settings import Settings
from store_support import Databases, random_flow, require_postgres
from test_poison import stored_tables, xadd

pytestmark = pytest.mark.e2e  # outages: each test waits for a Redis or a database that is down, or for a lost group

FLOW = random_flow(seed=18, commands=400)
GROUP = "persistence"


def config(**changes: object) -> ConsumerConfig:
    settings: dict[str, object] = {"consumer": "c1", "batch": 32, "block_ms": 20, "claim_every_s": 0.05}
    settings.setdefault("claim_idle_ms", 60_000)  # nothing of the ghost's is reclaimed unless a test says so
    return ConsumerConfig(group=GROUP, **{**settings, **changes})  # type: ignore[arg-type]


def trades_in(entries: slice) -> int:
    """The trades among the flow's entries ``entries`` (one entry per event)."""
    return sum(isinstance(event, TradeExecuted) for _, event in FLOW.events[entries])


def everything(databases: Databases) -> dict[str, list[dict[str, object]]]:
    """What the sink must hold once it has seen the whole stream: a fresh database fed all of it."""
    reference = databases.open()
    PersistenceSink(reference).apply(FLOW.entries)
    return stored_tables(reference)


def pending(bus: Bus) -> int:
    return int(bus.client.xpending(bus.keys.events, GROUP)["pending"])


def consumer_names(bus: Bus) -> set[str]:
    return {row["name"].decode() for row in bus.client.xinfo_consumers(bus.keys.events, GROUP)}


# --------------------------------------------------------------------------- a lost group


def test_a_group_lost_while_entries_are_pending_is_recreated_below_them(bus: Bus, databases: Databases) -> None:
    """The case found under load: entries pending on a consumer that died, then the group lost. Recreated at
    the newest entry stored, the group skipped them for good; at the floor, they come again."""
    first, held, rest = FLOW.entries[:150], FLOW.entries[150:260], FLOW.entries[260:]
    assert trades_in(slice(150, 260)) > 0, "the entries lost with the group must include trades"
    sink = PersistenceSink(databases.open())
    xadd(bus, first)
    assert GroupConsumer(bus, sink, config()).drain() == len(first)
    xadd(bus, held)
    assert deliver_to_ghost(bus, GROUP, len(held)) == [entry_id for entry_id, _ in held]
    xadd(bus, rest)
    assert GroupConsumer(bus, sink, config()).drain() == len(rest)  # stored past the ghost's entries
    assert pending(bus) == len(held)

    bus.client.xgroup_destroy(bus.keys.events, GROUP)  # the group goes, and its pending list with it
    restarted = GroupConsumer(bus, PersistenceSink(sink.engine), config(consumer="c2"))
    restarted.drain()

    assert stored_tables(sink.engine) == everything(databases)


def test_a_group_lost_mid_run_is_found_gone_and_recreated_below_what_was_pending(
    bus: Bus, databases: Databases
) -> None:
    """The same with the consumer running: it meets NOGROUP and creates the group again itself."""
    first, held, rest = FLOW.entries[:150], FLOW.entries[150:260], FLOW.entries[260:]
    sink = PersistenceSink(databases.open())
    runner = GroupConsumer(bus, sink, config())
    xadd(bus, first)
    runner.ensure_group()
    with in_thread(runner.run, runner.stop):
        wait_until(lambda: pending(bus) == 0 and runner.stats.applied >= len(first), message="the first entries")
        runner.stop.set()
    xadd(bus, held)
    deliver_to_ghost(bus, GROUP, len(held))
    runner = GroupConsumer(bus, sink, config())
    with in_thread(runner.run, runner.stop):
        xadd(bus, rest)
        wait_until(lambda: runner.stats.applied >= len(rest) and pending(bus) == len(held), message="the rest")
        bus.client.xgroup_destroy(bus.keys.events, GROUP)
        wait_until(lambda: runner.stats.recreated == 1, message="the group to be created again")
        wait_until(lambda: stored_tables(sink.engine) == everything(databases), message="the ghost's entries")
    assert pending(bus) == 0


# --------------------------------------------------------------------------- processes started before Redis


@contextmanager
def valkey_later(tmp_path: Path) -> Iterator[EmbeddedValkey]:
    """A Valkey on a port of its own, not started yet: start it with ``with server:``."""
    server = EmbeddedValkey(tmp_path / "valkey-later", port=free_port(), fsync="everysec")
    try:
        yield server
    finally:
        if server.process is not None:
            server.stop()


def test_a_consumer_started_while_redis_is_down_waits_for_it(
    databases: Databases, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url, data_dir = databases.location()
    stop = threading.Event()
    with valkey_later(tmp_path) as server, caplog.at_level(logging.WARNING, logger="matchbox.bus.outage"):
        settings = Settings(redis_url=server.url, database_url=url, data_dir=data_dir)
        with in_thread(lambda: run_consumer(settings, SinkKind.PERSISTENCE, GROUP, "c1", False, stop), stop):
            wait_until(lambda: f"waiting for Redis at 127.0.0.1:{server.port}" in caplog.text, message="a wait")
            server.start()
            bus = Bus.connect(server.url)
            xadd(bus, FLOW.entries)
            stored = open_database(url, data_dir)
            try:
                wait_until(lambda: stored_tables(stored) == everything(databases), timeout=30, message="it all")
            finally:
                stored.dispose()
                bus.close()


def test_a_consumer_started_while_its_database_is_down_waits_for_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing listens on port 1: the consumer waits (logged) until stopped, and does not exit."""
    require_postgres()  # the driver
    nowhere = "postgresql://127.0.0.1:1/test"
    settings = Settings(redis_url="redis://127.0.0.1:1/0", database_url=nowhere, data_dir=tmp_path)
    stop = threading.Event()
    returned: list[int] = []

    def consume() -> None:
        returned.append(run_consumer(settings, SinkKind.PERSISTENCE, GROUP, "", False, stop))

    with caplog.at_level(logging.WARNING, logger="matchbox.bus.outage"), in_thread(consume, stop) as thread:
        wait_until(lambda: caplog.text.count("waiting for the database") >= 2, message="two tries")
        assert thread.is_alive()
    assert returned == [0]


def test_an_engine_started_while_redis_is_down_leads_once_it_is_up(tmp_path: Path) -> None:
    with valkey_later(tmp_path) as server:
        stop = threading.Event()
        leader_bus = Bus.connect(server.url)
        leader = EngineLeader(leader_bus, LeaderConfig(lock_ttl_ms=1000), stop)
        with in_thread(leader.run, stop):
            wait_until(lambda: leader.stats.terms == 0, message="the candidate running")
            server.start()
            bus = Bus.connect(server.url)
            Journal(bus, Durability.ALWAYS).submit(market())
            wait_until(lambda: bus.last(bus.keys.events) is not None, message="the market created")
            assert leader.stats.terms == 1
            bus.close()
        leader_bus.close()


def market() -> CreateMarket:
    return CreateMarket(seq=0, ts=0, market_id="m", scheme=TickScheme.TICKS, max_tick=100)


def test_an_api_started_while_redis_is_down_serves_and_makes_its_market_once_redis_is_up(tmp_path: Path) -> None:
    with valkey_later(tmp_path) as server:
        settings = Settings(redis_url=server.url, data_dir=tmp_path, open_access=True, startup_catch_up_seconds=0.2)
        with TestClient(create_app(settings)) as client:
            assert client.get("/ready").status_code == 503
            server.start()
            with running_leader(server.url):
                wait_until(lambda: client.get("/ready").status_code == 200, timeout=30, message="ready")
                wait_until(
                    lambda: client.get(f"/v1/markets/{settings.default_market}").status_code == 200,
                    timeout=30,
                    message="the default market",
                )


# --------------------------------------------------------------------------- consumers that died


def test_consumers_that_died_leave_the_group_once_their_entries_are_reclaimed(bus: Bus, databases: Databases) -> None:
    claim_idle_ms = 100
    sink = PersistenceSink(databases.open())
    xadd(bus, FLOW.entries[:100])
    runner = GroupConsumer(bus, sink, config(claim_idle_ms=claim_idle_ms))
    runner.ensure_group()
    deliver_to_ghost(bus, GROUP, 40)  # died with entries in hand
    bus.client.xreadgroup(GROUP, "idle-ghost", {bus.keys.events: "0"})  # died with nothing in hand
    assert consumer_names(bus) == {"ghost", "idle-ghost"}
    with in_thread(runner.run, runner.stop):
        xadd(bus, FLOW.entries[100:])
        wait_until(
            lambda: consumer_names(bus) == {"c1"},
            timeout=FORGET_AFTER_CLAIMS * claim_idle_ms / 1000 + 10,
            message="only the live consumer listed",
        )
        wait_until(lambda: stored_tables(sink.engine) == everything(databases), message="everything stored")
    assert pending(bus) == 0


# --------------------------------------------------------------------------- in hand when Redis went away


def test_a_batch_in_hand_when_redis_dies_is_taken_again_as_soon_as_it_is_back(
    tmp_path: Path, databases: Databases
) -> None:
    """Redis dies after the sink stored a batch and before its XACK: the batch stays pending on this
    consumer (the AOF keeps the group). Once Redis is back the consumer takes its own pending
    entries again at once, not after ``claim_idle_ms`` (a minute here) as a dead consumer's."""
    server = EmbeddedValkey(tmp_path / "valkey").start()
    died = threading.Event()

    class DiesAfterStoring(PersistenceSink):
        def apply(self, entries: object, floor: str | None = None) -> None:
            super().apply(entries, floor)  # type: ignore[arg-type]
            if not died.is_set():
                server.kill()  # the XACK that follows finds no Redis
                died.set()  # only now: the test starts the server again once the old one is gone

    bus = Bus.connect(server.url)
    xadd(bus, FLOW.entries)
    stop = threading.Event()
    sink = DiesAfterStoring(databases.open())
    consumer = GroupConsumer(bus, sink, config(), stop)
    try:
        with in_thread(consumer.run, stop):
            wait_until(died.is_set, message="Redis killed under the consumer")
            server.start()
            wait_until(
                lambda: pending(bus) == 0 and stored_tables(sink.engine) == everything(databases),
                timeout=15,
                message="the batch in hand stored and acknowledged once Redis is back",
            )
    finally:
        bus.close()
        server.stop()
