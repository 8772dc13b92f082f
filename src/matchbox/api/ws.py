"""The WebSocket feed at /ws: subscriptions by message or query, resume from a stream id, heartbeats.

What one connection may cost the instance is bounded, because any client may be hostile: a
message is at most ``MAX_FRAME_BYTES`` before it is decoded (nesting included); every message
spends a token of the rate limit (its key's, the one REST spends, once it has authenticated; its
own before); a resume replays a bounded stretch of history; a connection holds at most
``MAX_CHANNELS`` subscriptions; and an authenticated connection checks its key again as often as
the key cache lives, and is closed once the key no longer works. Each connection's tasks fail
alone: the error closes that connection (1011), never the feed of the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from dataclasses import dataclass
from typing import Any

import msgspec
import redis
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.websockets import WebSocketDisconnected

from matchbox.api import cursor
from matchbox.api.accounts import arm
from matchbox.api.codes import Code
from matchbox.api.errors import ApiError, error_body
from matchbox.api.feed import channel_messages
from matchbox.api.gate import Bucket
from matchbox.api.hub import DROPPED, Client
from matchbox.api.services import Services, services_of
from matchbox.bus.codec import CodecError, decode_event
from matchbox.bus.connection import id_order
from matchbox.engine.ids import MAX_ID_LENGTH
from matchbox.engine.types import MAX_HEARTBEAT_TIMEOUT_MS, RejectReason

log = logging.getLogger(__name__)
router = APIRouter()

MAX_FRAME_BYTES = 4096  # a message from a client, at most (the server refuses bigger frames too: cli.py)
MAX_CHANNELS = 100  # subscriptions per connection
KEY_RECHECK_MIN_S = 0.5  # how often a key is checked again when the key cache is off (0 s)
REFUSED, TRY_AGAIN_LATER = 1008, 1013  # close codes: policy violation; the server cannot serve it now
REVOKED = (REFUSED, "your API key no longer works (revoked?)")


@dataclass(eq=False)
class Session:
    """One connection's own state: who it is and what it may spend (the hub holds its feed)."""

    client: Client
    bucket: Bucket  # its rate limit until it authenticates; then its key's, shared with REST
    account: str | None = None  # whose key this connection sent (op "auth")
    authorization: str | None = None  # that key, as a header: checked again while the connection lives
    key_checked_at: float = 0.0  # monotonic seconds of the key's last check


@router.websocket("/ws")
async def ws(websocket: WebSocket) -> None:
    """The feed (docs/api.md and the AsyncAPI document at /v1/asyncapi.json describe it whole).

    A client's messages are JSON objects of at most 4 KiB, each counted against the rate limit as
    a request: ``{"type": "subscribe"|"unsubscribe", "channel": "trades"|"book"|"orders",
    "market_id": ..}``, ``{"type": "auth", "key": ..}`` (before ``orders``; in open mode, name the
    ``account`` instead), ``{"type": "heartbeat", "timeout_ms": ..}`` (the dead-man switch) and
    ``{"type": "ping"}``. Every message of the server has a ``type`` and a ``channel`` (null for
    the connection's own); a subscription is acknowledged (``subscribed``, ``seq`` 0) before its
    snapshot, and its messages are numbered contiguously from there (``seq``), so a gap is seen.
    ``?subscribe=trades:m,book:m`` subscribes at once (``orders`` too, with the key in the
    handshake's ``Authorization`` header, which a browser cannot send); ``?last_id=<a message's id>`` first sends
    what was missed after it (no gap, no duplicate; ``MATCHBOX_WS_RESUME_EVENTS`` events of the
    whole exchange back at most), or is refused (an ``INVALID_CURSOR`` error, then close 1008):
    resync from REST, then connect again without it. With no subscription, the seed's plain
    fills come. A revoked key closes an authenticated connection (1008) within about twice
    ``MATCHBOX_KEY_CACHE_SECONDS``.
    """
    services = services_of(websocket)
    unknown = sorted(set(websocket.query_params) - QUERY)
    if unknown:
        field = unknown[0][:64]
        await _refuse(websocket, (REFUSED, _error(Code.UNKNOWN_FIELD, f"unknown query parameter {field!r}", field)))
        return
    last_id, subscribe = websocket.query_params.get("last_id"), websocket.query_params.get("subscribe")
    authorization = websocket.headers.get("authorization")
    account: str | None = None
    if authorization is not None and not services.settings.open_access:  # a key in the handshake
        try:
            account = await services.gate.account(authorization)
        except ApiError as exc:
            await _refuse(websocket, (REFUSED, _refusal(exc)))
            return
    resume_from: dict[int, str] | None = None
    if last_id is not None:
        resume_from, refusal = await _resume_refusal(services, last_id)
        if refusal is not None:
            await _refuse(websocket, refusal)
            return
    hub = services.hub
    client = hub.register()  # before the handshake completes: nothing published meanwhile is lost
    try:
        if resume_from is not None:  # first: a book image sent on subscribing is as of the cursor
            client.replaying, client.positions = True, dict(resume_from)
        _subscribe_from_query(services, client, subscribe or "", account)
        session = Session(client, Bucket(float(services.settings.rate_burst), time.monotonic()))
        if account is not None:
            session.account, session.authorization, session.key_checked_at = account, authorization, time.monotonic()
        await websocket.accept()
        await _serve(websocket, services, session, resume_from is not None)
    except WebSocketDisconnect:
        pass
    finally:
        hub.unregister(client)


QUERY = frozenset({"last_id", "subscribe"})  # what the feed's URL may carry


def _subscribe_from_query(services: Services, client: Client, subscribe: str, account: str | None) -> None:
    """The channels of ``?subscribe=``: public ones, and with a key in the handshake (``account``)
    its own orders (``orders``), so that a resume covers them too."""
    for channel in subscribe.split(",")[:MAX_CHANNELS]:
        kind, _, target = channel.partition(":")
        public = kind in ("trades", "book") or (kind == "orders" and services.settings.open_access)
        if public and target:
            services.hub.subscribe(client, channel)
        elif kind == "orders" and account is not None and target in ("", account):
            services.hub.subscribe(client, f"orders:{account}")
        elif kind == "orders" and account is not None:
            client.offer(_error(Code.FORBIDDEN, "a key follows its own account's orders only", "subscribe"))
        elif kind == "orders":
            message = (
                f"{channel[:80]}: send your key in the handshake (Authorization: Bearer ..), or auth, then subscribe"
            )
            client.offer(_error(Code.UNAUTHENTICATED, message, "subscribe"))
        elif channel:
            message = f"{channel[:80]}: subscribe to trades:<market>, book:<market> or orders:<account>"
            client.offer(_error(Code.INVALID_FIELD, message, "subscribe"))


async def _serve(websocket: WebSocket, services: Services, session: Session, resuming: bool) -> None:
    """Send, read and watch the key side by side; the first of them to end ends the connection."""
    client = session.client
    tasks = [
        asyncio.create_task(_send_loop(websocket, client)),
        asyncio.create_task(_read(websocket, services, session, resuming)),
        asyncio.create_task(_watch_key(services, session)),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        # not gather: it would raise a child's CancelledError in place of the server's own
        await asyncio.wait(tasks)
    failures = (task.exception() for task in tasks if not task.cancelled())
    gone = (WebSocketDisconnect, WebSocketDisconnected)
    failure = next((exc for exc in failures if exc is not None and not isinstance(exc, gone)), None)
    if failure is not None:  # this connection's fault stops here: it closes, the instance serves on
        log.error("ws: a connection failed: %r", failure, exc_info=failure)
        client.drop(DROPPED)
    if client.overflowed:
        with contextlib.suppress(Exception):  # the peer may be gone already
            await websocket.close(*client.goodbye)


async def _send_loop(websocket: WebSocket, client: Client) -> None:
    while True:
        message = await client.queue.get()
        if message is None:  # dropped: _serve closes with the client's goodbye
            return
        await websocket.send_text(msgspec.json.encode(message).decode())
        client.sent(message)


async def _read(websocket: WebSocket, services: Services, session: Session, resuming: bool) -> None:
    if resuming:
        await _resume(services, session.client)
    while True:
        frame = await _receive(websocket)
        try:
            await _spend(services, session)
            message = _decode(frame)
        except ApiError as exc:
            if exc.status == 401:  # the key it authenticated with was revoked since
                session.client.drop(REVOKED)
                return
            session.client.offer(_refusal(exc))
            continue
        except redis.RedisError:  # the key's cached answer expired and Redis is away
            session.client.offer(_error(Code.UNAVAILABLE, "the exchange's Redis is unavailable; retry shortly"))
            continue
        answer = await _answer(services, session, message)
        if answer is not None:  # else the hub has acknowledged it
            session.client.offer(answer)


async def _receive(websocket: WebSocket) -> str | bytes:
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
    frame: str | bytes = message.get("text") or message.get("bytes") or b""
    return frame


async def _spend(services: Services, session: Session) -> None:
    """One message's token: its key's (the key is checked again), or the connection's own before
    it authenticates. ApiError 401 (the key no longer works) or 429."""
    if session.authorization is None:
        session.bucket.spend(services.settings, time.monotonic(), per="connection")
        return
    await services.gate.account(session.authorization)
    session.key_checked_at = time.monotonic()


def _decode(frame: str | bytes) -> dict[str, Any]:
    """A client's message, its size bounded before it is parsed."""
    size = len(frame) if isinstance(frame, bytes) else len(frame.encode())
    if size > MAX_FRAME_BYTES:
        raise ApiError(413, Code.BODY_TOO_LARGE, f"a message is {MAX_FRAME_BYTES} bytes at most", "message")
    try:
        message = msgspec.json.decode(frame)
    except (msgspec.DecodeError, RecursionError):  # RecursionError: nested deeper than the decoder goes
        message = None
    if not isinstance(message, dict):
        raise ApiError(400, Code.INVALID_JSON, "messages are JSON objects with a type", "type")
    return message


# What each type of message from a client may hold.
FIELDS = {
    "ping": frozenset({"type"}),
    "auth": frozenset({"type", "key"}),
    "heartbeat": frozenset({"type", "timeout_ms", "account"}),
    "subscribe": frozenset({"type", "channel", "market_id", "account"}),
    "unsubscribe": frozenset({"type", "channel", "market_id", "account"}),
}


async def _answer(services: Services, session: Session, message: dict[str, Any]) -> dict[str, Any] | None:
    kind = message.get("type")
    allowed = FIELDS.get(kind) if isinstance(kind, str) else None
    if allowed is None:
        return _error(Code.INVALID_FIELD, f"type is one of {', '.join(FIELDS)}", "type")
    unknown = sorted(str(key)[:64] for key in message if key not in allowed)
    if unknown:
        return _error(Code.UNKNOWN_FIELD, f"unknown field {unknown[0]!r} in a {kind} message", unknown[0])
    if kind == "ping":
        return {"type": "pong", "channel": None}
    if kind in ("auth", "heartbeat"):
        return await _account_op(services, session, message)
    return _subscription(services, session, message)


def _subscription(services: Services, session: Session, message: dict[str, Any]) -> dict[str, Any] | None:
    """A ``subscribe`` or an ``unsubscribe`` (the hub acknowledges it), or the error that refuses it."""
    kind, client = message.get("channel"), session.client
    if kind not in ("trades", "book", "orders"):
        return _error(Code.INVALID_FIELD, "channel is trades, book or orders", "channel")
    if kind == "orders" and not services.settings.open_access:
        if session.account is None:
            return _error(Code.UNAUTHENTICATED, 'channel orders needs your key first: {"type":"auth","key":..}')
        if message.get("account", session.account) != session.account:
            return _error(Code.FORBIDDEN, "a key sees its own account's orders only", "account")
        target = session.account
    else:
        key = "account" if kind == "orders" else "market_id"
        named = message.get(key)
        if not isinstance(named, str) or not named or len(named) > MAX_ID_LENGTH:
            return _error(Code.MISSING_FIELD, f"channel {kind} needs {key}", key)
        target = named
    channel = f"{kind}:{target}"
    if message["type"] == "unsubscribe":
        services.hub.unsubscribe(client, channel)
    elif channel not in client.channels and len(client.channels) >= MAX_CHANNELS:
        return _error(Code.INVALID_FIELD, f"a connection holds {MAX_CHANNELS} subscriptions at most", "channel")
    else:
        services.hub.subscribe(client, channel)
    return None


async def _account_op(services: Services, session: Session, message: dict[str, Any]) -> dict[str, Any]:
    """The answer to an ``auth`` or a ``heartbeat`` message."""
    try:
        if message.get("type") == "auth":
            return await _authenticate(services, session, message.get("key"))
        timeout = message.get("timeout_ms")
        account = session.account or (message.get("account") if services.settings.open_access else None)
        if not isinstance(account, str) or not account:
            return _error(Code.UNAUTHENTICATED, "heartbeat needs your key first (open mode: an account)")
        if type(timeout) is not int or not 0 <= timeout <= MAX_HEARTBEAT_TIMEOUT_MS:
            return _error(
                Code.INVALID_FIELD, f"timeout_ms: an integer from 0 to {MAX_HEARTBEAT_TIMEOUT_MS}", "timeout_ms"
            )
        armed = await arm(services, account, timeout)
        return {"type": "heartbeat", "channel": None, "account": account, "deadline_ms": armed.deadline_ms}
    except ApiError as exc:
        return _refusal(exc)
    except redis.RedisError:
        return _error(Code.UNAVAILABLE, "the exchange's Redis is unavailable; retry shortly")


async def _authenticate(services: Services, session: Session, key: object) -> dict[str, Any]:
    if services.settings.open_access:
        return _error(Code.INVALID_FIELD, "open mode: no keys; name the account when subscribing", "type")
    authorization = f"Bearer {key}" if isinstance(key, str) else None
    account = await services.gate.account(authorization)
    if session.account is not None and account != session.account:  # its orders channel is the first's
        return _error(Code.FORBIDDEN, f"this connection is {session.account!r}'s: connect again for another key", "key")
    session.account, session.authorization, session.key_checked_at = account, authorization, time.monotonic()
    return {"type": "authed", "channel": None, "account": account}


async def _watch_key(services: Services, session: Session) -> None:
    """Close the connection once its key stops working: the key is checked at least as often as
    the key cache lives (a message from the client checks it too), so a revoked key is refused
    here about as soon as on REST."""
    every = max(services.settings.key_cache_seconds, KEY_RECHECK_MIN_S)
    while True:
        due = session.key_checked_at + every if session.authorization else time.monotonic() + every
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        if session.authorization is None or time.monotonic() < session.key_checked_at + every:
            continue
        try:
            await services.gate.account(session.authorization)
        except ApiError as exc:
            if exc.status == 401:
                session.client.drop(REVOKED)
                return
        except redis.RedisError:  # Redis is away: checked again next time
            pass
        session.key_checked_at = time.monotonic()  # a 429 too: the key was found before it was counted


def _error(code: Code | RejectReason, text: str, field: str | None = None) -> dict[str, Any]:
    """An error message: the REST error shape, as a message of the connection (channel null)."""
    return {"type": "error", "channel": None, **error_body(code, text, field).model_dump(exclude_none=True)}


def _refusal(exc: ApiError) -> dict[str, Any]:
    return {"type": "error", "channel": None, **exc.body.model_dump(exclude_none=True)}


# --------------------------------------------------------------------------- resume


Refusal = tuple[int, dict[str, Any]]  # a close code, and the error message sent before it


async def _resume_refusal(services: Services, last_id: str) -> tuple[dict[int, str], Refusal | None]:
    """The positions a resume after the cursor ``last_id`` starts from, and why it is not served
    (a close code and the error message), or None.

    It never reaches the hub unless each position is an event of its shard's stream (or ``0-0``,
    the beginning) no further back than ``ws_resume_events``: the hub orders live messages by them."""
    try:
        positions = cursor.decode(last_id, services.shards.keys())
    except cursor.CursorError as exc:
        message = f"last_id is not a cursor of this exchange ({exc}): send the id of the last message you had"
        return {}, (REFUSED, _error(Code.INVALID_CURSOR, message, "last_id"))
    for shard, position in positions.items():
        link = services.shards[shard]
        try:
            known = position == cursor.START or bool(await link.bus.range(link.bus.keys.events, position, position))
            offset = await link.bus.offset()
        except redis.RedisError:
            down = _error(Code.UNAVAILABLE, "the exchange's Redis is unavailable; retry shortly", "last_id")
            return positions, (TRY_AGAIN_LATER, down)
        where = f"last_id {last_id[:200]!r}" + (f" (shard {shard})" if len(positions) > 1 else "")
        if not known:
            unknown = _error(
                Code.INVALID_CURSOR, f"{where} is not an event of this exchange: resync from REST", "last_id"
            )
            return positions, (REFUSED, unknown)
        behind = (offset.events if offset else 0) - int(position.partition("-")[2])  # event n is <ms>-<n>
        limit = services.settings.ws_resume_events
        if behind > limit:
            message = f"{where} is {behind} events back, a resume reaches {limit}: resync from REST"
            return positions, (REFUSED, _error(Code.INVALID_CURSOR, message, "last_id"))
    return positions, None


async def _refuse(websocket: WebSocket, refusal: Refusal) -> None:
    code, error = refusal
    await websocket.accept()
    await websocket.send_json(error)
    field = str(error["error"].get("field", "request"))
    # a close reason is at most 123 bytes: a field named by the client is cut to fit, by bytes
    await websocket.close(code, f"{field.encode()[:64].decode(errors='ignore')} refused")


async def _resume(services: Services, client: Client) -> None:
    """Send what the client missed after its cursor, shard by shard, then release the live
    messages held meanwhile."""
    for shard, link in services.shards.items():
        while True:
            after = client.positions[shard]
            entries = await link.bus.range(link.bus.keys.events, f"({after}", "+", count=1000)
            for raw_id, fields in entries:
                stream_id = raw_id.decode()
                try:
                    decoded = decode_event(fields.get(b"event", b""))
                except CodecError:  # skipped, as the tail skipped it
                    client.deliver(shard, stream_id, [])
                    continue
                client.deliver(
                    shard, stream_id, channel_messages(decoded.event, stream_id, decoded.n, services.hub.scheme_of)
                )
            if len(entries) < 1000:
                break
    replayed = dict(client.positions)
    for (shard, stream_id), held in itertools.groupby(client.held, key=lambda h: (h[0], h[1])):
        messages = [message for _, _, message in held]  # one event's, delivered together
        if id_order(stream_id) > id_order(replayed[shard]):
            client.deliver(shard, stream_id, messages)
        else:
            client.deliver_books(messages)
    client.held.clear()
    # The tails may not have reached the end of what history just sent: their live messages up
    # to where it ended would come a second time, so they are skipped.
    client.skip_through = dict(client.positions)
    client.replaying = False
