"""The API's edge under hostile input (body limits, bounded numbers, auth before the body).

- A body is counted as it arrives, whatever its framing: a chunked body is cut off at 64 KiB.
- Who is calling is checked before a body is read or validated: 401 or 403, never a 422 that
  describes the schema to an anonymous caller.
- Every number is bounded before it is converted: giant exponents, integers of thousands of
  digits, overflowing floats, NaN and Infinity are each a 4xx naming the field, never a 5xx.
- The admin token is taken in one form only, ``Authorization: Bearer <token>``.
- A retried client order id whose outcome has left the tail's window of recent outcomes is
  answered from the events stream, not with 202 forever.

Over a real Valkey and a real engine leader (in a thread).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from conftest import ADMIN, ADMIN_TOKEN, api_settings, fresh, wait_until
from matchbox.api import orders
from matchbox.api.app import create_app
from matchbox.api.middleware import MAX_BODY
from matchbox.api.services import Services
from matchbox.api.tail import RECENT_OUTCOMES
from matchbox.bus.connection import Bus
from matchbox.bus.durability import Durability
from matchbox.bus.journal import Journal, Request
from matchbox.engine.types import Deposit

JSON = {"content-type": "application/json"}
CHUNK = 8 * 1024


def new_market(client: TestClient, scheme: str = "binary") -> str:
    market_id = fresh(f"{scheme}-")
    made = client.post("/v1/markets", json={"market_id": market_id, "scheme": scheme}, headers=ADMIN)
    assert made.status_code == 201, made.text
    return market_id


def new_key(client: TestClient) -> dict[str, str]:
    made = client.post("/v1/admin/accounts", json={"account": fresh("acct")}, headers=ADMIN)
    assert made.status_code == 201, made.text
    return {"Authorization": f"Bearer {made.json()['api_key']}"}


# --------------------------------------------------------------------------- bodies (item 4)


class Trickle:
    """A request body sent in chunks with no Content-Length (chunked framing); it counts the
    bytes the app pulled from it."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.pulled < self.total:
            self.pulled += CHUNK
            yield b" " * CHUNK


def post_streamed(client: TestClient, path: str, body: Trickle, headers: dict[str, str]) -> httpx.Response:
    """POST a streamed body to the client's running app over ASGI, in the app's own event loop:
    the app receives the body chunk by chunk, as a server hands it a chunked request."""

    async def scenario() -> httpx.Response:
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://matchbox") as streaming:
            return await streaming.post(path, content=body, headers={**JSON, **headers})

    assert client.portal is not None  # the client is started: its app runs in the portal's loop
    return client.portal.call(scenario)


@pytest.mark.parametrize("path", ["/v1/orders", "/v1/orders/batch"])
def test_a_chunked_body_is_refused_at_the_limit_and_read_no_further(keyed_client: TestClient, path: str) -> None:
    body = Trickle(16 * 1024 * 1024)
    answer = post_streamed(keyed_client, path, body, new_key(keyed_client))
    assert answer.request.headers["transfer-encoding"] == "chunked"
    assert (answer.status_code, answer.json()["error"]["field"]) == (413, "body")
    assert answer.headers["connection"] == "close"  # the server stops taking the rest
    assert body.pulled <= MAX_BODY + CHUNK  # what the API read, and so held: the limit and one chunk


@pytest.mark.parametrize(
    ("path", "status"),
    [("/v1/orders", 401), ("/v1/orders/batch", 401), ("/v1/markets", 403), ("/v1/admin/accounts/ann/deposit", 403)],
)
def test_a_request_without_a_key_or_token_is_refused_before_its_body_is_read(
    keyed_client: TestClient, path: str, status: int
) -> None:
    body = Trickle(16 * 1024 * 1024)
    answer = post_streamed(keyed_client, path, body, {})
    assert answer.status_code == status
    assert body.pulled == 0


def test_every_operation_that_needs_a_key_or_the_token_refuses_before_validating(keyed_client: TestClient) -> None:
    """Every operation with an Authorization header, called without one and with a body and
    parameters that could not validate: a 401 (a key) or a 403 (the admin token), never the
    422 that would describe the schema."""
    schema = keyed_client.get("/v1/openapi.json").json()
    answers = {}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            headers = {p["name"].lower() for p in operation.get("parameters", []) if p["in"] == "header"}
            if "authorization" in headers:
                url = re.sub(r"\{[^}]+\}", "not-a-number", path) + "?limit=huge&depth=huge&cursor=huge"
                answer = keyed_client.request(method, url, content=b'{"side": 7', headers=JSON)
                answers[f"{method.upper()} {path}"] = answer.status_code
    assert len(answers) >= 15, answers
    assert answers["POST /v1/markets"] == 403
    assert answers["POST /v1/orders"] == 401
    assert set(answers.values()) <= {401, 403}, answers


def test_with_the_right_credentials_the_body_is_validated_after_all(keyed_client: TestClient) -> None:
    bad = {"market_id": "x", "scheme": "roulette"}
    assert keyed_client.post("/v1/markets", json=bad, headers=ADMIN).status_code == 422
    answer = keyed_client.post(
        "/v1/orders", json={"side": "buy", "price": "fifty", "qty": 1}, headers=new_key(keyed_client)
    )
    assert (answer.status_code, answer.json()["error"]["field"]) == (422, "price")


# --------------------------------------------------------------------------- the admin token (item 10c)


def test_the_admin_token_is_taken_in_one_form_only(keyed_client: TestClient) -> None:
    body = {"market_id": fresh("form-"), "scheme": "binary"}
    for authorization in (
        ADMIN_TOKEN.encode(),  # bare
        f"bearer {ADMIN_TOKEN}".encode(),
        f"Bearer  {ADMIN_TOKEN}".encode(),
        f"Token {ADMIN_TOKEN}".encode(),
        f"Bearer {ADMIN_TOKEN}x".encode(),
        "Bearer t\u00e9st-admin".encode(),  # not ASCII: refused, not a 500
    ):
        refused = keyed_client.post("/v1/markets", json=body, headers={b"Authorization": authorization})
        assert (refused.status_code, refused.json()["error"]["field"]) == (403, "authorization"), authorization
    assert keyed_client.post("/v1/markets", json=body, headers=ADMIN).status_code == 201


# --------------------------------------------------------------------------- numbers (item 5)

# JSON numbers no field can take, each an attack of its own.
HOSTILE_JSON = [
    "1e400000",  # a float's exponent: infinity
    '"1e400000"',  # the same as text: Decimal reads it at once, arithmetic on it took seconds
    '"1e999999999"',  # past Decimal's exponent limit: arithmetic on it raised (a 500)
    '"-1e-999999999"',
    "1" + "0" * 5000,  # thousands of digits: past what int() converts (a 400 naming nothing)
    "-" + "9" * 4000,  # thousands of digits that int() converts, slowly
    '"' + "7" * 4000 + '"',
    "9223372036854775808",  # 2**63: one past 64 bits, so past what a command can carry
    "1.8e308",  # overflows a float
    "NaN",
    "Infinity",
    "-Infinity",
    '"NaN"',
    '"Infinity"',
]
# The same as query and path texts.
HOSTILE_TEXT = ["1e400000", "1" + "0" * 5000, "9223372036854775808", "NaN", "Infinity", "-1e999999999", "0x10"]


def test_every_numeric_field_of_a_body_refuses_hostile_numbers_by_name(open_client: TestClient) -> None:
    binary, odds = new_market(open_client), new_market(open_client, "odds")
    resting = open_client.post(
        "/v1/orders", json={"market_id": binary, "side": "buy", "price": 5, "qty": 9, "account": "ann"}
    )
    assert resting.status_code == 201, resting.text
    order = f"/v1/orders/{resting.json()['order_id']}"
    limit = f'{{"market_id": "{binary}", "side": "buy", "account": "ann", '
    cases = [  # (method, path, body with X for the number, the field, headers)
        ("POST", "/v1/orders", limit + '"price": X, "qty": 1}', "price", {}),
        ("POST", "/v1/orders", limit + '"price": 5, "qty": X}', "qty", {}),
        ("POST", "/v1/orders", limit + '"price": 5, "qty": 1, "tif": "GTD", "expires_at_ms": X}', "expires_at_ms", {}),
        ("POST", "/v1/orders", f'{{"market_id": "{odds}", "side": "back", "odds": X, "stake": 1}}', "odds", {}),
        ("POST", "/v1/orders", f'{{"market_id": "{odds}", "side": "back", "odds": 2.5, "stake": X}}', "stake", {}),
        ("POST", "/v1/orders/batch", '{"orders": [' + limit + '"price": X, "qty": 1}]}', "orders.0.price", {}),
        ("PATCH", order, '{"reduce_by": X}', "reduce_by", {}),
        ("PATCH", order, '{"qty": X}', "qty", {}),
        ("POST", "/v1/admin/accounts/ann/deposit", '{"amount": X}', "amount", ADMIN),
        ("POST", "/v1/markets", '{"market_id": "n", "scheme": "ticks", "max_tick": X}', "max_tick", ADMIN),
        ("POST", "/v1/markets", '{"market_id": "n", "scheme": "binary", "max_qty": X}', "max_qty", ADMIN),
        ("POST", "/v1/account/heartbeat?account=ann", '{"timeout_ms": X}', "timeout_ms", {}),
    ]
    wrong = []
    for method, path, template, field, headers in cases:
        for number in HOSTILE_JSON:
            body = template.replace("X", number).encode()
            answer = open_client.request(method, path, content=body, headers={**JSON, **headers})
            named = answer.json()["error"].get("field") if answer.status_code < 500 else None
            if answer.status_code not in (400, 422) or named != field:
                wrong.append((method, path, field, number[:24], answer.status_code, answer.text[:120]))
    assert wrong == []


def test_hostile_odds_are_refused_by_the_model_before_any_arithmetic(open_client: TestClient) -> None:
    """422 is the request model's refusal (digits and length, counted before any arithmetic);
    the ladder's own refusal, after arithmetic, would be a 400."""
    market = new_market(open_client, "odds")
    for odds in ('"1e400000"', '"1e999999999"', '"0.' + "1" * 60_000 + '"', "2." + "1" * 60_000):
        body = f'{{"market_id": "{market}", "side": "back", "odds": {odds}, "stake": 1, "account": "ann"}}'
        answer = open_client.post("/v1/orders", content=body.encode(), headers=JSON)
        assert (answer.status_code, answer.json()["error"]["field"]) == (422, "odds"), odds[:20]
    on_ladder = {"market_id": market, "side": "back", "odds": "2.50", "stake": 1, "account": "ann"}
    assert open_client.post("/v1/orders", json=on_ladder).status_code == 201


def test_every_number_in_a_query_or_path_refuses_hostile_numbers_by_name(open_client: TestClient) -> None:
    market = new_market(open_client)
    cases = [  # (path with X for the number, the field)
        (f"/v1/markets/{market}/book?depth=X", "depth"),
        (f"/v1/markets/{market}/trades?limit=X", "limit"),
        (f"/v1/markets/{market}/candles?from_ms=X", "from_ms"),
        (f"/v1/markets/{market}/candles?to_ms=X", "to_ms"),
        (f"/v1/markets/{market}/trades?from_ms=X", "from_ms"),
        (f"/v1/markets/{market}/candles?cursor=X", "cursor"),
        (f"/v1/markets/{market}/candles?limit=X", "limit"),
        ("/v1/account/orders?account=ann&limit=X", "limit"),
        ("/v1/account/orders?account=ann&state=all&cursor=X", "cursor"),
        ("/v1/account/trades?account=ann&cursor=X", "cursor"),
        ("/v1/account/history?account=ann&cursor=X", "cursor"),
        ("/v1/orders/X", "order_id"),
    ]
    wrong = []
    for template, field in cases:
        for number in HOSTILE_TEXT:
            answer = open_client.get(template.replace("X", number))
            named = answer.json()["error"].get("field") if answer.status_code < 500 else None
            if answer.status_code not in (400, 422) or named != field:
                wrong.append((template, number[:24], answer.status_code, answer.text[:120]))
    assert wrong == []


def test_an_expiry_past_what_engine_time_can_hold_is_refused_not_journalled(open_client: TestClient) -> None:
    """Engine time is ns in 64 bits: an expiry in ms beyond it once reached the journal as a
    command the engine could not decode (a MALFORMED_COMMAND for the client, a poison entry)."""
    market = new_market(open_client)
    order = {"market_id": market, "side": "buy", "price": 5, "qty": 1, "tif": "GTD", "account": "ann"}
    answer = open_client.post("/v1/orders", json={**order, "expires_at_ms": 10**16})
    error = answer.json()["error"]
    assert (answer.status_code, error["field"], error["code"]) == (
        400,
        "expires_at_ms",
        "INVALID_FIELD",
    )  # not the engine's


# --------------------------------------------------------------------------- retries (item 10d)


@pytest.fixture(scope="module")
def forgetful(exchange_url: str, data_dir: Path) -> Iterator[TestClient]:
    """Open mode, with a projection that keeps one finished order (the tail's window of recent
    outcomes stays as it is: the test pushes entries through it)."""
    with TestClient(create_app(api_settings(exchange_url, data_dir, open_access=True))) as client:
        services: Services = client.app.state.services  # type: ignore[attr-defined]
        services.projection.keep_finished = 1
        yield client


def push_out_of_the_window(exchange_url: str, client: TestClient) -> None:
    """RECENT_OUTCOMES more journal entries, each with an event, read by the API's tail: every
    outcome before them has left its window."""
    filler, count, batch = fresh("filler"), RECENT_OUTCOMES + 1, 500
    bus = Bus.connect(exchange_url)
    try:
        journal = Journal(bus, Durability.EVERYSEC)
        for start in range(0, count, batch):
            journal.submit_many([Request(Deposit(seq=0, ts=0, account=filler, amount=1))] * min(batch, count - start))
    finally:
        bus.close()

    def all_folded() -> bool:
        total: int = client.get("/v1/account", params={"account": filler}).json()["total"]
        return total == count

    wait_until(all_folded, timeout=60, message="the tail to read the filler entries")


@pytest.mark.e2e  # waits for the outcome to leave the window
def test_a_retry_whose_outcome_left_the_window_answers_as_the_first_time(
    exchange_url: str, forgetful: TestClient
) -> None:
    market = new_market(forgetful)
    maker = {"market_id": market, "side": "sell", "price": 60, "qty": 5, "account": "ann"}
    assert forgetful.post("/v1/orders", json=maker).status_code == 201
    taker = {"market_id": market, "side": "buy", "price": 60, "qty": 2, "account": "bob", "client_order_id": "t-1"}
    filled = forgetful.post("/v1/orders", json=taker)
    assert (filled.status_code, filled.json()["status"]) == (201, "filled")
    refused = {**taker, "post_only": True, "client_order_id": "t-2"}  # would take: the engine rejects it
    rejected = forgetful.post("/v1/orders", json=refused)
    assert (rejected.status_code, rejected.json()["error"]["code"]) == (422, "POST_ONLY_WOULD_TAKE")
    ioc = {"market_id": market, "side": "buy", "price": 1, "qty": 1, "tif": "IOC", "account": "cy"}
    assert forgetful.post("/v1/orders", json=ioc).json()["status"] == "cancelled"  # the projection drops "t-1"
    assert forgetful.get(f"/v1/orders/{filled.json()['order_id']}").status_code == 404
    push_out_of_the_window(exchange_url, forgetful)
    services: Services = forgetful.app.state.services  # type: ignore[attr-defined]
    assert forgetful.portal is not None
    assert forgetful.portal.call(services.first.tail.outcome, filled.json()["entry_id"], 0.0) is None  # forgotten

    again = forgetful.post("/v1/orders", json=taker)
    assert again.status_code == 200, again.text
    assert {k: again.json()[k] for k in ("order_id", "status", "filled", "fills")} == {
        k: filled.json()[k] for k in ("order_id", "status", "filled", "fills")
    }
    rejected_again = forgetful.post("/v1/orders", json=refused)
    assert rejected_again.status_code == 422, rejected_again.text
    assert rejected_again.json() == rejected.json()


def test_a_body_nested_past_the_parser_s_depth_is_invalid_json_naming_the_body(open_client: TestClient) -> None:
    nested = b'{"orders": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"  # 60 KB: under the body limit
    answer = open_client.post("/v1/orders/batch", content=nested, headers=JSON)
    assert (answer.status_code, answer.json()["error"]["code"], answer.json()["error"]["field"]) == (
        400,
        "INVALID_JSON",
        "body",
    )


@pytest.mark.parametrize("path", ["/v1/orders", "/orders"])
def test_a_bug_on_the_hot_path_is_a_500_in_the_error_shape_and_the_instance_serves_on(
    open_client: TestClient, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """POST /orders is served before FastAPI's layers (matchbox.api.app.Exchange), so its own
    handler answers an unexpected error as FastAPI's would: 500 INTERNAL, the error shape, the
    traceback in the log; the next order goes through."""
    market = new_market(open_client)
    body = {"market_id": market, "side": "buy", "price": 40, "qty": 1}

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    with monkeypatch.context() as patched:
        patched.setattr(orders, "_place_command", broken)
        answer = open_client.post(path, json=body)
    assert answer.status_code == 500
    assert answer.json()["error"]["code"] == "INTERNAL"
    assert answer.headers["x-matchbox-auth"] == "open"  # inside the metrics and the open-mode header
    assert open_client.post(path, json=body).status_code == 201
