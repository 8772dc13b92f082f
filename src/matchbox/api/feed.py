"""WebSocket channel messages, made from events alone (so live and resumed feeds agree).

Channels: ``trades:<market>`` (every trade), ``orders:<account>`` (the account's order events,
fills, balance and position changes, and dead-man switch events), ``book:<market>`` (an image,
then level deltas; from the projection, see the hub)
and the seed's plain feed of fills, which a client gets until it subscribes to something.
"""

from __future__ import annotations

from typing import Any

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
    TradeExecuted,
)

FILLS = "fills"  # the seed's plain feed


def channel_messages(event: Event, stream_id: str, n: int) -> list[tuple[str, dict[str, Any]]]:
    """(channel, message) pairs for one event; book deltas are not here (they need the book)."""
    out: list[tuple[str, dict[str, Any]]] = []
    if type(event) is TradeExecuted:
        trade = {
            "trade_id": event.trade_id,
            "market_id": event.market_id,
            "price": event.price,
            "qty": event.qty,
            "taker_side": event.taker_side.name.lower(),
            "maker_order_id": event.maker_order_id,
            "taker_order_id": event.taker_order_id,
            "timestamp": event.ts,
        }
        envelope = {"id": stream_id, "n": n}
        out.append((FILLS, {**envelope, **_seed_fill(event)}))
        out.append((f"trades:{event.market_id}", {"channel": "trades", **envelope, **trade}))
        data = to_builtins(event)
        out.append((f"orders:{event.maker_account}", {"channel": "orders", **envelope, **data}))
        if event.taker_account != event.maker_account:
            out.append((f"orders:{event.taker_account}", {"channel": "orders", **envelope, **data}))
    elif type(event) in _ORDER_EVENTS:
        account = getattr(event, "account", None)
        if account:
            out.append((f"orders:{account}", {"channel": "orders", "id": stream_id, "n": n, **to_builtins(event)}))
    return out


def _seed_fill(event: TradeExecuted) -> dict[str, Any]:
    return {
        "maker_order_id": event.maker_order_id,
        "taker_order_id": event.taker_order_id,
        "price": event.price,
        "qty": event.qty,
        "timestamp": event.ts,
        "market_id": event.market_id,
    }


# What an account's own ``orders:<account>`` channel carries besides its fills.
_ORDER_EVENTS = {
    OrderAccepted,
    OrderRested,
    OrderCancelled,
    OrderReduced,
    Rejected,
    BalanceChanged,
    PositionChanged,
    HeartbeatSet,
    DeadmanTriggered,
}
