"""The HTTP and WebSocket API in process, over a real Valkey and a real engine leader (in a thread)."""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from conftest import ADMIN, api_settings, data_messages, drain_persistence, fresh, running_leader, wait_until
from matchbox.api import projection as projection_module
from matchbox.api.app import create_app
from matchbox.api.codes import ALL_CODES
from matchbox.api.feed import channel_messages
from matchbox.api.hub import Client, Hub
from matchbox.api.projection import Projection
from matchbox.bus.codec import DecodedEvent
from matchbox.bus.connection import Bus
from matchbox.bus.durability import Durability
from matchbox.bus.server import EmbeddedValkey
from matchbox.consumers.analytics import AnalyticsSink
from matchbox.consumers.db import open_database
from matchbox.consumers.runner import ConsumerConfig, GroupConsumer
from matchbox.engine.types import Side, TradeExecuted
from matchbox.settings import Settings


def new_market(open_client: TestClient, scheme: str = "binary", **fields: Any) -> str:
    market_id = fresh("m")
    response = open_client.post("/v1/markets", json={"market_id": market_id, "scheme": scheme, **fields}, headers=ADMIN)
    assert response.status_code == 201, response.text
    return market_id


def place(open_client: TestClient, **body: Any) -> Any:
    return open_client.post("/v1/orders", json=body)


# --------------------------------------------------------------------------- the original README's walk-through


def test_seed_orders_trade_on_the_default_market(open_client: TestClient) -> None:
    sell = place(open_client, side="sell", price=50, qty=10)
    assert sell.status_code == 201, sell.text
    assert sell.json()["status"] == "open"
    buy = place(open_client, side="buy", price=50, qty=10)
    assert buy.status_code == 201
    body = buy.json()
    assert (body["status"], body["filled"], body["remaining"]) == ("filled", 10, 0)
    assert body["fills"] == [
        {
            "trade_id": body["fills"][0]["trade_id"],
            "price": 50,
            "qty": 10,
            "role": "taker",
            "time_ms": body["fills"][0]["time_ms"],
        }
    ]
    book = open_client.get("/orderbook").json()
    assert (book["bids"], book["asks"]) == ([], [])
    assert book["sequence"] > 0


def test_seed_validation_statuses(open_client: TestClient) -> None:
    zero_qty = place(open_client, side="buy", price=50, qty=0)
    assert (zero_qty.status_code, zero_qty.json()["error"]["field"]) == (400, "qty")
    zero_price = place(open_client, side="buy", price=0, qty=5)
    assert (zero_price.status_code, zero_price.json()["error"]["field"]) == (400, "price")
    bad_side = place(open_client, side="up", price=50, qty=5)
    assert (bad_side.status_code, bad_side.json()["error"]["field"]) == (422, "side")


# --------------------------------------------------------------------------- markets


def test_binary_market_orders_book_trades_and_ticker(open_client: TestClient) -> None:
    market = new_market(open_client)
    for price, qty in ((40, 5), (42, 3)):
        assert place(open_client, market_id=market, side="buy", price=price, qty=qty, account="ann").status_code == 201
    assert place(open_client, market_id=market, side="sell", price=45, qty=7, account="ann").status_code == 201
    taker = place(open_client, market_id=market, side="sell", price=41, qty=4, account="bob").json()
    assert [(f["price"], f["qty"]) for f in taker["fills"]] == [(42, 3)]
    assert (taker["status"], taker["remaining"]) == ("partially_filled", 1)  # the rest rests at 41
    book = open_client.get(f"/v1/markets/{market}/book", params={"depth": 5}).json()
    assert book["bids"] == [{"price": 40, "qty": 5, "orders": 1}]
    assert book["asks"] == [{"price": 41, "qty": 1, "orders": 1}, {"price": 45, "qty": 7, "orders": 1}]
    trades = open_client.get(f"/v1/markets/{market}/trades").json()["items"]
    assert [(t["price"], t["qty"], t["taker_side"]) for t in trades] == [(42, 3, "sell")]
    ticker = open_client.get(f"/v1/markets/{market}/ticker").json()
    assert (ticker["best_bid"], ticker["best_ask"], ticker["mid"], ticker["spread"]) == (40, 41, 40.5, 1)
    assert (ticker["last_price"], ticker["last_qty"]) == (42, 3)
    listed = {m["market_id"]: m for m in open_client.get("/v1/markets").json()["items"]}
    assert listed[market]["scheme"] == "binary"
    assert (listed[market]["best_bid"], listed[market]["best_ask"]) == (40, 41)


def test_a_market_order_is_ioc_by_default_and_refused_as_gtc(open_client: TestClient) -> None:
    """The engine's rule: a market order is IOC or FOK. Left out, the time in force is IOC; asked
    for GTC (once silently turned into IOC by the API) it is refused, as the engine refuses it."""
    market = new_market(open_client)
    assert place(open_client, market_id=market, side="sell", price=40, qty=1, account="ann").status_code == 201
    taken = place(open_client, market_id=market, side="buy", qty=3, type="market", account="bob")
    assert (taken.status_code, taken.json()["tif"], taken.json()["status"]) == (201, "IOC", "cancelled")
    gtc = place(open_client, market_id=market, side="buy", qty=1, type="market", tif="GTC", account="bob")
    assert (gtc.status_code, gtc.json()["error"]["field"]) == (400, "tif")
    assert place(open_client, market_id=market, side="buy", price=40, qty=1, account="bob").json()["tif"] == "GTC"


def test_a_gtd_expiry_already_past_is_judged_by_the_engine_on_journal_time(open_client: TestClient) -> None:
    """The API does not read its own clock for an expiry (it could refuse what the engine would
    take): a past one goes to the engine, which refuses it on journal time, naming the field."""
    market = new_market(open_client)
    past = place(open_client, market_id=market, side="buy", price=20, qty=1, tif="GTD", expires_at_ms=1, account="ann")
    assert past.status_code == 422
    assert (past.json()["error"]["code"], past.json()["error"]["field"]) == ("INVALID_EXPIRY", "expires_at_ms")
    missing = place(open_client, market_id=market, side="buy", price=20, qty=1, tif="GTD", account="ann")
    assert (missing.status_code, missing.json()["error"]["field"]) == (400, "expires_at_ms")


def test_odds_market_takes_odds_stake_and_back_lay(open_client: TestClient) -> None:
    market = new_market(open_client, "odds")
    back = place(open_client, market_id=market, side="back", odds="2.5", stake=10, account="ann")
    assert back.status_code == 201, back.text
    lay = place(open_client, market_id=market, side="lay", odds=2.6, stake=4, account="bob").json()
    assert lay["fills"][0]["price"] == 2.5  # the maker's odds, better for the layer than 2.6
    assert lay["status"] == "filled"
    off_ladder = place(open_client, market_id=market, side="back", odds=2.51, stake=1, account="ann")
    assert (off_ladder.status_code, off_ladder.json()["error"]["field"]) == (400, "odds")
    wrong_word = place(open_client, market_id=market, side="buy", odds=2.5, stake=1, account="ann")
    assert (wrong_word.status_code, wrong_word.json()["error"]["field"]) == (400, "side")
    book = open_client.get(f"/v1/markets/{market}/book").json()
    assert book["asks"] == [{"price": 2.5, "qty": 6, "orders": 1}]


def test_market_admin_needs_the_token_and_lifecycle_works(open_client: TestClient) -> None:
    refused = open_client.post("/v1/markets", json={"market_id": "nope", "scheme": "binary"})
    assert refused.status_code == 403
    market = new_market(open_client)
    assert open_client.post(f"/v1/markets/{market}/suspend").status_code == 403
    assert open_client.post(f"/v1/markets/{market}/suspend", headers=ADMIN).json()["state"] == "suspended"
    suspended = place(open_client, market_id=market, side="buy", price=40, qty=1, account="ann")
    assert (suspended.status_code, suspended.json()["error"]["field"]) == (409, "market_id")
    assert open_client.post(f"/v1/markets/{market}/resume", headers=ADMIN).json()["state"] == "open"
    resting = place(open_client, market_id=market, side="buy", price=40, qty=1, account="ann").json()
    assert open_client.post(f"/v1/markets/{market}/close", headers=ADMIN).json()["state"] == "closed"
    assert open_client.get(f"/v1/orders/{resting['order_id']}").json()["status"] == "cancelled"
    settled = open_client.post(f"/v1/markets/{market}/settle", json={"outcome": "yes"}, headers=ADMIN).json()
    assert (settled["state"], settled["outcome"]) == ("settled", "yes")
    again = open_client.post("/v1/markets", json={"market_id": market, "scheme": "binary"}, headers=ADMIN)
    assert (again.status_code, again.json()["error"]["field"]) == (409, "market_id")


# --------------------------------------------------------------------------- managing orders


def test_cancel_reduce_and_cancel_all(open_client: TestClient) -> None:
    market = new_market(open_client)
    first = place(open_client, market_id=market, side="buy", price=30, qty=10, account="ann").json()
    second = place(open_client, market_id=market, side="buy", price=31, qty=10, account="ann").json()
    reduced = open_client.patch(f"/v1/orders/{first['order_id']}", json={"reduce_by": 4})
    assert (reduced.status_code, reduced.json()["remaining"]) == (200, 6)
    both = open_client.patch(f"/v1/orders/{first['order_id']}", json={"reduce_by": 1, "qty": 2})
    assert (both.status_code, both.json()["error"]["field"]) == (400, "reduce_by")
    cancelled = open_client.delete(f"/v1/orders/{second['order_id']}")
    assert (cancelled.status_code, cancelled.json()["status"]) == (200, "cancelled")
    twice = open_client.delete(f"/v1/orders/{second['order_id']}")
    assert twice.status_code == 409
    third = place(open_client, market_id=market, side="sell", price=60, qty=1, account="ann").json()
    everything = open_client.delete("/v1/orders", params={"market_id": market, "account": "ann"})
    assert everything.status_code == 200
    assert sorted(everything.json()["cancelled"]) == sorted([first["order_id"], third["order_id"]])
    assert open_client.get(f"/v1/markets/{market}/book").json()["bids"] == []


def test_cancel_by_ids_answers_each_order_and_self_trade_is_the_order_s_choice(open_client: TestClient) -> None:
    market = new_market(open_client)
    first = place(open_client, market_id=market, side="buy", price=30, qty=10, account="ann").json()
    other = place(open_client, market_id=market, side="buy", price=29, qty=10, account="bob").json()
    # ann's sell meets her own bid first: the market would reject it; cancel_both cancels both
    crossing = place(
        open_client, market_id=market, side="sell", price=30, qty=3, account="ann", self_trade="cancel_both"
    )
    assert (crossing.status_code, crossing.json()["status"]) == (201, "cancelled"), crossing.text
    assert open_client.get(f"/v1/orders/{first['order_id']}").json()["status"] == "cancelled"
    second = place(open_client, market_id=market, side="buy", price=28, qty=10, account="ann").json()
    ids = [second["order_id"], other["order_id"], first["order_id"], second["order_id"] + 10**9]
    answer = open_client.post("/v1/orders/cancel", json={"order_ids": ids, "account": "ann"})
    assert answer.status_code == 200, answer.text
    items = answer.json()["items"]
    assert [item["order_id"] for item in items] == ids
    assert [item["status"] for item in items] == [200, 404, 409, 404]
    assert items[0]["order"]["status"] == "cancelled"
    assert [item["error"]["code"] for item in items[1:]] == ["UNKNOWN_ORDER", "ORDER_NOT_OPEN", "UNKNOWN_ORDER"]
    assert open_client.get(f"/v1/orders/{other['order_id']}").json()["status"] == "open"
    too_many = open_client.post("/v1/orders/cancel", json={"order_ids": list(range(1, 102))})
    assert (too_many.status_code, too_many.json()["error"]["field"]) == (422, "order_ids")
    bad_rule = place(open_client, market_id=market, side="buy", price=30, qty=1, self_trade="cancel_nobody")
    assert (bad_rule.status_code, bad_rule.json()["error"]["field"]) == (422, "self_trade")


def test_an_amend_keeps_priority_only_when_it_lowers_the_quantity(open_client: TestClient) -> None:
    market = new_market(open_client)
    ann = place(open_client, market_id=market, side="buy", price=30, qty=10, account="ann").json()
    bob = place(open_client, market_id=market, side="buy", price=30, qty=5, account="bob").json()
    lowered = open_client.patch(f"/v1/orders/{ann['order_id']}", json={"qty": 8})  # keeps its place
    assert (lowered.status_code, lowered.json()["remaining"]) == (200, 8), lowered.text
    place(open_client, market_id=market, side="sell", price=30, qty=2, account="carl")
    assert open_client.get(f"/v1/orders/{ann['order_id']}").json()["filled"] == 2  # still first
    # qty counts what has filled (FIX's OrderQty): 2 filled, so 11 leaves 9 to trade, behind bob now
    raised = open_client.patch(f"/v1/orders/{ann['order_id']}", json={"qty": 11})
    assert (raised.status_code, raised.json()["remaining"], raised.json()["qty"]) == (200, 9, 11), raised.text
    place(open_client, market_id=market, side="sell", price=30, qty=5, account="carl")
    assert open_client.get(f"/v1/orders/{bob['order_id']}").json()["status"] == "filled"
    assert open_client.get(f"/v1/orders/{ann['order_id']}").json()["remaining"] == 9
    place(open_client, market_id=market, side="sell", price=34, qty=4, account="carl")
    for price in (0, -5, 100):  # 0 is no price: never "keep it" on the wire
        off = open_client.patch(f"/v1/orders/{ann['order_id']}", json={"price": price, "qty": 50})
        assert (off.status_code, off.json()["error"]["field"]) == (400, "price"), off.text
    refused = open_client.patch(f"/v1/orders/{ann['order_id']}", json={"price": 35, "post_only": True})
    assert (refused.status_code, refused.json()["error"]["code"]) == (409, "POST_ONLY_WOULD_TAKE")
    assert refused.json()["error"]["field"] == "post_only"
    too_big = open_client.patch(f"/v1/orders/{ann['order_id']}", json={"qty": 10**9 + 1})
    assert (too_big.status_code, too_big.json()["error"]["code"], too_big.json()["error"]["field"]) == (
        409,
        "QUANTITY_OVER_MAX",
        "qty",
    )
    assert open_client.get(f"/v1/orders/{ann['order_id']}").json()["price"] == 30  # as it was
    moved = open_client.patch(f"/v1/orders/{ann['order_id']}", json={"price": 35})  # trades 4@34, rests 5@35
    assert moved.status_code == 200, moved.text
    assert (moved.json()["price"], moved.json()["remaining"], moved.json()["filled"]) == (35, 5, 6)
    book = open_client.get(f"/v1/markets/{market}/book").json()
    assert [(level["price"], level["qty"]) for level in book["bids"]] == [(35, 5)]
    assert book["asks"] == []
    done = open_client.patch(f"/v1/orders/{ann['order_id']}", json={"qty": 6})  # no more than has filled
    assert (done.status_code, done.json()["status"], done.json()["remaining"]) == (200, "cancelled", 0), done.text


def test_a_market_says_what_it_is_about_and_closes_itself_at_its_close_time(
    open_client: TestClient, exchange_url: str, data_dir: Path
) -> None:
    """Title, question, rules, category and outcome names travel with the market; GET /markets
    filters by category and close time and sorts by close time; at its close time the engine
    closes it on its own (journal time), its resting order cancelled, and the database has it all."""
    category = fresh("cat")
    soon_ms = time.time_ns() // 1_000_000 + 1_500
    terms = {"title": "Rain", "question": "Will it rain?", "rules": "Met Office", "category": category}
    closing = new_market(open_client, **terms, outcomes=["Rain", "Dry"], closes_at_ms=soon_ms)
    later = new_market(open_client, category=category, closes_at_ms=soon_ms + 3_600_000)
    never = new_market(open_client, category=category)
    also_never = new_market(open_client, category=category)
    plain = new_market(open_client)  # no terms at all: its category is the empty one
    shown = open_client.get(f"/v1/markets/{closing}").json()
    assert {k: shown[k] for k in (*terms, "outcomes", "closes_at_ms")} == {
        **terms,
        "outcomes": ["Rain", "Dry"],
        "closes_at_ms": soon_ms,
    }
    assert open_client.get(f"/v1/markets/{never}").json()["outcomes"] == ["YES", "NO"]
    listed = open_client.get("/v1/markets", params={"category": category, "sort": "closes_at", "limit": 2}).json()
    assert [m["market_id"] for m in listed["items"]] == [closing, later]
    rest = open_client.get("/v1/markets", params={"category": category, "sort": "closes_at", "cursor": listed["next"]})
    assert [m["market_id"] for m in rest.json()["items"]] == sorted([never, also_never])
    paged, cursor = [], None  # one at a time, through those without a close time too
    while True:
        params: dict[str, str | int] = {"category": category, "sort": "closes_at", "limit": 1}
        if cursor:
            params["cursor"] = cursor
        got = open_client.get("/v1/markets", params=params).json()
        paged += [m["market_id"] for m in got["items"]]
        if not (cursor := got["next"]):
            break
    assert paged == [closing, later, *sorted([never, also_never])]
    uncategorised = open_client.get("/v1/markets", params={"category": "", "limit": 1000}).json()["items"]
    assert plain in [m["market_id"] for m in uncategorised]
    soon = open_client.get("/v1/markets", params={"category": category, "closes_before_ms": soon_ms + 1})
    assert [m["market_id"] for m in soon.json()["items"]] == [closing]
    bad = open_client.get("/v1/markets", params={"sort": "closes_at", "cursor": "tomorrow"})
    assert (bad.status_code, bad.json()["error"]["field"]) == (400, "cursor")
    past = open_client.post(
        "/v1/markets",
        json={"market_id": fresh("m"), "scheme": "binary", "closes_at_ms": soon_ms - 60_000},
        headers=ADMIN,
    )
    assert (past.status_code, past.json()["error"]["field"]) == (400, "closes_at_ms")
    odd = open_client.post(
        "/v1/markets", json={"market_id": fresh("m"), "scheme": "odds", "outcomes": ["A", "B"]}, headers=ADMIN
    )
    assert (odd.status_code, odd.json()["error"]["field"]) == (400, "outcomes")

    resting = place(open_client, market_id=closing, side="buy", price=30, qty=5, account="ann").json()
    wait_until(
        lambda: open_client.get(f"/v1/markets/{closing}").json()["state"] == "closed",
        message="the engine to close the market at its close time",
    )
    assert open_client.get(f"/v1/orders/{resting['order_id']}").json()["cancel_reason"] == "MARKET_CLOSED"
    late = place(open_client, market_id=closing, side="buy", price=30, qty=5, account="ann")
    assert (late.status_code, late.json()["error"]["code"]) == (409, "MARKET_NOT_OPEN")
    database = drain_persistence(exchange_url, data_dir)
    try:
        with database.connect() as connection:
            row = connection.execute(
                sa.text(
                    "SELECT title, question, rules, category, outcomes, closes_at, state"
                    " FROM markets WHERE market_id = :m"
                ),
                {"m": closing},
            ).one()
        assert tuple(row) == ("Rain", "Will it rain?", "Met Office", category, '["Rain","Dry"]', soon_ms * 1_000_000, 2)
    finally:
        database.dispose()


def test_a_suspension_cancels_the_orders_that_lapse_and_keeps_the_rest(open_client: TestClient) -> None:
    market = new_market(open_client)
    lapsing = place(open_client, market_id=market, side="buy", price=30, qty=5, on_suspend="lapse").json()
    kept = place(open_client, market_id=market, side="buy", price=31, qty=5).json()
    assert (lapsing["on_suspend"], kept["on_suspend"]) == ("lapse", "persist")
    suspended = open_client.post(f"/v1/markets/{market}/suspend", headers=ADMIN)
    assert suspended.status_code == 200, suspended.text
    gone = open_client.get(f"/v1/orders/{lapsing['order_id']}").json()
    assert (gone["status"], gone["cancel_reason"]) == ("cancelled", "LAPSED")
    assert open_client.get(f"/v1/orders/{kept['order_id']}").json()["status"] == "open"
    book = open_client.get(f"/v1/markets/{market}/book").json()
    assert [(level["price"], level["qty"]) for level in book["bids"]] == [(31, 5)]


def test_client_order_id_is_idempotent_and_conflicts_are_409(open_client: TestClient) -> None:
    market = new_market(open_client)
    body = {"market_id": market, "side": "buy", "price": 20, "qty": 2, "account": "ann", "client_order_id": "c-1"}
    first = place(open_client, **body)
    again = place(open_client, **body)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["order_id"] == again.json()["order_id"]
    changed = place(open_client, **{**body, "qty": 3})
    assert (changed.status_code, changed.json()["error"]["field"]) == (409, "client_order_id")
    assert open_client.get(f"/v1/markets/{market}/book").json()["bids"] == [{"price": 20, "qty": 2, "orders": 1}]


def test_engine_rejections_are_422_with_the_reason(open_client: TestClient) -> None:
    market = new_market(open_client)
    place(open_client, market_id=market, side="sell", price=50, qty=5, account="ann")
    post_only = place(open_client, market_id=market, side="buy", price=50, qty=1, account="bob", post_only=True)
    assert post_only.status_code == 422
    assert (post_only.json()["error"]["code"], post_only.json()["error"]["field"]) == (
        "POST_ONLY_WOULD_TAKE",
        "post_only",
    )
    fok = place(open_client, market_id=market, side="buy", price=50, qty=9, account="bob", tif="FOK")
    assert (fok.status_code, fok.json()["error"]["code"]) == (422, "FOK_CANNOT_FILL")
    assert open_client.get(f"/v1/orders/{fok.json()['error']['order_id']}").json()["status"] == "rejected"


def test_batch_gives_each_order_its_outcome(open_client: TestClient) -> None:
    market = new_market(open_client)
    orders = [
        {"market_id": market, "side": "sell", "price": 55, "qty": 2, "account": "ann"},
        {"market_id": market, "side": "buy", "price": 55, "qty": 2, "account": "bob"},
        {"market_id": market, "side": "buy", "price": 0, "qty": 2, "account": "bob"},
        {"market_id": "no-such-market", "side": "buy", "price": 5, "qty": 2, "account": "bob"},
    ]
    response = open_client.post("/v1/orders/batch", json={"orders": orders})
    assert response.status_code == 200
    items = response.json()["items"]
    assert [item["status"] for item in items] == [201, 201, 400, 404]
    assert items[1]["order"]["status"] == "filled"
    assert items[2]["error"]["field"] == "price"
    too_many = open_client.post("/v1/orders/batch", json={"orders": orders * 26})
    assert too_many.status_code == 422


def test_error_bodies_name_the_field_and_never_500(open_client: TestClient) -> None:
    assert open_client.get("/v1/orders/999999999").status_code == 404
    assert open_client.get("/v1/markets/absent").status_code == 404
    not_json = open_client.post("/v1/orders", content=b"{nope", headers={"content-type": "application/json"})
    assert (not_json.status_code, not_json.json()["error"]["field"]) == (400, "body")
    huge = open_client.post("/v1/orders", content=b"x" * (65 * 1024), headers={"content-type": "application/json"})
    assert (huge.status_code, huge.json()["error"]["field"]) == (413, "body")
    unknown = place(open_client, market_id="absent", side="buy", price=5, qty=1)
    assert (unknown.status_code, unknown.json()["error"]["field"]) == (404, "market_id")
    wrong_type = place(open_client, side="buy", price="fifty", qty=1)
    assert (wrong_type.status_code, wrong_type.json()["error"]["field"]) == (422, "price")
    extra = place(open_client, side="buy", price=5, qty=1, colour="red")
    assert (extra.status_code, extra.json()["error"]["field"], extra.json()["error"]["code"]) == (
        400,
        "colour",
        "UNKNOWN_FIELD",
    )


def test_engine_health_ready_and_metrics(open_client: TestClient) -> None:
    assert open_client.get("/health").json() == {"status": "ok", "auth": "open"}
    wait_until(lambda: open_client.get("/ready").status_code == 200, message="ready")
    engine = open_client.get("/v1/engine").json()
    assert engine["epoch"] >= 1
    assert len(engine["state_hash"]) == 64
    assert engine["inputs"] >= 1
    assert place(open_client, side="buy", price=5, qty=1).status_code == 201  # served ahead of FastAPI's routing
    metrics = open_client.get("/metrics").text
    assert 'matchbox_http_requests_total{method="POST",route="/v1/orders",status="201"}' in metrics
    assert "matchbox_engine_lag_entries" in metrics


# --------------------------------------------------------------------------- history (analytics consumer)


def test_candles_and_stats_come_from_the_analytics_consumer(
    open_client: TestClient, exchange_url: str, data_dir: Path
) -> None:
    market = new_market(open_client)
    assert place(open_client, market_id=market, side="sell", price=55, qty=4, account="s").status_code == 201
    assert place(open_client, market_id=market, side="sell", price=57, qty=5, account="s").status_code == 201
    assert place(open_client, market_id=market, side="buy", price=57, qty=6, account="b").json()["status"] == "filled"
    assert place(open_client, market_id=market, side="buy", price=52, qty=3, account="b").status_code == 201
    database = open_database(None, data_dir)
    bus = Bus.connect(exchange_url)
    try:
        consumer = GroupConsumer(bus, AnalyticsSink(database), ConsumerConfig(group="analytics", block_ms=10))
        consumer.ensure_group()
        assert consumer.drain() > 0
    finally:
        bus.close()
        database.dispose()
    candles = open_client.get(f"/v1/markets/{market}/candles", params={"interval": "1h"}).json()["items"]
    assert len(candles) == 1  # both trades within the same hour, unless the test straddles one
    (candle,) = candles
    assert (candle["open"], candle["high"], candle["low"], candle["close"]) == (55, 57, 55, 57)
    assert (candle["volume"], candle["trades"]) == (6, 2)
    assert candle["vwap"] == pytest.approx((55 * 4 + 57 * 2) / 6, abs=1e-4)
    stats = open_client.get(f"/v1/markets/{market}/stats").json()
    assert (stats["last_price"], stats["last_qty"], stats["volume_24h"], stats["trades_24h"]) == (57, 2, 6, 2)
    assert (stats["best_bid"], stats["best_ask"], stats["spread"], stats["mid"]) == (52, 57, 5, 54.5)
    metrics = open_client.get("/metrics").text
    assert 'matchbox_consumer_pending_entries{group="analytics"} 0.0' in metrics
    assert 'matchbox_consumer_lag_entries{group="analytics"}' in metrics


def test_history_errors_name_the_field(open_client: TestClient) -> None:
    market = new_market(open_client)
    assert open_client.get("/v1/markets/absent/candles").status_code == 404
    bad_interval = open_client.get(f"/v1/markets/{market}/candles", params={"interval": "7m"})
    assert (bad_interval.status_code, bad_interval.json()["error"]["field"]) == (422, "interval")
    backwards = open_client.get(f"/v1/markets/{market}/candles", params={"from_ms": 2000, "to_ms": 1000})
    assert (backwards.status_code, backwards.json()["error"]["field"]) == (400, "to_ms")
    assert open_client.get(f"/v1/markets/{market}/stats").json()["volume_24h"] == 0  # not seen by analytics yet


# --------------------------------------------------------------------------- WebSocket


def test_websocket_plain_feed_trades_book_and_orders(open_client: TestClient) -> None:
    market = new_market(open_client)
    with open_client.websocket_connect("/ws") as plain, open_client.websocket_connect("/v1/ws") as subscriber:
        for channel, key, value in (
            ("trades", "market_id", market),
            ("book", "market_id", market),
            ("orders", "account", "bob"),
        ):
            subscriber.send_json({"type": "subscribe", "channel": channel, key: value})
        received = [subscriber.receive_json() for _ in range(4)]
        assert [(m["type"], m["channel"], m["seq"]) for m in received] == [
            ("subscribed", f"trades:{market}", 0),
            ("subscribed", f"book:{market}", 0),  # the acknowledgement comes before the snapshot
            ("snapshot", f"book:{market}", 1),
            ("subscribed", "orders:bob", 0),
        ]
        assert (received[2]["bids"], received[2]["asks"]) == ([], [])
        place(open_client, market_id=market, side="sell", price=60, qty=3, account="ann")
        place(open_client, market_id=market, side="buy", price=60, qty=2, account="bob")
        fill = plain.receive_json()  # the seed's plain feed: its fields, and time in ns as it has it
        assert (fill["type"], fill["channel"], fill["price"], fill["qty"], fill["market_id"]) == (
            "fill",
            "fills",
            60,
            2,
            market,
        )
        assert fill["timestamp"] // 1_000_000 == fill["time_ms"]
        messages = [subscriber.receive_json() for _ in range(5)]  # 2 book deltas, a trade, 2 of bob's events
        by_channel: dict[str, list[dict[str, Any]]] = {}
        for message in messages:
            by_channel.setdefault(message["channel"], []).append(message)
        assert {channel: [m["seq"] for m in found] for channel, found in by_channel.items()} == {
            f"book:{market}": [2, 3],  # each subscription numbered on from its snapshot, contiguously
            f"trades:{market}": [1],
            "orders:bob": [1, 2],
        }
        deltas = by_channel[f"book:{market}"]
        assert [(d["type"], d["side"], d["qty"]) for d in deltas] == [("delta", "ask", 3), ("delta", "ask", 1)]
        assert all(a["sequence"] < b["sequence"] for a, b in itertools.pairwise(deltas))
        (trade,) = by_channel[f"trades:{market}"]
        assert (trade["type"], trade["price"], trade["qty"], trade["taker_side"]) == ("trade", 60, 2, "buy")
        accepted, executed = by_channel["orders:bob"]
        assert (accepted["type"], accepted["side"], accepted["price"]) == ("OrderAccepted", "buy", 60)
        assert (accepted["tif"], accepted["kind"]) == ("GTC", "limit")  # enums as REST writes them
        assert (executed["type"], executed["price"], executed["taker_side"]) == ("TradeExecuted", 60, "buy")
        assert executed["time_ms"] == trade["time_ms"] == fill["time_ms"]
        subscriber.send_json({"type": "unsubscribe", "channel": "trades", "market_id": market})
        assert subscriber.receive_json() == {"type": "unsubscribed", "channel": f"trades:{market}"}


def test_websocket_speaks_odds_and_back_lay_as_rest_does_live_and_resumed(open_client: TestClient) -> None:
    market = new_market(open_client, "odds")
    backer, layer = fresh("backer"), fresh("layer")
    query = f"subscribe=trades:{market},orders:{backer},orders:{layer}"
    with open_client.websocket_connect(f"/v1/ws?subscribe=book:{market}") as probe:
        start = data_messages(probe, 1)[0]["id"]  # the stream as of now: every event below comes after it
    with open_client.websocket_connect(f"/v1/ws?{query}") as ws:
        back = place(open_client, market_id=market, side="back", odds=2.5, stake=10, account=backer).json()
        lay = place(open_client, market_id=market, side="lay", type="market", tif="IOC", stake=4, account=layer).json()
        refused = place(open_client, market_id=market, side="lay", odds=2.0, stake=1, tif="FOK", account=layer)
        cancelled = open_client.delete(f"/v1/orders/{back['order_id']}", params={"account": backer}).json()
        live = data_messages(ws, 8)
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"type": "pong", "channel": None}  # and nothing else came
    back_accepted, rested, lay_accepted, trade, *executed, rejected, gone = live
    rest_trade = open_client.get(f"/v1/markets/{market}/trades").json()["items"][0]
    assert (trade["channel"], trade["price"], trade["taker_side"]) == (f"trades:{market}", 2.5, "lay")
    assert {key: trade[key] for key in rest_trade} == rest_trade  # the feed's trade is REST's, to the field
    assert [(m["type"], m["price"], m["taker_side"]) for m in executed] == [("TradeExecuted", 2.5, "lay")] * 2
    rest_back = open_client.get(f"/v1/orders/{back['order_id']}").json()
    assert (back_accepted["type"], back_accepted["side"], back_accepted["price"]) == ("OrderAccepted", "back", 2.5)
    assert (back_accepted["side"], back_accepted["price"]) == (rest_back["side"], rest_back["price"])
    assert (back_accepted["tif"], back_accepted["kind"]) == (rest_back["tif"], rest_back["type"]) == ("GTC", "limit")
    assert (rested["type"], rested["side"], rested["price"], rested["remaining"]) == ("OrderRested", "back", 2.5, 10)
    rest_lay = open_client.get(f"/v1/orders/{lay['order_id']}").json()
    assert (lay_accepted["side"], lay_accepted["tif"], lay_accepted["kind"]) == ("lay", "IOC", "market")
    assert (rest_lay["side"], rest_lay["tif"], rest_lay["type"]) == ("lay", "IOC", "market")
    assert lay_accepted["price"] == 1000  # a market lay's worst price: the top of the odds ladder
    assert rest_lay["fills"][0]["price"] == trade["price"]
    assert (rejected["type"], rejected["reason"]) == ("Rejected", "FOK_CANNOT_FILL")
    assert (
        open_client.get(f"/v1/orders/{refused.json()['error']['order_id']}").json()["reject_reason"]
        == refused.json()["error"]["code"]
    )
    assert refused.json()["error"]["code"] == rejected["reason"]
    assert (gone["type"], gone["reason"], gone["cancelled_qty"]) == ("OrderCancelled", "USER", 6)
    assert gone["reason"] == cancelled["cancel_reason"]
    with open_client.websocket_connect(f"/v1/ws?last_id={start}&{query}") as resumed:
        history = data_messages(resumed, 8)
        resumed.send_json({"type": "ping"})
        assert resumed.receive_json() == {"type": "pong", "channel": None}
    assert history == live


def test_websocket_rejects_bad_messages_politely(open_client: TestClient) -> None:
    with open_client.websocket_connect("/v1/ws") as ws:
        ws.send_text("not json")
        assert ws.receive_json()["type"] == "error"
        ws.send_json({"type": "subscribe", "channel": "candles", "market_id": "x"})
        assert ws.receive_json()["type"] == "error"
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"type": "pong", "channel": None}


def test_a_second_app_sees_what_the_first_accepted(open_client: TestClient, exchange_url: str) -> None:
    market = new_market(open_client)
    order = place(open_client, market_id=market, side="buy", price=33, qty=4, account="ann").json()
    settings = Settings(
        open_access=True, redis_url=exchange_url, admin_token="test-admin", durability=Durability.EVERYSEC
    )
    with TestClient(create_app(settings)) as other:
        assert other.get(f"/v1/orders/{order['order_id']}").json()["status"] == "open"
        assert other.get(f"/v1/markets/{market}/book").json()["bids"] == [{"price": 33, "qty": 4, "orders": 1}]


# --------------------------------------------------------------------------- failure modes


@pytest.mark.e2e  # waits out the outcome timeout with no leader
def test_without_a_leader_orders_are_accepted_as_pending_202(tmp_path_factory: pytest.TempPathFactory) -> None:
    with EmbeddedValkey(tmp_path_factory.mktemp("lonely"), fsync="everysec") as server:
        settings = Settings(
            open_access=True,
            redis_url=server.url,
            durability=Durability.EVERYSEC,
            outcome_timeout=0.2,
            startup_catch_up_seconds=1,
        )
        with TestClient(create_app(settings)) as lonely:
            response = lonely.post("/v1/orders", json={"market_id": "default", "side": "buy", "price": 5, "qty": 1})
            # the default market is not there yet either: no engine has created it
            assert (response.status_code, response.json()["error"]["field"]) == (404, "market_id")
            assert lonely.get("/ready").status_code == 503
            journal = Bus.connect(server.url)
            # the default market's creation waits in the journal for an engine (it is submitted once
            # the instance has read the empty output stream to its end: a moment after start)
            wait_until(lambda: journal.client.xlen(journal.keys.input) == 1, message="the market's creation")
            journal.close()


@pytest.mark.e2e  # waits out a leader's failover
def test_orders_wait_out_a_failover_as_202_pending(exchange_url: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    with EmbeddedValkey(tmp_path_factory.mktemp("failover"), fsync="everysec") as server, ExitStack() as engine:
        engine.enter_context(running_leader(server.url))
        settings = Settings(open_access=True, redis_url=server.url, durability=Durability.EVERYSEC, outcome_timeout=0.3)
        with TestClient(create_app(settings)) as api:
            assert api.post("/v1/orders", json={"side": "sell", "price": 7, "qty": 1}).status_code == 201
            engine.close()  # the only engine goes away
            pending = api.post("/v1/orders", json={"side": "buy", "price": 7, "qty": 1})
            assert pending.status_code == 202
            assert pending.json()["status"] == "pending"
            order_id = pending.json()["order_id"]
            with running_leader(server.url):
                wait_until(
                    lambda: api.get(f"/v1/orders/{order_id}").status_code == 200, message="the successor's outcome"
                )
                assert api.get(f"/v1/orders/{order_id}").json()["status"] == "filled"


@pytest.mark.e2e  # waits out a Redis that is down
def test_redis_down_is_503_not_500(tmp_path_factory: pytest.TempPathFactory) -> None:
    server = EmbeddedValkey(tmp_path_factory.mktemp("down"), fsync="everysec").start()
    settings = Settings(
        open_access=True,
        redis_url=server.url,
        durability=Durability.EVERYSEC,
        outcome_timeout=0.2,
        startup_catch_up_seconds=1,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as api:
        server.kill()
        response = api.post("/v1/orders", json={"market_id": "default", "side": "buy", "price": 5, "qty": 1})
        assert response.status_code in (404, 503)  # no market known, or Redis refused the submission
        assert api.get("/v1/engine").status_code == 503
        assert api.get("/ready").status_code == 503


def test_a_slow_websocket_client_is_cut_off_not_waited_for() -> None:
    open_client = Client()
    open_client.queue = asyncio.Queue(3)
    for i in range(3):
        open_client.offer({"i": i})
    assert not open_client.overflowed
    open_client.offer({"i": 3})
    assert open_client.overflowed
    assert open_client.queue.get_nowait() is None  # the sender's cue to close with a reason
    open_client.offer({"i": 4})  # ignored from now on
    assert open_client.queue.empty()


def test_a_gtd_order_expires_on_time_with_no_other_traffic(open_client: TestClient) -> None:
    market = new_market(open_client)
    expires_at = int(time.time() * 1000) + 300
    body = {"market_id": market, "side": "buy", "price": 20, "qty": 1, "tif": "GTD", "expires_at_ms": expires_at}
    order = place(open_client, account="ann", **body).json()
    assert order["status"] == "open"

    def expired() -> bool:
        return bool(open_client.get(f"/v1/orders/{order['order_id']}").json()["status"] == "cancelled")

    wait_until(expired, timeout=5, message="the GTD order to expire")
    assert open_client.get(f"/v1/orders/{order['order_id']}").json()["cancel_reason"] == "EXPIRED"
    assert open_client.get(f"/v1/markets/{market}/book").json()["bids"] == []


def test_cancel_all_with_nothing_to_cancel_answers_at_once(open_client: TestClient) -> None:
    market = new_market(open_client)
    started = time.monotonic()
    response = open_client.delete("/v1/orders", params={"market_id": market, "account": "nobody"})
    assert (response.status_code, response.json()["cancelled"]) == (200, [])
    assert time.monotonic() - started < 3.0  # it did not wait out the outcome timeout (5 s here)


def test_a_trade_of_a_market_the_hub_does_not_know_is_sent_in_plain_ticks() -> None:
    trade = TradeExecuted(1, 5, "unknown", 9, 125, 3, Side.SELL, 1, 2, "ann", "bob", 0, 0)
    messages = dict(channel_messages(trade, "1-1", 1, Hub(Projection()).scheme_of))
    assert (messages["trades:unknown"]["price"], messages["trades:unknown"]["taker_side"]) == (125, "sell")


def test_after_a_resume_live_messages_already_sent_from_history_are_skipped() -> None:
    hub = Hub(Projection())
    open_client = hub.register()
    open_client.skip_through = {0: "1000-7"}  # history went up to here; the tail is still behind it
    trade = TradeExecuted(1, 1, "m", 1, 50, 2, Side.BUY, 1, 2, "ann", "bob", 0, 0)
    for n, stream_id in ((6, "1000-6"), (7, "1000-7"), (8, "1001-8")):
        hub.publish(0, stream_id, DecodedEvent(n, "1000-0", trade), [])
    sent: list[dict[str, Any]] = []
    while not open_client.queue.empty():
        message = open_client.queue.get_nowait()
        assert message is not None
        sent.append(message)
    assert [message["n"] for message in sent] == [8]  # 6 and 7 came from history already
    assert open_client.skip_through == {}


def test_every_error_code_is_in_the_documented_table_and_the_schema() -> None:
    """docs/api.md's table of codes is the code's, neither more nor less; the OpenAPI schema lists them."""
    table = (Path(__file__).parent.parent / "docs" / "api.md").read_text()
    documented = re.findall(r"^\| `([A-Z_]+)` \|", table, flags=re.MULTILINE)
    assert sorted(documented) == sorted(ALL_CODES)
    assert len(documented) == len(set(documented))
    schema = create_app(Settings()).openapi()["components"]["schemas"]["ErrorDetail"]
    assert sorted(schema["properties"]["code"]["enum"]) == sorted(ALL_CODES)


def test_every_number_of_the_openapi_schema_says_its_unit() -> None:
    """Units said once, and where a bot writer reads them: each numeric field has a description."""
    schemas = create_app(Settings()).openapi()["components"]["schemas"]
    unsaid = []
    for name, schema in schemas.items():
        for field, spec in schema.get("properties", {}).items():
            kinds = {spec.get("type"), *(branch.get("type") for branch in spec.get("anyOf", []))}
            if kinds & {"integer", "number"} and not spec.get("description"):
                unsaid.append(f"{name}.{field}")
    assert unsaid == []


def test_a_resume_from_between_two_messages_of_one_event_sends_the_rest(open_client: TestClient) -> None:
    """A trade sends a subscriber of ``trades:m`` and ``orders:bob`` two messages: a connection cut
    after the first, resumed from its id, still gets the second (the first carries the cursor
    before the event, so the event comes again, whole)."""
    market = new_market(open_client)
    query = f"subscribe=trades:{market},orders:bob"
    place(open_client, market_id=market, side="sell", price=60, qty=3, account="ann")
    with open_client.websocket_connect(f"/v1/ws?{query}") as ws:
        place(open_client, market_id=market, side="buy", price=60, qty=2, account="bob")
        first = next(m for m in data_messages(ws, 3) if m["type"] == "trade")  # accepted, trade, fill
    with open_client.websocket_connect(f"/v1/ws?{query}&last_id={first['id']}") as resumed:
        again = data_messages(resumed, 2)
    assert [m["type"] for m in again] == ["trade", "TradeExecuted"]
    assert {k: v for k, v in again[0].items() if k != "seq"} == {k: v for k, v in first.items() if k != "seq"}
    assert again[1]["trade_id"] == first["trade_id"]


def test_a_market_s_trades_page_from_the_live_window_into_the_database_each_once(
    open_client: TestClient, exchange_url: str, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the live window (4 trades here, 1,000 in production) the pages come from the
    persistence consumer's database: each trade once, newest first, time filters included; and
    a 503, never a page that skips trades, while the database has not caught up."""
    monkeypatch.setattr(projection_module, "RECENT_TRADES", 4)
    market = new_market(open_client)
    for price in range(50, 60):
        place(open_client, market_id=market, side="sell", price=price, qty=1, account="ann")
        assert place(open_client, market_id=market, side="buy", price=price, qty=1, account="bob").status_code == 201

    def pages(**params: Any) -> list[int]:
        seen, cursor = [], None
        while True:
            answer = open_client.get(
                f"/v1/markets/{market}/trades", params={"limit": 3, **params, **({"cursor": cursor} if cursor else {})}
            )
            assert answer.status_code == 200, answer.text
            seen += [t["trade_id"] for t in answer.json()["items"]]
            cursor = answer.json()["next"]
            if cursor is None:
                return seen

    first = open_client.get(f"/v1/markets/{market}/trades", params={"limit": 3}).json()
    behind = open_client.get(f"/v1/markets/{market}/trades", params={"limit": 3, "cursor": first["next"]})
    assert (behind.status_code, behind.json()["error"]["code"]) == (503, "UNAVAILABLE")  # not written yet
    database = drain_persistence(exchange_url, data_dir)
    try:
        with database.connect() as stored:
            query = sa.text("SELECT trade_id, ts FROM trades WHERE market_id = :m")
            rows = stored.execute(query, {"m": market}).all()
    finally:
        database.dispose()
    everything = sorted((trade_id for trade_id, _ in rows), reverse=True)
    assert len(everything) == 10
    assert pages() == everything
    times = sorted({ts // 1_000_000 for _, ts in rows})
    start, end = times[len(times) // 3], times[-1]
    within = [trade_id for trade_id, ts in sorted(rows, reverse=True) if start <= ts // 1_000_000 < end]
    assert pages(from_ms=start, to_ms=end) == within


def test_a_database_that_stops_answering_is_a_503_in_the_error_shape(exchange_url: str, tmp_path: Path) -> None:
    """A query the consumers' database fails (here: its candles table gone, as after an operator
    restored an older file) is a 503 UNAVAILABLE like an unreachable Redis, never a plain 500."""
    settings = Settings(
        open_access=True,
        redis_url=exchange_url,
        admin_token="test-admin",
        durability=Durability.EVERYSEC,
        data_dir=tmp_path,
    )
    with TestClient(create_app(settings)) as api:
        assert api.get("/v1/markets/default/candles").status_code == 200  # opened and migrated
        stored = open_database(None, tmp_path)
        with stored.begin() as connection:
            connection.execute(sa.text("DROP TABLE candles"))
        stored.dispose()
        answer = api.get("/v1/markets/default/candles")
        assert (answer.status_code, answer.json()["error"]["code"]) == (503, "UNAVAILABLE")


def test_an_order_s_stages_are_timed_from_the_api_through_the_leader_and_back(
    open_client: TestClient, exchange_url: str
) -> None:
    """Each commit stamps its first event with when the leader read its entries and matched them
    (field ``t``); the API adds when it submitted, saw the outcome and answered, into one
    histogram per stage. Here API and leader share a process (one clock), so every stage is there."""
    market = new_market(open_client)
    before = stage_counts(open_client)
    for price in (40, 41, 42):
        assert place(open_client, market_id=market, side="buy", price=price, qty=1, account="ann").status_code == 201
    after = stage_counts(open_client)
    assert {stage: after[stage] - before.get(stage, 0) for stage in after} == dict.fromkeys(
        ("journal", "to_engine", "match", "commit", "answer", "total"), 3.0
    )
    bus = Bus.connect(exchange_url)
    try:
        stamps = [fields[b"t"] for _, fields in bus.range(bus.keys.events, count=100_000) if b"t" in fields]
    finally:
        bus.close()
    read, matched = (int(part) for part in stamps[-1].split(b","))
    assert 0 < read <= matched <= time.monotonic_ns()


def stage_counts(client: TestClient) -> dict[str, float]:
    text = client.get("/v1/metrics").text
    found = re.findall(r'^matchbox_order_stage_seconds_count\{stage="(\w+)"\} (\S+)$', text, flags=re.MULTILINE)
    return {stage: float(count) for stage, count in found}


def test_a_rolling_upgrade_never_lets_an_engine_misread_the_journal(tmp_path: Path, data_dir: Path) -> None:
    """The leader records the journal version it reads. While the shard's leader is older than a
    command (an amend, an order's own self-trade rule, …), the API refuses that command, 503
    ENGINE_TOO_OLD, and writes nothing; plain orders go on. An engine older than one that has
    led the shard does not even compete for the lock."""
    with EmbeddedValkey(tmp_path, fsync="everysec") as server, running_leader(server.url):
        bus = Bus.connect(server.url)
        try:
            wait_until(lambda: bus.client.get(bus.keys.journal_version) == b"2", message="the leader's version")
            with TestClient(create_app(api_settings(server.url, data_dir, open_access=True))) as api:
                market = new_market(api)
                resting = place(api, market_id=market, side="buy", price=30, qty=5, account="ann").json()
                bus.client.set(bus.keys.journal_version, 1)  # as if an engine from before the amend led it
                length = bus.client.xlen(bus.keys.input)
                for refused in (
                    api.patch(f"/v1/orders/{resting['order_id']}", json={"price": 31}),
                    place(api, market_id=market, side="buy", price=30, qty=5, account="ann", on_suspend="lapse"),
                ):
                    assert (refused.status_code, refused.json()["error"]["code"]) == (503, "ENGINE_TOO_OLD")
                assert bus.client.xlen(bus.keys.input) == length  # nothing written
                plain = place(api, market_id=market, side="buy", price=29, qty=5, account="ann")
                assert plain.status_code == 201, plain.text
        finally:
            bus.close()
    with EmbeddedValkey(tmp_path / "newer", fsync="everysec") as server:
        bus = Bus.connect(server.url)
        try:
            bus.client.set(bus.keys.journal_version, 3)  # an engine newer than this code has led it
            with running_leader(server.url) as leader:
                wait_until(lambda: leader._told_too_new, message="the candidate to see the newer journal")
                assert leader.stats.terms == 0
                assert bus.client.get(bus.keys.leader) is None
        finally:
            bus.close()
