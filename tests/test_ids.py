"""The id rules (matchbox.engine.ids): the engine refuses a command naming a malformed account or
market id with one ``Rejected`` (MALFORMED_ID) that names no malformed id and changes nothing; the
API answers a 4xx naming the field, and journals nothing (over a real Valkey and engine leader)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from conftest import ADMIN, Driver
from matchbox.bus.connection import Bus
from matchbox.engine.ids import MAX_ID_LENGTH, valid_account, valid_market_id
from matchbox.engine.types import (
    CancelAll,
    CancelOrder,
    CloseMarket,
    Command,
    CreateMarket,
    Deposit,
    Event,
    Heartbeat,
    MarketCreated,
    OrderCancelled,
    PlaceOrder,
    ReduceOrder,
    Rejected,
    RejectReason,
    ResumeMarket,
    SettleMarket,
    Side,
    SuspendMarket,
    TickScheme,
    TradeExecuted,
    Withdraw,
)

# What each rule refuses: a NUL byte (PostgreSQL refuses it in text), control characters, a
# final newline (which Python's "$" alone would let through), spaces, non-ASCII, a lone
# surrogate (no UTF-8 encoder takes it), too long, and nothing at all.
MALFORMED = ["x\x00y", "x\ny", "xy\n", "x y", "x/y", "é", "x\ud800", "a" * (MAX_ID_LENGTH + 1), ""]


@pytest.mark.parametrize("bad", MALFORMED)
def test_neither_rule_takes_a_malformed_id(bad: str) -> None:
    assert not valid_account(bad)
    assert not valid_market_id(bad)


def test_the_rules_differ_in_the_colon_alone() -> None:
    for good in ("a", "acct-1f2e", "A.b_c-9", "a" * MAX_ID_LENGTH):
        assert valid_account(good)
        assert valid_market_id(good)
    assert valid_market_id("derby:home")
    assert not valid_account("derby:home")


def rejection(events: list[Event]) -> Rejected:
    assert len(events) == 1, events
    assert isinstance(events[0], Rejected), events
    return events[0]


def funded_driver() -> Driver:
    """A ticks market "m", and account "a" with money and one resting order (id 1)."""
    driver = Driver()
    driver.market()
    driver.apply(Deposit, account="a", amount=1_000)
    driver.place(Side.BUY, 10, 5)
    return driver


BAD = "x\x00y"
# Every command that names an account or a market id, with a malformed one there.
COMMANDS: list[tuple[type[Command], dict[str, Any]]] = [
    (CreateMarket, {"market_id": BAD, "scheme": TickScheme.BINARY}),
    (CreateMarket, {"market_id": "new market", "scheme": TickScheme.BINARY}),
    (SuspendMarket, {"market_id": BAD}),
    (ResumeMarket, {"market_id": BAD}),
    (CloseMarket, {"market_id": BAD}),
    (SettleMarket, {"market_id": BAD, "outcome": "yes"}),
    (PlaceOrder, {"market_id": "m", "order_id": 9, "account": BAD, "side": Side.BUY, "price": 10, "qty": 1}),
    (PlaceOrder, {"market_id": BAD, "order_id": 9, "account": "a", "side": Side.BUY, "price": 10, "qty": 1}),
    (CancelOrder, {"order_id": 1, "account": BAD}),
    (ReduceOrder, {"order_id": 1, "reduce_by": 1, "account": BAD}),
    (CancelAll, {"market_id": "m", "account": BAD}),
    (CancelAll, {"market_id": BAD, "account": "a"}),
    (Deposit, {"account": BAD, "amount": 5}),
    (Withdraw, {"account": BAD, "amount": 5}),
    (Heartbeat, {"account": BAD, "timeout_ms": 1_000}),
    (Deposit, {"account": "a:b", "amount": 5}),  # a colon is a market id's, not an account's
]


@pytest.mark.parametrize(("command", "fields"), COMMANDS, ids=[command.__name__ for command, _ in COMMANDS])
def test_a_malformed_id_is_rejected_and_named_nowhere(command: type[Command], fields: dict[str, Any]) -> None:
    driver = funded_driver()
    before = driver.engine.state_hash()
    found = rejection(driver.apply(command, **fields))
    assert found.reason is RejectReason.MALFORMED_ID
    assert int(found.reason) == 501
    assert found.command == command.__name__
    assert valid_account(found.account) or found.account == ""
    assert valid_market_id(found.market_id) or found.market_id == ""
    assert driver.engine.state_hash() == before


def test_a_deposit_to_an_account_with_a_nul_byte_is_rejected() -> None:
    driver = Driver()
    found = rejection(driver.apply(Deposit, account="x\x00y", amount=100))
    assert found.reason is RejectReason.MALFORMED_ID
    assert found.account == ""
    assert not driver.engine.ledger.accounts


def test_the_well_formed_id_of_a_rejected_order_is_kept() -> None:
    driver = funded_driver()
    found = rejection(driver.place(Side.BUY, 10, 1, account=BAD))
    assert (found.market_id, found.account, found.order_id) == ("m", "", 2)


@pytest.mark.parametrize(
    ("command", "fields"),
    [
        (PlaceOrder, {"market_id": "m", "order_id": 9, "side": Side.BUY, "price": 10, "qty": 1}),
        (CancelAll, {"market_id": "m"}),
        (Deposit, {"amount": 5}),
        (Withdraw, {"amount": 5}),
        (Heartbeat, {"timeout_ms": 0}),
    ],
    ids=["PlaceOrder", "CancelAll", "Deposit", "Withdraw", "Heartbeat"],
)
def test_a_command_that_needs_an_account_and_names_none_is_invalid_account(
    command: type[Command], fields: dict[str, Any]
) -> None:
    driver = funded_driver()
    assert rejection(driver.apply(command, account="", **fields)).reason is RejectReason.INVALID_ACCOUNT


def test_an_empty_market_id_keeps_its_old_reasons() -> None:
    driver = funded_driver()
    assert rejection(driver.market("")).reason is RejectReason.INVALID_MARKET_SPEC
    assert rejection(driver.apply(SuspendMarket, market_id="")).reason is RejectReason.UNKNOWN_MARKET


def test_a_cancel_without_an_account_still_works() -> None:
    driver = funded_driver()
    assert [type(event) for event in driver.cancel(1, account="")] == [OrderCancelled]


def test_a_market_id_with_a_colon_trades() -> None:
    driver = Driver()
    assert [type(event) for event in driver.market("derby:home", TickScheme.BINARY)] == [MarketCreated]
    driver.place(Side.SELL, 40, 3, account="ann", market_id="derby:home")
    trade = driver.place(Side.BUY, 40, 3, account="bob", market_id="derby:home")[1]
    assert isinstance(trade, TradeExecuted)
    assert (trade.market_id, trade.qty) == ("derby:home", 3)


# --------------------------------------------------------------------------- the API


def journal_length(exchange_url: str) -> int:
    bus = Bus.connect(exchange_url)
    try:
        return int(bus.client.xlen(bus.keys.input))
    finally:
        bus.close()


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/v1/admin/accounts/x%00y/deposit", {"amount": 100}, "account"),
        ("POST", "/v1/admin/accounts/x%00y/withdraw", {"amount": 100}, "account"),
        ("POST", "/v1/admin/accounts/a:b/keys", None, "account"),
        ("POST", "/v1/admin/accounts", {"account": "x\u0000y"}, "account"),
        ("POST", "/v1/admin/accounts", {"account": "a:b"}, "account"),
        ("POST", "/v1/markets", {"market_id": "x\u0000y", "scheme": "binary"}, "market_id"),
        ("POST", "/v1/markets", {"market_id": "rain\n", "scheme": "binary"}, "market_id"),
        ("POST", "/v1/markets/x%0Ay/suspend", None, "market_id"),
        ("GET", "/v1/markets/x%00y", None, "market_id"),
        ("GET", "/orderbook?market_id=x%00y", None, "market_id"),
    ],
)
def test_the_api_answers_a_malformed_id_with_a_4xx_naming_it_and_journals_nothing(
    keyed_client: TestClient, exchange_url: str, method: str, path: str, body: dict[str, Any] | None, field: str
) -> None:
    before = journal_length(exchange_url)
    content = None if body is None else json.dumps(body)
    answer = keyed_client.request(method, path, content=content, headers={**ADMIN, "Content-Type": "application/json"})
    assert 400 <= answer.status_code < 500, answer.text
    assert answer.json()["error"]["field"] == field
    assert journal_length(exchange_url) == before


def test_a_market_id_with_a_colon_is_created_through_the_api(keyed_client: TestClient) -> None:
    made = keyed_client.post("/v1/markets", json={"market_id": "derby:home", "scheme": "binary"}, headers=ADMIN)
    assert made.status_code == 201, made.text
    assert keyed_client.get("/v1/markets/derby:home").json()["market_id"] == "derby:home"
