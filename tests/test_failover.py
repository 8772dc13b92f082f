"""Failover with real processes on a real Valkey: leaders are killed or paused, nothing is lost or doubled.

Every test runs ``python -m matchbox engine`` candidates as separate processes against a private
Valkey, submits orders through the journal as a client would, and then checks what Redis holds
against a single fresh engine replaying the whole input journal: one outcome per input entry,
event numbers 1..N with no gap, no trade twice, the same books and the same state hash.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import wait_until
from matchbox.bench import failover as failover_bench
from matchbox.bus.codec import decode_event
from matchbox.bus.commit import Batch, CommitRefused, Offset, read_offset
from matchbox.bus.commit import commit_and_read as real_commit_and_read
from matchbox.bus.connection import Bus, Entry
from matchbox.bus.durability import Durability
from matchbox.bus.journal import Journal, Request, Submission
from matchbox.engine import Engine
from matchbox.engine.types import (
    CreateMarket,
    Event,
    MarketCreated,
    OrderAccepted,
    PlaceOrder,
    Rejected,
    Side,
    TickScheme,
    TradeExecuted,
)
from matchbox.leader import runner
from matchbox.leader.apply import apply_entry
from matchbox.leader.runner import EngineLeader, LeaderConfig

pytestmark = pytest.mark.e2e  # failover: leader processes killed and a standby taking over

LOCK_TTL_MS = 1000
MARKET = "m"


def id_key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


# --------------------------------------------------------------------------- processes


class Candidates:
    """Leader candidates, each ``python -m matchbox engine --name engine-<i>`` logging to its own file."""

    def __init__(self, redis_url: str, folder: Path) -> None:
        self.folder = folder
        self.env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "MATCHBOX_LOCK_TTL_MS": str(LOCK_TTL_MS),
            "MATCHBOX_TRIM_INPUT": "false",  # the test replays the whole journal
            "MATCHBOX_SNAPSHOT_EVERY": "4000",  # so that successors also recover from snapshots
            "MATCHBOX_LOG_FORMAT": "text",
            "MATCHBOX_LOG_LEVEL": "INFO",
        }
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.bus = Bus.connect(redis_url)

    def spawn(self) -> str:
        name = f"engine-{len(self.processes) + 1}"
        with self.log_path(name).open("wb") as log:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "matchbox", "engine", "--name", name],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return name

    def log_path(self, name: str) -> Path:
        return self.folder / f"{name}.log"

    def log(self, name: str) -> str:
        return self.log_path(name).read_text(errors="replace")

    def alive(self, name: str) -> bool:
        return self.processes[name].poll() is None

    def holder(self) -> str | None:
        """The candidate named in the leader lock (its value is ``<name>:<random>``), alive or not."""
        value = self.bus.client.get(self.bus.keys.leader)
        return value.decode().rpartition(":")[0] if isinstance(value, bytes) else None

    def live_leader(self) -> str | None:
        name = self.holder()
        return name if name in self.processes and self.alive(name) else None

    def wait_for_leader(self, timeout: float = 15.0) -> str:
        wait_until(lambda: self.live_leader() is not None, timeout, "a live candidate to hold the leader lock")
        name = self.live_leader()
        assert name is not None
        return name

    def kill(self, name: str) -> None:
        process = self.processes[name]
        process.kill()
        process.wait(10)

    def signal(self, name: str, signum: signal.Signals) -> None:
        self.processes[name].send_signal(signum)

    def close(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()  # SIGKILL also ends a stopped process
        for process in self.processes.values():
            process.wait(10)
        self.bus.close()

    def report(self) -> str:
        parts = []
        for name, process in self.processes.items():
            lines = self.log(name).splitlines()
            parts.append(f"--- {name} (exit {process.returncode}), last lines of {len(lines)}:")
            parts += lines[-15:]
        return "\n".join(parts)


@pytest.fixture
def candidates(redis_url: str, tmp_path: Path) -> Iterator[Candidates]:
    fleet = Candidates(redis_url, tmp_path)
    try:
        yield fleet
    finally:
        fleet.close()
        print(fleet.report())  # shown with the captured output of a failing test


# --------------------------------------------------------------------------- orders


def random_order(rng: random.Random) -> PlaceOrder:
    """A limit order a few ticks either side of 50: both sides cross often, so many trade."""
    return PlaceOrder(
        seq=0,
        ts=0,
        market_id=MARKET,
        order_id=0,
        account=f"acct{rng.randrange(40)}",
        side=rng.choice((Side.BUY, Side.SELL)),
        price=rng.randint(45, 55),
        qty=rng.randint(1, 10),
    )


def submit_orders(bus: Bus, count: int, seed: int) -> list[Submission]:
    rng = random.Random(seed)
    journal = Journal(bus, Durability.EVERYSEC)
    return journal.submit_many([Request(random_order(rng)) for _ in range(count)])


class Submitter(threading.Thread):
    """Submits ``total`` orders in batches of ``batch``, one batch every ``interval`` seconds."""

    def __init__(self, redis_url: str, total: int, batch: int, interval: float, seed: int) -> None:
        super().__init__(name="submitter", daemon=True)
        self.redis_url, self.total, self.batch, self.interval, self.seed = redis_url, total, batch, interval, seed
        self.submissions: list[Submission] = []
        self.error: BaseException | None = None
        self.done = threading.Event()

    def run(self) -> None:
        bus = Bus.connect(self.redis_url)
        try:
            journal = Journal(bus, Durability.EVERYSEC)
            rng = random.Random(self.seed)
            next_at = time.monotonic()
            for start in range(0, self.total, self.batch):
                size = min(self.batch, self.total - start)
                self.submissions += journal.submit_many([Request(random_order(rng)) for _ in range(size)])
                next_at += self.interval
                time.sleep(max(0.0, next_at - time.monotonic()))
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.error = exc
        finally:
            bus.close()
            self.done.set()


def committed_through(bus: Bus, entry_id: str) -> bool:
    offset = read_offset(bus)
    return offset is not None and id_key(offset.id) >= id_key(entry_id) and offset.hash_at == offset.id


def wait_committed(bus: Bus, entry_id: str, timeout: float = 30.0) -> Offset:
    wait_until(lambda: committed_through(bus, entry_id), timeout, f"the committed offset to reach {entry_id}")
    offset = read_offset(bus)
    assert offset is not None
    return offset


# --------------------------------------------------------------------------- the check


def first_difference(left: list[tuple[str, Event]], right: list[tuple[str, Event]]) -> str:
    for i, (a, b) in enumerate(zip(left, right, strict=False)):
        if a != b:
            return f"at index {i}: {a} != {b}"
    return f"lengths {len(left)} != {len(right)}"


def check_exactly_once(bus: Bus) -> Offset:
    """Check what Redis holds against one fresh engine replaying the whole journal; return the offset."""
    keys = bus.keys
    inputs = bus.range(keys.input)
    outputs = bus.range(keys.events)
    offset = read_offset(bus)
    assert inputs, "the journal is empty"
    assert offset is not None, "nothing was committed"
    assert offset.id == inputs[-1][0].decode(), "the committed offset is not the last input entry"

    replay = Engine()
    expected: list[tuple[str, Event]] = []
    kinds: dict[str, str] = {}
    for seq, (raw_id, fields) in enumerate(inputs, start=1):
        entry_id = raw_id.decode()
        kinds[entry_id] = json.loads(fields[b"c"])["type"]
        expected += [(entry_id, event) for event in apply_entry(replay, entry_id, fields, seq, quiet=True)]

    decoded = [(raw_id.decode(), decode_event(fields[b"event"])) for raw_id, fields in outputs]
    numbers = [item.n for _, item in decoded]
    assert numbers == list(range(1, len(decoded) + 1)), "event numbers are not exactly 1..N in stream order"
    misnamed = [sid for sid, item in decoded if sid != f"{item.in_id.partition('-')[0]}-{item.n}"]
    assert not misnamed, f"event stream ids not derived from their input id and n: {misnamed[:5]}"

    outcomes = Counter(
        item.in_id for _, item in decoded if isinstance(item.event, OrderAccepted | Rejected | MarketCreated)
    )
    strangers = {item.in_id for _, item in decoded} - kinds.keys()
    assert not strangers, f"events caused by no input entry: {sorted(strangers)[:5]}"
    wrong = {entry_id: outcomes[entry_id] for entry_id in kinds if outcomes[entry_id] != 1}
    assert not wrong, f"inputs without exactly one outcome (entry: count): {dict(list(wrong.items())[:10])}"
    created = [item.in_id for _, item in decoded if isinstance(item.event, MarketCreated)]
    assert created == [entry_id for entry_id, kind in kinds.items() if kind == "CreateMarket"]
    assert sum(kind == "PlaceOrder" for kind in kinds.values()) == sum(
        isinstance(item.event, OrderAccepted | Rejected) for _, item in decoded
    )

    trade_ids = Counter(item.event.trade_id for _, item in decoded if isinstance(item.event, TradeExecuted))
    assert trade_ids, "no order traded: the flow should cross the spread"
    doubled = [trade_id for trade_id, count in trade_ids.items() if count > 1]
    assert not doubled, f"trade ids emitted more than once: {doubled[:10]}"

    actual = [(item.in_id, item.event) for _, item in decoded]
    if actual != expected:  # not a plain assert: the diff of two lists of 50,000 events is unreadable
        pytest.fail(f"the output differs from a single engine's replay, {first_difference(actual, expected)}")

    assert replay.state_hash() == offset.hash
    assert (offset.inputs, offset.events) == (len(inputs), len(decoded))
    assert offset.last_event == outputs[-1][0].decode()
    return offset


# --------------------------------------------------------------------------- tests


def test_orders_are_matched_exactly_once_while_leaders_are_killed(candidates: Candidates, bus: Bus) -> None:
    for _ in range(3):
        candidates.spawn()
    Journal(bus, Durability.EVERYSEC).submit(CreateMarket(seq=0, ts=0, market_id=MARKET, scheme=TickScheme.BINARY))
    candidates.wait_for_leader()

    # 20,000 orders over about 12 s; the leader is SIGKILLed every 2 s meanwhile, and replaced
    submitter = Submitter(candidates.env["REDIS_URL"], total=20_000, batch=100, interval=0.06, seed=1)
    submitter.start()
    killed: list[str] = []
    try:
        while len(killed) < 6 and not submitter.done.wait(2.0):
            name = candidates.wait_for_leader()
            candidates.kill(name)
            killed.append(name)
            candidates.spawn()
    finally:
        submitter.join(60)
    assert submitter.error is None, f"submitting failed: {submitter.error!r}"
    assert not submitter.is_alive()
    assert len(killed) >= 4, f"only {len(killed)} leaders were killed while orders were submitted"
    assert [s.status for s in submitter.submissions] == ["new"] * 20_000
    # ids are unique and rise in submission order (they are time-floored, so not 1..N: see rollback.py)
    ids = [s.order_id for s in submitter.submissions]
    assert len(set(ids)) == 20_000, "an order id was handed out twice"
    assert ids == sorted(ids), "order ids do not rise in submission order"

    last = bus.last(bus.keys.input)
    assert last is not None
    wait_committed(bus, last[0].decode(), timeout=30)
    offset = check_exactly_once(bus)
    assert offset.inputs == 20_001
    epoch = int(bus.client.get(bus.keys.epoch) or 0)
    assert epoch >= len(killed) + 1, f"epoch {epoch} after {len(killed)} kills: not every kill caused an election"
    assert offset.epoch == epoch
    died = [name for name in candidates.processes if name not in killed and not candidates.alive(name)]
    assert not died, f"candidates exited by themselves: {died}"


def test_a_paused_leader_commits_nothing_and_steps_down(candidates: Candidates, bus: Bus) -> None:
    old = candidates.spawn()
    assert candidates.wait_for_leader() == old
    new = candidates.spawn()
    journal = Journal(bus, Durability.EVERYSEC)
    journal.submit(CreateMarket(seq=0, ts=0, market_id=MARKET, scheme=TickScheme.BINARY))
    first = submit_orders(bus, 300, seed=2)
    old_epoch = wait_committed(bus, first[-1].entry_id).epoch

    # orders in flight as the leader freezes: it may be holding a batch it has not committed
    in_flight = submit_orders(bus, 200, seed=3)
    candidates.signal(old, signal.SIGSTOP)
    stopped_at = time.monotonic()
    probe = journal.submit(random_order(random.Random(4)))
    offset = wait_committed(bus, probe.entry_id, timeout=15)
    took_over = time.monotonic() - stopped_at
    # the frozen leader renewed its lock at most about TTL/3 before it stopped: nobody may lead before it lapses
    assert took_over > 0.4 * LOCK_TTL_MS / 1000, f"took over {took_over:.3f} s after the leader froze"
    new_epoch = offset.epoch
    assert new_epoch > old_epoch
    assert candidates.holder() == new
    assert id_key(offset.id) >= id_key(in_flight[-1].entry_id)
    check_exactly_once(bus)

    candidates.signal(old, signal.SIGCONT)
    wait_until(lambda: "stepped down" in candidates.log(old), 10, f"{old} to step down after SIGCONT")
    assert candidates.alive(old), f"{old} exited instead of becoming a candidate again"
    assert candidates.log(old).count(" leading ") == 1
    # it won no election and no commit got past the fence: still the new leader's epoch throughout
    assert int(bus.client.get(bus.keys.epoch) or 0) == new_epoch
    after_resume = read_offset(bus)
    assert after_resume is not None
    assert after_resume.epoch == new_epoch
    check_exactly_once(bus)

    later = submit_orders(bus, 300, seed=5)
    offset = wait_committed(bus, later[-1].entry_id)
    assert offset.epoch == new_epoch
    assert candidates.holder() == new
    assert candidates.log(new).count(" leading ") == 1
    final = check_exactly_once(bus)
    assert final.inputs == 1 + 300 + 200 + 1 + 300


def test_a_leader_frozen_with_a_commit_in_flight_is_fenced(
    candidates: Candidates, bus: Bus, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A whole leader frozen after its lease checks, its commit not yet sent: the epoch check refuses it.

    SIGSTOP cannot aim at that moment; an in-process leader can be frozen there. It stops inside
    ``commit_and_read`` with the first batch of orders, so it renews its lock no more, the lock
    lapses and a real ``matchbox engine`` process takes over.
    """
    release, frozen = threading.Event(), threading.Event()
    refusals: list[CommitRefused] = []

    def commit_after_a_freeze(
        target: Bus, epoch: int, batch: Batch, committed: Callable[[], None], *, count: int, block_ms: int
    ) -> list[Entry]:
        # the market's batch, and anything after the freeze, go through
        if not batch.follows or frozen.is_set():
            return real_commit_and_read(target, epoch, batch, committed, count=count, block_ms=block_ms)
        frozen.set()
        release.wait(30)
        try:
            return real_commit_and_read(target, epoch, batch, committed, count=count, block_ms=block_ms)
        except CommitRefused as exc:
            refusals.append(exc)
            raise

    monkeypatch.setattr(runner, "commit_and_read", commit_after_a_freeze)
    stop = threading.Event()
    config = LeaderConfig(lock_ttl_ms=LOCK_TTL_MS, name="in-process", trim_input=False)
    leader = EngineLeader(Bus.connect(candidates.env["REDIS_URL"]), config, stop)
    thread = threading.Thread(target=leader.run, name="in-process-leader", daemon=True)
    thread.start()
    try:
        wait_until(lambda: candidates.holder() == "in-process", 10, "the in-process leader to win the lock")
        journal = Journal(bus, Durability.EVERYSEC)
        created = journal.submit(CreateMarket(seq=0, ts=0, market_id=MARKET, scheme=TickScheme.BINARY))
        old_epoch = wait_committed(bus, created.entry_id).epoch
        orders = submit_orders(bus, 300, seed=6)
        wait_until(frozen.is_set, 10, "the in-process leader to freeze inside its commit")
        successor = candidates.spawn()
        offset = wait_committed(bus, orders[-1].entry_id, timeout=15)
        assert offset.epoch > old_epoch
        assert candidates.holder() == successor
        assert not refusals

        release.set()  # the frozen leader wakes up and its commit goes out, under the old epoch
        wait_until(lambda: "stepped down" in caplog.text, 10, "the frozen leader to step down")
        wait_until(lambda: refusals, 10, "the frozen commit to be answered")
        assert [exc.fenced for exc in refusals] == [True], refusals
        assert leader.stats.events == 1  # the market's creation only: the frozen batch never landed
        after = read_offset(bus)
        assert after is not None
        assert (after.epoch, after.events) == (offset.epoch, offset.events)
        later = submit_orders(bus, 100, seed=7)
        final = wait_committed(bus, later[-1].entry_id)
        assert final.epoch == offset.epoch
        assert candidates.holder() == successor
        check_exactly_once(bus)
    finally:
        stop.set()
        release.set()
        thread.join(10)
        leader.bus.close()
    assert not thread.is_alive()


def test_failover_benchmark_reports_every_kill(capsys: pytest.CaptureFixture[str]) -> None:
    ttl = 500
    assert failover_bench.run(kills=2, lock_ttl_ms=ttl, json_output=True) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["lock_ttl_ms"] == ttl
    assert len(figures["failover_ms"]) == 2
    # the successor cannot win before the lock lapses (renewed every TTL/3), nor should it take ages
    assert all(ttl * 0.5 < ms < ttl * 10 for ms in figures["failover_ms"]), figures
    assert figures["max_ms"] == max(figures["failover_ms"])
    assert figures["ratio_to_ttl"] == pytest.approx(figures["median_ms"] / ttl, abs=0.01)
