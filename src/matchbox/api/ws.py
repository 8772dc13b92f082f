"""The WebSocket feed at /ws: subscriptions by message or query, resume from a stream id, heartbeats."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import msgspec
import redis
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from matchbox.api.accounts import arm
from matchbox.api.errors import ApiError
from matchbox.api.feed import channel_messages
from matchbox.api.hub import Client
from matchbox.api.services import Services, services_of
from matchbox.bus.codec import CodecError, decode_event
from matchbox.bus.connection import id_order
from matchbox.engine.types import MAX_HEARTBEAT_TIMEOUT_MS

router = APIRouter()


@router.websocket("/ws")
async def ws(websocket: WebSocket, last_id: str | None = None, subscribe: str | None = None) -> None:
    """The feed. With no subscription: the seed's plain fills. Messages:
    {"op":"subscribe"|"unsubscribe","channel":"trades"|"book","market_id":..};
    {"op":"auth","key":<API key>} then {"op":"subscribe","channel":"orders"} (your orders, fills,
    balance and positions; in open mode, name the "account" instead of sending a key);
    {"op":"heartbeat","timeout_ms":..} (the dead-man switch, as POST /account/heartbeat);
    {"op":"ping"}. ``?subscribe=trades:m,book:m`` (and ``orders:ann`` in open mode) subscribes at
    once; ``?last_id=<event stream id>`` first sends what was missed after that id (no gap, no
    duplicate), then live events.
    """
    services = services_of(websocket)
    hub = services.hub
    client = hub.register()  # before the handshake completes: nothing published meanwhile is lost
    for channel in (subscribe or "").split(","):
        kind, _, target = channel.partition(":")
        public = kind in ("trades", "book") or (kind == "orders" and services.settings.open_access)
        if public and target:
            hub.subscribe(client, channel)
        elif kind == "orders":
            client.offer({"op": "error", "error": f'{channel}: send {{"op":"auth","key":..}}, then subscribe'})
    client.replaying = last_id is not None
    try:
        await websocket.accept()
        sender = asyncio.create_task(_send_loop(websocket, client))
        try:
            if last_id is not None:
                await _resume(services, client, last_id)
            await _receive_loop(websocket, services, client)
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender
    except WebSocketDisconnect:
        pass
    finally:
        hub.unregister(client)


async def _send_loop(websocket: WebSocket, client: Client) -> None:
    while True:
        message = await client.queue.get()
        if message is None:  # overflowed
            await websocket.close(code=1008, reason="slow consumer: the feed outran this client")
            return
        await websocket.send_text(msgspec.json.encode(message).decode())


async def _receive_loop(websocket: WebSocket, services: Services, client: Client) -> None:
    hub = services.hub
    while True:
        text = await websocket.receive_text()
        try:
            message = msgspec.json.decode(text)
            op, kind = message.get("op"), message.get("channel")
        except (msgspec.DecodeError, AttributeError):
            client.offer({"op": "error", "error": "messages are JSON objects with an op"})
            continue
        if op == "ping":
            client.offer({"op": "pong"})
            continue
        if op in ("auth", "heartbeat"):
            client.offer(await _account_op(services, client, message))
            continue
        if op not in ("subscribe", "unsubscribe") or kind not in ("trades", "book", "orders"):
            client.offer(
                {
                    "op": "error",
                    "error": "op is subscribe|unsubscribe|auth|heartbeat|ping; channel is trades|book|orders",
                }
            )
            continue
        if kind == "orders" and not services.settings.open_access:
            if client.account is None:
                client.offer({"op": "error", "error": 'channel orders needs your key first: {"op":"auth","key":..}'})
                continue
            if message.get("account", client.account) != client.account:
                client.offer({"op": "error", "error": "a key sees its own account's orders only"})
                continue
            target = client.account
        else:
            key = "account" if kind == "orders" else "market_id"
            target = message.get(key)
            if not isinstance(target, str) or not target:
                client.offer({"op": "error", "error": f"channel {kind} needs {key}"})
                continue
        channel = f"{kind}:{target}"
        if op == "subscribe":
            hub.subscribe(client, channel)
        else:
            hub.unsubscribe(client, channel)
        client.offer({"op": op + "d", "channel": channel})


async def _account_op(services: Services, client: Client, message: dict[str, Any]) -> dict[str, Any]:
    """The answer to an ``auth`` or a ``heartbeat`` message."""
    try:
        if message.get("op") == "auth":
            key = message.get("key")
            if services.settings.open_access:
                return {"op": "error", "error": "open mode: no keys; name the account when subscribing"}
            client.account = await services.gate.account(f"Bearer {key}" if isinstance(key, str) else None)
            return {"op": "authed", "account": client.account}
        timeout = message.get("timeout_ms")
        account = client.account or (message.get("account") if services.settings.open_access else None)
        if not isinstance(account, str) or not account:
            return {"op": "error", "error": "heartbeat needs your key first (open mode: an account)"}
        if type(timeout) is not int or not 0 <= timeout <= MAX_HEARTBEAT_TIMEOUT_MS:
            return {"op": "error", "error": f"timeout_ms: an integer from 0 to {MAX_HEARTBEAT_TIMEOUT_MS}"}
        armed = await arm(services, account, timeout)
        return {"op": "heartbeat", "account": account, "deadline": armed.deadline}
    except ApiError as exc:
        return {"op": "error", "error": exc.body.error}


async def _resume(services: Services, client: Client, last_id: str) -> None:
    """Send what the client missed after ``last_id``, then release the live messages held meanwhile."""
    keys = services.bus.keys
    cursor = last_id
    try:
        while True:
            entries = await services.bus.range(keys.events, f"({cursor}", "+", count=1000)
            for raw_id, fields in entries:
                stream_id = raw_id.decode()
                try:
                    decoded = decode_event(fields.get(b"event", b""))
                except CodecError:
                    continue
                for channel, message in channel_messages(decoded.event, stream_id, decoded.n, services.hub.scheme_of):
                    if channel in client.channels:
                        client.offer(message)
                cursor = stream_id
            if len(entries) < 1000:
                break
    except redis.ResponseError:
        client.offer({"op": "error", "error": f"last_id {last_id!r} is not a stream id"})
    for stream_id, message in client.held:
        if id_order(stream_id) > id_order(cursor):
            client.offer(message)
    client.held.clear()
    # The tail may not have reached the end of what history just sent: its live messages up to
    # ``cursor`` would come a second time, so they are skipped.
    client.skip_through = cursor
    client.replaying = False
