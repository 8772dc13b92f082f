"""The event tail: one task per API instance reading the whole output stream, in order.

It folds every event into the projection, hands the feed its messages, and completes the
waiters of submissions: the outcome of an input entry is every event whose ``in`` is that
entry. A commit is atomic, so an entry's events are complete once the tail sees an event of a
later entry, or reaches the end of the stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable

import redis

from matchbox.api.projection import Projection, Update
from matchbox.bus.aio import AsyncBus
from matchbox.bus.codec import CodecError, DecodedEvent, decode_event
from matchbox.engine.types import Event

log = logging.getLogger(__name__)

PAGE = 1000
RECENT_OUTCOMES = 20_000

Listener = Callable[[str, DecodedEvent, list[Update]], None]


class EventTail:
    def __init__(self, bus: AsyncBus, projection: Projection) -> None:
        self.bus = bus
        self.projection = projection
        self.listeners: list[Listener] = []
        self.position = "0-0"  # stream id of the last entry read
        self.caught_up = asyncio.Event()  # set once the tail first reached the end of the stream
        self.connected = False
        self._waiters: dict[str, asyncio.Future[list[Event]]] = {}
        self._recent: OrderedDict[str, list[Event]] = OrderedDict()
        self._open_entry = ""  # the entry whose events are being gathered
        self._open_events: list[Event] = []

    async def run(self) -> None:
        backoff = 0.1
        while True:
            try:
                entries = await self.bus.read(self.bus.keys.events, self.position, count=PAGE, block_ms=1000)
                self.connected = True
                backoff = 0.1
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                self.connected = False
                log.warning("event tail: redis unavailable (%s); retrying in %.1f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            for raw_id, fields in entries:
                self._fold(raw_id.decode(), fields.get(b"event", b""))
            if entries:
                self.position = entries[-1][0].decode()
            if len(entries) < PAGE:  # the end of the stream: the open entry's events are all here
                self._close_entry()
                self.caught_up.set()

    def _fold(self, stream_id: str, raw: bytes) -> None:
        try:
            decoded = decode_event(raw)
        except CodecError as exc:
            log.error("event tail: undecodable event %s skipped: %s", stream_id, exc)
            return
        if decoded.in_id != self._open_entry:
            self._close_entry()
            self._open_entry = decoded.in_id
        self._open_events.append(decoded.event)
        updates = self.projection.apply(decoded.event, decoded.n, stream_id, decoded.in_id)
        for listener in self.listeners:
            listener(stream_id, decoded, updates)

    def _close_entry(self) -> None:
        if not self._open_entry:
            return
        entry, events = self._open_entry, self._open_events
        self._open_entry, self._open_events = "", []
        self._recent[entry] = events
        if len(self._recent) > RECENT_OUTCOMES:
            self._recent.popitem(last=False)
        waiter = self._waiters.pop(entry, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(events)

    async def outcome(self, entry_id: str, timeout: float) -> list[Event] | None:
        """The events caused by an input entry, or None if they do not come within ``timeout``."""
        if entry_id in self._recent:
            return self._recent[entry_id]
        waiter = self._waiters.get(entry_id)
        if waiter is None:
            waiter = self._waiters[entry_id] = asyncio.get_running_loop().create_future()
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            return None
