"""The WebSocket feed against its contract: real messages, validated against /v1/asyncapi.json.

A scenario on a real Valkey and engine makes every kind of message the feed has on one shard
(the transfers' events need two: tests/test_transfers.py checks them the same way); each is
validated against the schema the document gives its type, and every schema of the document must
have been met, so a message that drifts from the document, or a document that describes what
never comes, fails here."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketTestSession

from conftest import ADMIN, contract_violations, fresh

NEEDS_SHARDS = {"TransferredOut", "TransferredIn", "TransferRefused"}
SENT = {"Subscribe", "Auth", "Heartbeat", "Ping"}  # what a client sends: not met among what it receives


def collect(ws: WebSocketTestSession, until: Any, into: list[dict[str, Any]]) -> dict[str, Any]:
    """Messages into ``into`` until one satisfies ``until``; that one."""
    for _ in range(200):
        message: dict[str, Any] = ws.receive_json()
        into.append(message)
        if until(message):
            return message
    raise AssertionError(f"no such message in 200: {into[-5:]}")


def typed(kind: str) -> Any:
    return lambda message: message["type"] == kind


@pytest.fixture(scope="module")
def document(open_client: TestClient) -> dict[str, Any]:
    answer = open_client.get("/v1/asyncapi.json")
    assert answer.status_code == 200
    found: dict[str, Any] = answer.json()
    assert found["asyncapi"].startswith("3.")
    return found


def test_every_message_of_the_feed_matches_the_asyncapi_document(
    open_client: TestClient, keyed_client: TestClient, document: dict[str, Any]
) -> None:
    seen: list[dict[str, Any]] = []
    binary = fresh("contract")
    made = open_client.post(
        "/v1/markets", json={"market_id": binary, "scheme": "binary", "collateral": True}, headers=ADMIN
    )
    assert made.status_code == 201, made.text
    ann, bob = fresh("ann"), fresh("bob")
    for who in (ann, bob):
        funded = open_client.post(f"/v1/admin/accounts/{who}/deposit", json={"amount": 10_000}, headers=ADMIN)
        assert funded.status_code == 200, funded.text
    query = f"subscribe=trades:{binary},book:{binary},orders:{ann},orders:{bob}"
    with open_client.websocket_connect(f"/v1/ws?{query}") as ws, open_client.websocket_connect("/ws") as plain:
        sell = open_client.post(
            "/v1/orders", json={"market_id": binary, "side": "sell", "price": 60, "qty": 5, "account": ann}
        ).json()
        open_client.post("/v1/orders", json={"market_id": binary, "side": "buy", "price": 60, "qty": 2, "account": bob})
        collect(plain, typed("fill"), seen)
        collect(ws, lambda m: m["type"] == "PositionChanged" and m["account"] == bob, seen)
        reduced = open_client.patch(f"/v1/orders/{sell['order_id']}", json={"reduce_by": 1, "account": ann})
        assert reduced.status_code == 200, reduced.text
        collect(ws, typed("OrderReduced"), seen)
        moved = open_client.patch(f"/v1/orders/{sell['order_id']}", json={"price": 61, "account": ann})
        assert moved.status_code == 200, moved.text
        collect(ws, typed("OrderAmended"), seen)
        refused = open_client.post(
            "/v1/orders",
            json={"market_id": binary, "side": "buy", "price": 60, "qty": 50, "tif": "FOK", "account": bob},
        )
        assert refused.status_code == 422
        collect(ws, typed("Rejected"), seen)
        ws.send_json({"type": "heartbeat", "timeout_ms": 200, "account": ann})  # her order goes in 0.2 s
        collect(ws, typed("DeadmanTriggered"), seen)  # after the answer and the switch's event
        assert {"heartbeat", "HeartbeatSet"} <= {m["type"] for m in seen}
        assert any(m["type"] == "OrderCancelled" and m["reason"] == "DEADMAN" for m in seen)
        ws.send_json({"type": "ping"})
        collect(ws, typed("pong"), seen)
        ws.send_json({"type": "subscribe", "channel": "candles"})
        collect(ws, typed("error"), seen)
        ws.send_json({"type": "subscribe", "channel": "book", "market_id": fresh("nowhere")})
        collect(ws, lambda m: m["type"] == "error" and m["channel"] is not None, seen)  # the book's own
        ws.send_json({"type": "unsubscribe", "channel": "trades", "market_id": binary})
        collect(ws, typed("unsubscribed"), seen)
    with keyed_client.websocket_connect("/v1/ws") as ws:
        made = keyed_client.post("/v1/admin/accounts", json={"account": fresh("keyed")}, headers=ADMIN).json()
        ws.send_json({"type": "auth", "key": made["api_key"]})
        collect(ws, typed("authed"), seen)
    problems, met = contract_violations(document, seen)
    assert problems == []
    described = set(document["components"]["schemas"]) - {"ErrorDetail", "LevelOut"} - SENT - NEEDS_SHARDS
    assert described - met == set(), "described but never met"


def test_a_message_off_the_contract_is_caught(document: dict[str, Any]) -> None:
    """The check is not a stub: a trade with a field in ns, or one missing, is refused."""
    trade = {
        "type": "trade",
        "channel": "trades:m",
        "seq": 1,
        "id": "1-1",
        "n": 1,
        "trade_id": 1,
        "market_id": "m",
        "price": 50,
        "qty": 1,
        "taker_side": "buy",
        "maker_order_id": 1,
        "taker_order_id": 2,
        "time_ms": 1,
    }
    assert contract_violations(document, [trade]) == ([], {"Trade"})
    with_ns = {**trade, "timestamp": 1_000_000}
    assert len(contract_violations(document, [with_ns])[0]) == 1
    assert len(contract_violations(document, [{k: v for k, v in trade.items() if k != "seq"}])[0]) == 1
