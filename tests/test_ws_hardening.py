"""The WebSocket feed and the event tail against hostile clients and faults: a bad cursor, a failing
subscriber or a poison event never stops the tail, and /ready says when the tail is in trouble; a
revoked key closes its connection; every message is bounded and rate limited; a resume reaches back
a bounded stretch; a fill never names the other side. Over a real Valkey and a real engine leader
(in a thread), the app in process."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketTestSession
from starlette.websockets import WebSocketDisconnect

from conftest import ADMIN, api_settings, fresh, running_leader, wait_until
from matchbox.api import hub as hub_module
from matchbox.api.app import create_app
from matchbox.api.hub import DROPPED, Hub
from matchbox.api.projection import BookView, MarketView, Projection
from matchbox.api.tail import LAG_LIMIT_S, EventTail
from matchbox.api.ws import MAX_FRAME_BYTES
from matchbox.bus.aio import AsyncBus
from matchbox.bus.codec import DecodedEvent, encode_event
from matchbox.bus.connection import Bus
from matchbox.engine.types import (
    MarketCreated,
    MarketState,
    MarketStateChanged,
    SelfTradePrevention,
    Side,
    TickScheme,
    TradeExecuted,
)
from matchbox.settings import Settings

FILL_KEYS = {"channel", "id", "n", "type", "seq", "time_ms", "market_id", "trade_id", "price", "qty", "taker_side"} | {
    "role",
    "account",
    "order_id",
    "side",
    "remaining",
    "fee",  # this side's own fee only
}


def open_settings(redis_url: str, data_dir: Path, **fields: Any) -> Settings:
    """:func:`~conftest.api_settings` in open mode, as most of these tests run."""
    return api_settings(redis_url, data_dir, **{"open_access": True, **fields})


def new_market(open_client: TestClient) -> str:
    market_id = fresh("ws")
    made = open_client.post("/v1/markets", json={"market_id": market_id, "scheme": "binary"}, headers=ADMIN)
    assert made.status_code == 201, made.text
    return market_id


def place(open_client: TestClient, **body: Any) -> dict[str, Any]:
    placed = open_client.post("/v1/orders", json=body)
    assert placed.status_code == 201, placed.text
    order: dict[str, Any] = placed.json()
    return order


def stream_position(open_client: TestClient) -> str:
    """The id of the last event this instance has read: a resume point that is surely in the stream."""
    position: str = open_client.get("/v1/engine").json()["tail_position"]
    return position


def closed_with(ws: WebSocketTestSession) -> WebSocketDisconnect:
    with pytest.raises(WebSocketDisconnect) as closed:
        ws.receive_json()
    return closed.value


# --------------------------------------------------------------------------- item 1: the tail


@pytest.mark.parametrize("last_id", ["abc", "1-1", "99999999999999999999999-0", "-1"])
def test_a_bad_last_id_is_refused_and_the_instance_keeps_trading(open_client: TestClient, last_id: str) -> None:
    market = new_market(open_client)
    with open_client.websocket_connect(f"/v1/ws?last_id={last_id}") as ws:  # and kept open, as the attacker does
        place(open_client, market_id=market, side="sell", price=40, qty=2, account="ann")
        trade = place(open_client, market_id=market, side="buy", price=40, qty=2, account="bob")
        assert trade["status"] == "filled"
        after = place(open_client, market_id=market, side="buy", price=30, qty=1, account="bob")  # not a 202 pending
        assert open_client.get(f"/v1/orders/{after['order_id']}").json()["status"] == "open"
        refusal = ws.receive_json()
        assert (refusal["type"], refusal["error"]["field"]) == ("error", "last_id")
        assert closed_with(ws).code == 1008


def test_one_failing_delivery_drops_that_client_and_the_others_get_the_fill(caplog: pytest.LogCaptureFixture) -> None:
    hub = Hub(Projection())
    broken, healthy = hub.register(), hub.register()
    broken.skip_through = {0: "abc"}  # the state an unchecked cursor used to leave: comparing it raises
    trade = TradeExecuted(1, 1, "m", 1, 50, 2, Side.BUY, 1, 2, "ann", "bob", 0, 0)
    with caplog.at_level(logging.ERROR, logger="matchbox.api.hub"):
        hub.publish(0, "1000-7", DecodedEvent(7, "1000-0", trade), [])
    assert (healthy.queue.get_nowait() or {})["n"] == 7
    assert broken not in hub.clients
    assert (broken.overflowed, broken.goodbye, broken.queue.get_nowait()) == (True, DROPPED, None)
    assert "dropped" in caplog.text


def test_the_tail_reads_on_past_a_failing_listener(redis_url: str) -> None:
    events = [
        MarketCreated(1, 1, "m1", TickScheme.BINARY, 1, 99, 1_000_000, SelfTradePrevention.CANCEL_TAKER),
        MarketStateChanged(2, 2, "m1", MarketState.SUSPENDED, ""),
    ]
    bus = Bus.connect(redis_url)
    for n, event in enumerate(events, 1):
        bus.client.xadd(bus.keys.events, {"event": encode_event(event, n, f"{n}-0")}, id=f"{n}-{n}")
    bus.close()

    async def follow() -> tuple[EventTail, list[int]]:
        tail = EventTail(AsyncBus.connect(redis_url), Projection())
        seen: list[int] = []

        def failing(shard: int, stream_id: str, decoded: DecodedEvent, updates: list[Any]) -> None:
            raise RuntimeError("one subscriber's fault")

        tail.listeners += [failing, lambda shard, stream_id, decoded, updates: seen.append(decoded.n)]
        task = asyncio.create_task(tail.run())
        try:
            await asyncio.wait_for(tail.caught_up.wait(), 10)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await tail.bus.close()
        return tail, seen

    tail, seen = asyncio.run(follow())
    assert seen == [1, 2]
    assert (tail.position, tail.failure, tail.projection.markets["m1"].state) == ("2-2", None, MarketState.SUSPENDED)


@pytest.mark.e2e  # waits out a stopped tail and its restart
def test_ready_is_503_while_the_tail_is_stopped_and_the_tail_restarts(redis_url: str, tmp_path: Path) -> None:
    with ExitStack() as stack:
        stack.enter_context(running_leader(redis_url))
        api = stack.enter_context(TestClient(create_app(open_settings(redis_url, tmp_path))))
        wait_until(lambda: api.get("/ready").status_code == 200, message="ready")
        bus = Bus.connect(redis_url)
        stack.callback(bus.close)
        poison = MarketStateChanged(0, 0, "no-such-market", MarketState.CLOSED, "")  # the projection cannot fold it
        poison_id = bus.client.xadd(bus.keys.events, {"event": encode_event(poison, 10**9, "0-1")})
        wait_until(lambda: api.get("/ready").status_code == 503, message="/ready to see the stopped tail")
        assert "event tail stopped" in api.get("/ready").json()["error"]["message"]
        bus.client.xdel(bus.keys.events, poison_id)  # the operator removes it: the restarted tail reads on
        wait_until(lambda: api.get("/ready").status_code == 200, message="the tail to restart")
        order = place(api, side="buy", price=5, qty=1)
        assert api.get(f"/v1/orders/{order['order_id']}").status_code == 200


def test_a_tail_behind_the_committed_events_for_seconds_is_not_ready(redis_url: str) -> None:
    tail = EventTail(AsyncBus.connect(redis_url), Projection())  # never run: the reasons alone
    now = time.monotonic()
    assert tail.trouble("", now) is None  # nothing committed yet
    assert "lags" in (tail.trouble("1700-3", now) or "")  # behind, and never reached the end
    tail.position, tail.at_end_at = "1700-3", now
    assert tail.trouble("1700-3", now + 60) is None  # up to date, however long it waited
    assert tail.trouble("1800-4", now + LAG_LIMIT_S / 2) is None  # at the end a moment ago: just behind
    assert "1800-4" in (tail.trouble("1800-4", now + LAG_LIMIT_S + 1) or "")
    tail.failure = "KeyError: 'x'"
    assert "stopped" in (tail.trouble("1700-3", now) or "")


# --------------------------------------------------------------------------- item 10: bounds


def test_a_resume_reaches_back_a_bounded_number_of_events(exchange_url: str, data_dir: Path) -> None:
    with TestClient(create_app(open_settings(exchange_url, data_dir, ws_resume_events=3))) as api:
        market = new_market(api)
        old = stream_position(api)
        for price in (10, 11):  # two resting orders: four events
            place(api, market_id=market, side="buy", price=price, qty=1, account="ann")
        for too_far in (old, "0-0"):  # "0-0": all of history, anonymously
            with api.websocket_connect(f"/v1/ws?last_id={too_far}&subscribe=trades:{market}") as ws:
                ws.send_json({"type": "ping"})  # history, then a pong, if it were served
                refusal = ws.receive_json()
                assert (refusal["type"], refusal["error"]["field"]) == ("error", "last_id")
                assert "resync from REST" in refusal["error"]["message"]
                assert closed_with(ws).code == 1008
        recent = stream_position(api)
        with api.websocket_connect(f"/v1/ws?last_id={recent}&subscribe=trades:{market}") as ws:
            place(api, market_id=market, side="sell", price=11, qty=1, account="bob")
            assert ws.receive_json()["channel"] == f"trades:{market}"


def test_big_nested_and_binary_messages_are_answered_and_the_connection_serves_on(open_client: TestClient) -> None:
    with open_client.websocket_connect("/v1/ws") as ws:
        ws.send_text('{"type":"ping","pad":"' + "x" * MAX_FRAME_BYTES + '"}')
        assert ws.receive_json() == {
            "type": "error",
            "channel": None,
            "error": {"code": "BODY_TOO_LARGE", "message": "a message is 4096 bytes at most", "field": "message"},
        }
        ws.send_text("[" * 2000 + "]" * 2000)  # under the size bound, deeper than the decoder recurses
        assert ws.receive_json()["type"] == "error"
        ws.send_bytes(b'{"type":"ping"}')
        assert ws.receive_json() == {"type": "pong", "channel": None}


# --------------------------------------------------------------------------- item 6: keys and limits


def new_account(open_client: TestClient) -> tuple[str, str]:
    made = open_client.post("/v1/admin/accounts", json={"account": fresh("acct")}, headers=ADMIN)
    assert made.status_code == 201, made.text
    return made.json()["account"], made.json()["api_key"]


@pytest.mark.timeout(30)  # the old feed never closed the connection: the receive below waited forever
def test_a_revoked_key_closes_its_websocket(exchange_url: str, data_dir: Path) -> None:
    keys_mode = open_settings(exchange_url, data_dir, open_access=False, key_cache_seconds=0.5)
    with TestClient(create_app(keys_mode)) as api, TestClient(create_app(keys_mode)) as other:
        name, key = new_account(api)
        with api.websocket_connect("/v1/ws") as ws:
            ws.send_json({"type": "auth", "key": key})
            assert ws.receive_json() == {"type": "authed", "channel": None, "account": name}
            ws.send_json({"type": "subscribe", "channel": "orders"})
            assert ws.receive_json()["type"] == "subscribed"
            key_id = key.split("_")[1]
            assert other.delete(f"/v1/admin/accounts/{name}/keys/{key_id}", headers=ADMIN).status_code == 204
            closed = closed_with(ws)  # idle: the connection's own check finds it, through the key cache
            assert (closed.code, "revoked" in closed.reason) == (1008, True)


def test_websocket_messages_spend_the_rate_limit(exchange_url: str, data_dir: Path) -> None:
    limited = open_settings(exchange_url, data_dir, open_access=False, rate_limit=0.01, rate_burst=3)
    with TestClient(create_app(limited)) as api:
        _, key = new_account(api)
        with api.websocket_connect("/v1/ws") as ws:
            ws.send_json({"type": "auth", "key": key})  # the key's first token (and the connection's)
            assert ws.receive_json()["type"] == "authed"
            ws.send_json({"type": "ping"})  # the key's second
            assert ws.receive_json() == {"type": "pong", "channel": None}
            assert api.get("/v1/account", headers={"Authorization": f"Bearer {key}"}).status_code == 200  # third
            ws.send_json({"type": "heartbeat", "timeout_ms": 0})
            over = ws.receive_json()
            assert (over["type"], over["error"]["field"]) == ("error", "authorization")
            assert "per key" in over["error"]["message"]
            ws.send_json({"type": "ping"})
            assert ws.receive_json()["type"] == "error"  # still limited, still connected
        with api.websocket_connect("/v1/ws") as anonymous:
            answers = []
            for _ in range(4):
                anonymous.send_json({"type": "ping"})
                answers.append(anonymous.receive_json())
            assert answers[:3] == [{"type": "pong", "channel": None}] * 3
            assert "per connection" in answers[3]["error"]["message"]


# --------------------------------------------------------------------------- item 8: no counterparty


def test_a_fill_names_its_own_side_only_live_resumed_and_in_rest(open_client: TestClient) -> None:
    market = new_market(open_client)
    maker, taker = fresh("ann"), fresh("bob")
    start = stream_position(open_client)
    with (
        open_client.websocket_connect(f"/v1/ws?subscribe=orders:{maker}") as maker_ws,
        open_client.websocket_connect(f"/v1/ws?subscribe=orders:{taker}") as taker_ws,
    ):
        sell = place(open_client, market_id=market, side="sell", price=60, qty=3, account=maker)
        buy = place(open_client, market_id=market, side="buy", price=60, qty=2, account=taker)
        live_maker = next_fill(maker_ws)
        live_taker = next_fill(taker_ws)
    with open_client.websocket_connect(f"/v1/ws?last_id={start}&subscribe=orders:{maker}") as resumed:
        assert next_fill(resumed) == live_maker
    assert {key: live_maker[key] for key in ("role", "account", "order_id", "side", "remaining")} == {
        "role": "maker",
        "account": maker,
        "order_id": sell["order_id"],
        "side": "sell",
        "remaining": 1,
    }
    assert (live_taker["role"], live_taker["order_id"], live_taker["side"]) == ("taker", buy["order_id"], "buy")
    assert (live_maker["trade_id"], live_maker["price"], live_maker["qty"]) == (live_taker["trade_id"], 60, 2)
    for own, other in ((live_maker, taker), (live_taker, maker)):
        assert set(own) == FILL_KEYS  # no maker_account, taker_account, maker_order_id, …
        assert other not in json.dumps(own)
    assert taker not in open_client.get(f"/v1/orders/{sell['order_id']}").text
    assert maker not in open_client.get(f"/v1/orders/{buy['order_id']}").text


def next_fill(ws: WebSocketTestSession) -> dict[str, Any]:
    while True:
        message: dict[str, Any] = ws.receive_json()
        if message.get("type") == "TradeExecuted":
            return message


def test_book_snapshots_a_client_leaves_unread_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Subscribing to a deep book again and again without reading queues a snapshot each time:
    past ``QUEUED_LEVELS_LIMIT`` levels the client is dropped as slow, not kept at any size."""
    monkeypatch.setattr(hub_module, "QUEUED_LEVELS_LIMIT", 100)
    projection = Projection()
    projection.markets["deep"] = MarketView("deep", TickScheme.TICKS, 1, 1000, 100, SelfTradePrevention.CANCEL_TAKER)
    projection.books["deep"] = BookView(bids={price: [1, 1] for price in range(1, 31)})
    hub = Hub(projection)
    reader, hoarder = hub.register(), hub.register()

    def take(count: int) -> None:  # what the reader's sender does with its queue
        for _ in range(count):
            message = reader.queue.get_nowait()
            assert message is not None
            reader.sent(message)

    hub.subscribe(reader, "book:deep")
    take(2)  # the acknowledgement and the snapshot, sent: its levels are no longer queued
    for _ in range(3):  # 90 levels queued
        hub.subscribe(hoarder, "book:deep")
        hub.subscribe(reader, "book:deep")
        take(2)
    assert not hoarder.overflowed
    hub.subscribe(hoarder, "book:deep")  # 120: over
    assert (hoarder.overflowed, hoarder.goodbye[0]) == (True, 1008)
    assert not reader.overflowed  # the one that reads goes on
