"""Engine snapshots: a versioned, canonical MessagePack document of the whole state.

Canonical means independent of the history that built the state: markets sorted by id, each
market's live orders bids-then-asks, best price first, oldest first within a price (which is
their time priority). Cancelled husks and stale expiry entries are not written. Two engines
with equal books therefore write equal bytes, which is what ``Engine.state_hash`` hashes.

Version 2 adds the ledger (accounts, positions, the YES contracts committed to resting sells)
and each market's ``collateral`` flag. An engine that has never seen a deposit or a collateral
market still writes version 1, byte for byte as before, so its state hash is unchanged; both
versions are read.

Version 3 adds the armed dead-man switches (account, deadline), sorted by account, to version 2.
It is written only while a switch is armed: with none armed the snapshot is version 1 or 2 as
before (a disarmed or fired switch leaves nothing behind), so hashes do not change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from matchbox.engine.book import Book, Order
from matchbox.engine.ledger import Account, Position, Reserve
from matchbox.engine.types import MarketState, SelfTradePrevention, Side, TickScheme, TimeInForce

if TYPE_CHECKING:
    from matchbox.engine.engine import Engine

FORMAT = "matchbox.engine"
VERSION = 3
VERSIONS = (1, 2, 3)


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


class _MarketV2(_Market, array_like=True):
    collateral: bool


class _Ledger(msgspec.Struct, array_like=True):
    net_deposits: int
    accounts: list[tuple[str, int, int]]  # account, total, reserved
    # market_id, account, yes, no, committed, stake, liability
    positions: list[tuple[str, str, int, int, int, int, int]]
    covered: list[tuple[int, int]]  # order_id, YES contracts covering it (binary sells)


class _Snapshot(msgspec.Struct, array_like=True):
    format: str
    version: int
    last_order_id: int
    last_trade_id: int
    markets: list[_Market]


class _SnapshotV2(msgspec.Struct, array_like=True):
    format: str
    version: int
    last_order_id: int
    last_trade_id: int
    markets: list[_MarketV2]
    ledger: _Ledger


class _SnapshotV3(_SnapshotV2, array_like=True):
    deadlines: list[tuple[str, int]]  # account, deadline (ns): the armed dead-man switches


_encoder = msgspec.msgpack.Encoder()
_decoders: dict[int, msgspec.msgpack.Decoder[Any]] = {
    1: msgspec.msgpack.Decoder(_Snapshot),
    2: msgspec.msgpack.Decoder(_SnapshotV2),
    3: msgspec.msgpack.Decoder(_SnapshotV3),
}


def encode(engine: Engine) -> bytes:
    books = [engine.books[market_id] for market_id in sorted(engine.books)]
    deadlines = sorted(engine.deadlines.items())
    if not engine.ledger and not deadlines:  # no money anywhere: version 1, as before the ledger existed
        markets = [_market(book) for book in books]
        return _encoder.encode(_Snapshot(FORMAT, 1, engine.last_order_id, engine.last_trade_id, markets))
    markets_v2 = [_MarketV2(**msgspec.structs.asdict(_market(book)), collateral=book.collateral) for book in books]
    if not deadlines:  # no switch armed: version 2, as before dead-man switches existed
        snapshot = _SnapshotV2(FORMAT, 2, engine.last_order_id, engine.last_trade_id, markets_v2, _ledger(engine))
        return _encoder.encode(snapshot)
    snapshot_v3 = _SnapshotV3(
        FORMAT, VERSION, engine.last_order_id, engine.last_trade_id, markets_v2, _ledger(engine), deadlines
    )
    return _encoder.encode(snapshot_v3)


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


def _ledger(engine: Engine) -> _Ledger:
    ledger = engine.ledger
    accounts = [(name, a.total, a.reserved) for name, a in sorted(ledger.accounts.items())]
    positions = [
        (market_id, account, p.yes, p.no, p.committed, p.stake, p.liability)
        for (market_id, account), p in sorted(ledger.positions.items())
    ]
    covered = [(order_id, r.covered) for order_id, r in sorted(ledger.orders.items()) if r.covered]
    return _Ledger(ledger.net_deposits, accounts, positions, covered)


def decode(data: bytes, engine: Engine) -> Engine:
    """Fill an empty engine from snapshot bytes; raise SnapshotError if they are not one."""
    snapshot = _read(data)
    engine.last_order_id = snapshot.last_order_id
    engine.last_trade_id = snapshot.last_trade_id
    saved = snapshot.ledger if isinstance(snapshot, _SnapshotV2) else _Ledger(0, [], [], [])
    covered = dict(saved.covered)
    ledger = engine.ledger
    for m in snapshot.markets:
        collateral = isinstance(m, _MarketV2) and m.collateral
        scheme = TickScheme(m.scheme)
        book = Book(m.market_id, scheme, m.min_tick, m.max_tick, m.max_qty, SelfTradePrevention(m.stp), collateral)
        book.state = MarketState(m.state)
        book.outcome = m.outcome
        engine.books[m.market_id] = book
        if collateral:
            ledger.markets[m.market_id] = scheme
        for order_id, account, side, price, qty, remaining, filled, tif, expires_at in m.orders:
            order = Order(
                order_id, account, Side(side), price, qty, remaining, filled, TimeInForce(tif), expires_at, book
            )
            engine.add_restored(order)
            if collateral:
                binary = scheme is TickScheme.BINARY
                reserve = Reserve(m.market_id, account, binary, order.side, price, remaining, covered.get(order_id, 0))
                ledger.orders[order_id] = reserve
    ledger.net_deposits = saved.net_deposits
    for name, total, reserved in saved.accounts:
        ledger.accounts[name] = Account(total, reserved)
    for market_id, account, yes, no, committed, stake, liability in saved.positions:
        ledger.positions[(market_id, account)] = Position(yes, no, committed, stake, liability)
    if isinstance(snapshot, _SnapshotV3):
        engine.restore_deadlines(snapshot.deadlines)
    return engine


def _read(data: bytes) -> _Snapshot | _SnapshotV2:
    try:
        header: Any = msgspec.msgpack.decode(data)
        if not isinstance(header, list) or header[:1] != [FORMAT]:
            raise SnapshotError("not a matchbox engine snapshot")
        if header[1] not in VERSIONS:
            raise SnapshotError(f"snapshot version {header[1]} is not supported (this engine reads {VERSIONS})")
        decoded: _Snapshot | _SnapshotV2 = _decoders[header[1]].decode(data)
        return decoded
    except (msgspec.DecodeError, msgspec.ValidationError, IndexError) as error:
        raise SnapshotError(f"corrupt engine snapshot: {error}") from error
