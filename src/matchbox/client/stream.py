"""``Stream``: the WebSocket feed, kept whole: authenticated, resumed after a drop with no gap and
no duplicate, with a local order book per market checked against the feed's numbers.

- Every message of a subscription is numbered (``seq``, from its acknowledgement's 0). A gap
  subscribes that channel again: a book gets a fresh snapshot, and the book is not served
  (``books`` drops it) until it has.
- After a dropped connection it connects again with ``last_id`` (the cursor of the last event it
  passed on): the server sends what was missed, then live. The messages of one event before its
  last carry the cursor before it, so a resume sends them again: one the stream passed on
  already (the same content) is not passed on twice. A cursor the server can no longer
  resume from (too far back) is dropped: the stream connects afresh and yields a
  ``{"type": "resync"}`` message first, the cue to read what may have been missed from REST.
- A book's snapshot carries the sequence it was taken at; a delta at or below it is already in
  the snapshot (a resume sends the missed history after a snapshot of now) and is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from matchbox.client.aio import V1, AsyncClient
from matchbox.client.errors import MatchboxError, error_from

log = logging.getLogger(__name__)
BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 4.0)
CONTROL = {"subscribed", "unsubscribed", "pong", "authed", "heartbeat"}


@dataclass
class LocalBook:
    """One market's book as the feed tells it: price -> (qty, orders) per side. ``snapshot_at`` is
    the sequence its snapshot was taken at; ``sequence`` the newest event folded in since."""

    market_id: str
    snapshot_at: int = 0
    sequence: int = 0
    bids: dict[float | int, tuple[int, int]] = field(default_factory=dict)
    asks: dict[float | int, tuple[int, int]] = field(default_factory=dict)

    def reset(self, snapshot: dict[str, Any]) -> None:
        self.snapshot_at = self.sequence = snapshot["sequence"]
        self.bids = {level["price"]: (level["qty"], level.get("orders") or 0) for level in snapshot["bids"]}
        self.asks = {level["price"]: (level["qty"], level.get("orders") or 0) for level in snapshot["asks"]}

    def apply(self, delta: dict[str, Any]) -> bool:
        """A level's new total; False (and nothing changed) for one the snapshot already holds
        (an event can change several levels: each of its deltas has its sequence)."""
        if delta["sequence"] <= self.snapshot_at:
            return False
        levels = self.bids if delta["side"] == "bid" else self.asks
        if delta["qty"] == 0:
            levels.pop(delta["price"], None)
        else:
            levels[delta["price"]] = (delta["qty"], delta["orders"])
        self.sequence = max(self.sequence, delta["sequence"])
        return True

    def best_bid(self) -> float | int | None:
        return max(self.bids) if self.bids else None

    def best_ask(self) -> float | int | None:
        return min(self.asks) if self.asks else None

    def levels(self, side: str) -> list[tuple[float | int, int]]:
        """(price, qty) of a side, best first: ``bid`` (highest first) or ``ask`` (lowest first)."""
        book = self.bids if side == "bid" else self.asks
        return [(price, book[price][0]) for price in sorted(book, reverse=side == "bid")]


class Stream:
    """The feed of ``channels`` (``trades:<market>``, ``book:<market>``, ``orders``: your own
    orders, or ``orders:<account>`` in open mode), as an async iterator of its messages (the
    events; the acknowledgements and pongs are its own business). ``books`` holds each
    ``book:`` channel's :class:`LocalBook` once its snapshot came.

    The connection is read by a task of its own from :meth:`start` (or the first ``__anext__``),
    into a queue: a wait for the next message may be cancelled (``asyncio.wait_for``) and nothing
    is lost. :func:`open_stream` starts it and returns once every channel is subscribed."""

    def __init__(self, client: AsyncClient, channels: Sequence[str], *, last_id: str | None = None) -> None:
        self.client = client
        self.channels = [self._named(channel) for channel in channels]
        self.last_id = last_id
        self.books: dict[str, LocalBook] = {}
        self.reconnects = 0
        self._seqs: dict[str, int] = {}
        self._socket: aiohttp.ClientWebSocketResponse | None = None
        self._pending: list[dict[str, Any]] = []
        self._closed = False
        self._queue: asyncio.Queue[dict[str, Any] | BaseException] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self._acknowledged: set[str] = set()
        self._at_cursor: set[str] = set()  # what it passed on under the current last_id (sent again on a resume)
        self.subscribed = asyncio.Event()  # every channel acknowledged, on the current connection
        self.failure: Exception | None = None
        self._ended = asyncio.Event()

    def _named(self, channel: str) -> str:
        if channel == "orders" and self.client.account and not self.client.api_key:
            return f"orders:{self.client.account}"
        return channel

    def __aiter__(self) -> Stream:
        return self

    def start(self) -> None:
        if self._reader is None:
            self._reader = asyncio.create_task(self._read(), name="matchbox-feed")

    async def ready(self, timeout: float = 10.0) -> None:
        """Connect, and wait until every channel is subscribed (TimeoutError after ``timeout`` s;
        the stream's own error, such as a refused key, if it ended first)."""
        self.start()
        waits = [asyncio.ensure_future(self.subscribed.wait()), asyncio.ensure_future(self._ended.wait())]
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for wait in waits:
            wait.cancel()
        if self.failure is not None:
            raise self.failure
        if not self.subscribed.is_set():
            raise TimeoutError(f"the feed's channels were not all subscribed within {timeout} s")

    async def __anext__(self) -> dict[str, Any]:
        self.start()
        item = await self._queue.get()
        if isinstance(item, StopAsyncIteration):
            self._queue.put_nowait(item)  # ended: every later call ends too
        if isinstance(item, BaseException):
            raise item
        return item

    async def _read(self) -> None:
        try:
            async for message in self._messages():
                self._queue.put_nowait(message)
        except Exception as exc:  # a mistake the stream cannot mend: the reader's next message raises it
            self.failure = exc
            self._queue.put_nowait(exc)
        self._ended.set()
        self._queue.put_nowait(StopAsyncIteration())

    async def close(self) -> None:
        self._closed = True
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        self._ended.set()
        self._queue.put_nowait(StopAsyncIteration())
        if self._socket is not None:
            await self._socket.close()

    async def _messages(self) -> AsyncIterator[dict[str, Any]]:
        attempt = 0
        while not self._closed:
            try:
                async for message in self._connection():
                    attempt = 0
                    yield message
            except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
                log.info("feed: connection lost (%s); resuming from %s", exc, self.last_id)
            if self._closed:
                return
            self.reconnects += 1
            await asyncio.sleep(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)])
            attempt += 1

    async def _connection(self) -> AsyncIterator[dict[str, Any]]:
        """One connection's messages, until it closes."""
        params = {"subscribe": ",".join(self.channels)} if self.channels else {}
        if self.last_id is not None:
            params["last_id"] = self.last_id
        url = self.client.base_url.replace("http", "ws", 1) + f"{V1}/ws"
        self._seqs.clear()
        self.books.clear()
        self._acknowledged.clear()
        self.subscribed.clear()
        # the key in the handshake: its own orders are then subscribed (and resumed) with the rest
        headers = {"Authorization": f"Bearer {self.client.api_key}"} if self.client.api_key else {}
        async with self.client.session.ws_connect(url, params=params, headers=headers, heartbeat=20.0) as socket:
            self._socket = socket
            async for frame in socket:
                if frame.type is not aiohttp.WSMsgType.TEXT:
                    break
                for message in self._take(json.loads(frame.data)):
                    yield message
                while self._pending:
                    await socket.send_json(self._pending.pop(0))
        self._socket = None

    def _take(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        """What a message from the server passes on (it may be none, or a resync first)."""
        kind, channel = message.get("type"), message.get("channel")
        if kind == "subscribed" and isinstance(channel, str):
            self._seqs[channel] = 0
            if self.last_id is None:  # a drop before any event resumes from here
                self.last_id = message.get("id")
            self._acknowledged.add("orders" if channel.startswith("orders:") and "orders" in self.channels else channel)
            if self._acknowledged >= set(self.channels):
                self.subscribed.set()
        if kind in CONTROL:
            return []
        if kind == "error":
            return self._error(message)
        if channel in self._seqs and message.get("seq") != self._seqs[channel] + 1:
            self._resubscribe(channel)  # a gap: this channel starts afresh
            return []
        if channel is not None:
            self._seqs[channel] = message.get("seq", 0)
        if kind == "snapshot":
            book = self.books.setdefault(message["market_id"], LocalBook(message["market_id"]))
            book.reset(message)
            return [message]
        if self._repeated(message):
            return []
        if kind == "delta":
            known = self.books.get(message["market_id"])
            if known is None or not known.apply(message):
                return []
        return [message]

    def _repeated(self, message: dict[str, Any]) -> bool:
        """Whether the stream passed this message on already (a resume sends again the messages of
        an event that came before its last, which carry the cursor before the event); else it is
        noted, and the cursor moves with the message's ``id``."""
        content = json.dumps({k: v for k, v in message.items() if k not in ("seq", "id")}, sort_keys=True)
        if content in self._at_cursor:
            return True
        if message.get("id") not in (None, self.last_id):
            self.last_id = message["id"]
            self._at_cursor.clear()
        self._at_cursor.add(content)
        return False

    def _error(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        error = error_from(400, message)
        if error.code == "INVALID_CURSOR":  # too far back to resume: connect afresh, and say so
            log.warning("feed: %s; reading afresh", error.message)
            self.last_id = None
            return [{"type": "resync", "channel": None, "reason": error.message}]
        if error.code in ("UNAUTHENTICATED", "FORBIDDEN", "UNKNOWN_FIELD", "INVALID_FIELD", "MISSING_FIELD"):
            raise error  # a mistake of the program's: retrying would not mend it
        log.warning("feed: %s", error)
        return []

    def _resubscribe(self, channel: str) -> None:
        kind, _, target = channel.partition(":")
        log.warning("feed: a gap on %s; subscribing again", channel)
        self._seqs.pop(channel, None)
        if kind == "book":
            self.books.pop(target, None)
        key = {"trades": "market_id", "book": "market_id"}.get(kind, "account")
        message: dict[str, Any] = {"type": "subscribe", "channel": kind}
        if kind != "orders" or not self.client.api_key:
            message[key] = target
        self._pending.append(message)


@contextlib.asynccontextmanager
async def open_stream(client: AsyncClient, channels: Sequence[str], **options: Any) -> AsyncIterator[Stream]:
    stream = Stream(client, channels, **options)
    try:
        await stream.ready()
        yield stream
    finally:
        await stream.close()


__all__ = ["LocalBook", "MatchboxError", "Stream", "open_stream"]
