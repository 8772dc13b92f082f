"""One market's order book: a slot per tick on each side, a FIFO queue per slot.

Ticks are small bounded integers (99 for binary markets, 350 on the odds ladder), so each side is
a plain list indexed by tick, and the best price on each side is kept as an integer. When the
best level empties, the next one is found by stepping outward to the next non-empty slot.

A level's queue is a deque of :class:`Order`. Cancelling an order takes it off at once in every
count (level total, order count, the engine's index) but leaves its husk in the deque with
``remaining == 0``. Husks are dropped as soon as they reach the head, so the head of a non-empty
level is always the next maker, and a level compacts itself when husks outnumber live orders.
The empty-ask sentinel is ``max_tick + 1`` and the empty-bid sentinel is ``0``, so the crossing
test is a single comparison.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from operator import attrgetter

import msgspec

from matchbox.engine.types import (
    FeeSchedule,
    MarketInfo,
    MarketState,
    SelfTradePrevention,
    Side,
    TickScheme,
    TimeInForce,
)

_REMAINING = attrgetter("remaining")


class OrderFields(msgspec.Struct):
    """What a live order is: its own fields, shared by the book's :class:`Order` and the
    queries' frozen copy of one (``matchbox.engine.queries.LiveOrder``)."""

    order_id: int
    account: str
    side: Side
    price: int
    qty: int
    remaining: int
    filled: int


class Order(OrderFields):
    """A live (resting) order. Mutable, engine-internal; the outside sees events.

    A msgspec Struct rather than a slotted class: it is built for every order that rests, and a
    Struct is built in well under half the time (the book is a cycle through ``book``, so it
    stays tracked by the garbage collector). Built positionally: the fields of
    :class:`OrderFields`, then these.
    """

    tif: TimeInForce
    expires_at: int
    book: Book


class Level:
    """Orders resting at one tick on one side, oldest first."""

    __slots__ = ("price", "orders", "total", "count")

    def __init__(self, price: int) -> None:
        self.price = price
        self.orders: deque[Order] = deque()
        self.total = 0  # sum of live orders' remaining quantity
        self.count = 0  # number of live orders

    def live(self) -> Iterator[Order]:
        return (order for order in self.orders if order.remaining)

    def compact(self) -> None:
        """Drop cancelled husks, in place (a matcher may hold the deque)."""
        live = list(self.live())
        self.orders.clear()
        self.orders.extend(live)


class Book:
    """A market: its spec, its lifecycle state, and both sides of its book."""

    __slots__ = (
        "market_id",
        "scheme",
        "min_tick",
        "max_tick",
        "max_qty",
        "stp",
        "state",
        "outcome",
        "levels",
        "best_bid",
        "best_ask",
        "occupied",
        "collateral",
        "info",
        "opens_at",
        "closes_at",
        "fees",
    )

    def __init__(
        self,
        market_id: str,
        scheme: TickScheme,
        min_tick: int,
        max_tick: int,
        max_qty: int,
        stp: SelfTradePrevention,
        collateral: bool = False,
    ) -> None:
        self.market_id = market_id
        self.scheme = scheme
        self.min_tick = min_tick
        self.max_tick = max_tick
        self.max_qty = max_qty
        self.stp = stp
        self.state = MarketState.OPEN
        self.outcome = ""
        # levels[Side.BUY] and levels[Side.SELL], each indexed by tick
        self.levels: tuple[list[Level | None], list[Level | None]] = (
            [None] * (max_tick + 2),
            [None] * (max_tick + 2),
        )
        self.best_bid = 0
        self.best_ask = max_tick + 1
        # the ticks of each side's non-empty levels: queries and best-price moves stay in
        # proportion to the levels there are, not to the width of the ladder (100,000 ticks)
        self.occupied: tuple[set[int], set[int]] = (set(), set())
        self.collateral = collateral  # orders need funds: see matchbox.engine.ledger
        self.info: MarketInfo | None = None  # for people: the engine passes it on and never reads it
        self.opens_at = 0  # engine time (ns) it opens at, while it was created to open later and has not
        self.closes_at = 0  # engine time (ns) the engine closes it at (0: none)
        self.fees: FeeSchedule | None = None  # what it charges (the ledger's rules)

    # ------------------------------------------------------------------ resting

    def rest(self, order: Order) -> None:
        side_levels = self.levels[order.side]
        price = order.price
        level = side_levels[price]
        if level is None:
            level = side_levels[price] = Level(price)
        level.orders.append(order)
        level.total += order.remaining
        level.count += 1
        if level.count == 1:
            self.occupied[order.side].add(price)
        if order.side is Side.BUY:
            if price > self.best_bid:
                self.best_bid = price
        elif price < self.best_ask:
            self.best_ask = price

    def rest_level(self, side: Side, price: int, orders: list[Order]) -> None:
        """Rest live orders of one side and price, oldest first, in one step: a restore puts
        a whole level back at once rather than order by order (see ``engine.snapshot``)."""
        side_levels = self.levels[side]
        level = side_levels[price]
        if level is None:
            level = side_levels[price] = Level(price)
        level.orders.extend(orders)
        level.total += sum(map(_REMAINING, orders))
        level.count += len(orders)
        self.occupied[side].add(price)
        if side is Side.BUY:
            self.best_bid = max(self.best_bid, price)
        else:
            self.best_ask = min(self.best_ask, price)

    def take_off(self, order: Order) -> int:
        """Remove a live order from its level (not from the engine's index); return its remainder."""
        remaining = order.remaining
        level = self.levels[order.side][order.price]
        assert level is not None
        order.remaining = 0
        level.total -= remaining
        level.count -= 1
        orders = level.orders
        if level.count == 0:
            orders.clear()
            self.level_emptied(order.side, order.price)
        elif orders[0] is order:  # keep a live order at the head, so the head is the next maker
            orders.popleft()
            while not orders[0].remaining:
                orders.popleft()
        elif len(orders) > 2 * level.count + 16:
            level.compact()
        return remaining

    def level_emptied(self, side: Side, price: int) -> None:
        """Forget a level that just emptied; move the best price past it if it was the best.

        The next best is usually a tick or two away, so up to eight ticks are stepped first;
        past that (a sparse book on a wide ladder) the occupied set gives it directly.
        """
        occupied = self.occupied[side]
        occupied.discard(price)
        if side is Side.BUY:
            if price != self.best_bid:
                return
            if not occupied:
                self.best_bid = 0
                return
            levels = self.levels[side]
            tick = price - 1
            stop = max(price - 9, 0)
            while tick > stop:
                level = levels[tick]
                if level is not None and level.count:
                    self.best_bid = tick
                    return
                tick -= 1
            self.best_bid = max(occupied)
        else:
            if price != self.best_ask:
                return
            if not occupied:
                self.best_ask = self.max_tick + 1
                return
            levels = self.levels[side]
            tick = price + 1
            stop = min(price + 9, self.max_tick + 1)
            while tick < stop:
                level = levels[tick]
                if level is not None and level.count:
                    self.best_ask = tick
                    return
                tick += 1
            self.best_ask = min(occupied)

    # ------------------------------------------------------------------ queries

    def side_levels(self, side: Side) -> Iterator[Level]:
        """Non-empty levels of one side, best price first."""
        levels = self.levels[side]
        for tick in sorted(self.occupied[side], reverse=side is Side.BUY):
            level = levels[tick]
            assert level is not None
            yield level

    def live_orders(self) -> Iterator[Order]:
        """Every live order: bids best first, then asks best first, each level oldest first."""
        for side in (Side.BUY, Side.SELL):
            for level in self.side_levels(side):
                yield from level.live()
