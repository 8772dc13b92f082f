"""Commands and events as JSON documents on the streams (msgspec), and back.

An input entry holds the command in a field ``c`` (its JSON, tagged ``"type"``) and, for a new
order, the order id that ``submit`` allocated in a field ``oid``. The command's ``seq`` and ``ts``
are never taken from the client: the leader stamps them from the journal (the entry's position
and its id's millisecond time), so a forged ``seq`` or ``ts`` in the JSON changes nothing.

An output entry holds one event in a field ``event``: the event's own JSON, flat, preceded by
the envelope fields ``v`` (schema version), ``n`` (the engine's contiguous event sequence
number, from 1) and ``in`` (the id of the input entry that caused it). See ``docs/events.md``.
"""

from __future__ import annotations

from typing import Any

import msgspec

from matchbox.engine.queries import BookDepth, PriceLevel
from matchbox.engine.types import AnyCommand, AnyEvent, Command, Event

SCHEMA_VERSION = 1
MAX_COMMAND_BYTES = 64 * 1024
MAX_TEXT = 256  # market ids, accounts, outcomes
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1

_json_encoder = msgspec.json.Encoder()
_json_any = msgspec.json.Decoder()
_event_decoder = msgspec.json.Decoder(AnyEvent)


class CodecError(ValueError):
    """An entry that is not a well-formed command or event."""


class EventEnvelope(msgspec.Struct, frozen=True, gc=False):
    v: int
    n: int
    in_id: str = msgspec.field(name="in")


class DecodedEvent(msgspec.Struct, frozen=True, gc=False):
    n: int
    in_id: str
    event: Event


_envelope_decoder = msgspec.json.Decoder(EventEnvelope)


# --------------------------------------------------------------------------- commands


def encode_command(command: Command) -> bytes:
    return _json_encoder.encode(command)


def decode_command(raw: bytes, *, seq: int, ts: int, order_id: int | None = None) -> Command:
    """The command in an input entry, stamped with its journal ``seq`` and ``ts``.

    Raises :class:`CodecError` for anything that is not a command this engine knows, with
    fields of the right types, integers within 64 bits and texts within ``MAX_TEXT``.
    """
    if len(raw) > MAX_COMMAND_BYTES:
        raise CodecError(f"command of {len(raw)} bytes, over {MAX_COMMAND_BYTES}")
    try:
        fields = _json_any.decode(raw)
    except msgspec.DecodeError as exc:
        raise CodecError(f"not JSON: {exc}") from None
    if not isinstance(fields, dict):
        raise CodecError("not a JSON object")
    fields["seq"] = seq
    fields["ts"] = ts
    if fields.get("type") == "PlaceOrder":  # a new order's id is the journal's, never the client's
        if order_id is None:
            raise CodecError("a new order without an allocated order id")
        fields["order_id"] = order_id
    try:
        command: Command = msgspec.convert(fields, AnyCommand)
    except msgspec.ValidationError as exc:
        raise CodecError(str(exc)) from None
    _check_bounds(command)
    return command


def _check_bounds(command: Command) -> None:
    for name, value in msgspec.structs.asdict(command).items():
        if type(value) is int and not _INT_MIN <= value <= _INT_MAX:
            raise CodecError(f"{name}: integer out of the 64-bit range")
        if type(value) is str and len(value) > MAX_TEXT:
            raise CodecError(f"{name}: text longer than {MAX_TEXT} characters")


# --------------------------------------------------------------------------- events


def encode_event(event: Event, n: int, in_id: str) -> bytes:
    """``{"v":1,"n":<n>,"in":"<input id>","type":"<Event>",...the event's fields}``."""
    body = _json_encoder.encode(event)
    return b'{"v":%d,"n":%d,"in":"%s",%s' % (SCHEMA_VERSION, n, in_id.encode(), body[1:])


def decode_event(raw: bytes) -> DecodedEvent:
    try:
        envelope = _envelope_decoder.decode(raw)
        event: Event = _event_decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CodecError(f"not an event: {exc}") from None
    if envelope.v != SCHEMA_VERSION:
        raise CodecError(f"event schema version {envelope.v}; this code reads {SCHEMA_VERSION}")
    return DecodedEvent(envelope.n, envelope.in_id, event)


def to_builtins(event: Event) -> dict[str, Any]:
    """The event as plain JSON-ready data (tagged), for feeds and APIs."""
    data: dict[str, Any] = msgspec.to_builtins(event)
    return data


# --------------------------------------------------------------------------- books


class BookImage(msgspec.Struct, frozen=True, gc=False):
    """A market's L2 book as of the event numbered ``sequence``; levels are [price, qty, orders]."""

    market_id: str
    sequence: int
    bids: list[PriceLevel]  # highest first
    asks: list[PriceLevel]  # lowest first


_book_decoder = msgspec.json.Decoder(BookImage)


def encode_book(depth: BookDepth, sequence: int) -> bytes:
    return _json_encoder.encode(BookImage(depth.market_id, sequence, depth.bids, depth.asks))


def decode_book(raw: bytes) -> BookImage:
    return _book_decoder.decode(raw)
