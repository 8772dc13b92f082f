"""The event tail: one task per shard in an API instance, reading the shard's whole output stream, in order.

It folds every event into the projection, hands the feed its messages, and completes the
waiters of submissions: the outcome of an input entry is every event whose ``in`` is that
entry. A commit is atomic, so an entry's events are complete once the tail sees an event of a
later entry, or reaches the end of the stream.

Nothing one client does may stop it: each listener call is isolated (a failure is logged, the
tail goes on), and a failure of the tail itself (a poison event, a bug) is logged, reported by
:meth:`EventTail.trouble` (so ``/ready`` answers 503) and followed by a restart from the entry
where it stopped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from matchbox.api.projection import Projection, Update
from matchbox.bus.aio import AsyncBus
from matchbox.bus.codec import CodecError, DecodedEvent, decode_event
from matchbox.bus.connection import id_order
from matchbox.bus.outage import REDIS_DOWN, Backoff
from matchbox.engine.types import Event

log = logging.getLogger(__name__)

PAGE = 1000
RECENT_OUTCOMES = 20_000
LAG_LIMIT_S = 5.0  # behind the committed events and not at the end of the stream for this long: not ready
RESTART_BACKOFF_MAX_S = 30.0

Listener = Callable[[int, str, DecodedEvent, list[Update]], None]  # (shard, stream id, event, updates)


class EventTail:
    def __init__(self, bus: AsyncBus, projection: Projection) -> None:
        self.bus = bus
        self.projection = projection
        self.listeners: list[Listener] = []
        self.position = "0-0"  # stream id of the last entry read
        self.caught_up = asyncio.Event()  # set once the tail first reached the end of the stream
        self.failure: str | None = None  # why the tail last stopped, until it reads again
        self.at_end_at: float | None = None  # monotonic seconds when it last reached the end of the stream
        self._waiters: dict[str, asyncio.Future[list[Event]]] = {}
        self._recent: OrderedDict[str, list[Event]] = OrderedDict()
        self._open_entry = ""  # the entry whose events are being gathered
        self._open_events: list[Event] = []
        # an entry's stages, monotonic ns: read by the leader, matched, seen here (see timing())
        self._batch_stages: tuple[int, int] | None = None  # the batch being read's ("t" on its first event)
        self._read_ns = 0  # when the page being folded was read
        self._open_timing: tuple[int, int, int] | None = None
        self._timings: OrderedDict[str, tuple[int, int, int]] = OrderedDict()
        self._line = bus.line()  # its reads take no connection from the pool

    async def run(self) -> None:
        """Follow the stream for good: a failure is logged and the tail restarts where it stopped."""
        backoff = 0.1
        while True:
            try:
                await self._follow()
            except Exception as exc:  # a poison event or a bug: say so on /ready, and try again
                backoff = 0.1 if self.failure is None else min(backoff * 2, RESTART_BACKOFF_MAX_S)
                self.failure = f"{type(exc).__name__}: {exc}"
                log.exception("event tail stopped at %s; restarting in %.1f s", self.position, backoff)
                await asyncio.sleep(backoff)

    def trouble(self, committed: str, now: float) -> str | None:
        """Why this instance should take no traffic because of its tail, or None. ``committed`` is
        the stream id of the last event the engine committed; ``now``, monotonic seconds."""
        if self.failure is not None:
            return f"the event tail stopped at {self.position} ({self.failure}); it is restarting"
        if id_order(self.position) >= id_order(committed):
            return None
        if self.at_end_at is not None and now - self.at_end_at <= LAG_LIMIT_S:
            return None
        return f"the event tail lags: it is at {self.position}, the engine committed up to {committed}"

    async def _follow(self) -> None:
        backoff = Backoff()
        while True:
            _stop_if_cancelled()
            try:
                entries = await self.bus.read(
                    self.bus.keys.events, self.position, count=PAGE, block_ms=1000, line=self._line
                )
                backoff.reset()
            except REDIS_DOWN as exc:
                delay = backoff.next()
                log.warning("event tail: redis unavailable (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                continue
            self._read_ns = time.monotonic_ns()
            for raw_id, fields in entries:
                stream_id = raw_id.decode()
                stages = fields.get(b"t")
                if stages is not None:  # a batch's first event: when its entries were read and matched
                    self._batch_stages = _stages(stages)
                self._fold(stream_id, fields.get(b"event", b""))
                self.position = stream_id  # entry by entry: a restart after a failure folds nothing twice
            self.failure = None
            if len(entries) < PAGE:  # the end of the stream: the open entry's events are all here
                self._close_entry()
                self.caught_up.set()
                self.at_end_at = time.monotonic()

    def _fold(self, stream_id: str, raw: bytes) -> None:
        try:
            decoded = decode_event(raw)
        except CodecError as exc:
            log.error("event tail: undecodable event %s skipped: %s", stream_id, exc)
            return
        if decoded.in_id != self._open_entry:
            self._close_entry()
            self._open_entry = decoded.in_id
            stages = self._batch_stages
            self._open_timing = None if stages is None else (*stages, self._read_ns)
        updates = self.projection.apply(decoded.event, decoded.n, stream_id, decoded.in_id, self.bus.keys.shard)
        # a rollback witness: every submission carries the most this tail saw (see submit.lua)
        self.bus.seen_events = max(self.bus.seen_events, decoded.n)
        self._open_events.append(decoded.event)  # after the fold: an event that failed it is read again
        for listener in self.listeners:
            try:
                listener(self.bus.keys.shard, stream_id, decoded, updates)
            except Exception:  # the listener's own fault: the tail, and the instance, go on
                log.exception("event tail: a listener failed on %s", stream_id)

    def _close_entry(self) -> None:
        if not self._open_entry:
            return
        entry, events = self._open_entry, self._open_events
        self._open_entry, self._open_events = "", []
        self._recent[entry] = events
        if len(self._recent) > RECENT_OUTCOMES:
            self._recent.popitem(last=False)
        timing, self._open_timing = self._open_timing, None
        if timing is not None:
            self._timings[entry] = timing
            if len(self._timings) > RECENT_OUTCOMES:
                self._timings.popitem(last=False)
        waiter = self._waiters.pop(entry, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(events)

    def timing(self, entry_id: str) -> tuple[int, int, int] | None:
        """When an input entry's batch was read by the leader, matched, and seen by this tail
        (monotonic ns; comparable with this process's clock on the leader's machine only)."""
        return self._timings.get(entry_id)

    async def outcome(self, entry_id: str, timeout: float) -> list[Event] | None:
        """The events caused by an input entry, or None if they do not come within ``timeout``."""
        if entry_id in self._recent:
            return self._recent[entry_id]
        waiter = self._waiters.get(entry_id)
        if waiter is None:
            waiter = self._waiters[entry_id] = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(waiter)
        except TimeoutError:
            if self._waiters.get(entry_id) is waiter:  # an entry that never comes must not stay forever
                del self._waiters[entry_id]
            return None


def _stages(raw: bytes) -> tuple[int, int] | None:
    read, _, matched = raw.partition(b",")
    return (int(read), int(matched)) if read.isdigit() and matched.isdigit() else None


def _stop_if_cancelled() -> None:
    """Honour a cancellation that redis-py lost: on Python 3.11 one that lands as a read begins is
    swallowed by its connection check (an ``asyncio.timeout(0)``), and shutdown would wait forever."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
