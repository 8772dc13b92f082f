"""WebSocket channel messages, made from events alone (so live and resumed feeds agree).

Channels: ``trades:<market>`` (every trade), ``orders:<account>`` (the account's order events,
fills, balance and position changes, transfers between shards, and dead-man switch events),
``book:<market>`` (a snapshot, then level deltas; from the projection, see the hub) and the
seed's plain feed of fills, which a client gets until it subscribes to something. Every message
names its ``type`` and its ``channel`` (the subscription's full name, ``trades:<market>``); the
hub numbers each subscription's messages (``seq``). Times are unix ms, in fields named ``…_ms``,
as on REST (the seed's fill keeps its ``timestamp`` in ns beside them).

Every message speaks its market's units, as REST does (see :mod:`matchbox.api.prices`): prices
as cents, decimal odds or ticks, sides as buy/sell or back/lay. On the orders channel an event
keeps its ``type`` tag and fields, with its enums as REST writes them: ``tif`` and every
``reason`` by NAME ("GTC", "DEADMAN", "INSUFFICIENT_FUNDS", "DEPOSIT"), ``kind`` lowercase
("limit", "market"); money and quantities stay integers. A fill (``TradeExecuted``) is the
exception: each side gets its own, with its ``role`` (maker or taker), ``account``, ``order_id``,
``side`` and ``remaining``, and nothing of the other side. A market's scheme never changes, so a
message made from history is the one made live.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from matchbox.api.models import NS_PER_MS
from matchbox.api.prices import price_out, side_word
from matchbox.bus.codec import to_builtins
from matchbox.engine.types import (
    BalanceChanged,
    DeadmanTriggered,
    Event,
    HeartbeatSet,
    OrderAccepted,
    OrderAmended,
    OrderCancelled,
    OrderReduced,
    OrderRested,
    PositionChanged,
    Rejected,
    Side,
    TickScheme,
    TradeExecuted,
    TransferredIn,
    TransferredOut,
    TransferRefused,
)

FILLS = "fills"  # the original README's plain feed

SchemeOf = Callable[[str], TickScheme]  # a market's tick scheme (ticks for one not known)

# price_out and side_word, each answer worked out once: this runs for every event the tail reads
# (an odds price is a Decimal division). One entry per (scheme, tick) seen: bounded by the ladders.
_price = cache(price_out)
_SIDE_WORDS = {scheme: {side: side_word(scheme, side) for side in Side} for scheme in TickScheme}


def channel_messages(event: Event, stream_id: str, n: int, scheme_of: SchemeOf) -> list[tuple[str, dict[str, Any]]]:
    """(channel, message) pairs for one event; book deltas are not here (they need the book)."""
    if type(event) is TradeExecuted:
        return _trade_messages(event, {"id": stream_id, "n": n}, scheme_of(event.market_id))
    shape = ORDER_EVENTS.get(type(event))
    account = getattr(event, "account", None) if shape is not None else None
    if shape is None or not account:
        return []
    data = to_builtins(event)
    shape(event, data, scheme_of)
    channel = f"orders:{account}"
    return [(channel, {"channel": channel, "id": stream_id, "n": n, **_in_ms(data)})]


OPTIONAL_TIMES = ("expires_at", "deadline")  # engine times that may be 0 (none): ``<name>_ms``, null then


def _in_ms(data: dict[str, Any]) -> dict[str, Any]:
    """An event's fields with its times in unix ms, named so (as REST has them: an expiry or a
    deadline of 0, none, is null); its journal ``seq`` gives way to the message's own."""
    del data["seq"]
    data["time_ms"] = data.pop("ts") // NS_PER_MS
    for name in OPTIONAL_TIMES:
        if name in data:
            value = data.pop(name)
            data[f"{name}_ms"] = value // NS_PER_MS if value else None
    return data


def _trade_messages(
    event: TradeExecuted, envelope: dict[str, Any], scheme: TickScheme
) -> list[tuple[str, dict[str, Any]]]:
    price = _price(scheme, event.price)
    taker_side = _SIDE_WORDS[scheme][event.taker_side]
    time_ms = event.ts // NS_PER_MS
    trade = {
        "trade_id": event.trade_id,
        "market_id": event.market_id,
        "price": price,
        "qty": event.qty,
        "taker_side": taker_side,
    }
    public = {**trade, "maker_order_id": event.maker_order_id, "taker_order_id": event.taker_order_id}
    fill = {**envelope, "type": "TradeExecuted", "time_ms": time_ms, **trade}
    trades = f"trades:{event.market_id}"
    return [
        (FILLS, {"type": "fill", "channel": FILLS, **envelope, **_seed_fill(event, price), "time_ms": time_ms}),
        (trades, {"type": "trade", "channel": trades, **envelope, **public, "time_ms": time_ms}),
        *(
            (f"orders:{own['account']}", {"channel": f"orders:{own['account']}", **fill, **own})
            for own in (_maker(event, scheme), _taker(event, scheme))
        ),
    ]


# A fill on an account's own channel names its own order, side and role, never the other side's
# account or order: no venue tells a trader who they traded with.


def _maker(event: TradeExecuted, scheme: TickScheme) -> dict[str, Any]:
    side = Side.SELL if event.taker_side is Side.BUY else Side.BUY
    return {
        "role": "maker",
        "account": event.maker_account,
        "order_id": event.maker_order_id,
        "side": _SIDE_WORDS[scheme][side],
        "remaining": event.maker_remaining,
        "fee": event.maker_fee,
    }


def _taker(event: TradeExecuted, scheme: TickScheme) -> dict[str, Any]:
    return {
        "role": "taker",
        "account": event.taker_account,
        "order_id": event.taker_order_id,
        "side": _SIDE_WORDS[scheme][event.taker_side],
        "remaining": event.taker_remaining,
        "fee": event.taker_fee,
    }


def _seed_fill(event: TradeExecuted, price: int | float) -> dict[str, Any]:
    return {
        "maker_order_id": event.maker_order_id,
        "taker_order_id": event.taker_order_id,
        "price": price,
        "qty": event.qty,
        "timestamp": event.ts,  # the seed's fill: engine time, in ns
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


def _amended(event: OrderAmended, data: dict[str, Any], scheme_of: SchemeOf) -> None:
    scheme = scheme_of(event.market_id)
    data["side"] = _SIDE_WORDS[scheme][event.side]
    data["price"] = _price(scheme, event.price)
    data["old_price"] = _price(scheme, event.old_price)


def _reason(
    event: OrderCancelled | Rejected | BalanceChanged | PositionChanged | TransferRefused,
    data: dict[str, Any],
    scheme_of: SchemeOf,
) -> None:
    data["reason"] = event.reason.name


def _as_is(event: Event, data: dict[str, Any], scheme_of: SchemeOf) -> None:
    pass


# What an account's own ``orders:<account>`` channel carries besides its fills.
ORDER_EVENTS: dict[type[Event], Callable[[Any, dict[str, Any], SchemeOf], None]] = {
    OrderAccepted: _accepted,
    OrderRested: _rested,
    OrderCancelled: _reason,
    OrderReduced: _as_is,
    OrderAmended: _amended,
    Rejected: _reason,
    BalanceChanged: _reason,
    PositionChanged: _reason,
    HeartbeatSet: _as_is,
    DeadmanTriggered: _as_is,
    TransferredOut: _as_is,  # cash between shards (transfer_id: "<account>:<your id>")
    TransferredIn: _as_is,
    TransferRefused: _reason,
}
