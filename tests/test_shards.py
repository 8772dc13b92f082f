"""Shards: markets placed on shards, ids that carry their shard, an API that routes by market and
by id, cash per shard, and one WebSocket cursor over every shard's stream.

Three shards on one private Valkey, each with its own engine leader (the same code runs them on
a Valkey Cluster, one shard per slot: tests/test_cluster.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from conftest import ADMIN, api_settings, data_messages, fresh, running_leader, wait_until
from matchbox.api import cursor
from matchbox.api.app import create_app
from matchbox.bus.commit import read_offset
from matchbox.bus.connection import Bus
from matchbox.bus.journal import Journal
from matchbox.bus.keys import MARKET_DIRECTORY, Keys
from matchbox.bus.server import EmbeddedValkey
from matchbox.consumers.batch import read_newest, tracked_witnesses
from matchbox.consumers.db import open_database
from matchbox.consumers.persistence import PersistenceSink
from matchbox.consumers.queries import account_balance
from matchbox.consumers.runner import ConsumerConfig, GroupConsumer
from matchbox.consumers.schema import balance_history, balances, trades
from matchbox.engine import Engine
from matchbox.engine.ids import SHARD_SHIFT, shard_id, shard_of
from matchbox.engine.snapshot import SnapshotError
from matchbox.engine.types import CreateMarket, PlaceOrder, Side, TickScheme, TradeExecuted
from matchbox.leader.apply import apply_entry

SHARDS = 3


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One Valkey holding three shards, a leader for each; yields the Redis URL."""
    with (
        EmbeddedValkey(tmp_path_factory.mktemp("valkey"), fsync="everysec") as server,
        running_leader(server.url, 0),
        running_leader(server.url, 1),
        running_leader(server.url, 2),
    ):
        yield server.url


@pytest.fixture(scope="module")
def api(sharded: str, data_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(api_settings(sharded, data_dir, shards=SHARDS, open_access=True))) as client:
        yield client


def new_market(api: TestClient, **fields: Any) -> dict[str, Any]:
    body = {"market_id": fresh("s"), "scheme": "binary", **fields}
    response = api.post("/v1/markets", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    market: dict[str, Any] = response.json()
    return market


def journal_length(url: str, shard: int) -> int:
    bus = Bus.connect(url, shard)
    try:
        return int(bus.client.xlen(bus.keys.input))
    finally:
        bus.close()


# --------------------------------------------------------------------------- ids


def test_an_engine_s_trade_ids_carry_its_shard_and_its_snapshot_restores_only_as_that_shard() -> None:
    engine = Engine(shard=5)
    engine.apply(CreateMarket(seq=1, ts=1_000_000, market_id="m", scheme=TickScheme.BINARY))
    ask = PlaceOrder(
        seq=2, ts=2_000_000, market_id="m", order_id=shard_id(5, 7), account="a", side=Side.SELL, price=50, qty=1
    )
    engine.apply(ask)
    bid = msgspec.structs.replace(ask, seq=3, order_id=shard_id(5, 8), account="b", side=Side.BUY)
    (trade,) = [e for e in engine.apply(bid) if isinstance(e, TradeExecuted)]
    assert (shard_of(trade.trade_id), shard_of(trade.maker_order_id)) == (5, 5)
    assert Engine.restore(engine.snapshot(), shard=5).state_hash() == engine.state_hash()
    with pytest.raises(SnapshotError, match="shard 5"):
        Engine.restore(engine.snapshot(), shard=0)
    with pytest.raises(ValueError, match="shard"):
        Engine(shard=1 << 11)


def test_a_journal_s_order_ids_carry_its_shard_on_both_sides_of_the_script(redis_url: str) -> None:
    """submit.lua counts the shard's own numbers (Lua's doubles hold 2**53); the API's answer and the
    leader's reading of the entry both make them whole, the same way."""
    bus = Bus.connect(redis_url, 3)
    order = PlaceOrder(seq=0, ts=0, market_id="m", order_id=0, account="a", side=Side.BUY, price=5, qty=1)
    submission = Journal(bus).submit(order, "cid-1")
    again = Journal(bus).submit(order, "cid-1")
    assert (shard_of(submission.order_id), submission.shard) == (3, 3)
    assert (again.status, again.order_id) == ("dup", submission.order_id)
    ((entry_id, fields),) = bus.range(bus.keys.input)
    engine = Engine(shard=3)
    engine.apply(CreateMarket(seq=0, ts=0, market_id="m", scheme=TickScheme.BINARY))
    (accepted, *_) = apply_entry(engine, entry_id.decode(), fields, 1)
    assert accepted.order_id == submission.order_id  # type: ignore[attr-defined]
    assert int(fields[b"oid"]) == submission.order_id & ((1 << SHARD_SHIFT) - 1)
    bus.close()


def test_a_cursor_holds_a_position_per_shard_and_refuses_what_is_not_one() -> None:
    positions = {0: "5-1", 1: "0-0", 2: "7-3"}
    assert cursor.decode(cursor.encode(positions), [0, 1, 2]) == positions
    assert cursor.encode({4: "5-1"}) == "5-1"  # one shard: the plain stream id, as before shards
    assert cursor.decode("5-1", [4]) == {4: "5-1"}
    unicode_digits = ("²:5-1,1:0-0,2:1-1", "0:٣-٣,1:0-0,2:1-1")  # digits to str.isdigit, not to int() or Redis
    for bad in (
        "5-1",
        "0:5-1,1:0-0",
        "0:5-1,1:0-0,9:1-1",
        "0:5-1,1:x,2:1-1",
        "0:5-1,1:0-0,2:1-1," * 20,
        *unicode_digits,
    ):
        with pytest.raises(cursor.CursorError):
            cursor.decode(bad, [0, 1, 2])


# --------------------------------------------------------------------------- the API over three shards


def test_markets_go_to_the_shard_with_fewest_or_the_one_named_and_stay_there(api: TestClient, sharded: str) -> None:
    before = {m["market_id"]: m["shard"] for m in api.get("/v1/markets").json()["items"]}
    placed = [new_market(api)["shard"] for _ in range(SHARDS)]
    counts = {n: list(before.values()).count(n) + placed.count(n) for n in range(SHARDS)}
    assert max(counts.values()) - min(counts.values()) <= 1, counts  # spread evenly
    named = new_market(api, shard=2)
    assert named["shard"] == 2
    assert {m["market_id"]: m["shard"] for m in api.get("/v1/markets").json()["items"]}[named["market_id"]] == 2
    again = api.post(
        "/v1/markets", json={"market_id": named["market_id"], "scheme": "binary", "shard": 1}, headers=ADMIN
    )
    assert again.status_code == 409
    # placed by another instance on shard 1 but not created yet: naming another shard is refused
    bus = Bus.connect(sharded)
    bus.client.hset(MARKET_DIRECTORY, "elsewhere", 1)
    bus.close()
    refused = api.post("/v1/markets", json={"market_id": "elsewhere", "scheme": "binary", "shard": 0}, headers=ADMIN)
    assert (refused.status_code, refused.json()["error"]["field"]) == (409, "shard")
    unplaced = api.post("/v1/markets", json={"market_id": "elsewhere", "scheme": "binary"}, headers=ADMIN)
    assert (unplaced.status_code, unplaced.json()["shard"]) == (201, 1)  # where the directory has it
    off = api.post("/v1/markets", json={"market_id": fresh("s"), "scheme": "binary", "shard": 7}, headers=ADMIN)
    assert (off.status_code, off.json()["error"]["field"]) == (404, "shard")


def test_orders_go_to_their_market_s_shard_and_cancels_find_it_by_the_id(api: TestClient, sharded: str) -> None:
    market = new_market(api, shard=2)["market_id"]
    lengths = [journal_length(sharded, n) for n in range(SHARDS)]
    ask = api.post("/v1/orders", json={"market_id": market, "side": "sell", "price": 40, "qty": 5, "account": "s1"})
    bid = api.post("/v1/orders", json={"market_id": market, "side": "buy", "price": 40, "qty": 2, "account": "s2"})
    assert ask.status_code == bid.status_code == 201, (ask.text, bid.text)
    ask_id = ask.json()["order_id"]
    assert shard_of(ask_id) == shard_of(bid.json()["order_id"]) == 2
    assert shard_of(bid.json()["fills"][0]["trade_id"]) == 2
    assert api.get(f"/v1/orders/{ask_id}").json()["remaining"] == 3
    reduced = api.patch(f"/v1/orders/{ask_id}", json={"reduce_by": 1, "account": "s1"})
    assert (reduced.status_code, reduced.json()["remaining"]) == (200, 2)
    cancelled = api.delete(f"/v1/orders/{ask_id}", params={"account": "s1"})
    assert (cancelled.status_code, cancelled.json()["status"]) == (200, "cancelled")
    grown = [journal_length(sharded, n) - lengths[n] for n in range(SHARDS)]
    assert grown == [0, 0, 4]  # two orders, a reduce and a cancel: all on shard 2, none elsewhere
    batch = api.post(
        "/v1/orders/batch",
        json={
            "orders": [
                {
                    "market_id": new_market(api, shard=s)["market_id"],
                    "side": "buy",
                    "price": 5,
                    "qty": 1,
                    "account": "s3",
                }
                for s in (1, 0, 2)
            ]
        },
    )
    assert [shard_of(item["order"]["order_id"]) for item in batch.json()["items"]] == [1, 0, 2]
    unknown = api.delete(f"/v1/orders/{shard_id(9, 1)}", params={"account": "s1"})
    assert (unknown.status_code, unknown.json()["error"]["field"]) == (404, "order_id")


def test_cash_lives_per_shard_and_the_account_shows_each_part(api: TestClient) -> None:
    account = fresh("cash")
    market = new_market(api, shard=1, collateral=True)["market_id"]
    for shard, amount in ((1, 300), (0, 5_000)):
        funded = api.post(
            f"/v1/admin/accounts/{account}/deposit", json={"amount": amount, "shard": shard}, headers=ADMIN
        )
        assert funded.status_code == 200, funded.text
    balance = api.get("/v1/account", params={"account": account}).json()
    assert (balance["total"], balance["free"]) == (5_300, 5_300)
    assert [(p["shard"], p["total"]) for p in balance["shards"]] == [(0, 5_000), (1, 300), (2, 0)]
    # a YES at 40 c costs 40 a contract, from the market's shard's cash: 7 is 280, 8 is 320
    fits = api.post("/v1/orders", json={"market_id": market, "side": "buy", "price": 40, "qty": 7, "account": account})
    assert fits.status_code == 201, fits.text
    short = api.post("/v1/orders", json={"market_id": market, "side": "buy", "price": 40, "qty": 1, "account": account})
    assert (short.status_code, short.json()["error"]["code"]) == (422, "INSUFFICIENT_FUNDS")
    parts = {p["shard"]: p for p in api.get("/v1/account", params={"account": account}).json()["shards"]}
    assert (parts[1]["reserved"], parts[1]["free"], parts[0]["free"]) == (280, 20, 5_000)
    off = api.post(f"/v1/admin/accounts/{account}/withdraw", json={"amount": 1, "shard": 2}, headers=ADMIN)
    assert (off.status_code, off.json()["error"]["code"]) == (409, "INSUFFICIENT_FUNDS")


def test_a_heartbeat_arms_the_switch_on_every_shard(api: TestClient, sharded: str) -> None:
    account = fresh("hb")
    lengths = [journal_length(sharded, n) for n in range(SHARDS)]
    armed = api.post("/v1/account/heartbeat", json={"timeout_ms": 60_000}, params={"account": account})
    assert armed.status_code == 200, armed.text
    assert armed.json()["deadline_ms"] is not None
    assert [journal_length(sharded, n) - lengths[n] for n in range(SHARDS)] == [1, 1, 1]


def test_one_cursor_resumes_the_feed_of_every_shard_with_no_gap_and_no_repeat(api: TestClient) -> None:
    markets = [new_market(api, shard=s)["market_id"] for s in (1, 2)]
    subscribe = ",".join(f"trades:{m}" for m in markets)

    def trade(market: str) -> None:
        for side in ("sell", "buy"):
            placed = api.post(
                "/v1/orders", json={"market_id": market, "side": side, "price": 50, "qty": 1, "account": side}
            )
            assert placed.status_code == 201, placed.text

    with api.websocket_connect(f"/v1/ws?subscribe={subscribe}") as ws:
        trade(markets[0])
        trade(markets[1])
        first, second = data_messages(ws, 2)
    assert {first["market_id"], second["market_id"]} == set(markets)
    assert set(cursor.decode(second["id"], range(SHARDS))) == set(range(SHARDS))
    missed = []
    for market in (markets[1], markets[0], markets[1]):
        trade(market)
        missed.append(market)
    with api.websocket_connect(f"/v1/ws?last_id={first['id']}&subscribe={subscribe}") as resumed:
        replayed = data_messages(resumed, 4)
        resumed.send_json({"type": "ping"})
        assert resumed.receive_json() == {"type": "pong", "channel": None}  # and nothing else came
    # shard by shard: the one after the cursor and the three missed, each once
    missed_ids = [
        t["trade_id"]
        for m in set(missed)
        for t in api.get(f"/v1/markets/{m}/trades").json()["items"][: missed.count(m)]
    ]
    assert sorted(m["trade_id"] for m in replayed) == sorted([second["trade_id"], *missed_ids])
    with api.websocket_connect(f"/v1/ws?last_id={replayed[-1]['id']}&subscribe={subscribe}") as caught_up:
        caught_up.send_json({"type": "ping"})
        assert data_messages(caught_up, 1) == [{"type": "pong", "channel": None}]  # nothing missed, nothing repeated
    with api.websocket_connect(f"/v1/ws?last_id={first['id'].split(',')[0]}") as refused:
        error = refused.receive_json()
        assert (error["error"]["field"], error["error"]["code"]) == ("last_id", "INVALID_CURSOR")
        with pytest.raises(WebSocketDisconnect):
            refused.receive_json()


def test_ready_names_the_shard_without_a_leader(sharded: str, data_dir: Path) -> None:
    """A fourth shard nobody leads: the instance that serves it is not ready, and says which."""
    settings = api_settings(sharded, data_dir, shards=SHARDS + 1, startup_catch_up_seconds=5.0)
    with TestClient(create_app(settings)) as four:
        wait_until(lambda: four.get("/ready").status_code == 503)
        assert four.get("/ready").json()["error"]["message"] == "shard 3: no engine leader holds the lock"
        assert four.get("/v1/engine", params={"shard": 2}).json()["shard"] == 2
        assert four.get("/v1/engine", params={"shard": 8}).status_code == 404
    assert Keys(3).prefix == "mb:{3}:"


# --------------------------------------------------------------------------- the cold path over three shards


def test_one_database_holds_every_shard_s_rows_each_tracked_on_its_own(
    api: TestClient, sharded: str, tmp_path: Path
) -> None:
    account = fresh("cold")
    for shard, amount in ((0, 100), (2, 7)):
        api.post(f"/v1/admin/accounts/{account}/deposit", json={"amount": amount, "shard": shard}, headers=ADMIN)
    market = new_market(api, shard=1)["market_id"]
    for side in ("sell", "buy"):
        api.post(
            "/v1/orders", json={"market_id": market, "side": side, "price": 30, "qty": 2, "account": account + side}
        )
    database = open_database(None, tmp_path)
    for shard in range(SHARDS):
        bus = Bus.connect(sharded, shard)
        sink = PersistenceSink(database, shard=shard)
        GroupConsumer(bus, sink, ConsumerConfig(group="persistence", block_ms=10)).drain()
        offset = read_offset(bus)
        assert offset is not None
        assert read_newest(database, "persistence", shard) == offset.last_event
        assert [w.last_event for w in tracked_witnesses(database, shard)] == [offset.last_event]
        bus.close()
    with database.connect() as connection:
        cash = connection.execute(
            sa.select(balances.c.shard, balances.c.total)
            .where(balances.c.account == account)
            .order_by(balances.c.shard)
        ).all()
        history = connection.execute(
            sa.select(balance_history.c.n).where(balance_history.c.account == account)
        ).scalars()
        traded = connection.execute(sa.select(trades.c.trade_id).where(trades.c.market_id == market)).scalars().all()
    assert [tuple(row) for row in cash] == [(0, 100), (2, 7)]  # one row per shard, not one overwriting the other
    assert sorted(shard_of(n) for n in history) == [0, 2]
    assert [shard_of(t) for t in traded] == [1]
    balance = account_balance(database, account)
    assert balance is not None
    assert balance.total == 107


def test_open_orders_page_through_every_shard_each_once(api: TestClient) -> None:
    account = fresh("pager")
    markets = {shard: new_market(api, shard=shard)["market_id"] for shard in range(SHARDS)}
    placed = []
    for shard in (2, 0, 1, 0, 2, 1, 0):
        body = {"market_id": markets[shard], "side": "buy", "price": 10, "qty": 1, "account": account}
        placed.append(api.post("/v1/orders", json=body).json()["order_id"])
    seen: list[int] = []
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"account": account, "limit": 2}
        if cursor is not None:
            params["cursor"] = cursor
        page = api.get("/v1/account/orders", params=params).json()
        seen += [item["order_id"] for item in page["items"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == sorted(placed, reverse=True)


def test_a_cancel_by_ids_answers_503_only_for_the_orders_of_a_shard_that_does_not_answer(
    tmp_path: Path, data_dir: Path
) -> None:
    """Two shards; shard 1's leader stops. A cancel by ids over both cancels shard 0's order (200)
    and answers 503 NOT_ANSWERED for shard 1's alone: one silent shard never fails the rest."""
    with EmbeddedValkey(tmp_path, fsync="everysec") as server, running_leader(server.url, 0):
        settings = api_settings(server.url, data_dir, shards=2, open_access=True, outcome_timeout=1.0)
        with running_leader(server.url, 1), TestClient(create_app(settings)) as api:
            ids = []
            markets = []
            for shard in (0, 1):
                market = new_market(api, shard=shard)["market_id"]
                markets.append(market)
                order = {"market_id": market, "side": "buy", "price": 5, "qty": 1, "account": "q"}
                placed = api.post("/v1/orders", json=order)
                assert placed.status_code == 201, placed.text
                ids.append(placed.json()["order_id"])
        market_zero = markets[0]
        with TestClient(create_app(settings)) as api:  # shard 1's leader has stopped
            answer = api.post("/v1/orders/cancel", json={"order_ids": ids, "account": "q"})
            assert answer.status_code == 200, answer.text
            items = answer.json()["items"]
            assert [item["status"] for item in items] == [200, 503]
            assert items[0]["order"]["status"] == "cancelled"
            assert items[1]["error"]["code"] == "NOT_ANSWERED"
            # shard 1's Redis now refuses the command itself (its journal is not a stream any more)
            again = api.post("/v1/orders", json={**order, "market_id": market_zero})
            bus = Bus.connect(server.url, 1)
            try:
                bus.client.delete(bus.keys.input)
                bus.client.set(bus.keys.input, "not a stream")
            finally:
                bus.close()
            answer = api.post(
                "/v1/orders/cancel", json={"order_ids": [again.json()["order_id"], ids[1]], "account": "q"}
            )
            assert answer.status_code == 200, answer.text
            items = answer.json()["items"]
            assert [(item["status"], item.get("error", {}).get("code")) for item in items] == [
                (200, None),
                (503, "UNAVAILABLE"),
            ]
