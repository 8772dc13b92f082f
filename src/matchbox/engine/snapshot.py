"""Engine snapshots: a versioned, canonical MessagePack document of the whole state.

Canonical means independent of the history that built the state: markets sorted by id, each
market's live orders bids-then-asks, best price first, oldest first within a price (which is
their time priority). Cancelled husks and stale expiry entries are not written. Two engines
with equal books therefore write equal bytes, which is what ``Engine.state_hash`` hashes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from matchbox.engine.book import Book, Order
from matchbox.engine.types import MarketState, SelfTradePrevention, Side, TickScheme, TimeInForce

if TYPE_CHECKING:
    from matchbox.engine.engine import Engine

FORMAT = "matchbox.engine"
VERSION = 1


class SnapshotError(ValueError):
    """The bytes are not a snapshot this engine can read."""


class _Market(msgspec.Struct, array_like=True):
    market_id: str
    scheme: int
    min_tick: int
    max_tick: int
    max_qty: int
    stp: int
    state: int
    outcome: str
    # order_id, account, side, price, qty, remaining, filled, tif, expires_at
    orders: list[tuple[int, str, int, int, int, int, int, int, int]]


class _Snapshot(msgspec.Struct, array_like=True):
    format: str
    version: int
    last_order_id: int
    last_trade_id: int
    markets: list[_Market]


_encoder = msgspec.msgpack.Encoder()
_header = msgspec.msgpack.Decoder(tuple[str, int])
_decoder = msgspec.msgpack.Decoder(_Snapshot)


def encode(engine: Engine) -> bytes:
    markets = [_market(engine.books[market_id]) for market_id in sorted(engine.books)]
    return _encoder.encode(_Snapshot(FORMAT, VERSION, engine.last_order_id, engine.last_trade_id, markets))


def _market(book: Book) -> _Market:
    orders = [
        (o.order_id, o.account, int(o.side), o.price, o.qty, o.remaining, o.filled, int(o.tif), o.expires_at)
        for o in book.live_orders()
    ]
    return _Market(
        book.market_id,
        int(book.scheme),
        book.min_tick,
        book.max_tick,
        book.max_qty,
        int(book.stp),
        int(book.state),
        book.outcome,
        orders,
    )


def decode(data: bytes, engine: Engine) -> Engine:
    """Fill an empty engine from snapshot bytes; raise SnapshotError if they are not one."""
    snapshot = _read(data)
    engine.last_order_id = snapshot.last_order_id
    engine.last_trade_id = snapshot.last_trade_id
    for m in snapshot.markets:
        book = Book(m.market_id, TickScheme(m.scheme), m.min_tick, m.max_tick, m.max_qty, SelfTradePrevention(m.stp))
        book.state = MarketState(m.state)
        book.outcome = m.outcome
        engine.books[m.market_id] = book
        for order_id, account, side, price, qty, remaining, filled, tif, expires_at in m.orders:
            order = Order(
                order_id, account, Side(side), price, qty, remaining, filled, TimeInForce(tif), expires_at, book
            )
            engine.add_restored(order)
    return engine


def _read(data: bytes) -> _Snapshot:
    try:
        header: Any = msgspec.msgpack.decode(data)
        if not isinstance(header, list) or header[:1] != [FORMAT]:
            raise SnapshotError("not a matchbox engine snapshot")
        if header[1] != VERSION:
            raise SnapshotError(f"snapshot version {header[1]} is not supported (this engine reads {VERSION})")
        return _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, IndexError) as error:
        raise SnapshotError(f"corrupt engine snapshot: {error}") from error
