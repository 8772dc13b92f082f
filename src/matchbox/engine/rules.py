"""The rules every layer shares with the engine, written once: is a new order valid on its
market, when does a new market open and may it close then, and what is an order's status.

Both are pure: no clock, no state beyond their arguments. The engine applies :func:`check_order`
to every new order it has not waved through on its fast path; the API calls the same function to
refuse early, naming the request field at fault. :func:`order_status` is the one derivation of
an order's status from what the events said of it; the SQL persistence states it once more as a
``CASE`` (tests run both over every combination of inputs).
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from matchbox.engine.types import OrderKind, OrderStatus, PlaceOrder, RejectReason, TimeInForce


def opening(ts: int, opens_at: int) -> int:
    """When a market created at ``ts`` (engine time) to open at ``opens_at`` opens: then, or 0 for
    at once (no open time, or one already past)."""
    return opens_at if opens_at > ts else 0


def valid_times(ts: int, opens_at: int, closes_at: int) -> bool:
    """Whether a market created at ``ts`` may have these open and close times (0: none): no open
    time below 0, and a close time after its creation and after its opening."""
    return opens_at >= 0 and (not closes_at or closes_at > max(ts, opening(ts, opens_at)))


RESTING_TIFS = (TimeInForce.GTC, TimeInForce.GTD)  # the times in force whose remainder rests
LIVE_STATUSES = (OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED)  # resting on the book: can be cancelled or reduced


class MarketSpec(Protocol):
    """What :func:`check_order` reads of a market: a ``Book``, a ``MarketCreated`` or a view of one."""

    @property
    def min_tick(self) -> int: ...

    @property
    def max_tick(self) -> int: ...

    @property
    def max_qty(self) -> int: ...


class Invalid(NamedTuple):
    """Why a new order is refused, and the ``PlaceOrder`` field at fault."""

    reason: RejectReason
    field: str


def check_order(spec: MarketSpec, order: PlaceOrder) -> Invalid | None:
    """Why ``order``'s own fields are refused on a market of ``spec``, or None.

    Engine time is ``order.ts``: a GTD order's expiry must be after it. A market order is IOC or
    FOK and never post-only (its price is ignored); a limit order's price is on the market's
    ladder; post-only needs a time in force that rests; ``expires_at`` is for GTD alone.
    """
    qty = order.qty
    if qty <= 0:
        return Invalid(RejectReason.INVALID_QUANTITY, "qty")
    if qty > spec.max_qty:
        return Invalid(RejectReason.QUANTITY_OVER_MAX, "qty")
    tif = order.tif
    if order.kind is OrderKind.MARKET:
        if tif in RESTING_TIFS:
            return Invalid(RejectReason.INVALID_ORDER_TYPE, "tif")
        if order.post_only:
            return Invalid(RejectReason.INVALID_ORDER_TYPE, "post_only")
    elif not spec.min_tick <= order.price <= spec.max_tick:
        return Invalid(RejectReason.INVALID_PRICE, "price")
    if order.post_only and tif not in RESTING_TIFS:
        return Invalid(RejectReason.INVALID_ORDER_TYPE, "post_only")
    if (tif is TimeInForce.GTD) != (order.expires_at != 0) or (tif is TimeInForce.GTD and order.expires_at <= order.ts):
        return Invalid(RejectReason.INVALID_EXPIRY, "expires_at")
    return None


def order_status(*, rejected: bool, cancelled: bool, filled: int, remaining: int, told: bool = True) -> OrderStatus:
    """An order's status from what the events said of it.

    ``rejected`` and ``cancelled`` are terminal, in that order; then it is filled once something
    filled and nothing remains, partially filled while something filled. ``told`` is whether the
    engine has said how an accepted order's placement ended (it rested, filled or was cancelled):
    until then an order with no fill is ACCEPTED, after it OPEN. A reader that cannot tell (the
    SQL table keeps no such flag) leaves it True.
    """
    if rejected:
        return OrderStatus.REJECTED
    if cancelled:
        return OrderStatus.CANCELLED
    if filled:
        return OrderStatus.FILLED if remaining == 0 else OrderStatus.PARTIALLY_FILLED
    return OrderStatus.OPEN if told else OrderStatus.ACCEPTED
