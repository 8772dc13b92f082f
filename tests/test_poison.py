"""A poison entry costs only itself: the runner halves a refused batch down to the entry at fault,
stores everything else in stream order, and dead-letters that entry; a database that refuses an
entry's data never passes for a database that is down.

Over a real Valkey, with the test projection of tests/test_consumer.py and with the real
persistence sink on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest
import sqlalchemy as sa

from conftest import in_thread, wait_until
from matchbox.bus.codec import encode_event
from matchbox.bus.connection import Bus, Entry
from matchbox.consumers import queries
from matchbox.consumers.batch import read_newest
from matchbox.consumers.db import create_engine, run_write
from matchbox.consumers.persistence import PersistenceSink
from matchbox.consumers.runner import ConsumerConfig, GroupConsumer
from matchbox.consumers.schema import metadata
from matchbox.engine.types import BalanceChanged, BalanceReason
from store_support import Databases, random_flow
from test_consumer import SqliteSink, applications, applied_at, consumer, dead_letters, pending, publish

BATCH = 64


def calls_of(sink: SqliteSink) -> Counter[int]:
    """Counts the sink's apply calls by the size of what they were given."""
    calls: Counter[int] = Counter()
    sink.before_apply = lambda entries: calls.update([len(entries)])
    return calls


# --------------------------------------------------------------------------- halving, in the runner


def test_one_poison_entry_in_a_batch_costs_a_few_halvings_and_the_rest_is_stored_in_order(
    bus: Bus, tmp_path: Path
) -> None:
    ids = publish(bus, BATCH)
    path = tmp_path / "projection.db"
    sink = SqliteSink(path, "persistence")
    sink.poison.add(ids[37])
    calls = calls_of(sink)
    runner = consumer(bus, sink, batch=BATCH, max_deliveries=1)

    assert runner.drain() == BATCH - 1
    good = ids[:37] + ids[38:]
    assert applications(path) == Counter(good)
    stored_at = [applied_at(path, entry_id) for entry_id in good]
    assert stored_at == sorted(stored_at)  # in stream order
    assert sum(calls.values()) <= 2 * math.log2(BATCH) + 1  # one entry at a time would be 65
    assert sink.tried_alone[ids[37]] == 1
    [(_, letter)] = dead_letters(bus, "persistence")
    assert letter[b"id"] == ids[37]
    assert pending(bus, "persistence") == 0


def test_a_failing_first_entry_is_found_when_the_rest_goes_through(bus: Bus, tmp_path: Path) -> None:
    ids = publish(bus, 8)
    path = tmp_path / "projection.db"
    sink = SqliteSink(path, "persistence")
    sink.broken.add(ids[0])  # no Poison: it could be the sink, until the rest goes through
    runner = consumer(bus, sink, batch=8, max_deliveries=1)

    assert runner.drain() == 7
    assert applications(path) == Counter(ids[1:])
    assert [letter[b"id"] for _, letter in dead_letters(bus, "persistence")] == [ids[0]]


def test_a_sink_that_is_down_is_found_out_in_a_few_tries_per_round(bus: Bus, tmp_path: Path) -> None:
    publish(bus, BATCH)
    sink = SqliteSink(tmp_path / "projection.db", "persistence")
    sink.down.set()
    calls = calls_of(sink)
    runner = consumer(bus, sink, batch=BATCH, max_deliveries=1)

    with in_thread(runner.run, runner.stop):
        wait_until(lambda: calls[BATCH] >= 3, message="three rounds of the whole batch")
        runner.stop.set()
    rounds = calls[BATCH]
    per_round = sum(calls.values()) / rounds
    # the batch, its halvings down to the first entry, then the rest at once: log2(64) + 2 = 8
    # (one entry at a time would be 65)
    assert per_round <= math.log2(BATCH) + 2
    assert pending(bus, "persistence") == BATCH
    assert not dead_letters(bus, "persistence")


# --------------------------------------------------------------------------- the real sink and databases

FLOW = random_flow(seed=7, commands=120)
# What each database refuses: PostgreSQL a NUL byte in text, both an integer beyond 64 bits.
# SQLite stores a NUL byte as it is.
REFUSED = {"postgresql": ("nul", "overflow"), "sqlite": ("overflow",)}
POISON_ACCOUNT = {"nul": "x\x00y", "overflow": "ann"}
Tables = dict[str, list[dict[str, object]]]


def poison_fields(kind: str) -> dict[bytes, bytes]:
    """An event the engine never writes (an account with a NUL byte, a total beyond 64 bits), as
    if something else had written it into the stream."""
    total = 2**64 if kind == "overflow" else 5
    event = BalanceChanged(
        seq=1, ts=1, account=POISON_ACCOUNT[kind], total=total, reserved=0, reason=BalanceReason.DEPOSIT
    )
    return {b"event": encode_event(event, FLOW.n + 1, "1-0")}


def restamped(fields: Sequence[dict[bytes, bytes]]) -> list[Entry]:
    """The entries with stream ids ``1000-1``, ``1000-2``, … in the order given."""
    return [(f"1000-{k}".encode(), entry_fields) for k, entry_fields in enumerate(fields, 1)]


def xadd(bus: Bus, entries: Sequence[Entry]) -> None:
    pipe = bus.client.pipeline(transaction=False)
    for entry_id, fields in entries:
        pipe.xadd(bus.keys.events, {b"event": fields[b"event"]}, id=entry_id)
    pipe.execute()


def stored_tables(engine: sa.Engine) -> Tables:
    """Every table but the tracking row (a consumer's floor is its own; a batch applied by hand has none)."""
    return {name: queries.table_rows(engine, name) for name in sorted(metadata.tables) if name != "consumer_offsets"}


def without_poison(databases: Databases, entries: Sequence[Entry], poison_id: bytes) -> Tables:
    """The tables of every entry but the poison, applied in one batch: what the consumer must store."""
    engine = databases.open()
    PersistenceSink(engine).apply([entry for entry in entries if entry[0] != poison_id])
    return stored_tables(engine)


class CountingSink(PersistenceSink):
    """The real persistence sink, counting the calls the runner makes."""

    def __init__(self, engine: sa.Engine) -> None:
        super().__init__(engine)
        self.calls = 0

    def apply(self, entries: Sequence[Entry], floor: str | None = None) -> None:
        self.calls += 1
        super().apply(entries, floor)


def sql_consumer(bus: Bus, sink: PersistenceSink) -> GroupConsumer:
    config = ConsumerConfig(
        group=sink.group,
        consumer="c1",
        batch=BATCH,
        block_ms=20,
        claim_idle_ms=1000,  # no reclaim of what is in hand meanwhile, even on a busy machine
        claim_every_s=0.05,
        max_deliveries=2,
    )
    return GroupConsumer(bus, sink, config)


def refused(databases: Databases, kind: str) -> None:
    if kind not in REFUSED[databases.backend]:
        pytest.skip(f"{databases.backend} stores it")


@pytest.mark.parametrize("kind", ["nul", "overflow"])
def test_an_entry_the_database_refuses_amid_good_ones_is_dead_lettered_and_the_rest_stored(
    bus: Bus, databases: Databases, kind: str
) -> None:
    refused(databases, kind)
    good = [fields for _, fields in FLOW.entries]
    middle = BATCH + BATCH // 2 - 3  # inside the second batch read, not at its edge
    entries = restamped([*good[:middle], poison_fields(kind), *good[middle:]])
    poison_id = entries[middle][0]
    xadd(bus, entries)
    sink = CountingSink(databases.open())

    sql_consumer(bus, sink).drain()
    assert stored_tables(sink.engine) == without_poison(databases, entries, poison_id)  # tracking row too
    [(_, letter)] = dead_letters(bus, "persistence")
    assert letter[b"id"] == poison_id
    assert letter[b"reason"].split(b":")[0] == b"Poison"  # the database refused it, or its driver could not send it
    assert json.loads(letter[b"event"])["account"] == POISON_ACCOUNT[kind]
    assert pending(bus, "persistence") == 0
    batches = math.ceil(len(entries) / BATCH)
    assert sink.calls <= batches + 2 * math.log2(BATCH) + 1  # + halvings, + the retry that dead-letters it


@pytest.mark.parametrize("kind", ["nul", "overflow"])
def test_an_entry_the_database_refuses_read_alone_does_not_stall_the_consumer(
    bus: Bus, databases: Databases, kind: str
) -> None:
    """The case found in review: a deposit's lone event, refused, was taken for a database that is down
    and retried every 5 s forever, with nothing after it stored."""
    refused(databases, kind)
    good = [fields for _, fields in FLOW.entries]
    entries = restamped([*good[:10], poison_fields(kind), *good[10:]])
    sink = PersistenceSink(databases.open())
    runner = sql_consumer(bus, sink)

    with in_thread(runner.run, runner.stop):
        xadd(bus, entries[:10])
        wait_until(
            lambda: read_newest(sink.engine, sink.group) == entries[9][0].decode(),
            message="the first entries to be stored",
        )
        xadd(bus, entries[10:11])  # alone
        wait_until(lambda: pending(bus, "persistence") == 1 or dead_letters(bus, "persistence"), message="delivery")
        xadd(bus, entries[11:])
        wait_until(
            lambda: read_newest(sink.engine, sink.group) == entries[-1][0].decode(),
            message="the entries after the poison",
        )
        wait_until(lambda: dead_letters(bus, "persistence"), message="the poison to be dead-lettered")
    [(_, letter)] = dead_letters(bus, "persistence")
    assert letter[b"id"] == entries[10][0]
    assert stored_tables(sink.engine) == without_poison(databases, entries, entries[10][0])


def test_a_database_that_cannot_be_reached_is_not_poison(tmp_path: Path) -> None:
    """Only the data's own faults are Poison: an outage must stay one, or every entry would be
    dead-lettered while the database is away."""
    engine = create_engine(f"sqlite:///{tmp_path / 'no such folder' / 'matchbox.db'}")
    with pytest.raises(sa.exc.OperationalError):
        run_write(engine, lambda connection: connection.exec_driver_sql("SELECT 1"))
    engine.dispose()
