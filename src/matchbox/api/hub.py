"""WebSocket fan-out: subscriptions, per-client queues, resume from a stream id, book images.

A client is registered (and starts queueing) before its WebSocket is accepted, so nothing
published during the handshake is lost. Each client has a bounded queue; a client too slow to
drain it is disconnected with a reason instead of holding the others back.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from matchbox.api.feed import FILLS, channel_messages
from matchbox.api.prices import price_out
from matchbox.api.projection import LevelChange, Projection, Update
from matchbox.bus.codec import DecodedEvent
from matchbox.bus.connection import id_order
from matchbox.engine.types import Side, TickScheme

QUEUE_LIMIT = 10_000


class SlowClient(Exception):
    """The client's queue overflowed."""


@dataclass(eq=False)
class Client:
    channels: set[str] = field(default_factory=lambda: {FILLS})
    queue: asyncio.Queue[dict[str, Any] | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_LIMIT))
    explicit: bool = False  # has subscribed to something: the plain fills feed stops
    overflowed: bool = False
    replaying: bool = False  # resuming: live messages wait in ``held`` until history is sent
    skip_through: str = ""  # after a resume: live messages up to this stream id were sent already
    held: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    account: str | None = None  # whose key this connection sent (op "auth")

    def offer(self, message: dict[str, Any]) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.overflowed = True
            self.queue = asyncio.Queue(1)
            self.queue.put_nowait(None)  # wakes the sender, which closes the socket


class Hub:
    def __init__(self, projection: Projection) -> None:
        self.projection = projection
        self.clients: set[Client] = set()

    def register(self) -> Client:
        client = Client()
        self.clients.add(client)
        return client

    def unregister(self, client: Client) -> None:
        self.clients.discard(client)

    def subscribe(self, client: Client, channel: str) -> None:
        if not client.explicit:
            client.channels.discard(FILLS)
            client.explicit = True
        client.channels.add(channel)
        if channel.startswith("book:"):
            client.offer(self.book_image(channel.removeprefix("book:")))

    def unsubscribe(self, client: Client, channel: str) -> None:
        client.channels.discard(channel)

    def scheme_of(self, market_id: str) -> TickScheme:
        """The market's tick scheme, for its messages' units (ticks for one not known)."""
        market = self.projection.markets.get(market_id)
        return TickScheme.TICKS if market is None else market.scheme

    # ------------------------------------------------------------------ publishing (from the tail)

    def publish(self, stream_id: str, decoded: DecodedEvent, updates: list[Update]) -> None:
        if not self.clients:
            return
        messages = channel_messages(decoded.event, stream_id, decoded.n, self.scheme_of)
        for update in updates:
            if isinstance(update, LevelChange):
                messages.append((f"book:{update.market_id}", self._delta(update, stream_id, decoded.n)))
        for client in tuple(self.clients):
            for channel, message in messages:
                if channel in client.channels:
                    if client.replaying:
                        client.held.append((stream_id, message))
                    elif client.skip_through:
                        if id_order(stream_id) > id_order(client.skip_through):
                            client.skip_through = ""
                            client.offer(message)
                    else:
                        client.offer(message)

    def _delta(self, change: LevelChange, stream_id: str, n: int) -> dict[str, Any]:
        market = self.projection.markets[change.market_id]
        return {
            "channel": "book",
            "type": "delta",
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
            return {"channel": "book", "type": "error", "market_id": market_id, "error": "unknown market"}

        def levels(side: Side) -> list[dict[str, Any]]:
            return [
                {"price": price_out(market.scheme, price), "qty": qty, "orders": orders}
                for price, qty, orders in book.levels(side, depth)
            ]

        return {
            "channel": "book",
            "type": "image",
            "market_id": market_id,
            "id": self.projection.last_id,
            "sequence": self.projection.last_n,
            "bids": levels(Side.BUY),
            "asks": levels(Side.SELL),
        }
