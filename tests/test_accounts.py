"""Accounts through the API: keys, admin, balances, collateral, settlement, the dead-man switch,
rate limits, open mode, and the persistence consumer's tables agreeing with the API to the unit.

Over a real Valkey and a real engine leader (in a thread), with the app in keys mode.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from conftest import ADMIN, api_settings, drain_persistence, fresh, wait_until, without_id
from matchbox.api.app import create_app
from matchbox.api.errors import ApiError
from matchbox.api.gate import Gate
from matchbox.consumers import queries
from matchbox.settings import Settings


def account(keyed_client: TestClient, deposit: int = 0) -> tuple[str, dict[str, str]]:
    """A new account (funded if asked) and the headers that carry its key."""
    made = keyed_client.post("/v1/admin/accounts", json={"account": fresh("acct")}, headers=ADMIN)
    assert made.status_code == 201, made.text
    name, key = made.json()["account"], made.json()["api_key"]
    if deposit:
        funded = keyed_client.post(f"/v1/admin/accounts/{name}/deposit", json={"amount": deposit}, headers=ADMIN)
        assert funded.json() == {"account": name, "total": deposit, "reserved": 0, "free": deposit}
    return name, {"Authorization": f"Bearer {key}"}


def market(keyed_client: TestClient, scheme: str = "binary", collateral: bool = True) -> str:
    market_id = fresh(f"{scheme}-")
    body = {"market_id": market_id, "scheme": scheme, "collateral": collateral}
    made = keyed_client.post("/v1/markets", json=body, headers=ADMIN)
    assert made.status_code == 201, made.text
    assert made.json()["collateral"] is collateral
    return market_id


def balance(keyed_client: TestClient, key: dict[str, str]) -> tuple[int, int, int]:
    body = keyed_client.get("/v1/account", headers=key).json()
    assert body["free"] == body["total"] - body["reserved"]
    return body["total"], body["reserved"], body["free"]


# --------------------------------------------------------------------------- authentication


def test_no_key_or_a_bad_key_is_401_and_says_nothing_more(keyed_client: TestClient) -> None:
    _, key = account(keyed_client)
    forged = key["Authorization"][:-4] + "abcd"
    answers = [
        keyed_client.get("/v1/account"),
        keyed_client.get("/v1/account", headers={"Authorization": "Bearer not-a-key"}),
        keyed_client.get("/v1/account", headers={"Authorization": forged}),
        keyed_client.post("/v1/orders", json={"side": "buy", "price": 5, "qty": 1}, headers={"Authorization": forged}),
        keyed_client.get("/v1/orders/1"),
    ]
    for answer in answers:
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"] == "Bearer"
    assert len({answer.text for answer in answers}) == 1  # a forged key of a real account reads like noise
    assert keyed_client.get("/v1/account", headers=key).status_code == 200


def test_admin_endpoints_need_the_admin_token(keyed_client: TestClient) -> None:
    name, key = account(keyed_client)
    for method, path, body in (
        ("post", "/v1/admin/accounts", {"account": fresh("x")}),
        ("get", "/v1/admin/accounts", None),
        ("post", f"/v1/admin/accounts/{name}/deposit", {"amount": 5}),
        ("post", f"/v1/admin/accounts/{name}/withdraw", {"amount": 5}),
        ("post", f"/v1/admin/accounts/{name}/keys", None),
        ("post", "/v1/markets", {"market_id": fresh("m"), "scheme": "binary"}),
    ):
        for headers in ({}, key, {"Authorization": "Bearer wrong"}):  # an account's key is not the admin's
            answer = keyed_client.request(method, path, json=body, headers=headers)
            assert answer.status_code == 403, (path, headers, answer.text)
    assert balance(keyed_client, key) == (0, 0, 0)


def test_accounts_keys_list_and_revoke(keyed_client: TestClient) -> None:
    name, first = account(keyed_client)
    again = keyed_client.post("/v1/admin/accounts", json={"account": name}, headers=ADMIN)
    assert (again.status_code, again.json()["error"]["field"]) == (409, "account")
    bad = keyed_client.post("/v1/admin/accounts", json={"account": "no spaces"}, headers=ADMIN)
    assert (bad.status_code, bad.json()["error"]["field"]) == (422, "account")
    second = keyed_client.post(f"/v1/admin/accounts/{name}/keys", headers=ADMIN).json()
    assert keyed_client.post(f"/v1/admin/accounts/{fresh('ghost')}/keys", headers=ADMIN).status_code == 404
    listed, cursor = [], None
    while True:  # page by page, by id: each account once
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        found = keyed_client.get("/v1/admin/accounts", params=params, headers=ADMIN).json()
        listed += found["items"]
        if (cursor := found["next"]) is None:
            break
    assert [a["account"] for a in listed] == sorted({a["account"] for a in listed})
    mine = next(a for a in listed if a["account"] == name)
    assert mine == keyed_client.get(f"/v1/admin/accounts/{name}", headers=ADMIN).json()
    assert mine["key_ids"] == sorted([first["Authorization"].split("_")[1], second["key_id"]])
    assert keyed_client.delete(f"/v1/admin/accounts/{name}/keys/{second['key_id']}", headers=ADMIN).status_code == 204
    assert keyed_client.get("/v1/account", headers={"Authorization": f"Bearer {second['api_key']}"}).status_code == 401
    assert keyed_client.get("/v1/account", headers=first).json()["account"] == name  # the other key still works
    assert keyed_client.delete(f"/v1/admin/accounts/{name}/keys/{second['key_id']}", headers=ADMIN).status_code == 404


def test_one_account_never_sees_or_touches_anothers_orders(keyed_client: TestClient) -> None:
    market_id = market(keyed_client, collateral=False)
    ann, ann_key = account(keyed_client)
    bob, bob_key = account(keyed_client)
    placed = keyed_client.post(
        "/v1/orders", json={"market_id": market_id, "side": "buy", "price": 30, "qty": 2}, headers=ann_key
    )
    assert placed.status_code == 201
    assert placed.json()["account"] == ann
    order_id = placed.json()["order_id"]
    assert keyed_client.get(f"/v1/orders/{order_id}", headers=bob_key).status_code == 404
    assert keyed_client.delete(f"/v1/orders/{order_id}", headers=bob_key).status_code == 404
    assert keyed_client.patch(f"/v1/orders/{order_id}", json={"reduce_by": 1}, headers=bob_key).status_code == 404
    assert keyed_client.delete("/v1/orders", params={"market_id": market_id}, headers=bob_key).json()["cancelled"] == []
    as_ann = {"market_id": market_id, "side": "buy", "price": 30, "qty": 1, "account": ann}
    refused = keyed_client.post("/v1/orders", json=as_ann, headers=bob_key)
    assert (refused.status_code, refused.json()["error"]["field"]) == (403, "account")
    assert keyed_client.get("/v1/account/orders", headers=bob_key).json() == {"items": [], "next": None}
    mine = keyed_client.get("/v1/account/orders", headers=ann_key).json()
    assert [o["order_id"] for o in mine["items"]] == [order_id]
    assert keyed_client.get(f"/v1/orders/{order_id}", headers=ann_key).json()["status"] == "open"
    with keyed_client.websocket_connect("/v1/ws") as ws:
        ws.send_json({"type": "subscribe", "channel": "orders", "account": ann})
        assert "key first" in ws.receive_json()["error"]["message"]
        ws.send_json({"type": "auth", "key": "mbk_nope"})
        assert ws.receive_json()["type"] == "error"
        ws.send_json({"type": "auth", "key": bob_key["Authorization"].removeprefix("Bearer ")})
        assert ws.receive_json() == {"type": "authed", "channel": None, "account": bob}
        ws.send_json({"type": "subscribe", "channel": "orders", "account": ann})
        assert ws.receive_json()["type"] == "error"
    assert keyed_client.delete(f"/v1/orders/{order_id}", headers=ann_key).json()["status"] == "cancelled"


def test_the_orders_channel_needs_the_key_and_carries_balances(keyed_client: TestClient) -> None:
    name, key = account(keyed_client)
    with keyed_client.websocket_connect("/v1/ws?subscribe=orders:" + name) as ws:  # refused: no key in a query
        assert "auth" in ws.receive_json()["error"]["message"]
        ws.send_json({"type": "auth", "key": key["Authorization"].removeprefix("Bearer ")})
        assert ws.receive_json() == {"type": "authed", "channel": None, "account": name}
        ws.send_json({"type": "subscribe", "channel": "orders"})
        assert without_id(ws.receive_json()) == {"type": "subscribed", "channel": f"orders:{name}", "seq": 0}
        keyed_client.post(f"/v1/admin/accounts/{name}/deposit", json={"amount": 700}, headers=ADMIN)
        change = ws.receive_json()
        assert (change["type"], change["account"], change["total"], change["reserved"], change["reason"]) == (
            "BalanceChanged",
            name,
            700,
            0,
            "DEPOSIT",  # the reason by NAME, as REST writes reasons; money stays integer cents
        )


def test_a_key_in_the_handshake_subscribes_its_own_orders_from_the_query(keyed_client: TestClient) -> None:
    """A client that can send headers authenticates the handshake itself, so ``?subscribe=orders``
    (and a resume with ``last_id``) covers its orders; a bad key is refused before anything."""
    name, key = account(keyed_client)
    with keyed_client.websocket_connect("/v1/ws?subscribe=orders", headers=key) as ws:
        assert without_id(ws.receive_json()) == {"type": "subscribed", "channel": f"orders:{name}", "seq": 0}
        keyed_client.post(f"/v1/admin/accounts/{name}/deposit", json={"amount": 5}, headers=ADMIN)
        assert ws.receive_json()["type"] == "BalanceChanged"
    with keyed_client.websocket_connect("/v1/ws?subscribe=orders:someone-else", headers=key) as ws:
        assert ws.receive_json()["error"]["code"] == "FORBIDDEN"  # a key follows its own account only
    _, other = account(keyed_client)
    with keyed_client.websocket_connect("/v1/ws?subscribe=orders", headers=key) as ws:
        ws.receive_json()
        ws.send_json({"type": "auth", "key": other["Authorization"].removeprefix("Bearer ")})
        assert ws.receive_json()["error"]["code"] == "FORBIDDEN"  # one account a connection: its orders channel
    bad = {"Authorization": "Bearer mbk_nope_nope"}
    with keyed_client.websocket_connect("/v1/ws?subscribe=orders", headers=bad) as ws:
        assert ws.receive_json()["error"]["code"] == "UNAUTHENTICATED"
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 1008


def test_rate_limit_is_429_with_retry_after(exchange_url: str, data_dir: Path, keyed_client: TestClient) -> None:
    _, key = account(keyed_client)
    _, other = account(keyed_client)
    with TestClient(create_app(api_settings(exchange_url, data_dir, rate_limit=0.5, rate_burst=2))) as limited:
        assert [limited.get("/v1/account", headers=key).status_code for _ in range(2)] == [200, 200]
        over = limited.get("/v1/account", headers=key)
        assert over.status_code == 429
        assert over.headers["retry-after"] == "2"
        assert over.json()["error"]["field"] == "authorization"
        assert limited.get("/v1/account", headers=other).status_code == 200  # per key


def test_open_mode_says_so_on_every_answer(exchange_url: str, data_dir: Path, keyed_client: TestClient) -> None:
    assert keyed_client.get("/health").json() == {"status": "ok", "auth": "keys"}
    assert "x-matchbox-auth" not in keyed_client.get("/health").headers
    with TestClient(create_app(api_settings(exchange_url, data_dir, open_access=True))) as open_api:
        health = open_api.get("/health")
        assert health.json() == {"status": "ok", "auth": "open"}
        assert health.headers["x-matchbox-auth"] == "open"
        assert open_api.get("/v1/account", params={"account": "anyone"}).headers["x-matchbox-auth"] == "open"
        assert open_api.get("/v1/account").status_code == 400  # open mode: name the account
        placed = open_api.post("/v1/orders", json={"side": "buy", "price": 5, "qty": 1, "account": "x"})
        assert placed.headers["x-matchbox-auth"] == "open"


def test_the_cli_creates_an_account_whose_key_works(exchange_url: str, keyed_client: TestClient) -> None:
    name = fresh("cli")
    env = {**os.environ, "REDIS_URL": exchange_url, "MATCHBOX_DURABILITY": "everysec"}
    done = subprocess.run(
        [sys.executable, "-m", "matchbox", "accounts", "create", name, "--deposit", "1234"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    lines = dict(line.split(None, 1) for line in done.stdout.splitlines() if line.strip())
    key = {"Authorization": f"Bearer {lines['API'].removeprefix('key').strip()}"}
    wait_until(lambda: balance(keyed_client, key) == (1234, 0, 1234), message="the CLI's deposit")
    again = subprocess.run(
        [sys.executable, "-m", "matchbox", "accounts", "create", name],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert again.returncode == 1
    assert "exists" in again.stderr


# --------------------------------------------------------------------------- money


def test_every_money_rejection_has_its_reason_code(keyed_client: TestClient) -> None:
    market_id = market(keyed_client)
    name, key = account(keyed_client, deposit=100)
    too_big = keyed_client.post(
        "/v1/orders", json={"market_id": market_id, "side": "buy", "price": 50, "qty": 3}, headers=key
    )
    assert too_big.status_code == 422
    assert (too_big.json()["error"]["code"], too_big.json()["error"]["field"]) == (
        "INSUFFICIENT_FUNDS",
        "qty",
    )
    withdraw = keyed_client.post(f"/v1/admin/accounts/{name}/withdraw", json={"amount": 101}, headers=ADMIN)
    assert (withdraw.status_code, withdraw.json()["error"]["code"]) == (409, "INSUFFICIENT_FUNDS")
    zero = keyed_client.post(f"/v1/admin/accounts/{name}/deposit", json={"amount": 0}, headers=ADMIN)
    assert (zero.status_code, zero.json()["error"]["field"]) == (400, "amount")
    ticks = keyed_client.post(
        "/v1/markets",
        json={"market_id": fresh("t"), "scheme": "ticks", "max_tick": 9, "collateral": True},
        headers=ADMIN,
    )
    assert (ticks.status_code, ticks.json()["error"]["field"]) == (400, "collateral")
    settle = keyed_client.post(f"/v1/markets/{market_id}/settle", json={"outcome": "maybe"}, headers=ADMIN)
    assert (settle.status_code, settle.json()["error"]["code"]) == (409, "INVALID_OUTCOME")
    assert balance(keyed_client, key) == (100, 0, 100)  # nothing changed
    ok = keyed_client.post(f"/v1/admin/accounts/{name}/withdraw", json={"amount": 100}, headers=ADMIN)
    assert ok.json() == {"account": name, "total": 0, "reserved": 0, "free": 0}


def test_dead_man_switch_cancels_resting_orders_when_heartbeats_stop(keyed_client: TestClient) -> None:
    market_id = market(keyed_client)
    _, key = account(keyed_client, deposit=1000)
    order = {"market_id": market_id, "side": "buy", "price": 20, "qty": 10}
    first = keyed_client.post("/v1/orders", json=order, headers=key).json()["order_id"]
    second = keyed_client.post("/v1/orders", json={**order, "price": 21}, headers=key).json()["order_id"]
    assert balance(keyed_client, key) == (1000, 410, 590)
    armed = keyed_client.post("/v1/account/heartbeat", json={"timeout_ms": 300}, headers=key)
    assert armed.status_code == 200
    assert armed.json()["deadline_ms"] > 0
    assert keyed_client.post("/v1/account/heartbeat", json={"timeout_ms": -1}, headers=key).status_code == 400

    def gone() -> bool:
        states = [keyed_client.get(f"/v1/orders/{i}", headers=key).json() for i in (first, second)]
        return all(s["status"] == "cancelled" and s["cancel_reason"] == "DEADMAN" for s in states)

    wait_until(gone, message="the dead-man switch to cancel both orders")
    assert balance(keyed_client, key) == (1000, 0, 1000)
    with keyed_client.websocket_connect("/v1/ws") as ws:
        ws.send_json({"type": "auth", "key": key["Authorization"].removeprefix("Bearer ")})
        ws.receive_json()
        ws.send_json({"type": "heartbeat", "timeout_ms": 0})
        answer = ws.receive_json()
        assert (answer["type"], answer["deadline_ms"]) == ("heartbeat", None), answer


def test_a_binary_market_trades_settles_and_the_database_agrees(
    keyed_client: TestClient, exchange_url: str, data_dir: Path
) -> None:
    market_id = market(keyed_client)
    alice, alice_key = account(keyed_client, deposit=10_000)
    bob, bob_key = account(keyed_client, deposit=10_000)
    buy = {"market_id": market_id, "side": "buy", "price": 40, "qty": 10}
    bid = keyed_client.post("/v1/orders", json=buy, headers=alice_key).json()
    assert bid["status"] == "open"
    assert balance(keyed_client, alice_key) == (10_000, 400, 9_600)
    sell = keyed_client.post("/v1/orders", json={**buy, "side": "sell", "price": 35}, headers=bob_key).json()
    assert (sell["status"], sell["fills"][0]["price"]) == ("filled", 40)  # at the maker's price
    assert balance(keyed_client, alice_key) == (9_600, 0, 9_600)  # paid 40 a contract
    assert balance(keyed_client, bob_key) == (9_400, 0, 9_400)  # sold short: put up 100 - 40
    positions = keyed_client.get("/v1/account/positions", headers=alice_key).json()["items"]
    assert [(p["market_id"], p["yes"], p["no"]) for p in positions] == [(market_id, 10, 0)]
    assert keyed_client.get("/v1/account/positions", headers=bob_key).json()["items"][0]["no"] == 10
    resting = keyed_client.post(
        "/v1/orders", json={**buy, "price": 30, "qty": 5, "on_suspend": "lapse"}, headers=alice_key
    ).json()
    assert balance(keyed_client, alice_key) == (9_600, 150, 9_450)
    database = drain_persistence(exchange_url, data_dir)  # the database agrees before settlement too
    try:
        for name, key in ((alice, alice_key), (bob, bob_key)):
            live = [
                (p["market_id"], p["yes"], p["no"])
                for p in keyed_client.get("/v1/account/positions", headers=key).json()["items"]
            ]
            assert [(p.market_id, p.yes, p.no) for p in queries.account_positions(database, name)] == live
            stored = queries.account_balance(database, name)
            assert stored is not None
            assert (stored.total, stored.reserved, stored.free) == balance(keyed_client, key)
    finally:
        database.dispose()

    settled = keyed_client.post(f"/v1/markets/{market_id}/settle", json={"outcome": "yes"}, headers=ADMIN)
    assert settled.json()["state"] == "settled"
    assert keyed_client.get(f"/v1/orders/{resting['order_id']}", headers=alice_key).json()["status"] == "cancelled"
    assert balance(keyed_client, alice_key) == (10_600, 0, 10_600)  # 10 winning contracts pay 100 each
    assert balance(keyed_client, bob_key) == (9_400, 0, 9_400)
    assert keyed_client.get("/v1/account/positions", headers=alice_key).json() == {"items": [], "next": None}

    database = drain_persistence(exchange_url, data_dir)
    try:
        for name, key in ((alice, alice_key), (bob, bob_key)):
            stored = queries.account_balance(database, name)
            assert stored is not None
            assert (stored.total, stored.reserved, stored.total - stored.reserved) == balance(keyed_client, key)
            assert all(not (p.yes or p.no) for p in queries.account_positions(database, name, include_empty=True))
            history = queries.account_balance_history(database, name, before=None, limit=100)
            assert history[0].total == stored.total
        trades = keyed_client.get("/v1/account/trades", headers=alice_key).json()
        assert [(t["market_id"], t["price"], t["qty"], t["side"], t["role"]) for t in trades["items"]] == [
            (market_id, 40, 10, "buy", "maker")
        ]
        closed = keyed_client.get("/v1/account/orders", params={"state": "closed"}, headers=alice_key).json()["items"]
        assert [(o["order_id"], o["status"], o["on_suspend"]) for o in closed[:2]] == [
            (resting["order_id"], "cancelled", "lapse"),  # history keeps what it would do at a suspension
            (bid["order_id"], "filled", "persist"),
        ]
    finally:
        database.dispose()


def test_fees_are_charged_on_each_fill_shown_on_it_and_paid_to_the_fee_account(
    keyed_client: TestClient, exchange_url: str, data_dir: Path
) -> None:
    """Maker 1 %, taker 2 % and a cent a contract, paid to the house's account: the fills show
    what each side paid, the balances and the SQL history agree, and money is where it should be."""
    house, house_key = account(keyed_client)
    _maker, maker_key = account(keyed_client, deposit=10_000)
    _, taker_key = account(keyed_client, deposit=10_000)
    market_id = fresh("fee-")
    fees = {"maker_bps": 100, "taker_bps": 200, "taker_per_contract": 1, "account": house}
    body = {"market_id": market_id, "scheme": "binary", "collateral": True, "fees": fees}
    made = keyed_client.post("/v1/markets", json=body, headers=ADMIN)
    assert (made.status_code, made.json()["fees"]["taker_bps"], made.json()["fees"]["account"]) == (201, 200, house)
    plain = {"market_id": fresh("fee-"), "scheme": "binary", "fees": fees}  # no collateral: nothing to charge from
    refused = keyed_client.post("/v1/markets", json=plain, headers=ADMIN)
    assert (refused.status_code, refused.json()["error"]["field"]) == (400, "fees")
    order = {"market_id": market_id, "side": "buy", "price": 40, "qty": 10}
    bid = keyed_client.post("/v1/orders", json=order, headers=maker_key).json()
    assert balance(keyed_client, maker_key) == (10_000, 420, 9_580)  # 40 a contract and at most 2 in fees
    ask = keyed_client.post("/v1/orders", json={**order, "side": "sell"}, headers=taker_key).json()
    assert [(f["role"], f["fee"]) for f in ask["fills"]] == [("taker", 12 + 10)]  # 2 % of 60 a contract, 1 each
    fills = keyed_client.get(f"/v1/orders/{bid['order_id']}", headers=maker_key).json()["fills"]
    assert [(f["role"], f["fee"]) for f in fills] == [("maker", 4)]  # 1 % of 40 a contract
    assert balance(keyed_client, maker_key) == (10_000 - 400 - 4, 0, 9_596)
    assert balance(keyed_client, taker_key) == (10_000 - 600 - 22, 0, 9_378)
    assert balance(keyed_client, house_key) == (26, 0, 26)
    database = drain_persistence(exchange_url, data_dir)
    database.dispose()
    trades = keyed_client.get("/v1/account/trades", headers=maker_key).json()["items"]
    assert [(t["market_id"], t["role"], t["fee"]) for t in trades[:1]] == [(market_id, "maker", 4)]
    history = keyed_client.get("/v1/account/history", headers=house_key).json()["items"]
    assert [(h["reason"], h["change"], h["market_id"]) for h in history] == [
        ("FEE", 22, market_id),
        ("FEE", 4, market_id),
    ]


def test_an_odds_market_back_and_lay_then_win(keyed_client: TestClient) -> None:
    market_id = market(keyed_client, "odds")
    _, back_key = account(keyed_client, deposit=5_000)
    _, lay_key = account(keyed_client, deposit=5_000)
    back = {"market_id": market_id, "side": "back", "odds": "3.0", "stake": 1_000}
    assert keyed_client.post("/v1/orders", json=back, headers=back_key).json()["status"] == "open"
    assert balance(keyed_client, back_key) == (5_000, 1_000, 4_000)  # a back reserves its stake
    lay = keyed_client.post("/v1/orders", json={**back, "side": "lay"}, headers=lay_key).json()
    assert lay["status"] == "filled"
    assert balance(keyed_client, lay_key) == (3_000, 0, 3_000)  # a lay puts up stake x (odds - 1)
    held = keyed_client.get("/v1/account/positions", headers=back_key).json()["items"]
    assert [(p["scheme"], p["stake"]) for p in held] == [("odds", 1_000)]
    keyed_client.post(f"/v1/markets/{market_id}/settle", json={"outcome": "win"}, headers=ADMIN)
    assert balance(keyed_client, back_key) == (7_000, 0, 7_000)  # stake x odds
    assert balance(keyed_client, lay_key) == (3_000, 0, 3_000)


def test_pagination_walks_every_open_order_once(keyed_client: TestClient) -> None:
    market_id = market(keyed_client, collateral=False)
    _, key = account(keyed_client)
    placed = [
        keyed_client.post(
            "/v1/orders", json={"market_id": market_id, "side": "buy", "price": 10 + i, "qty": 1}, headers=key
        ).json()["order_id"]
        for i in range(5)
    ]
    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = keyed_client.get("/v1/account/orders", params=params, headers=key).json()
        seen += [o["order_id"] for o in page["items"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == sorted(placed, reverse=True)


def test_the_rate_limiter_refills_with_time_and_never_runs_backwards() -> None:
    gate = Gate(Settings(rate_limit=10, rate_burst=2), bus=None)  # type: ignore[arg-type]  # no lookups here
    gate._spend("k", 100.0)
    gate._spend("k", 99.5)  # an earlier clock reading (a request that awaited Redis) costs one token, no more
    with pytest.raises(ApiError) as over:
        gate._spend("k", 100.0)
    assert (over.value.status, over.value.headers) == (429, {"Retry-After": "1"})
    gate._spend("k", 100.15)  # 0.15 s at 10 a second: a token back
    gate._spend("other", 100.1)  # per key
