"""The engine leader: win the lock, recover, then match the input journal batch by batch.

One loop, one thread, one engine (see :mod:`matchbox.engine`). As a candidate it keeps a warm
standby engine (:mod:`matchbox.leader.standby`) and tries the lock whenever the holder's could
have lapsed (at most every few hundred milliseconds). On winning it INCRs the fencing epoch,
checks that Redis has not gone back in time, rebuilds the engine (the standby's, brought up to
the committed offset; else the newest snapshot, then the journal from the snapshot's offset up
to the committed offset, output suppressed, checked against the committed state hash and
counts) and goes live: XREAD a batch, apply every entry, commit the batch's events, offset and
state hash in one script under the epoch check (with the XREAD of the next batch behind it in the
same round trip; under load, a batch of ``overlap_from`` entries or more is committed from a
thread while the next one, read ahead, is matched), store a snapshot now and then (from a
thread), renew the lock.
The steps that take time in proportion to the book (recovery, a state hash, a snapshot) keep
renewing the lock from a thread while they run (:func:`matchbox.leader.election.kept`).

Anything that makes the leader unsure of its standing (a refused commit, a lost lock, a lease
that ran out locally, a Redis error) makes it drop its engine and become a candidate again: it
never retries a commit, it recovers from what Redis holds, so nothing is committed twice.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

import redis

from matchbox.bus import calls
from matchbox.bus.codec import JOURNAL_VERSION, encode_command, encode_event
from matchbox.bus.commit import (
    Batch,
    CommitRefused,
    Offset,
    RollbackAlarm,
    commit,
    commit_and_read,
    event_id,
    latest_snapshot,
    read_offset,
    store_snapshot,
)
from matchbox.bus.connection import Bus, Entry
from matchbox.bus.durability import Durability
from matchbox.bus.journal import WAITAOF_TIMEOUT_MS
from matchbox.bus.outage import REDIS_DOWN, Backoff
from matchbox.bus.rollback import Witness, certify, check_witness, witness_of
from matchbox.engine import Engine
from matchbox.engine.types import AdvanceTime
from matchbox.leader.apply import apply_entry
from matchbox.leader.election import Lease, kept
from matchbox.leader.recovery import (
    HASH_DUTY,
    RollbackDetected,
    Watermark,
    check_rollback,
    recover,
)
from matchbox.leader.standby import Standby

log = logging.getLogger(__name__)
T = TypeVar("T")


class LeadershipLost(RuntimeError):
    """The lock was lost or the lease ran out: stop matching at once."""


@dataclass(frozen=True, slots=True)
class LeaderConfig:
    lock_ttl_ms: int = 3000
    batch: int = 2000  # input entries per XREAD, at most
    block_ms: int = 50  # XREAD BLOCK
    overlap_from: int = 500  # a batch this large is committed by a thread while the next one is matched
    snapshot_every: int = 50_000  # input entries between snapshots
    snapshot_seconds: float = 60.0  # and at least this often while anything happens
    snapshots_kept: int = 3
    snapshot_on_stop: bool = False  # a clean stop snapshots at the last commit (`matchbox engine`: on)
    trim_input: bool = True  # trim the journal behind the oldest kept snapshot
    hash_every_seconds: float = 0.2  # hashing the whole state is throttled to this, and done when idle
    name: str = ""  # how this candidate calls itself; host:pid by default
    watermark: Path | None = None  # a local file recording the highest state committed
    witnesses: Callable[[], Sequence[Witness]] | None = None  # others that remember (the consumers' SQL)
    durability: Durability = Durability.ALWAYS  # what the API promises: checked against the server's AOF

    @property
    def poll_seconds(self) -> float:
        """How often a candidate tries the lock."""
        return min(0.2, self.lock_ttl_ms / 10_000)


@dataclass(slots=True)
class LeaderStats:
    terms: int = 0  # times this process won the lock
    commits: int = 0
    inputs: int = 0  # entries applied live (not replayed)
    events: int = 0
    replayed: int = 0
    recovery_seconds: float = 0.0  # the last term's, from winning the lock to leading
    replica_waits: int = 0  # replicated durability: times it waited for a replica before matching
    batch_sizes: deque[int] = field(default_factory=lambda: deque(maxlen=10_000))  # the latest ones


class EngineLeader:
    def __init__(self, bus: Bus, config: LeaderConfig | None = None, stop: threading.Event | None = None) -> None:
        self.bus = bus
        self.config = config or LeaderConfig()
        self.stop = stop or threading.Event()
        self.lease = Lease(bus, self.config.lock_ttl_ms, self.config.name)
        self.standby = Standby(bus)
        self.stats = LeaderStats()
        self.epoch = 0
        self.watermark = Watermark(self.config.watermark)
        self.seen = Offset()  # the newest offset this process saw committed: a rollback witness
        self._clock_ticked = 0.0
        self._hash, self._hash_at, self._hashed = "", "", 0.0  # the last state hash taken, where, when
        self._hash_seconds = 0.0  # how long it took
        self._told_too_new = False  # whether it has said a newer engine led this shard

    # ------------------------------------------------------------------ candidate

    def run(self) -> None:
        """Be a candidate until ``stop`` is set. Raises :class:`RollbackDetected` (do not restart)."""
        backoff = Backoff()
        while not self.stop.is_set():
            try:
                if self._led_version() > JOURNAL_VERSION:  # a newer engine has led: never compete for the lock
                    self.stop.wait(self.config.poll_seconds)
                elif self.lease.acquire():
                    self.stats.terms += 1
                    try:
                        self._lead()
                    finally:
                        self._step_down()
                else:
                    self._stand_by()
                backoff.reset()
            except (CommitRefused, LeadershipLost) as exc:
                log.warning("stepped down: %s", exc, extra={"epoch": self.epoch})
            except RollbackAlarm as exc:  # another witness halted the exchange
                raise RollbackDetected(f"the exchange is halted by the rollback alarm: {exc}") from None
            except REDIS_DOWN as exc:
                delay = backoff.next()
                log.warning("redis unavailable (%s); retrying in %.1f s", exc, delay)
                self.stop.wait(delay)
                self.bus.reconnect()

    def _led_version(self) -> int:
        """The newest journal version an engine leader of this shard has read. One newer than this
        engine's (its journal may hold commands this engine would misread) is said once: this
        candidate then waits for an upgrade."""
        led = int(self.bus.client.get(self.bus.keys.journal_version) or 1)
        if led > JOURNAL_VERSION and not self._told_too_new:
            log.error(
                "this engine reads journal version %d, and an engine of version %d has led this shard: "
                "it will not lead or stand by until it is upgraded",
                JOURNAL_VERSION,
                led,
            )
        self._told_too_new = led > JOURNAL_VERSION
        return led

    def _stand_by(self) -> None:
        """Until the next try of the lock, keep the standby engine warm. The next try comes as
        soon as the holder's lock could lapse, and at most ``poll_seconds`` from now."""
        until = time.monotonic() + min(self.config.poll_seconds, self.lease.lapses_in())
        seen = self.standby.follow(until) or Offset()
        if self.seen.id:  # what it followed before is a witness, standing by as well as leading
            check_witness(self.bus, witness_of("this candidate (standing by)", self.seen), seen)
        if seen.inputs > self.seen.inputs:
            self.seen = seen  # followed: a witness of what Redis held
        self.stop.wait(max(0.0, until - time.monotonic()))

    def _step_down(self) -> None:
        self.watermark.write(self.seen, force=True)
        try:
            self.lease.release()
        except redis.RedisError:
            self.lease.expires = 0.0  # it will lapse on its own

    # ------------------------------------------------------------------ leader

    def _lead(self) -> None:
        client, keys, config = self.bus.client, self.bus.keys, self.config
        with kept(self.lease):  # the witnesses' database, and a large book, take longer than the lock lives
            self.epoch = epoch = int(client.incr(keys.epoch))
            self._held_by_a_replica("the new epoch", "")
            for problem in self.bus.problems(config.durability):  # at every term: at start and after a reconnect
                log.error(problem)
            offset = read_offset(self.bus) or Offset()
            snapshot = latest_snapshot(self.bus)
            check_rollback(self.bus, epoch, offset, snapshot, self.witnesses())
            engine, replayed = self.standby.take(offset) or recover(self.bus, offset, snapshot)
        if not self.lease.held:
            raise LeadershipLost(f"while recovering: {self.lease.why_lost()}")
        led = self._led_version()
        if led > JOURNAL_VERSION:  # a newer engine led between the check and the lock
            raise LeadershipLost("an engine of a newer journal version has led this shard")
        if led < JOURNAL_VERSION:  # the API may send what it reads now
            client.set(keys.journal_version, JOURNAL_VERSION)
        certify(self.bus, epoch)  # only now may this server hand out ids (see matchbox.bus.rollback)
        self.seen = offset
        self.stats.replayed += replayed
        self.stats.recovery_seconds = time.monotonic() - self.lease.won
        self._hash, self._hash_at, self._hashed = offset.hash, offset.hash_at, time.monotonic()
        self._hash_seconds = max(self._hash_seconds, self.standby.pass_seconds)  # paced from the start
        client.hset(
            keys.leader_info,
            mapping={"name": self.lease.name, "epoch": epoch, "since_ms": int(time.time() * 1000), "pid": os.getpid()},
        )
        log.info(
            "leading",
            extra={
                "epoch": epoch,
                "offset": offset.id,
                "inputs": offset.inputs,
                "candidate": self.lease.name,
                "replayed": replayed,
                "seconds": round(self.stats.recovery_seconds, 3),  # since the lock was won
            },
        )
        snapshot_inputs = snapshot.offset.inputs if snapshot else 0
        snapshot_time = time.monotonic()
        renew_every = config.lock_ttl_ms / 3000
        renew_at = time.monotonic() + renew_every
        snapshots = _Behind(functools.partial(self._snapshot, epoch=epoch), "snapshots")
        commits = _Behind(functools.partial(self._commit, epoch=epoch), "committer")
        entries: list[Entry] = []
        read_ns = 0
        try:
            while not self.stop.is_set():
                now = time.monotonic()
                if now >= renew_at:
                    stuck = commits.in_hand_for()
                    if stuck > config.lock_ttl_ms / 2000:  # let the lock lapse: a successor can do better
                        raise LeadershipLost(f"a commit has been in flight for {stuck:.1f} s")
                    if not self.lease.renew():
                        raise LeadershipLost(self.lease.why_lost())
                    renew_at = now + renew_every
                block = max(1, min(config.block_ms, int((renew_at - now) * 1000)))
                if not entries:
                    entries = self.bus.read(keys.input, offset.id or "0-0", count=config.batch, block_ms=block)
                    read_ns = time.monotonic_ns()
                    if not entries:
                        if offset.hash_at != offset.id and self._hash_due(idle=True):  # bring it up to date
                            offset = self._with_hash(engine, offset)
                            commits.flush()
                            self._commit(Batch(follows=offset.id, offset=offset), epoch=epoch)
                        self._tick_clock(engine)
                        continue
                self._held_by_a_replica("the input", entries[-1][0].decode())
                if not self.lease.held:
                    raise LeadershipLost("the lease ran out before the batch could be committed")
                batch = self._apply_batch(engine, offset, entries, epoch, read_ns)
                offset = batch.offset
                if len(entries) >= config.overlap_from:
                    # A busy journal: read the next batch now (the server is free, while during the
                    # commit a read would wait behind it), and match it while a thread commits this one.
                    entries = self.bus.read(keys.input, offset.id, count=config.batch)
                    read_ns = time.monotonic_ns()
                    commits.put(batch)
                else:
                    # The commit and the wait for the next entries: one round trip, and no hand-over.
                    commits.flush()  # what the thread has in hand is committed first
                    committed = functools.partial(self._committed, batch)
                    entries = commit_and_read(self.bus, epoch, batch, committed, count=config.batch, block_ms=block)
                    read_ns = time.monotonic_ns()
                if offset.inputs - snapshot_inputs >= config.snapshot_every or (
                    offset.inputs > snapshot_inputs and time.monotonic() - snapshot_time >= config.snapshot_seconds
                ):
                    with kept(self.lease):
                        data = engine.snapshot()
                    commits.flush()  # a snapshot is stored only at a committed offset
                    snapshots.put((offset, data))
                    snapshot_inputs, snapshot_time = offset.inputs, time.monotonic()
                    self._hash, self._hash_at = hashlib.sha256(data).hexdigest(), offset.id  # = state_hash()
            commits.flush()  # a clean stop: everything applied is committed before the lock goes
            if config.snapshot_on_stop and offset.inputs > snapshot_inputs:  # a successor replays nothing then
                with kept(self.lease):
                    snapshots.put((offset, engine.snapshot()))
            snapshots.flush()
        finally:
            commits.close()
            snapshots.close()

    def _commit(self, batch: Batch, *, epoch: int) -> None:
        commit(self.bus, epoch, batch)
        self._committed(batch)

    def _held_by_a_replica(self, what: str, entry_id: str) -> None:
        """In ``replicated`` durability, go on only once a replica holds ``what``: the epoch (so a
        promoted replica never hands it out again) and every input before it is matched (so a
        promoted replica's leader regenerates every event anyone saw, identically). No replica
        within a third of the TTL: step down, as a leader that cannot keep its promise."""
        if self.config.durability is not Durability.REPLICATED:
            return
        self.stats.replica_waits += 1
        timeout_ms = max(1, min(WAITAOF_TIMEOUT_MS, self.config.lock_ttl_ms // 3))
        if self.bus.run(calls.replicated(self.bus.keys, entry_id, timeout_ms)) < 1:
            raise LeadershipLost(f"no replica confirmed holding {what} within {timeout_ms} ms")

    def _tick_clock(self, engine: Engine) -> None:
        """When the journal is idle and a timer is due (a GTD order's expiry or a dead-man
        switch's deadline), journal an AdvanceTime so it fires.

        Engine time only moves with commands, so the leader writes the clock's tick into the
        journal like any command: replays see the same tick at the same place.
        """
        due = engine.next_expiry()
        if due is None or due > time.time_ns() or time.monotonic() - self._clock_ticked < 0.1:
            return
        self._clock_ticked = time.monotonic()
        self.bus.client.xadd(self.bus.keys.input, {"c": encode_command(AdvanceTime(seq=0, ts=0))})

    def witnesses(self) -> list[Witness]:
        """What this candidate, its watermark file and the configured others saw committed."""
        found = [witness_of("this candidate", self.seen)]
        mark = self.watermark.read()
        if mark is not None:
            found.append(witness_of(f"the watermark file {self.config.watermark}", mark))
        return found + list(self.config.witnesses() if self.config.witnesses else ())

    def _committed(self, batch: Batch) -> None:
        """After each successful commit."""
        self.seen = batch.offset
        self.stats.commits += 1
        self.stats.events += len(batch.events)
        self.watermark.write(batch.offset, force=False)

    def _apply_batch(
        self, engine: Engine, offset: Offset, entries: Sequence[Entry], epoch: int, read_ns: int = 0
    ) -> Batch:
        """The batch's events and the offset after them; ``stages`` says when its entries were
        read and when they were matched (monotonic ns: the API times an order's stages with them)."""
        inputs, n = offset.inputs, offset.events
        out: list[tuple[str, bytes]] = []
        entry_id = offset.id
        for raw_id, fields in entries:
            entry_id = raw_id.decode()
            inputs += 1
            for event in apply_entry(engine, entry_id, fields, inputs):
                n += 1
                out.append((event_id(entry_id, n), encode_event(event, n, entry_id)))
        self.stats.inputs += len(entries)
        self.stats.batch_sizes.append(len(entries))
        last_event = out[-1][0] if out else offset.last_event
        after = Offset(entry_id, inputs, n, self._hash, epoch, last_event, self._hash_at)
        stages = f"{read_ns},{time.monotonic_ns()}" if read_ns else ""
        if self._hash_due(idle=False):
            after = self._refresh_hash(engine, after)
        return Batch(follows=offset.id, offset=after, events=out, stages=stages)

    def _hash_due(self, *, idle: bool) -> bool:
        """Whether to hash the whole state now: when idle (to bring the committed hash up to
        date), else every ``hash_every_seconds``; never more than 1/HASH_DUTY of the time, as a
        hash is O(resting orders) (over a second for a million)."""
        since = time.monotonic() - self._hashed
        return since >= HASH_DUTY * self._hash_seconds and (idle or since >= self.config.hash_every_seconds)

    def _with_hash(self, engine: Engine, offset: Offset) -> Offset:
        """``offset`` with the state hash at its own id: the one a snapshot just gave, or a new one."""
        if self._hash_at == offset.id:
            return dataclasses.replace(offset, hash=self._hash, hash_at=offset.id)
        return self._refresh_hash(engine, offset)

    def _refresh_hash(self, engine: Engine, offset: Offset) -> Offset:
        """``offset`` with the state hash taken now (see ``_hash_due``)."""
        started = time.monotonic()
        with kept(self.lease):
            self._hash = engine.state_hash()
        self._hash_at, self._hashed = offset.id, time.monotonic()
        self._hash_seconds = self._hashed - started
        return dataclasses.replace(offset, hash=self._hash, hash_at=offset.id)

    # ------------------------------------------------------------------ snapshots, watermark

    def _snapshot(self, item: tuple[Offset, bytes], *, epoch: int) -> None:
        offset, data = item
        started = time.monotonic()
        trimmed = store_snapshot(
            self.bus, epoch, offset, data, keep=self.config.snapshots_kept, trim_input=self.config.trim_input
        )
        log.info(
            "snapshot",
            extra={
                "offset": offset.id,
                "bytes": len(data),
                "trimmed": trimmed,
                "seconds": round(time.monotonic() - started, 3),
            },
        )
        self.watermark.write(offset, force=True)


class _Behind(Generic[T]):
    """Does the leader's work that may lag behind its matching, in order, on a thread of its own
    (and so on a connection of its own): a busy leader's commits (matched the next batch while one
    is in flight) and the snapshots' storing. At most one item waits behind the one in hand.
    After a failure it does nothing more (a later commit would be refused anyway: it follows an
    offset that was never committed), and the leader learns of it at its next hand-over."""

    def __init__(self, work: Callable[[T], None], name: str) -> None:
        self.work = work
        self.queue: queue.Queue[tuple[T] | None] = queue.Queue(maxsize=1)
        self.error: BaseException | None = None
        self.started = 0.0  # time.monotonic() when the item in hand was taken up; 0 when idle
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def in_hand_for(self) -> float:
        """Seconds the current item has been in hand (0 when idle)."""
        started = self.started
        return time.monotonic() - started if started else 0.0

    def put(self, item: T) -> None:
        self._raise()
        self.queue.put((item,))

    def flush(self) -> None:
        """Until everything handed over is done; raises its failure."""
        self.queue.join()
        self._raise()

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            self.started = time.monotonic()
            try:
                if item is None:
                    return
                if self.error is None:
                    self.work(item[0])
            except BaseException as exc:
                self.error = exc
            finally:
                self.started = 0.0
                self.queue.task_done()
