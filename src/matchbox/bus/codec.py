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

from matchbox.engine.types import (
    AmendOrder,
    AnyCommand,
    AnyEvent,
    CancelOrders,
    Command,
    CreateMarket,
    Event,
    PlaceOrder,
)

SCHEMA_VERSION = 1
MAX_COMMAND_BYTES = 64 * 1024
# The journal version this code reads and writes. 2: AmendOrder and CancelOrders; PlaceOrder's
# stp and lapse; CreateMarket's info, opens_at, closes_at and fees. An engine older than a command
# would refuse it or drop a field it does not know, and then disagree with a newer engine replaying
# the same entry: so a leader records the version it reads (Keys.journal_version), never leads a
# journal a newer engine has led, and submit.lua refuses a command that needs a newer version
# than the shard's leader has recorded (see docs/events.md, "Upgrades").
JOURNAL_VERSION = 2

_json_encoder = msgspec.json.Encoder()
_event_decoder = msgspec.json.Decoder(AnyEvent)
_command_decoder = msgspec.json.Decoder(AnyCommand)


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


def needs_version(command: Command) -> int:
    """The journal version an engine needs to read ``command`` as it means: 2 for what version 2
    added (see :data:`JOURNAL_VERSION`), else 1."""
    match command:
        case AmendOrder() | CancelOrders():
            return 2
        case PlaceOrder(stp=stp, lapse=lapse) if stp is not None or lapse:
            return 2
        case CreateMarket(info=info, opens_at=opens_at, closes_at=closes_at, fees=fees) if (
            info is not None or opens_at or closes_at or fees is not None
        ):
            return 2
    return 1


def decode_command(raw: bytes, *, seq: int, ts: int, order_id: int | None = None) -> Command:
    """The command in an input entry, stamped with its journal ``seq`` and ``ts``.

    The JSON must hold every field of its command (``encode_command`` writes them all, ``seq``,
    ``ts`` and a new order's ``order_id`` as placeholders, which are replaced here). Raises
    :class:`CodecError` for anything else: not JSON, an unknown type, a missing field or one of
    the wrong type, an integer beyond 64 bits, a text over 256 characters.
    """
    if len(raw) > MAX_COMMAND_BYTES:
        raise CodecError(f"command of {len(raw)} bytes, over {MAX_COMMAND_BYTES}")
    try:
        command: Command = _command_decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CodecError(str(exc)) from None
    if type(command) is PlaceOrder:  # a new order's id is the journal's, never the client's
        if order_id is None:
            raise CodecError("a new order without an allocated order id")
        return msgspec.structs.replace(command, seq=seq, ts=ts, order_id=order_id)
    return msgspec.structs.replace(command, seq=seq, ts=ts)


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
