"""The WebSocket feed's contract: an AsyncAPI 3.0 document, served at ``/v1/asyncapi.json``.

The messages' JSON Schemas are made from the same things the feed is: the pydantic models below
for the messages the API writes itself, and for an account's order events the engine's event
structs, through the feed's own renaming rules (:mod:`matchbox.api.feed`). Every schema forbids
fields it does not name, and the tests validate real messages against it: a message that drifts
from this document fails them.
"""

from __future__ import annotations

from enum import IntEnum
from functools import cache
from typing import Any, Literal

import msgspec
from pydantic import BaseModel, Field, TypeAdapter

from matchbox.api.feed import FILLS, OPTIONAL_TIMES, ORDER_EVENTS
from matchbox.api.models import ErrorDetail, LevelOut
from matchbox.api.prices import SIDE_WORDS
from matchbox.engine.types import OrderKind, Side

ALL_SIDE_WORDS = sorted({word for words in SIDE_WORDS.values() for word in words})
PRICE = {"type": "number", "description": "in the market's units: cents (binary), decimal odds, or ticks"}


# --------------------------------------------------------------------------- what a client sends


class Subscribe(BaseModel):
    """Subscribe to a channel (or, with ``unsubscribe``, leave it)."""

    type: Literal["subscribe", "unsubscribe"]
    channel: Literal["trades", "book", "orders"]
    market_id: str | None = Field(default=None, description="trades and book: the market")
    account: str | None = Field(default=None, description="orders: open mode only (with a key: the key's own)")


class Auth(BaseModel):
    """Authenticate with an API key (keys mode), before subscribing to ``orders``."""

    type: Literal["auth"]
    key: str


class Heartbeat(BaseModel):
    """The dead-man switch, as ``POST /v1/account/heartbeat``: 0 disarms."""

    type: Literal["heartbeat"]
    timeout_ms: int = Field(ge=0)
    account: str | None = Field(default=None, description="open mode only")


class Ping(BaseModel):
    type: Literal["ping"]


# --------------------------------------------------------------------------- what the server sends


class Subscribed(BaseModel):
    """A subscription's acknowledgement: ``seq`` 0, before anything of the channel (its snapshot)."""

    type: Literal["subscribed"]
    channel: str = Field(description="the subscription: trades:<market>, book:<market> or orders:<account>")
    seq: Literal[0]
    id: str = Field(description="the connection's cursor now: a resume from it misses nothing of the channel")


class Unsubscribed(BaseModel):
    type: Literal["unsubscribed"]
    channel: str


class Pong(BaseModel):
    type: Literal["pong"]
    channel: None


class Authed(BaseModel):
    type: Literal["authed"]
    channel: None
    account: str


class HeartbeatAnswer(BaseModel):
    type: Literal["heartbeat"]
    channel: None
    account: str
    deadline_ms: int | None = Field(description="unix ms when the orders go; null: disarmed")


class ErrorMessage(BaseModel):
    """A refusal: the REST error shape. Its channel is null (the connection's), or the book's."""

    type: Literal["error"]
    channel: str | None
    error: ErrorDetail
    seq: int | None = Field(default=None, description="on a subscription's channel: numbered as its messages are")


class _Numbered(BaseModel):
    channel: str
    seq: int = Field(ge=1, description="this subscription's count: contiguous from its acknowledgement's 0")


class Snapshot(_Numbered):
    """A book's every level, as of ``sequence`` (the n of the shard's last event folded), and of ``id``."""

    type: Literal["snapshot"]
    id: str = Field(description="the connection's cursor as of the snapshot")
    market_id: str
    sequence: int
    bids: list[LevelOut] = Field(description="highest first")
    asks: list[LevelOut] = Field(description="lowest first")


class Delta(_Numbered):
    """A level's new total (0: gone), from the event numbered ``sequence``."""

    type: Literal["delta"]
    id: str
    market_id: str
    sequence: int
    side: Literal["bid", "ask"]
    price: float | int
    qty: int
    orders: int


class Trade(_Numbered):
    """A trade, as ``GET /v1/markets/{market_id}/trades`` lists it."""

    type: Literal["trade"]
    id: str = Field(description="the cursor to resume after (?last_id=)")
    n: int = Field(description="the event's number in its shard's stream")
    trade_id: int
    market_id: str
    price: float | int
    qty: int
    taker_side: str
    maker_order_id: int
    taker_order_id: int
    time_ms: int


class Fill(_Numbered):
    """The seed's plain feed, for a connection that subscribes to nothing: ``timestamp`` in ns, as the seed has it."""

    type: Literal["fill"]
    id: str
    n: int
    maker_order_id: int
    taker_order_id: int
    price: float | int
    qty: int
    timestamp: int = Field(description="engine time, ns (the seed's)")
    market_id: str
    time_ms: int


class OwnFill(_Numbered):
    """A fill of one of the account's orders: its own side of the trade only, never the other account's."""

    type: Literal["TradeExecuted"]
    id: str
    n: int
    time_ms: int
    trade_id: int
    market_id: str
    price: float | int
    qty: int
    taker_side: str
    role: Literal["maker", "taker"]
    account: str
    order_id: int
    side: str
    remaining: int
    fee: int = Field(description="what this side paid its market's fee account for the fill: minor units")


SENT = (Subscribe, Auth, Heartbeat, Ping)
RECEIVED = (
    Subscribed,
    Unsubscribed,
    Pong,
    Authed,
    HeartbeatAnswer,
    ErrorMessage,
    Snapshot,
    Delta,
    Trade,
    Fill,
    OwnFill,
)
# Which messages each channel carries, besides its acknowledgement.
CHANNELS: dict[str, tuple[str, str, list[str]]] = {  # name -> (address, description, messages)
    "trades": ("trades:{market_id}", "Every trade of a market.", ["Subscribed", "Trade"]),
    "book": (
        "book:{market_id}",
        "A market's book: a snapshot, then each level's new total.",
        ["Subscribed", "Snapshot", "Delta", "ErrorMessage"],
    ),
    "orders": (
        "orders:{account}",
        "An account's own order events, fills, balance and position changes, transfers and dead-man switch events.",
        ["Subscribed", "OwnFill", *(event.__name__ for event in ORDER_EVENTS)],
    ),
    FILLS: ("fills", "The seed's plain feed of fills, for a connection that subscribes to nothing.", ["Fill"]),
}
CONNECTION = ["Pong", "Authed", "HeartbeatAnswer", "ErrorMessage", "Unsubscribed"]


def _event_schema(event: type[msgspec.Struct]) -> dict[str, Any]:
    """An order event as the orders channel carries it: the engine's fields, its times in ms
    (``OPTIONAL_TIMES`` nullable), enums by name, sides in words, prices in the market's units."""
    properties: dict[str, Any] = {
        "type": {"const": event.__name__},
        "channel": {"type": "string", "pattern": "^orders:"},
        "id": {"type": "string"},
        "n": {"type": "integer"},
        "seq": {"type": "integer", "minimum": 1},
        "time_ms": {"type": "integer"},
    }
    for field in msgspec.structs.fields(event):
        if field.name in ("seq", "ts"):
            continue
        name = f"{field.name}_ms" if field.name in OPTIONAL_TIMES else field.name
        properties[name] = _field_schema(field.name, field.type)
    return {"type": "object", "properties": properties, "required": sorted(properties), "additionalProperties": False}


def _field_schema(name: str, kind: Any) -> dict[str, Any]:
    if name in OPTIONAL_TIMES:
        return {"type": ["integer", "null"], "description": "unix ms; null: none"}
    if name in ("price", "old_price"):
        return PRICE
    if kind is Side:
        return {"enum": ALL_SIDE_WORDS}
    if kind is OrderKind:
        return {"enum": [k.name.lower() for k in OrderKind]}
    if isinstance(kind, type) and issubclass(kind, IntEnum):  # TimeInForce and every reason: by name
        return {"enum": [member.name for member in kind]}
    return {"type": {int: "integer", str: "string", bool: "boolean"}[kind]}


def _model_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = TypeAdapter(model).json_schema(ref_template="#/components/schemas/{model}")
    for definition in schema.pop("$defs", {}).values():
        definition.setdefault("additionalProperties", False)
    schema["additionalProperties"] = False
    return schema


@cache
def document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document of ``/v1/ws``."""
    schemas: dict[str, Any] = {"ErrorDetail": _model_schema(ErrorDetail), "LevelOut": _model_schema(LevelOut)}
    for model in (*SENT, *RECEIVED):
        schemas[model.__name__] = _model_schema(model)
    for event in ORDER_EVENTS:
        schemas[event.__name__] = _event_schema(event)
    messages = {
        name: {"name": name, "payload": {"$ref": f"#/components/schemas/{name}"}, "summary": _summary(name)}
        for name in schemas
        if name not in ("ErrorDetail", "LevelOut")
    }
    channels: dict[str, Any] = {
        name: {
            "address": address,
            "description": description,
            "messages": {m: {"$ref": f"#/components/messages/{m}"} for m in carried},
        }
        for name, (address, description, carried) in CHANNELS.items()
    }
    channels["connection"] = {
        "address": None,
        "description": "The connection itself: what a client sends, and the answers that concern no subscription.",
        "messages": {m: {"$ref": f"#/components/messages/{m}"} for m in (*CONNECTION, *(s.__name__ for s in SENT))},
    }
    operations = {
        f"receive_{name}": {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{name}"},
            "messages": [{"$ref": f"#/channels/{name}/messages/{m}"} for m in channel["messages"]],
        }
        for name, channel in channels.items()
        if name != "connection"
    }
    operations["send"] = {
        "action": "send",
        "channel": {"$ref": "#/channels/connection"},
        "messages": [{"$ref": f"#/channels/connection/messages/{s.__name__}"} for s in SENT],
    }
    operations["receive_connection"] = {
        "action": "receive",
        "channel": {"$ref": "#/channels/connection"},
        "messages": [{"$ref": f"#/channels/connection/messages/{m}"} for m in CONNECTION],
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Matchbox feed",
            "version": "1",
            "description": (
                "The WebSocket feed at /v1/ws. Every message the server sends has a type and a channel "
                "(null for the connection's own); each subscription is acknowledged (seq 0) before its "
                "snapshot, and its messages are numbered contiguously (seq): a gap means subscribe again. "
                "Times are unix ms (…_ms). ?subscribe=trades:<m>,book:<m> subscribes at connect (and orders, "
                "with the API key in the handshake's Authorization header); "
                "?last_id=<a message's id> resumes with no gap and no duplicate. See docs/api.md."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {"local": {"host": "127.0.0.1:8000", "protocol": "ws", "pathname": "/v1/ws"}},
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas, "messages": messages},
    }


def _summary(name: str) -> str:
    for model in (*SENT, *RECEIVED):
        if model.__name__ == name and model.__doc__:
            return model.__doc__.strip().splitlines()[0]
    return f"The engine's {name} event, on the account's own channel."
