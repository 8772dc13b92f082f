"""The consumer-group runner against a real Valkey, feeding a real SQLite projection."""

from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from conftest import deliver_to_ghost, in_thread, wait_until
from matchbox.bus.connection import Bus, Entry, id_order
from matchbox.consumers.runner import (
    ConsumerConfig,
    GroupConsumer,
    GroupLag,
    Poison,
    group_lag,
    previous_id,
    trim_events,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (id TEXT PRIMARY KEY, event TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS applications (id TEXT NOT NULL, sink TEXT NOT NULL, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS tracking (grp TEXT PRIMARY KEY, ms INTEGER NOT NULL, seq INTEGER NOT NULL);
"""


class SqliteSink:
    """A projection in SQLite: events by entry id (unique), a log of every application, a tracking row.

    The application log is what lets a test count exactly how often each entry was applied. Test
    hooks: ids in ``poison`` raise Poison and ids in ``broken`` raise ValueError (in a batch or
    alone), ``down`` fails everything like an unreachable database, and ``before_apply`` runs
    first in every call (to pause a consumer mid-batch).
    """

    def __init__(self, path: Path, group: str, label: str = "sink") -> None:
        self.group = group
        self.label = label
        self.db = sqlite3.connect(path, check_same_thread=False, timeout=10)
        self.db.executescript(SCHEMA)
        self.poison: set[bytes] = set()
        self.broken: set[bytes] = set()
        self.down = threading.Event()
        self.before_apply: Callable[[Sequence[Entry]], None] | None = None
        self.tried_alone: Counter[bytes] = Counter()  # single-entry calls, per entry

    def position(self) -> str | None:
        row = self.db.execute("SELECT ms, seq FROM tracking WHERE grp = ?", (self.group,)).fetchone()
        return f"{row[0]}-{row[1]}" if row else None

    def apply(self, entries: Sequence[Entry], floor: str | None = None) -> None:
        if self.before_apply:
            self.before_apply(entries)
        if len(entries) == 1:
            self.tried_alone[entries[0][0]] += 1
        if self.down.is_set():
            raise sqlite3.OperationalError("unable to open database file")
        with self.db:
            for entry_id, fields in entries:
                self._apply_one(entry_id, fields)
            if floor is None:
                return
            ms, seq = id_order(floor)
            self.db.execute(
                "INSERT INTO tracking VALUES (?, ?, ?) ON CONFLICT (grp) DO UPDATE SET ms = excluded.ms, "
                "seq = excluded.seq WHERE (excluded.ms, excluded.seq) > (tracking.ms, tracking.seq)",
                (self.group, ms, seq),
            )

    def _apply_one(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        if entry_id in self.poison:
            raise Poison(f"not an event: {entry_id.decode()}")
        if entry_id in self.broken:
            raise ValueError(f"cannot apply {entry_id.decode()}")
        text = entry_id.decode()
        self.db.execute("INSERT OR IGNORE INTO events VALUES (?, ?)", (text, fields[b"event"].decode()))
        self.db.execute("INSERT INTO applications VALUES (?, ?, ?)", (text, self.label, time.monotonic()))


def applications(path: Path, sink: str | None = None) -> Counter[bytes]:
    """How often each entry was applied (by one sink, or by any), read over a connection of its own."""
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT id, sink FROM applications").fetchall()
    return Counter(entry_id.encode() for entry_id, label in rows if sink is None or label == sink)


def applied_at(path: Path, entry_id: bytes) -> float:
    with sqlite3.connect(path) as db:
        return float(db.execute("SELECT at FROM applications WHERE id = ?", (entry_id.decode(),)).fetchone()[0])


def publish(bus: Bus, count: int, first: int = 1) -> list[bytes]:
    """XADD ``count`` events numbered from ``first``, with ids as the engine makes them: ``<input ms>-<n>``."""
    pipe = bus.client.pipeline(transaction=False)
    for n in range(first, first + count):
        pipe.xadd(bus.keys.events, {"event": json.dumps({"v": 1, "n": n, "type": "Tested"})}, id=f"{1000 + n // 4}-{n}")
    return list(pipe.execute())


def consumer(bus: Bus, sink: SqliteSink, stop: threading.Event | None = None, **config: Any) -> GroupConsumer:
    """A consumer with test-sized timings: reclaim after 150 ms, look every 50 ms, block 20 ms."""
    settings: dict[str, Any] = {"consumer": "c1", "block_ms": 20, "claim_idle_ms": 150, "claim_every_s": 0.05}
    return GroupConsumer(bus, sink, ConsumerConfig(group=sink.group, **{**settings, **config}), stop)


@contextmanager
def running(runner: GroupConsumer) -> Iterator[threading.Thread]:
    """``runner.run()`` in a thread; stopped and joined on exit, its exception raised here."""
    with in_thread(runner.run, runner.stop) as thread:
        yield thread
    assert not thread.is_alive(), "the consumer did not stop"


def pending(bus: Bus, group: str) -> int:
    return int(bus.client.xpending(bus.keys.events, group)["pending"])


def group_info(bus: Bus, group: str) -> dict[str, Any]:
    return next(row for row in bus.client.xinfo_groups(bus.keys.events) if row["name"] == group.encode())


def dead_letters(bus: Bus, group: str) -> list[Entry]:
    return bus.range(bus.keys.dead_letter(group))


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    return tmp_path / "projection.db"


# --------------------------------------------------------------------------- the group's start


def test_the_group_starts_at_the_sink_position_not_at_the_end(bus: Bus, sqlite_path: Path) -> None:
    ids = publish(bus, 10)
    sink = SqliteSink(sqlite_path, "persistence")
    sink.apply(bus.range(bus.keys.events, count=4), ids[3].decode())  # the projection holds the first four

    runner = consumer(bus, sink)
    assert runner.ensure_group()
    assert group_info(bus, "persistence")["last-delivered-id"] == ids[3]
    assert runner.drain() == 6
    assert applications(sqlite_path) == Counter(ids)  # the first four once (above), the rest once
    assert not runner.ensure_group()  # BUSYGROUP: exists already


def test_a_new_sink_starts_at_zero(bus: Bus, sqlite_path: Path) -> None:
    ids = publish(bus, 5)
    runner = consumer(bus, SqliteSink(sqlite_path, "persistence"))
    assert runner.ensure_group()
    assert group_info(bus, "persistence")["last-delivered-id"] == b"0-0"
    assert runner.drain() == 5
    assert applications(sqlite_path) == Counter(ids)


def test_a_config_for_another_group_is_refused(bus: Bus, sqlite_path: Path) -> None:
    with pytest.raises(ValueError, match="analytics"):
        GroupConsumer(bus, SqliteSink(sqlite_path, "persistence"), ConsumerConfig(group="analytics"))


def test_the_consumer_name_defaults_to_host_and_pid() -> None:
    assert ConsumerConfig(group="g").consumer == f"{socket.gethostname()}:{os.getpid()}"
    assert ConsumerConfig(group="g", consumer="").consumer == ConsumerConfig(group="g").consumer


# --------------------------------------------------------------------------- acknowledgement


def test_entries_are_acknowledged_only_after_apply(bus: Bus, sqlite_path: Path) -> None:
    publish(bus, 12)
    sink = SqliteSink(sqlite_path, "persistence")
    unacknowledged_during_apply: list[bool] = []

    def check(entries: Sequence[Entry]) -> None:
        rows = bus.client.xpending_range(bus.keys.events, "persistence", "-", "+", 100)
        held = {row["message_id"] for row in rows}
        unacknowledged_during_apply.append({entry_id for entry_id, _ in entries} <= held)

    sink.before_apply = check
    assert consumer(bus, sink, batch=5).drain() == 12
    assert unacknowledged_during_apply == [True, True, True]  # each batch delivered, not yet acknowledged
    assert pending(bus, "persistence") == 0


def test_a_sink_that_is_down_leaves_everything_pending_and_nothing_dead_lettered(bus: Bus, sqlite_path: Path) -> None:
    ids = publish(bus, 5)
    sink = SqliteSink(sqlite_path, "persistence")
    sink.down.set()
    calls = Counter[str]()
    sink.before_apply = lambda entries: calls.update(["batch" if len(entries) == 5 else "part"])  # the whole batch
    runner = consumer(bus, sink, max_deliveries=1)

    with running(runner):
        wait_until(lambda: calls["batch"] >= 3, message="the batch to be retried from memory")
        assert pending(bus, "persistence") == 5
        assert not applications(sqlite_path)
        rows = bus.client.xpending_range(bus.keys.events, "persistence", "-", "+", 10)
        assert {row["times_delivered"] for row in rows} == {1}  # retries from memory count no delivery

        sink.down.clear()
        wait_until(lambda: len(applications(sqlite_path)) == 5, message="the sink to catch up once it is back")
        wait_until(lambda: pending(bus, "persistence") == 0, message="the batch to be acknowledged")
    assert applications(sqlite_path) == Counter(ids)
    assert not dead_letters(bus, "persistence")
    assert runner.stats.dead_lettered == 0


@pytest.mark.e2e  # waits out a database outage
def test_during_an_outage_no_other_consumer_reclaims_the_held_entries(bus: Bus, sqlite_path: Path) -> None:
    """Each reclaim would count a delivery: with max_deliveries=1 a steal would dead-letter them."""
    ids = publish(bus, 5)
    holder, other = SqliteSink(sqlite_path, "persistence", "a"), SqliteSink(sqlite_path, "persistence", "b")
    holder.down.set()
    other.down.set()
    batches = Counter[str]()
    holder.before_apply = lambda entries: batches.update(["held"] if len(entries) == 5 else [])  # the whole batch
    options: dict[str, Any] = {"claim_idle_ms": 300, "max_deliveries": 1}
    first, second = consumer(bus, holder, consumer="a", **options), consumer(bus, other, consumer="b", **options)

    with running(first):
        wait_until(lambda: batches["held"] >= 1, message="the first consumer to hold the batch")
        with running(second):
            # the backoff (0.1, 0.2, 0.4 s) outlasts the idle time twice over, second reclaiming every 50 ms
            wait_until(lambda: batches["held"] >= 4, message="the first consumer to retry three times")
            rows = bus.client.xpending_range(bus.keys.events, "persistence", "-", "+", 10)
            assert {(row["consumer"], row["times_delivered"]) for row in rows} == {(b"a", 1)}
            holder.down.clear()
            other.down.clear()
            wait_until(lambda: pending(bus, "persistence") == 0, message="the held batch to go through")
    assert applications(sqlite_path, "a") == Counter(ids)
    assert not dead_letters(bus, "persistence")


# --------------------------------------------------------------------------- sharing and fan-out


def test_two_consumers_in_one_group_share_the_work(bus: Bus, sqlite_path: Path) -> None:
    ids = publish(bus, 100)
    first, second = SqliteSink(sqlite_path, "persistence", "a"), SqliteSink(sqlite_path, "persistence", "b")
    second_started = threading.Event()
    gate: list[bool] = []

    def hold_the_first_batch(entries: Sequence[Entry]) -> None:
        """The first consumer keeps its first batch in hand until the second one has one too."""
        if not gate:
            gate.append(second_started.wait(10))

    first.before_apply = hold_the_first_batch
    second.before_apply = lambda entries: second_started.set()
    runners = [consumer(bus, first, consumer="a", batch=10), consumer(bus, second, consumer="b", batch=10)]
    runners[0].ensure_group()

    counts: dict[str, int] = {}
    threads = [threading.Thread(target=lambda r=r: counts.update({r.config.consumer: r.drain()})) for r in runners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    assert not any(thread.is_alive() for thread in threads)
    assert gate == [True]
    assert applications(sqlite_path) == Counter(ids)  # the union is everything, each entry once
    assert sum(applications(sqlite_path, "a").values()) == counts["a"] > 0
    assert sum(applications(sqlite_path, "b").values()) == counts["b"] > 0
    assert pending(bus, "persistence") == 0


def test_two_groups_each_see_everything(bus: Bus, tmp_path: Path) -> None:
    ids = publish(bus, 20)
    persistence = consumer(bus, SqliteSink(tmp_path / "persistence.db", "persistence"))
    analytics = consumer(bus, SqliteSink(tmp_path / "analytics.db", "analytics"))
    assert persistence.drain() == 20
    assert analytics.drain() == 20
    assert applications(tmp_path / "persistence.db") == Counter(ids)
    assert applications(tmp_path / "analytics.db") == Counter(ids)


# --------------------------------------------------------------------------- reclaiming


def test_a_dead_consumer_entries_are_reclaimed_after_claim_idle_ms(bus: Bus, sqlite_path: Path) -> None:
    ids = publish(bus, 10)
    runner = consumer(bus, SqliteSink(sqlite_path, "persistence"), claim_idle_ms=150)
    runner.ensure_group()
    read_at = time.monotonic()
    orphans = deliver_to_ghost(bus, "persistence", 4)

    with running(runner):
        wait_until(lambda: len(applications(sqlite_path)) == 10, message="the ghost's entries to be reclaimed")
        wait_until(lambda: pending(bus, "persistence") == 0, message="the reclaimed entries to be acknowledged")
    assert orphans == ids[:4]
    assert applications(sqlite_path) == Counter(ids)
    assert min(applied_at(sqlite_path, entry_id) for entry_id in orphans) - read_at >= 0.14  # not before 150 ms idle
    assert runner.stats.reclaimed == 4


@pytest.mark.parametrize("failure", ["poison", "broken"])
def test_a_failing_entry_is_dead_lettered_at_max_deliveries_and_the_group_moves_on(
    bus: Bus, sqlite_path: Path, failure: str, caplog: pytest.LogCaptureFixture
) -> None:
    ids = publish(bus, 10)
    sink = SqliteSink(sqlite_path, "persistence")
    getattr(sink, failure).add(ids[2])
    runner = consumer(bus, sink, max_deliveries=3, claim_idle_ms=100)

    with caplog.at_level(logging.WARNING, logger="matchbox.consumers.runner"):
        assert runner.drain() == 9
    assert sink.tried_alone[ids[2]] == 3  # once after the batch failed, then twice reclaimed
    [(_, letter)] = dead_letters(bus, "persistence")
    reason = b"Poison: not an event" if failure == "poison" else b"ValueError: cannot apply"
    assert letter[b"reason"].startswith(reason)
    assert letter[b"id"] == ids[2]
    assert letter[b"group"] == b"persistence"
    assert letter[b"consumer"] == b"c1"
    assert letter[b"deliveries"] == b"3"
    assert json.loads(letter[b"event"])["n"] == 3  # the original fields come along
    assert "entry dead-lettered" in caplog.text

    more = publish(bus, 5, first=11)
    assert runner.drain() == 5
    assert applications(sqlite_path) == Counter(ids[:2] + ids[3:] + more)
    assert pending(bus, "persistence") == 0
    assert len(dead_letters(bus, "persistence")) == 1


def test_an_entry_its_consumers_die_on_is_dead_lettered_without_another_try(bus: Bus, sqlite_path: Path) -> None:
    ids = publish(bus, 3)
    sink = SqliteSink(sqlite_path, "persistence")
    runner = consumer(bus, sink, max_deliveries=3, claim_idle_ms=100)
    runner.ensure_group()
    deliver_to_ghost(bus, "persistence", 1)
    for _ in range(2):  # it crashed the consumer each time it was claimed: three deliveries in all
        bus.client.xclaim(bus.keys.events, "persistence", "ghost", 0, [ids[0]])

    def idle_ms() -> int:
        return int(bus.client.xpending_range(bus.keys.events, "persistence", "-", "+", 1)[0]["time_since_delivered"])

    wait_until(lambda: idle_ms() >= 100, message="the ghost's entry to be idle")
    assert runner.drain() == 2
    [(_, letter)] = dead_letters(bus, "persistence")
    assert letter[b"id"] == ids[0]
    assert letter[b"deliveries"] == b"4"
    assert letter[b"reason"] == b"not acknowledged after 4 deliveries"
    assert ids[0] not in sink.tried_alone
    assert applications(sqlite_path) == Counter(ids[1:])
    assert pending(bus, "persistence") == 0


# --------------------------------------------------------------------------- the group vanishing


def test_a_group_destroyed_mid_run_is_recreated_at_the_sink_floor(
    bus: Bus, sqlite_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ids = publish(bus, 20)
    sink = SqliteSink(sqlite_path, "persistence")
    calls: list[int] = []

    def destroy_during_the_second_batch(entries: Sequence[Entry]) -> None:
        calls.append(len(entries))
        if len(calls) == 2:
            bus.client.xgroup_destroy(bus.keys.events, "persistence")

    sink.before_apply = destroy_during_the_second_batch
    runner = consumer(bus, sink, batch=5)

    with caplog.at_level(logging.INFO, logger="matchbox.consumers.runner"), running(runner):
        wait_until(lambda: len(applications(sqlite_path)) == 20, message="the stream to be consumed")
        bus.client.xgroup_destroy(bus.keys.events, "persistence")  # now while it waits in XREADGROUP
        ids += publish(bus, 10, first=21)
        wait_until(lambda: len(applications(sqlite_path)) == 30, message="the entries after the second loss")
        wait_until(lambda: pending(bus, "persistence") == 0, message="the last batch to be acknowledged")

    assert set(applications(sqlite_path)) == set(ids)  # nothing lost (the batch in hand is stored again)
    assert runner.stats.recreated == 2
    positions = [getattr(r, "position", None) for r in caplog.records if r.getMessage() == "consumer group created"]
    # first start, then the floor twice: below the second batch (pending when the group went), and
    # below the last one (the floor is read before a batch is applied: it lags by that batch)
    assert positions == ["0", previous_id(ids[5].decode()), previous_id(ids[15].decode())]


# --------------------------------------------------------------------------- drain and stop


def test_drain_returns_the_count_and_leaves_nothing_pending(bus: Bus, sqlite_path: Path) -> None:
    publish(bus, 25)
    runner = consumer(bus, SqliteSink(sqlite_path, "persistence"), batch=10)
    reported: list[int] = []
    assert runner.drain(reported.append) == 25
    assert reported[:3] == [10, 20, 25]  # the count so far after each batch
    assert pending(bus, "persistence") == 0
    assert runner.drain() == 0
    [lag] = group_lag(bus, bus.keys.events)
    assert (lag.pending, lag.lag) == (0, 0)


def test_a_stop_mid_run_returns_after_acknowledging_the_batch_in_hand(bus: Bus, sqlite_path: Path) -> None:
    ids = publish(bus, 20)
    sink = SqliteSink(sqlite_path, "persistence")
    in_apply, release = threading.Event(), threading.Event()

    def pause(entries: Sequence[Entry]) -> None:
        in_apply.set()
        release.wait(10)

    sink.before_apply = pause
    runner = consumer(bus, sink, batch=5)
    with running(runner) as thread:
        assert in_apply.wait(10)
        runner.stop.set()
        release.set()
        thread.join(10)
        assert not thread.is_alive()
    # in hand: the paused batch, and the next one if it had been read ahead by then
    delivered = group_info(bus, "persistence")["last-delivered-id"]
    assert delivered in (ids[4], ids[9])
    in_hand = ids[: ids.index(delivered) + 1]
    assert applications(sqlite_path) == Counter(in_hand)
    assert pending(bus, "persistence") == 0


# --------------------------------------------------------------------------- lag


def test_group_lag(bus: Bus, sqlite_path: Path) -> None:
    assert group_lag(bus, bus.keys.events) == []  # no stream, no group
    ids = publish(bus, 10)
    bus.client.xgroup_create(bus.keys.events, "reading", id="0")
    deliver_to_ghost(bus, "reading", 4)
    sink = SqliteSink(sqlite_path, "midway")
    sink.apply(bus.range(bus.keys.events, count=5), ids[4].decode())
    consumer(bus, sink).ensure_group()
    assert group_info(bus, "midway")["lag"] is None  # the server cannot tell: counted by group_lag
    bus.client.xgroup_create(bus.keys.events, "caught-up", id="$")

    lags = {lag.name: lag for lag in group_lag(bus, bus.keys.events)}
    assert lags["reading"] == GroupLag("reading", consumers=1, pending=4, lag=6, last_delivered_id=ids[3].decode())
    assert lags["midway"] == GroupLag("midway", consumers=0, pending=0, lag=5, last_delivered_id=ids[4].decode())
    assert lags["caught-up"] == GroupLag("caught-up", consumers=0, pending=0, lag=0, last_delivered_id=ids[9].decode())


# --------------------------------------------------------------------------- retention


def add_snapshot(bus: Bus, input_id: str) -> None:
    """A snapshot entry as the engine writes them, reduced to what retention reads, the oldest kept."""
    bus.client.xadd(bus.keys.snapshot, {"in": input_id, "data": b""})
    bus.client.xtrim(bus.keys.snapshot, maxlen=1, approximate=False)


def first_id(bus: Bus) -> bytes:
    return bus.range(bus.keys.events, count=1)[0][0]


def test_trim_events_keeps_what_a_group_or_the_oldest_snapshot_needs(bus: Bus) -> None:
    ids = publish(bus, 24)  # ids 1000-1 .. 1006-24: n // 4 is the millisecond past 1000
    events = bus.keys.events
    add_snapshot(bus, "1002-0")
    assert trim_events(bus, events) == 0  # no group

    bus.client.delete(bus.keys.snapshot)
    bus.client.xgroup_create(events, "g", id="0")
    deliver_to_ghost(bus, "g", 24)
    bus.client.xack(events, "g", *ids)
    assert trim_events(bus, events) == 0  # no snapshot

    add_snapshot(bus, "1002-3")  # keeps everything from 1002-0 on: the group has all acknowledged
    assert trim_events(bus, events) == 7
    assert first_id(bus) == ids[7] == b"1002-8"

    bus.client.xgroup_create(events, "h", id="0")
    deliver_to_ghost(bus, "h", 16)
    bus.client.xack(events, "h", *ids[7:9])  # h's oldest pending entry is 1002-10
    add_snapshot(bus, "1005-0")
    assert trim_events(bus, events) == 2
    assert first_id(bus) == ids[9] == b"1002-10"

    bus.client.xack(events, "h", *ids[9:16])  # now 1004-17
    assert trim_events(bus, events) == 7
    assert first_id(bus) == ids[16] == b"1004-17"

    bus.client.xack(events, "h", *ids[16:23])  # nothing pending: h needs what follows 1005-23
    assert trim_events(bus, events) == 3  # the snapshot is the bound again: 1005-0
    assert first_id(bus) == ids[19] == b"1005-20"
    add_snapshot(bus, "1007-0")
    assert trim_events(bus, events) == 4
    assert first_id(bus) == ids[23] == b"1006-24"


def test_a_lost_group_keeps_what_it_had_not_stored_from_the_trimmer(bus: Bus, sqlite_path: Path) -> None:
    """A group destroyed while its entries were unstored: another group's trimming keeps them (the
    floor in keys.floors), and the group created again stores every entry."""
    ids = publish(bus, 20)
    add_snapshot(bus, "1006-0")  # the snapshot would let everything below 1006-0 go
    first = consumer(bus, SqliteSink(sqlite_path, "persistence"), batch=5)
    with running(first):
        wait_until(lambda: len(applications(sqlite_path)) == 20, message="the stream to be consumed")
    assert bus.client.hget(bus.keys.floors, "persistence") is not None
    behind = publish(bus, 8, first=21)  # not stored by this group yet: then the group is lost
    bus.client.xgroup_create(bus.keys.events, "other", id="0")  # a group that has stored everything
    bus.client.xack(bus.keys.events, "other", *deliver_to_ghost(bus, "other", 28))
    bus.client.xgroup_destroy(bus.keys.events, "persistence")
    trim_events(bus, bus.keys.events)  # the other group's consumer trims
    assert {e for e, _ in bus.range(bus.keys.events)} >= set(behind)
    again = consumer(bus, SqliteSink(sqlite_path, "persistence"), batch=5)
    with running(again):
        wait_until(lambda: len(applications(sqlite_path)) == 28, message="the entries after the loss")
    assert set(applications(sqlite_path)) == set(ids) | set(behind)


def test_the_runner_trims_when_retention_is_on(bus: Bus, sqlite_path: Path) -> None:
    ids = publish(bus, 20)
    add_snapshot(bus, "1003-0")
    runner = consumer(bus, SqliteSink(sqlite_path, "persistence"), retention=True)
    with running(runner):
        wait_until(lambda: len(applications(sqlite_path)) == 20, message="the stream to be consumed")
        wait_until(lambda: first_id(bus) == ids[11], message="the stream to be trimmed below the snapshot")
    assert runner.stats.trimmed == 11
