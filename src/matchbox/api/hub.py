"""WebSocket fan-out: subscriptions, per-client queues, resume from a cursor, book images.

A client is registered (and starts queueing) before its WebSocket is accepted, so nothing
published during the handshake is lost. Each client has a bounded queue; a client too slow to
drain it is disconnected with a reason instead of holding the others back, and so is a client
whose delivery fails: one client's fault never reaches the tail that serves them all.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from matchbox.api import cursor
from matchbox.api.errors import error_body
from matchbox.api.feed import FILLS, channel_messages
from matchbox.api.prices import price_out
from matchbox.api.projection import LevelChange, Projection, Update
from matchbox.bus.codec import DecodedEvent
from matchbox.bus.connection import id_order
from matchbox.engine.types import RejectReason, Side, TickScheme

log = logging.getLogger(__name__)

QUEUE_LIMIT = 10_000
# Book levels in the snapshots a client has queued and not yet taken: a client that subscribes to
# a deep book again and again without reading would otherwise hold gigabytes.
QUEUED_LEVELS_LIMIT = 200_000
SLOW = (1008, "slow consumer: the feed outran this client")
DROPPED = (1011, "this connection failed on the server; reconnect with last_id")


@dataclass(eq=False)
class Client:
    channels: set[str] = field(default_factory=lambda: {FILLS})
    queue: asyncio.Queue[dict[str, Any] | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_LIMIT))
    explicit: bool = False  # has subscribed to something: the plain fills feed stops
    overflowed: bool = False  # takes no more messages: its queue overflowed, or it was dropped
    goodbye: tuple[int, str] = SLOW  # the close code and reason the sender ends the connection with
    replaying: bool = False  # resuming: live messages wait in ``held`` until history is sent
    skip_through: dict[int, str] = field(default_factory=dict)  # after a resume: shard -> sent up to here
    held: list[tuple[int, str, tuple[str, dict[str, Any]]]] = field(default_factory=list)  # (shard, id, message)
    positions: dict[int, str] = field(default_factory=dict)  # its feed's place on each shard: its cursor
    seqs: dict[str, int] = field(default_factory=dict)  # channel -> the seq of its last message sent
    queued_levels: int = 0  # book levels in the snapshots queued for it and not yet sent

    def send(self, channel: str, message: dict[str, Any], position: str | None = None) -> None:
        """A message of the subscription ``channel``: numbered next (``seq``, contiguous from the
        acknowledgement's 0, so a client sees a gap), with ``position`` (a cursor of this
        connection's, the current one by default) as its ``id``."""
        if message.get("type") == "snapshot":
            self.queued_levels += len(message["bids"]) + len(message["asks"])
            if self.queued_levels > QUEUED_LEVELS_LIMIT:
                self.drop(SLOW)
                return
        seq = self.seqs[channel] = self.seqs.get(channel, 0) + 1
        numbered = {**message, "seq": seq}
        if "id" in message:
            numbered["id"] = cursor.encode(self.positions) if position is None else position
        self.offer(numbered)

    def deliver(self, shard: int, stream_id: str, messages: list[tuple[str, dict[str, Any]]]) -> None:
        """Its feed has gone through ``stream_id`` of ``shard``: the messages of its channels.

        One event may send it several (a trade on ``trades:m`` and a fill on ``orders:a``): only
        the last carries the cursor past the event; the ones before carry the cursor before it.
        A resume from any of them therefore sends the rest of the event (and what a client had of
        it again, the same message, which it can tell by its content); none is lost between two
        frames of one event."""
        mine = [(channel, message) for channel, message in messages if channel in self.channels]
        before = cursor.encode(self.positions) if len(mine) > 1 else None
        self.positions[shard] = stream_id
        for i, (channel, message) in enumerate(mine):
            self.send(channel, message, before if i < len(mine) - 1 else None)

    def deliver_books(self, messages: list[tuple[str, dict[str, Any]]]) -> None:
        """Book deltas a resume passes over otherwise: history holds no deltas, so the live ones
        always go (a client's book skips those its snapshot holds, by their sequence)."""
        for channel, message in messages:
            if channel in self.channels and channel.startswith("book:"):
                self.send(channel, message)

    def sent(self, message: dict[str, Any]) -> None:
        """The sender has sent ``message``: a snapshot's levels are no longer queued."""
        if message.get("type") == "snapshot":
            self.queued_levels -= len(message["bids"]) + len(message["asks"])

    def offer(self, message: dict[str, Any]) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.drop(SLOW)

    def drop(self, goodbye: tuple[int, str]) -> None:
        """Take no more messages; the sender closes the socket with ``goodbye`` (code, reason) next."""
        self.overflowed, self.goodbye = True, goodbye
        while not self.queue.empty():  # what was queued is not sent: the cue to close comes next
            self.queue.get_nowait()
        self.queue.put_nowait(None)  # wakes the sender


class Hub:
    def __init__(self, projection: Projection, shards: list[int] | None = None) -> None:
        self.projection = projection
        self.clients: set[Client] = set()
        self.positions = dict.fromkeys(shards or [0], cursor.START)  # what the tails published last

    def register(self) -> Client:
        client = Client(positions=dict(self.positions))
        self.clients.add(client)
        return client

    def unregister(self, client: Client) -> None:
        self.clients.discard(client)

    def subscribe(self, client: Client, channel: str) -> None:
        """Acknowledge (``seq`` 0), then, for a book, its snapshot (``seq`` 1); again on a channel
        it has: a fresh start, as after a gap."""
        if not client.explicit:
            client.channels.discard(FILLS)
            client.explicit = True
        client.channels.add(channel)
        client.seqs[channel] = 0
        # with the cursor as of now: a client that drops before any event resumes from here
        client.offer({"type": "subscribed", "channel": channel, "seq": 0, "id": cursor.encode(client.positions)})
        if channel.startswith("book:"):
            client.send(channel, self.book_image(channel.removeprefix("book:")))

    def unsubscribe(self, client: Client, channel: str) -> None:
        client.channels.discard(channel)
        client.seqs.pop(channel, None)
        client.offer({"type": "unsubscribed", "channel": channel})

    def scheme_of(self, market_id: str) -> TickScheme:
        """The market's tick scheme, for its messages' units (ticks for one not known)."""
        market = self.projection.markets.get(market_id)
        return TickScheme.TICKS if market is None else market.scheme

    # ------------------------------------------------------------------ publishing (from the tail)

    def publish(self, shard: int, stream_id: str, decoded: DecodedEvent, updates: list[Update]) -> None:
        self.positions[shard] = stream_id
        if not self.clients:
            return
        messages = channel_messages(decoded.event, stream_id, decoded.n, self.scheme_of)
        for update in updates:
            if isinstance(update, LevelChange):
                messages.append((f"book:{update.market_id}", self._delta(update, stream_id, decoded.n)))
        for client in tuple(self.clients):
            try:
                _deliver(client, shard, stream_id, messages)
            except Exception:  # one client's fault: it goes, the others and the tail go on
                log.exception("feed: delivering %s to a client failed; the client is dropped", stream_id)
                self.unregister(client)
                client.drop(DROPPED)

    def _delta(self, change: LevelChange, stream_id: str, n: int) -> dict[str, Any]:
        market = self.projection.markets[change.market_id]
        return {
            "type": "delta",
            "channel": f"book:{change.market_id}",
            "market_id": change.market_id,
            "id": stream_id,
            "sequence": n,
            "side": "bid" if change.side is Side.BUY else "ask",
            "price": price_out(market.scheme, change.price),
            "qty": change.qty,
            "orders": change.orders,
        }

    def book_image(self, market_id: str, depth: int | None = None) -> dict[str, Any]:
        book = self.projection.books.get(market_id)
        market = self.projection.markets.get(market_id)
        if book is None or market is None:
            error = error_body(RejectReason.UNKNOWN_MARKET, f"unknown market {market_id!r}", "market_id")
            return {"type": "error", "channel": f"book:{market_id}", **error.model_dump(exclude_none=True)}

        def levels(side: Side) -> list[dict[str, Any]]:
            return [
                {"price": price_out(market.scheme, price), "qty": qty, "orders": orders}
                for price, qty, orders in book.levels(side, depth)
            ]

        return {
            "type": "snapshot",
            "channel": f"book:{market_id}",
            "market_id": market_id,
            "id": cursor.encode(self.positions),
            "sequence": self.projection.sequence(market),
            "bids": levels(Side.BUY),
            "asks": levels(Side.SELL),
        }


def _deliver(client: Client, shard: int, stream_id: str, messages: list[tuple[str, dict[str, Any]]]) -> None:
    if client.overflowed:
        return
    if client.replaying:
        for channel, message in messages:
            if channel in client.channels:
                if len(client.held) >= QUEUE_LIMIT:  # history comes slower than the feed: as slow
                    client.drop(SLOW)
                    return
                client.held.append((shard, stream_id, (channel, message)))
        return
    skip = client.skip_through.get(shard)
    if skip is not None:
        if id_order(stream_id) <= id_order(skip):
            client.deliver_books(messages)  # the resume sent the rest already
            return
        del client.skip_through[shard]
    client.deliver(shard, stream_id, messages)
