"""WebSocket channel messages, made from events alone (so live and resumed feeds agree).

Channels: ``trades:<market>`` (every trade), ``orders:<account>`` (the account's order events,
fills, balance and position changes, and dead-man switch events), ``book:<market>`` (an image,
then level deltas; from the projection, see the hub)
and the seed's plain feed of fills, which a client gets until it subscribes to something.

Every message speaks its market's units, as REST does (see :mod:`matchbox.api.prices`): prices
as cents, decimal odds or ticks, sides as buy/sell or back/lay. On the orders channel an event
keeps its ``type`` tag and fields, with its enums as REST writes them: ``tif`` and every
``reason`` by NAME ("GTC", "DEADMAN", "INSUFFICIENT_FUNDS", "DEPOSIT"), ``kind`` lowercase
("limit", "market"); money and quantities stay integers. A market's scheme never changes, so a
message made from history is the one made live.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from matchbox.api.prices import price_out, side_word
from matchbox.bus.codec import to_builtins
from matchbox.engine.types import (
    BalanceChanged,
    DeadmanTriggered,
    Event,
    HeartbeatSet,
    OrderAccepted,
    OrderCancelled,
    OrderReduced,
    OrderRested,
    PositionChanged,
    Rejected,
    Side,
    TickScheme,
    TradeExecuted,
)

FILLS = "fills"  # the seed's plain feed

SchemeOf = Callable[[str], TickScheme]  # a market's tick scheme (ticks for one not known)

# price_out and side_word, each answer worked out once: this runs for every event the tail reads
# (an odds price is a Decimal division). One entry per (scheme, tick) seen: bounded by the ladders.
_price = cache(price_out)
_SIDE_WORDS = {scheme: {side: side_word(scheme, side) for side in Side} for scheme in TickScheme}


def channel_messages(event: Event, stream_id: str, n: int, scheme_of: SchemeOf) -> list[tuple[str, dict[str, Any]]]:
    """(channel, message) pairs for one event; book deltas are not here (they need the book)."""
    out: list[tuple[str, dict[str, Any]]] = []
    if type(event) is TradeExecuted:
        scheme = scheme_of(event.market_id)
        price = _price(scheme, event.price)
        taker_side = _SIDE_WORDS[scheme][event.taker_side]
        trade = {
            "trade_id": event.trade_id,
            "market_id": event.market_id,
            "price": price,
            "qty": event.qty,
            "taker_side": taker_side,
            "maker_order_id": event.maker_order_id,
            "taker_order_id": event.taker_order_id,
            "timestamp": event.ts,
        }
        envelope = {"id": stream_id, "n": n}
        out.append((FILLS, {**envelope, **_seed_fill(event, price)}))
        out.append((f"trades:{event.market_id}", {"channel": "trades", **envelope, **trade}))
        data = to_builtins(event)
        data["price"] = price
        data["taker_side"] = taker_side
        out.append((f"orders:{event.maker_account}", {"channel": "orders", **envelope, **data}))
        if event.taker_account != event.maker_account:
            out.append((f"orders:{event.taker_account}", {"channel": "orders", **envelope, **data}))
    else:
        shape = _ORDER_EVENTS.get(type(event))
        account = getattr(event, "account", None) if shape is not None else None
        if shape is not None and account:
            data = to_builtins(event)
            shape(event, data, scheme_of)
            out.append((f"orders:{account}", {"channel": "orders", "id": stream_id, "n": n, **data}))
    return out


def _seed_fill(event: TradeExecuted, price: int | float) -> dict[str, Any]:
    return {
        "maker_order_id": event.maker_order_id,
        "taker_order_id": event.taker_order_id,
        "price": price,
        "qty": event.qty,
        "timestamp": event.ts,
        "market_id": event.market_id,
    }


# --------------------------------------------------------------------------- the orders channel
# Each shape turns an event's engine values (in ``data``, from to_builtins) into REST's words.


def _accepted(event: OrderAccepted, data: dict[str, Any], scheme_of: SchemeOf) -> None:
    scheme = scheme_of(event.market_id)
    data["side"] = _SIDE_WORDS[scheme][event.side]
    data["price"] = _price(scheme, event.price)  # a market order's: the worst it may trade at
    data["tif"] = event.tif.name
    data["kind"] = event.kind.name.lower()


def _rested(event: OrderRested, data: dict[str, Any], scheme_of: SchemeOf) -> None:
    scheme = scheme_of(event.market_id)
    data["side"] = _SIDE_WORDS[scheme][event.side]
    data["price"] = _price(scheme, event.price)


def _reason(
    event: OrderCancelled | Rejected | BalanceChanged | PositionChanged, data: dict[str, Any], scheme_of: SchemeOf
) -> None:
    data["reason"] = event.reason.name


def _as_is(event: Event, data: dict[str, Any], scheme_of: SchemeOf) -> None:
    pass


# What an account's own ``orders:<account>`` channel carries besides its fills.
_ORDER_EVENTS: dict[type[Event], Callable[[Any, dict[str, Any], SchemeOf], None]] = {
    OrderAccepted: _accepted,
    OrderRested: _rested,
    OrderCancelled: _reason,
    OrderReduced: _as_is,
    Rejected: _reason,
    BalanceChanged: _reason,
    PositionChanged: _reason,
    HeartbeatSet: _as_is,
    DeadmanTriggered: _as_is,
}
