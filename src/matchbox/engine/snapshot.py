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

Version 4 adds the ids of the transfers between shards taken out or paid in here, sorted (each
moves money once), to version 3; written once there is one.

Version 5 adds the ids of the live orders that lapse when their market is suspended, sorted, to
version 4; written only while there is one.

Version 6 adds the live orders placed (or amended) with their own self-trade rule, as (order id,
rule) sorted by id, to version 5; written only while there is one.

Version 7 adds, to version 6, the markets created with an open time, a close time, their
information for people (``MarketInfo``) or a fee schedule, as (market id, opens at, closes at,
info, fees) sorted by id; written once there is one.

Speed (``matchbox bench recovery``): a restore must be much faster than replaying the commands
that built the book (a large book must change leader quickly). So msgspec decodes the rows
straight into orders, enums and all; each price level is put back in one step rather than order
by order; and the cyclic garbage collector is paused while a snapshot is read or written: both
make or walk a million small objects that are not garbage, and the collector's passes over the
growing heap used to cost more than the work itself. The restored book then goes straight to
the collector's oldest generation (see ``_promote``). None of this changes a byte: the format
and the state hash are as they were.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import groupby
from operator import attrgetter
from typing import TYPE_CHECKING, Any

import msgspec

from matchbox.engine.book import Book, Order
from matchbox.engine.ids import shard_of
from matchbox.engine.ledger import Account, Position, Reserve
from matchbox.engine.types import FeeSchedule, MarketInfo, MarketState, SelfTradePrevention, Side, TickScheme

if TYPE_CHECKING:
    from matchbox.engine.engine import Engine

FORMAT = "matchbox.engine"
VERSION = 7
VERSIONS = (1, 2, 3, 4, 5, 6, 7)


class SnapshotError(ValueError):
    """The bytes are not a snapshot this engine can read."""


_UNPLACED = Book("", TickScheme.TICKS, 1, 1, 1, SelfTradePrevention.CANCEL_TAKER)  # until its own is set


class _RestoredOrder(Order, array_like=True):
    """An order read straight from its row (order_id, account, side, price, qty, remaining, filled,
    tif, expires_at: Order's fields but its book, in order): msgspec builds it while it decodes,
    which is most of what makes a restore faster than replaying the commands. Its book is set
    right after. An Order in every way but its msgspec layout, which nothing else uses."""

    book: Book = _UNPLACED


_ROW = attrgetter(*_RestoredOrder.__struct_fields__[:-1])
_LEVEL = attrgetter("side", "price")
_REMAINING = attrgetter("remaining")


class _Header(msgspec.Struct, array_like=True):
    """The first two fields of every version, whatever their types (the rest is skipped unread)."""

    format: Any
    version: Any


class _Market(msgspec.Struct, array_like=True):
    market_id: str
    scheme: int
    min_tick: int
    max_tick: int
    max_qty: int
    stp: int
    state: int
    outcome: str
    orders: list[_RestoredOrder]  # bids best first, then asks best first; oldest first within a price


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


class _SnapshotV4(_SnapshotV3, array_like=True):
    transfers: list[str]  # the transfer ids taken out or paid in here, sorted


class _SnapshotV5(_SnapshotV4, array_like=True):
    lapsing: list[int]  # the live orders that lapse at a suspension, sorted


class _SnapshotV6(_SnapshotV5, array_like=True):
    own_stp: list[tuple[int, int]]  # (order id, self-trade rule) of the live orders with their own, sorted


class _SnapshotV7(_SnapshotV6, array_like=True):
    # (market id, opens at, closes at, info, fees) of the markets that have any, sorted
    market_terms: list[tuple[str, int, int, MarketInfo | None, FeeSchedule | None]]


_encoder = msgspec.msgpack.Encoder()
_header = msgspec.msgpack.Decoder(_Header)
_START = b"\x90" + _encoder.encode(FORMAT)  # an array's first byte (0x9N: N items), then the format
_SMALL_ARRAYS = {bytes([0x90 + n]) for n in range(16)}
_VERSION_BYTES = {_encoder.encode(version) for version in VERSIONS}  # small ints: one byte each
_decoders: dict[int, msgspec.msgpack.Decoder[Any]] = {
    1: msgspec.msgpack.Decoder(_Snapshot),
    2: msgspec.msgpack.Decoder(_SnapshotV2),
    3: msgspec.msgpack.Decoder(_SnapshotV3),
    4: msgspec.msgpack.Decoder(_SnapshotV4),
    5: msgspec.msgpack.Decoder(_SnapshotV5),
    6: msgspec.msgpack.Decoder(_SnapshotV6),
    7: msgspec.msgpack.Decoder(_SnapshotV7),
}


@contextmanager
def collector_paused(*, promote: bool = False) -> Iterator[None]:
    """Pause the cyclic garbage collector for a bulk build or walk (see the module docstring);
    ``promote`` what was built when it resumes."""
    if not gc.isenabled():  # paused already, by a caller or another thread: theirs to resume
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        if promote:
            _promote()
        gc.enable()


def _promote() -> None:
    """Move what the collector tracks straight to its oldest generation (unless someone froze
    objects on purpose: ``unfreeze`` would undo that).

    A restored book is long-lived by nature; left in the youngest generation, the first
    collection after the pause would walk all of it at once (a third of a second for a million
    orders) only to find it alive and move it along. Only after a restore, which is rare: done
    often, this would keep cyclic garbage from the young collections that free it.
    """
    if not gc.get_freeze_count():
        gc.freeze()  # into the permanent generation ...
        gc.unfreeze()  # ... and back into the oldest: two list splices, nothing walked


def encode(engine: Engine) -> bytes:
    with collector_paused():
        return _encode(engine)


def _encode(engine: Engine) -> bytes:
    books = [engine.books[market_id] for market_id in sorted(engine.books)]
    deadlines = sorted(engine.deadlines.items())
    orders = engine.orders
    lapsing = sorted(i for i in engine.lapsing.ids if i in orders)
    own_stp = sorted((i, int(rule)) for i, rule in engine.own_stp.ids.items() if i in orders)
    terms = [
        (b.market_id, b.opens_at, b.closes_at, b.info, b.fees)
        for b in books
        if b.info or b.opens_at or b.closes_at or b.fees
    ]
    # the lowest version that holds the state: one written before a feature existed, byte for byte
    needs = (bool(engine.ledger), bool(deadlines), bool(engine.transfers), bool(lapsing), bool(own_stp), bool(terms))
    version = max((v for v, needed in enumerate(needs, start=2) if needed), default=1)
    last_ids = (engine.last_order_id, engine.last_trade_id)
    if version == 1:  # no money anywhere: as before the ledger
        return _encoder.encode(_Snapshot(FORMAT, 1, *last_ids, [_market(book) for book in books]))
    markets = [_MarketV2(**msgspec.structs.asdict(_market(book)), collateral=book.collateral) for book in books]
    fields: list[Any] = [_ledger(engine), deadlines, sorted(engine.transfers), lapsing, own_stp, terms]
    return _encoder.encode(_BY_VERSION[version](FORMAT, version, *last_ids, markets, *fields[: version - 1]))


_BY_VERSION: dict[int, type[_SnapshotV2]] = {
    2: _SnapshotV2,
    3: _SnapshotV3,
    4: _SnapshotV4,
    5: _SnapshotV5,
    6: _SnapshotV6,
    7: _SnapshotV7,
}


def _market(book: Book) -> _Market:
    return _Market(
        book.market_id,
        int(book.scheme),
        book.min_tick,
        book.max_tick,
        book.max_qty,
        int(book.stp),
        int(book.state),
        book.outcome,
        _rows(book),
    )


def _rows(book: Book) -> list[_RestoredOrder]:
    """The book's live orders, in the canonical order of :meth:`Book.live_orders`.

    A level by level walk, with the husks filtered out only where a level holds any: the same
    orders as ``live_orders`` gives, without a generator step per order. Written as tuples, the
    same MessagePack arrays as rows but built far faster (msgspec writes the IntEnum members as
    their values, so the bytes are those of plain ints).
    """
    rows: list[Any] = []
    for side in (Side.BUY, Side.SELL):
        for level in book.side_levels(side):
            orders = level.orders
            rows += map(_ROW, orders if len(orders) == level.count else filter(_REMAINING, orders))
    return rows


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
    with collector_paused(promote=True):
        snapshot = _read(data)
        for kind, last in (("order", snapshot.last_order_id), ("trade", snapshot.last_trade_id)):
            if last and shard_of(last) != engine.shard:
                raise SnapshotError(
                    f"a snapshot of shard {shard_of(last)} (its last {kind} id) is not shard {engine.shard}'s"
                )
        engine.last_order_id = snapshot.last_order_id
        engine.last_trade_id = snapshot.last_trade_id
        saved = snapshot.ledger if isinstance(snapshot, _SnapshotV2) else _Ledger(0, [], [], [])
        covered = dict(saved.covered)
        for m in snapshot.markets:
            _place(_restore_market(engine, m, covered), m.orders)
        engine.add_restored({order.order_id: order for m in snapshot.markets for order in m.orders})
        ledger = engine.ledger
        ledger.net_deposits = saved.net_deposits
        for name, total, reserved in saved.accounts:
            ledger.accounts[name] = Account(total, reserved)
        for market_id, account, yes, no, committed, stake, liability in saved.positions:
            ledger.positions[(market_id, account)] = Position(yes, no, committed, stake, liability)
        if isinstance(snapshot, _SnapshotV3):
            engine.restore_deadlines(snapshot.deadlines)
        if isinstance(snapshot, _SnapshotV4):
            engine.transfers = set(snapshot.transfers)
        if isinstance(snapshot, _SnapshotV5):
            engine.restore_lapsing(snapshot.lapsing)
        if isinstance(snapshot, _SnapshotV6):
            engine.restore_own_stp(snapshot.own_stp)
        if isinstance(snapshot, _SnapshotV7):
            for market_id, opens_at, closes_at, info, fees in snapshot.market_terms:
                book = engine.books[market_id]
                book.opens_at, book.closes_at, book.info, book.fees = opens_at, closes_at, info, fees
                engine.arm_market(book)
                if fees is not None:
                    engine.ledger.set_fees(market_id, fees)
    return engine


def _place(book: Book, orders: list[_RestoredOrder]) -> None:
    """Put a market's orders, read in priority order, in their book, level by level."""
    for order in orders:
        order.book = book
    for (side, price), level in groupby(orders, _LEVEL):  # runs of one level, oldest first
        book.rest_level(side, price, list(level))


def _restore_market(engine: Engine, m: _Market, covered: dict[int, int]) -> Book:
    """One market's book, empty, and the reserves of its orders if it holds money."""
    collateral = isinstance(m, _MarketV2) and m.collateral
    scheme = TickScheme(m.scheme)
    book = Book(m.market_id, scheme, m.min_tick, m.max_tick, m.max_qty, SelfTradePrevention(m.stp), collateral)
    book.state = MarketState(m.state)
    book.outcome = m.outcome
    engine.books[m.market_id] = book
    if collateral:
        engine.ledger.markets[m.market_id] = scheme
        binary = scheme is TickScheme.BINARY
        engine.ledger.orders.update(
            (
                r.order_id,
                Reserve(m.market_id, r.account, binary, r.side, r.price, r.remaining, covered.get(r.order_id, 0)),
            )
            for r in m.orders
        )
    return book


def _read(data: bytes) -> _Snapshot | _SnapshotV2:
    version = _version(data)
    try:
        decoded: _Snapshot | _SnapshotV2 = _decoders[version].decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        raise SnapshotError(f"corrupt engine snapshot: {error}") from error
    return decoded


def _version(data: bytes) -> int:
    """The snapshot's version; SnapshotError if it is not a snapshot, or one of another version.

    Every version written so far starts with the same bytes: an array of up to 15 items, the
    format, the version as a small int. Read there, the version costs nothing; anything else is
    decoded as a header (which walks the whole document) to say what it is.
    """
    at = len(_START)
    if data[:1] in _SMALL_ARRAYS and data[1:at] == _START[1:] and data[at : at + 1] in _VERSION_BYTES:
        return data[at]
    try:
        header = _header.decode(data)
    except msgspec.ValidationError as error:  # valid MessagePack, but not an array of two or more
        raise SnapshotError("not a matchbox engine snapshot") from error
    except msgspec.DecodeError as error:
        raise SnapshotError(f"corrupt engine snapshot: {error}") from error
    if header.format != FORMAT:
        raise SnapshotError("not a matchbox engine snapshot")
    if header.version not in VERSIONS:
        raise SnapshotError(f"snapshot version {header.version} is not supported (this engine reads {VERSIONS})")
    return int(header.version)
