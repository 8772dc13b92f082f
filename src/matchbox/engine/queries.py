"""Read-only views of the engine: L2 depth, best prices, an order's status, and the invariants."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from matchbox.engine.book import OrderFields
from matchbox.engine.ledger import cash_reserve
from matchbox.engine.rules import order_status
from matchbox.engine.types import MarketState, OrderStatus, Side, TickScheme

if TYPE_CHECKING:
    from matchbox.engine.book import Book
    from matchbox.engine.engine import Engine


class PriceLevel(msgspec.Struct, frozen=True, array_like=True):
    price: int
    qty: int
    orders: int


class BookDepth(msgspec.Struct, frozen=True):
    market_id: str
    bids: list[PriceLevel]  # highest price first
    asks: list[PriceLevel]  # lowest price first


class LiveOrder(OrderFields):
    """A copy of a live order, with its market and status (mutable, as its base is; a copy all the same)."""

    market_id: str
    status: OrderStatus


class BookIntegrityError(AssertionError):
    """The engine's state broke one of its invariants: a bug, never bad input."""


def depth(book: Book, max_levels: int) -> BookDepth:
    sides: list[list[PriceLevel]] = []
    for side in (Side.BUY, Side.SELL):
        levels: list[PriceLevel] = []
        for level in book.side_levels(side):
            if len(levels) == max_levels:
                break
            levels.append(PriceLevel(level.price, level.total, level.count))
        sides.append(levels)
    return BookDepth(book.market_id, sides[0], sides[1])


def live_order(engine: Engine, order_id: int) -> LiveOrder | None:
    order = engine.orders.get(order_id)
    if order is None:
        return None
    status = order_status(rejected=False, cancelled=False, filled=order.filled, remaining=order.remaining)
    o = order
    return LiveOrder(o.order_id, o.account, o.side, o.price, o.qty, o.remaining, o.filled, o.book.market_id, status)


def check_invariants(engine: Engine) -> None:
    """Raise BookIntegrityError unless every book is sound and the id index matches the levels."""
    seen: set[int] = set()
    for book in engine.books.values():
        for side in (Side.BUY, Side.SELL):
            _check_side(book, side, seen)
        if book.best_bid >= book.best_ask:
            _fail(f"{book.market_id}: crossed book, bid {book.best_bid} >= ask {book.best_ask}")
    if seen != engine.orders.keys():
        _fail(f"id index and levels disagree: {sorted(seen ^ engine.orders.keys())[:10]}")
    if engine.ledger:
        _check_ledger(engine)


def _check_ledger(engine: Engine) -> None:
    """Reserves match the live orders, positions match their pots, and money is conserved."""
    ledger = engine.ledger
    live = {i: o for i, o in engine.orders.items() if o.book.collateral}
    if live.keys() != ledger.orders.keys():
        _fail(f"ledger and book disagree on live orders: {sorted(live.keys() ^ ledger.orders.keys())[:10]}")
    reserved: dict[str, int] = {}
    committed: dict[tuple[str, str], int] = {}
    for order_id, reserve in ledger.orders.items():
        order = live[order_id]
        if (reserve.account, reserve.side, reserve.price, reserve.remaining) != (
            order.account,
            order.side,
            order.price,
            order.remaining,
        ) or not 0 <= reserve.covered <= reserve.remaining:
            _fail(f"order {order_id}: its reserve does not match the order")
        reserved[reserve.account] = reserved.get(reserve.account, 0) + cash_reserve(reserve)
        key = (reserve.market_id, reserve.account)
        committed[key] = committed.get(key, 0) + reserve.covered
    for name, account in ledger.accounts.items():
        if account.reserved != reserved.pop(name, 0) or not 0 <= account.reserved <= account.total:
            _fail(f"account {name}: total {account.total} reserved {account.reserved} do not match its orders")
    if reserved:
        _fail(f"orders reserve money of accounts that do not exist: {sorted(reserved)[:10]}")
    yes: dict[str, int] = {}
    no: dict[str, int] = {}
    pots: dict[str, int] = {}
    for (market_id, name), p in ledger.positions.items():
        book = engine.books[market_id]
        if min(p.yes, p.no, p.committed, p.stake, p.liability) < 0 or p.committed != committed.pop(
            (market_id, name), 0
        ):
            _fail(f"position {market_id}/{name}: {p} is negative or its commitment does not match its orders")
        if book.state is MarketState.SETTLED or name not in ledger.accounts:
            _fail(f"position {market_id}/{name} outlives its market or its account")
        if book.scheme is TickScheme.BINARY and (p.committed > p.yes or min(p.yes - p.committed, p.no) > 0):
            _fail(f"position {market_id}/{name}: {p} holds a YES+NO pair that should have been redeemed")
        yes[market_id] = yes.get(market_id, 0) + p.yes
        no[market_id] = no.get(market_id, 0) + p.no
        pots[market_id] = pots.get(market_id, 0) + p.stake + p.liability
    if any(committed.values()):
        _fail("orders commit YES contracts that no position holds")
    locked = 0
    for market_id, held in yes.items():
        binary = ledger.markets[market_id] is TickScheme.BINARY
        if held != no[market_id] or (not binary and pots[market_id] != held):
            _fail(f"{market_id}: the positions do not add up to one pot ({held} / {no[market_id]})")
        locked += ledger.pot(market_id)
    cash = sum(account.total for account in ledger.accounts.values())
    if cash + locked != ledger.net_deposits:
        _fail(f"money is not conserved: cash {cash} + locked {locked} != deposits - withdrawals {ledger.net_deposits}")


def _check_side(book: Book, side: Side, seen: set[int]) -> None:
    best = 0 if side is Side.BUY else book.max_tick + 1
    occupied = set()
    for tick, level in enumerate(book.levels[side]):
        if level is None:
            continue
        live = list(level.live())
        if level.orders and not level.orders[0].remaining:
            _fail(f"{book.market_id} {side.name} {tick}: the head of the level is a cancelled order")
        if level.price != tick or level.count != len(live) or level.total != sum(o.remaining for o in live):
            _fail(f"{book.market_id} {side.name} {tick}: level totals do not match its orders")
        for order in live:
            if order.side is not side or order.price != tick or order.book is not book:
                _fail(f"order {order.order_id} sits at the wrong level")
            if order.remaining + order.filled > order.qty or order.remaining <= 0:
                _fail(f"order {order.order_id}: remaining {order.remaining} filled {order.filled} of {order.qty}")
            seen.add(order.order_id)
        if live:
            occupied.add(tick)
        if live and (tick > best if side is Side.BUY else tick < best):
            best = tick
    if best != (book.best_bid if side is Side.BUY else book.best_ask):
        _fail(f"{book.market_id} {side.name}: best price is stale")
    if occupied != book.occupied[side]:
        _fail(f"{book.market_id} {side.name}: the set of occupied ticks does not match the levels")


def _fail(message: str) -> None:
    raise BookIntegrityError(message)
