"""Consumer groups on the output stream: the cold path's runner (persistence, analytics, replay).

The contract between the runner and what it feeds is :class:`Sink`. The runner reads entries
with XREADGROUP, hands them to the sink in stream order, and acknowledges them (XACK) only once
``Sink.apply`` has returned, that is once the sink's own transaction has committed the batch's
effects together with its tracking row.

How :class:`GroupConsumer` treats an entry:

- The group is created at the sink's floor (``0`` for a new sink), never at ``$``, which would
  skip whatever was written before the group existed. The floor is a contiguous low watermark:
  every entry at or below it is stored. It is read from the group before each batch (:func:`frontier`:
  below the group's oldest pending entry, else its last delivered id; an entry is acknowledged
  only once the sink committed it) and committed with the batch. When Redis answers NOGROUP (it
  lost the group, or an operator destroyed it), the group is created again at the floor, below
  every entry that was still pending, and the runner carries on: the entries stored again are
  absorbed by the sink's idempotence. (The newest entry stored is no place to start: entries
  below it may have been pending on a consumer that died.)
- A batch is read with XREADGROUP ``>``, applied, then acknowledged. A crash between the commit
  and the XACK redelivers entries the sink already holds; the sink's idempotence absorbs that.
  After a full batch the next one is read ahead on a second thread while the sink's
  transaction runs (it waits on the database with the GIL released); on stopping, a batch read
  ahead counts as in hand and is applied and acknowledged before returning.
- Entries left pending, by a consumer that died or by a failure here, are reclaimed with
  XAUTOCLAIM once idle for ``claim_idle_ms``: on start and every ``claim_every_s``. Then the
  consumers of the group with nothing pending, unseen for ``FORGET_AFTER_CLAIMS`` times that,
  are removed (``forget.lua``, checked and removed in one step): those that died, so that
  ``XINFO CONSUMERS`` lists the consumers that exist.

Failures. A batch the sink refuses is halved, and each half applied in turn, left first, halving
again what fails, down to the entries that fail on their own: the rest goes through, in stream
order, and one bad entry in a batch of n costs about 2·log2(n) transactions, not n. An entry
that fails on its own (it raised :class:`Poison`, or it failed while others went through) is
left pending and retried when reclaimed; when it fails at its ``max_deliveries``-th delivery it
is dead-lettered instead (XADD to the group's dead-letter stream with the reason, and XACK, in
one MULTI), so it never blocks the group. An entry reclaimed with more deliveries than that,
whose consumers died on it without raising, is dead-lettered without another try. Delivery
counts come from XPENDING: one pipelined XPENDING per reclaimed id (exact, one round trip); an
entry read with ``>`` is on its first delivery.

When nothing of a batch goes through, the sink is taken to be down (its database, not the
entries). The halving finds that out early: once the batch's first entry has failed alone, not
with :class:`Poison`, before anything went through, the rest is tried whole once, and if that
fails too, not with :class:`Poison`, nothing more is tried. Then nothing is dead-lettered, the
same entries are retried from memory with a capped exponential backoff, and they are kept ours
meanwhile with XCLAIM JUSTID (which resets the idle time without counting a delivery), so that
no other consumer reclaims them and burns their delivery counts during an outage. An entry this
process has already seen fail on its own stays a suspect, though: failing alone again on a
reclaim does not make it an outage.

Known limits: a sink should raise :class:`Poison` for what it can never apply (the SQL sinks do
for data their database refuses), since any other error from a lone, never-suspected entry
reads as an outage and is retried until it passes. A group that an operator creates again
elsewhere (at ``$``, say) moves the floor with it: what it skipped is skipped for good, except
by ``matchbox replay``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import redis
from redis.typing import EncodableT, FieldT

from matchbox.bus import calls
from matchbox.bus.calls import as_text
from matchbox.bus.connection import Bus, Entry, id_order
from matchbox.bus.outage import REDIS_DOWN, Backoff

log = logging.getLogger(__name__)

BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 5.0
LAG_COUNT_PAGE = 1000
LAG_COUNT_LIMIT = 100_000  # past this many undelivered entries a counted lag is a floor
SUSPECTS_KEPT = 10_000  # failed-alone entries remembered, newest kept
MAX_SEQUENCE = 2**64 - 1  # the largest sequence part of a stream id
FORGET_AFTER_CLAIMS = 10  # a consumer unseen this many claim_idle_ms, with nothing pending, is gone


class Poison(Exception):
    """Raised by a sink for an entry it can never apply (not an event, a schema it does not know,
    a value its database refuses); from a batch, for one or more of its entries.

    Anything else a sink raises may be a passing failure (the database is down): see the module
    docstring for how the runner tells the two apart."""


class Sink(Protocol):
    """What a consumer group feeds: a database projection with a tracking row.

    ``apply`` commits the entries' effects and moves the tracking row to the last entry's id in
    one transaction, and must be idempotent: an entry applied again (a redelivery after a crash
    between the commit and the XACK, or a reclaim) changes nothing. Entries of one batch come in
    stream order; batches of two consumers sharing a group may interleave in any order.
    """

    group: str

    def position(self) -> str | None:
        """The floor of the tracking row: every entry at or below this stream id is stored (or was
        dead-lettered); where a recreated group starts. None if nothing is tracked yet."""
        ...

    def apply(self, entries: Sequence[Entry], floor: str | None = None) -> None:
        """Apply ``entries`` and move the tracking row, all in one transaction, or nothing: its
        newest id to the last entry's and its floor to ``floor`` (None: leave it), never back."""
        ...


def default_consumer_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True, slots=True)
class ConsumerConfig:
    group: str
    consumer: str = field(default_factory=default_consumer_name)  # "" means the default too
    batch: int = 1000  # entries per XREADGROUP and per XAUTOCLAIM, at most
    block_ms: int = 1000  # XREADGROUP BLOCK: also the longest a stop waits to be noticed
    claim_idle_ms: int = 30_000  # reclaim entries pending this long on any consumer of the group
    claim_every_s: float = 5.0  # how often to reclaim (and trim, with retention)
    max_deliveries: int = 5  # an entry failing at this delivery is dead-lettered
    retention: bool = False  # trim the stream behind every group and the oldest snapshot
    lag_log_every_s: float = 10.0

    def __post_init__(self) -> None:
        if not self.consumer:
            object.__setattr__(self, "consumer", default_consumer_name())


@dataclass(frozen=True, slots=True)
class GroupLag:
    name: str
    consumers: int
    pending: int  # delivered, not yet acknowledged
    lag: int  # not yet delivered
    last_delivered_id: str


@dataclass(slots=True)
class ConsumerStats:
    applied: int = 0  # entries the sink applied (a redelivered entry counts again)
    reclaimed: int = 0
    dead_lettered: int = 0
    recreated: int = 0  # times the group was found gone and created again
    trimmed: int = 0


class GroupConsumer:
    """Feeds ``sink`` from the output stream through the consumer group ``config.group``."""

    def __init__(self, bus: Bus, sink: Sink, config: ConsumerConfig, stop: threading.Event | None = None) -> None:
        if sink.group != config.group:
            raise ValueError(f"the sink tracks group {sink.group!r}, the config names {config.group!r}")
        self.bus = bus
        self.sink = sink
        self.config = config
        self.stop = stop or threading.Event()
        self.stream = bus.keys.events
        self.stats = ConsumerStats()
        self._suspects: dict[bytes, str] = {}  # entries seen failing on their own here: the reason
        self._claim_at = 0.0  # when the periodic chores are next due (monotonic)
        self._lag_log_at = 0.0
        self._kept_floor: str | None = None  # the floor last written to keys.floors
        # read-ahead: while a full batch is applied, the next one is read and parsed on this thread
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="consumer-read-ahead")
        self._ahead: Future[list[Entry]] | None = None
        self._retake = False  # after an outage: this consumer's own pending entries first

    # ------------------------------------------------------------------ the loops

    def ensure_group(self) -> bool:
        """Create the group at the sink's floor (``0`` for a new sink); False if it exists."""
        position = self.sink.position() or "0"
        try:
            self.bus.client.xgroup_create(self.stream, self.config.group, id=position, mkstream=True)
        except redis.ResponseError as exc:
            if not str(exc).startswith("BUSYGROUP"):
                raise
            return False
        log.info("consumer group created", extra={**self._fields(), "position": position})
        self._keep_floor(position)
        return True

    def _keep_floor(self, floor: str) -> None:
        """Tell the trimmer (:func:`trim_events`) what this group has stored, past the group's loss:
        at its creation, then with the periodic chores (a floor a little behind only keeps more)."""
        if floor != self._kept_floor:
            self.bus.client.hset(self.bus.keys.floors, self.config.group, floor)
            self._kept_floor = floor

    def run(self) -> None:
        """Consume until ``stop`` is set; the batch in hand then is finished and acknowledged first.

        Redis being unreachable is waited out (capped exponential backoff), not raised: this is
        the long-running process, and what it left pending it takes again once Redis is back.
        """
        log.info("consumer starting", extra=self._fields())
        ready, backoff = False, Backoff(BACKOFF_FIRST_S, BACKOFF_MAX_S)
        while not self.stop.is_set():
            try:
                if not ready:
                    self.ensure_group()
                    ready = True
                if self._retake:
                    self._guarded(self._retake_own)
                    self._retake = False
                self._guarded(lambda: self._step(self.config.block_ms))
                backoff.reset()
            except REDIS_DOWN as exc:
                self._ahead = None  # whatever it read stays pending: taken again once Redis answers
                self._retake = True
                delay = backoff.next()
                log.warning("redis unavailable (%s); retrying in %.1f s", exc, delay, extra=self._fields())
                self.stop.wait(delay)
                self.bus.reconnect()  # a cluster: the shard's master may be another node now
        self._guarded(self._finish_read_ahead)
        log.info("consumer stopped", extra={**self._fields(), "applied": self.stats.applied})

    def drain(self, progress: Callable[[int], object] | None = None) -> int:
        """Burst mode: consume until nothing is new and nothing of this consumer's is pending.

        Returns the entries applied; ``progress``, if given, is called with that count so far
        after every batch (for a progress bar). Entries of its own still pending (failures
        awaiting a retry) are waited for until reclaimable, so a poison entry is retried or
        dead-lettered before this returns. Errors are raised, not waited out.
        """
        applied = self.stats.applied
        self.ensure_group()
        while not self.stop.is_set():
            more = self._guarded(lambda: self._step(block_ms=None))
            if progress is not None:
                progress(self.stats.applied - applied)
            if not more and not self._guarded(self._await_own_pending):
                break
        self._guarded(self._finish_read_ahead)
        return self.stats.applied - applied

    def _guarded(self, work: Callable[[], bool]) -> bool:
        """``work()``, or, when Redis answers NOGROUP, the group created again and True (go on)."""
        try:
            return work()
        except redis.ResponseError as exc:
            if not str(exc).startswith("NOGROUP"):
                raise
            self._recreate_group()
            return True

    def _step(self, block_ms: int | None) -> bool:
        """The chores when due, then one batch of new entries; True if there may be more at once."""
        self._chores()
        if self.stop.is_set():
            return False
        entries = self._take_read_ahead() if self._ahead is not None else self._read(block_ms)
        if entries:
            if len(entries) == self.config.batch:  # likely more behind it: read on while this is applied
                self._ahead = self._reader.submit(self._read, None)
            self._handle(entries, {})
        return bool(entries)

    def _take_read_ahead(self) -> list[Entry]:
        """The batch read ahead (its errors, NOGROUP included, raised here as if read now)."""
        ahead, self._ahead = self._ahead, None
        return [] if ahead is None else ahead.result()

    def _finish_read_ahead(self) -> bool:
        """On stopping: a batch already read ahead is in hand too, so it is applied and acknowledged."""
        entries = self._take_read_ahead()
        if entries:
            self._handle(entries, {})
        return False

    def _retake_own(self) -> bool:
        """The entries this consumer read and has not acknowledged, handled again now: after an
        outage (a batch in hand when the connection dropped, or one read from a master that then
        failed over, which its promoted replica lists as pending) they are this consumer's to
        finish, and waiting ``claim_idle_ms`` for a reclaim would only delay them."""
        after = "0"
        while not self.stop.is_set():
            reply = self.bus.client.xreadgroup(
                self.config.group, self.config.consumer, {self.stream: after}, count=self.config.batch
            )
            streams = cast("list[tuple[bytes, list[Entry]]] | None", reply)
            page = streams[0][1] if streams else []
            if not page:
                return False
            after = page[-1][0].decode()
            entries = [(entry_id, fields) for entry_id, fields in page if fields]  # deleted: the reclaim's
            if entries:
                self.stats.reclaimed += len(entries)
                self._handle(entries, {})
        return False

    def _await_own_pending(self) -> bool:
        """Wait until this consumer's oldest pending failure can be reclaimed; False if it has none."""
        rows = self.bus.client.xpending_range(
            self.stream, self.config.group, "-", "+", self.config.batch, consumername=self.config.consumer
        )
        if not rows:
            return False
        most_idle = max(int(row["time_since_delivered"]) for row in rows)
        self.stop.wait(max(0, self.config.claim_idle_ms - most_idle + 1) / 1000)
        self._claim_at = 0.0  # reclaim on the next step
        return True

    def _chores(self) -> None:
        now = time.monotonic()
        if now >= self._claim_at:
            self._claim_at = now + self.config.claim_every_s
            self._reclaim()
            self._forget_gone()
            floor = self._floor()
            if floor is not None:
                self._keep_floor(floor)
            if self.config.retention:
                self._trim()
        if now >= self._lag_log_at:
            self._lag_log_at = now + self.config.lag_log_every_s
            self._log_lag()

    # ------------------------------------------------------------------ reading and reclaiming

    def _read(self, block_ms: int | None) -> list[Entry]:
        reply = self.bus.client.xreadgroup(
            self.config.group, self.config.consumer, {self.stream: ">"}, count=self.config.batch, block=block_ms
        )
        streams = cast("list[tuple[bytes, list[Entry]]] | None", reply)  # RESP2: [[stream, entries]]
        return streams[0][1] if streams else []

    def _reclaim(self) -> int:
        """Take over every entry of the group idle past ``claim_idle_ms``, and handle it."""
        cursor, total = "0-0", 0
        while True:
            cursor, entries = self._claim_page(cursor)
            total += len(entries)
            if entries:
                self._handle_reclaimed(entries)
            if cursor == "0-0" or self.stop.is_set():
                break
        if total:
            self.stats.reclaimed += total
            log.info("reclaimed idle entries", extra={**self._fields(), "count": total})
        return total

    def _claim_page(self, cursor: str) -> tuple[str, list[Entry]]:
        reply = self.bus.client.xautoclaim(
            self.stream,
            self.config.group,
            self.config.consumer,
            min_idle_time=self.config.claim_idle_ms,
            start_id=cursor,
            count=self.config.batch,
        )
        gone = reply[2] if len(reply) > 2 else []
        if gone:  # Redis drops these from the pending list itself
            log.warning("pending entries no longer in the stream", extra={**self._fields(), "count": len(gone)})
        return as_text(reply[0]), cast("list[Entry]", reply[1])

    def _handle_reclaimed(self, entries: list[Entry]) -> None:
        deliveries = self._deliveries([entry_id for entry_id, _ in entries])
        limit = self.config.max_deliveries
        for entry in entries:
            count = deliveries.get(entry[0], 0)
            if count > limit:
                reason = self._suspects.get(entry[0]) or f"not acknowledged after {count} deliveries"
                self._dead_letter(entry, count, reason)
        ours = [entry for entry in entries if 0 < deliveries.get(entry[0], 0) <= limit]  # 0: taken since
        if ours:
            self._handle(ours, deliveries)

    def _deliveries(self, ids: list[bytes]) -> dict[bytes, int]:
        """How often each of ``ids`` was delivered, for those still pending on this consumer."""
        pipe = self.bus.client.pipeline(transaction=False)
        for entry_id in ids:
            pipe.xpending_range(
                self.stream, self.config.group, entry_id, entry_id, 1, consumername=self.config.consumer
            )
        counts: dict[bytes, int] = {}
        for rows in pipe.execute():
            for row in rows:
                counts[row["message_id"]] = int(row["times_delivered"])
        return counts

    # ------------------------------------------------------------------ applying

    def _handle(self, entries: Sequence[Entry], deliveries: Mapping[bytes, int]) -> None:
        """Apply ``entries``, acknowledge what went through, settle or hold what did not."""
        delay = BACKOFF_FIRST_S
        floor = self._floor()
        while True:
            failed = self._apply(entries, floor)
            done = [entry_id for entry_id, _ in entries if entry_id not in failed]
            self._ack(done)
            held = [] if done else self._outage_victims(entries, failed)
            held_ids = {entry_id for entry_id, _ in held}
            for entry in entries:
                if entry[0] in failed and entry[0] not in held_ids:
                    self._settle(entry, failed[entry[0]], deliveries.get(entry[0], 1))
            if not held:
                return
            log.warning(
                "the sink failed every entry; retrying in %.1f s",
                delay,
                extra={**self._fields(), "count": len(held), "reason": _reason(failed[held[0][0]])},
            )
            if not self._hold(list(held_ids), delay):
                return  # stopped: they stay pending, for a reclaim
            entries, delay = held, min(delay * 2, BACKOFF_MAX_S)

    def _apply(self, entries: Sequence[Entry], floor: str | None) -> dict[bytes, Exception]:
        """Apply the batch, halving what fails (see the module docstring); the entries that
        failed, with their error."""
        failed: dict[bytes, Exception] = {}
        pieces = [entries]  # still to apply, the next one last
        through = probing = False
        while pieces:
            piece = pieces.pop()
            error = self._try(piece, floor)
            if error is None:
                through = True
                continue
            sink_suspected = not through and not isinstance(error, Poison)
            if probing and sink_suspected:  # the first entry failed alone, and all the rest at once: down
                failed.update(dict.fromkeys([entry_id for entry_id, _ in piece], error))
                break
            probing = False
            if len(piece) > 1:
                if piece is entries:
                    log.info("batch failed (%s); halving it to find the entries at fault", error, extra=self._fields())
                half = len(piece) // 2
                pieces += [piece[half:], piece[:half]]
                continue
            failed[piece[0][0]] = error
            if sink_suspected and pieces:  # is it the entry, or the sink? The rest, tried whole, tells
                pieces, probing = [[entry for part in reversed(pieces) for entry in part]], True
        self.stats.applied += len(entries) - len(failed)
        return failed

    def _try(self, entries: Sequence[Entry], floor: str | None) -> Exception | None:
        """What ``sink.apply(entries, floor)`` raised, or None if it went through."""
        try:
            self.sink.apply(entries, floor)
        except Exception as exc:
            return exc
        return None

    def _outage_victims(self, entries: Sequence[Entry], failed: Mapping[bytes, Exception]) -> list[Entry]:
        """Of a batch where nothing went through, the entries to blame on the sink, not on themselves."""
        return [
            entry for entry in entries if not isinstance(failed[entry[0]], Poison) and entry[0] not in self._suspects
        ]

    def _settle(self, entry: Entry, error: Exception, deliveries: int) -> None:
        """An entry that failed on its own: dead-letter it at its last delivery, else leave it pending."""
        reason = _reason(error)
        if deliveries >= self.config.max_deliveries:
            self._dead_letter(entry, deliveries, reason)
            return
        self._suspects[entry[0]] = reason
        if len(self._suspects) > SUSPECTS_KEPT:
            del self._suspects[next(iter(self._suspects))]
        fields = {**self._fields(), "id": entry[0].decode(), "deliveries": deliveries, "reason": reason}
        log.info("entry failed; left pending for a retry", extra=fields)

    def _dead_letter(self, entry: Entry, deliveries: int, reason: str) -> None:
        entry_id, original = entry
        record: dict[FieldT, EncodableT] = {
            b"id": entry_id,
            b"group": self.config.group,
            b"consumer": self.config.consumer,
            b"deliveries": deliveries,
            b"reason": reason,
        }
        for name, value in original.items():  # the entry's own fields follow, never overwrite, these
            record.setdefault(name, value)
        pipe = self.bus.client.pipeline(transaction=True)  # recorded and acknowledged, or neither
        pipe.xadd(self.bus.keys.dead_letter(self.config.group), record)
        pipe.xack(self.stream, self.config.group, entry_id)
        pipe.execute()
        self._suspects.pop(entry_id, None)
        self.stats.dead_lettered += 1
        fields = {**self._fields(), "id": entry_id.decode(), "deliveries": deliveries, "reason": reason}
        log.warning("entry dead-lettered", extra=fields)

    def _ack(self, ids: list[bytes]) -> None:
        if not ids:
            return
        self.bus.client.xack(self.stream, self.config.group, *ids)
        for entry_id in ids:
            self._suspects.pop(entry_id, None)

    def _hold(self, ids: list[bytes], seconds: float) -> bool:
        """Wait ``seconds`` keeping ``ids`` ours (idle time reset, no delivery counted); False if stopped."""
        deadline = time.monotonic() + seconds
        while not self.stop.is_set():
            self.bus.client.xclaim(self.stream, self.config.group, self.config.consumer, 0, [*ids], justid=True)
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            self.stop.wait(min(left, self.config.claim_idle_ms / 3000))
        return False

    # ------------------------------------------------------------------ upkeep

    def _floor(self) -> str | None:
        """What the sink may record as stored throughout, read before a batch is applied: the id
        before the group's first unacknowledged entry (None if the group is gone: the floor stays)."""
        first = frontier(self.bus, self.stream, self.config.group)
        return None if first is None else previous_id(first)

    def _forget_gone(self) -> None:
        idle_ms = FORGET_AFTER_CLAIMS * self.config.claim_idle_ms
        removed: list[bytes] = self.bus.run(calls.script_call("forget", [self.stream], [self.config.group, idle_ms]))
        if removed:
            names = sorted(as_text(name) for name in removed)
            log.info("removed consumers gone from the group", extra={**self._fields(), "removed": names})

    def _recreate_group(self) -> None:
        log.warning("consumer group gone (NOGROUP); creating it again at the sink's floor", extra=self._fields())
        self._suspects.clear()  # their pending entries went with the group
        self.stats.recreated += 1
        self.ensure_group()

    def _trim(self) -> None:
        trimmed = trim_events(self.bus, self.stream)
        if trimmed:
            self.stats.trimmed += trimmed
            log.info("trimmed the output stream", extra={**self._fields(), "count": trimmed})

    def _log_lag(self) -> None:
        for row in _groups(self.bus, self.stream):
            if as_text(row["name"]) == self.config.group:
                lag = _lag_of(self.bus, self.stream, row)
                fields = {"lag": lag.lag, "pending": lag.pending, "consumers": lag.consumers}
                log.info("consumer group lag", extra={**self._fields(), **fields})

    def _fields(self) -> dict[str, str]:
        return {"group": self.config.group, "consumer": self.config.consumer}


# ---------------------------------------------------------------------- lag and retention


def group_lag(bus: Bus, stream: str) -> list[GroupLag]:
    """Every group of ``stream``: its consumers, pending entries, lag and last delivered id.

    The server's ``lag`` is nil when it cannot tell: a group created at an id in the middle of
    the stream (as groups are here, at their sink's position) until it first catches up, or
    entries deleted in the undelivered range. Then the undelivered entries are counted here.
    """
    return [_lag_of(bus, stream, row) for row in _groups(bus, stream)]


def trim_events(bus: Bus, stream: str) -> int:
    """Trim ``stream`` (XTRIM MINID) below what every group and the oldest snapshot still need.

    A group needs everything from its acknowledged frontier on, and a group that was lost (an
    ``XGROUP DESTROY``, a Redis that kept the stream but not the group) everything above the floor
    it recorded in ``keys.floors``, so that it finds its entries when it is created again. The engine's oldest kept
    snapshot needs the events of the input it has not covered: event ids are ``<input ms>-<n>``,
    so everything from ``<ms of the snapshot's input id>-0`` is kept. With no group or no
    snapshot nothing is trimmed. Returns the number of entries removed.
    """
    frontiers = [frontier(bus, stream, as_text(row["name"])) for row in _groups(bus, stream)]
    snapshot_bound = _snapshot_bound(bus)
    if not frontiers or snapshot_bound is None:
        return 0
    floors = cast(dict[bytes, bytes], bus.client.hgetall(bus.keys.floors))  # lost groups are waited for too
    bounds = [snapshot_bound, *(as_text(floor) for floor in floors.values())]
    for first in frontiers:
        if first is None:  # a group vanished meanwhile: it is changing, trim nothing this time
            return 0
        bounds.append(first)
    lowest = min(bounds, key=id_order)
    return bus.client.xtrim(stream, minid=lowest, approximate=False)


def _groups(bus: Bus, stream: str) -> list[dict[str, Any]]:
    try:
        return bus.client.xinfo_groups(stream)
    except redis.ResponseError as exc:
        if "no such key" in str(exc).lower():
            return []
        raise


def _lag_of(bus: Bus, stream: str, row: dict[str, Any]) -> GroupLag:
    last_delivered = as_text(row["last-delivered-id"])
    lag = row.get("lag")
    return GroupLag(
        name=as_text(row["name"]),
        consumers=int(row["consumers"]),
        pending=int(row["pending"]),
        lag=int(lag) if lag is not None else undelivered(bus, stream, last_delivered),
        last_delivered_id=last_delivered,
    )


def undelivered(bus: Bus, stream: str, after: str) -> int:
    """The entries of ``stream`` after the id ``after``, counted with XRANGE up to ``LAG_COUNT_LIMIT``."""
    if id_order(after) >= id_order(bus.last_generated_id(stream)):
        return 0
    count, low = 0, f"({after}"
    while count < LAG_COUNT_LIMIT:
        page = bus.range(stream, low, count=LAG_COUNT_PAGE)
        count += len(page)
        if len(page) < LAG_COUNT_PAGE:
            break
        low = f"({as_text(page[-1][0])}"
    return min(count, LAG_COUNT_LIMIT)


def frontier(bus: Bus, stream: str, group: str) -> str | None:
    """The first id ``group`` has not acknowledged: its oldest pending entry, else the one after its
    last delivered; None if the group (or the stream) is gone.

    Read in one MULTI (XINFO GROUPS, XPENDING), so no delivery falls between the two reads: read
    apart in the other order, an entry delivered in between would count as acknowledged.
    """
    pipe = bus.client.pipeline(transaction=True)
    pipe.xinfo_groups(stream)
    pipe.xpending(stream, group)
    groups, summary = pipe.execute(raise_on_error=False)
    for reply in (groups, summary):
        if isinstance(reply, redis.ResponseError):
            if "NOGROUP" in str(reply) or "no such key" in str(reply).lower():
                return None
            raise reply
    if summary["pending"]:
        return as_text(summary["min"])
    for row in groups:
        if as_text(row["name"]) == group:
            return next_id(as_text(row["last-delivered-id"]))
    return None


def _snapshot_bound(bus: Bus) -> str | None:
    oldest = bus.range(bus.keys.snapshot, count=1)
    if not oldest or b"in" not in oldest[0][1]:
        return None
    ms, _ = id_order(oldest[0][1][b"in"].decode())
    return f"{ms}-0"


def next_id(stream_id: str) -> str:
    """The smallest stream id after ``stream_id``."""
    ms, seq = id_order(stream_id)
    return f"{ms}-{seq + 1}" if seq < MAX_SEQUENCE else f"{ms + 1}-0"


def previous_id(stream_id: str) -> str:
    """The largest stream id before ``stream_id`` (``0-0`` stays ``0-0``)."""
    ms, seq = id_order(stream_id)
    if seq:
        return f"{ms}-{seq - 1}"
    return f"{ms - 1}-{MAX_SEQUENCE}" if ms else "0-0"


def _reason(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"
