"""The API against its own OpenAPI schema, with Schemathesis: no 5xx, every status documented, every body valid.

The app runs in-process (Schemathesis's ASGI transport, lifespan included) on a private Valkey,
with an engine leader in a thread, so orders really are matched and the answers are real ones.
Each operation gets a bounded number of generated requests, valid and invalid; the admin
operations get them a second time with the admin token, and the trading and account operations
with an account's API key, to reach past the checks of who is calling.

Three hand-written cases pin what the generated runs once found: the admin operations' 403 is
documented, and a market order's answer and a rejected order's state (no price, no side) conform.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.python import asgi

from conftest import ADMIN, ADMIN_TOKEN
from matchbox.api.app import create_app
from matchbox.bus.accounts import AccountStore
from matchbox.bus.connection import Bus
from matchbox.bus.durability import Durability
from matchbox.bus.server import EmbeddedValkey
from matchbox.leader.runner import EngineLeader, LeaderConfig
from matchbox.settings import Settings

if TYPE_CHECKING:  # schemathesis names the type of an OpenAPI case only for type checkers
    from schemathesis.specs.openapi.schemas import OpenApiCase

pytestmark = pytest.mark.e2e  # schemathesis: generated requests against a running exchange

CHECKS: list[schemathesis.CheckFunction] = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_headers_conformance,
    schemathesis.checks.response_schema_conformance,
]
EXAMPLES = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture],
)
ADMIN_OPERATIONS = [
    "POST /v1/markets",
    "POST /v1/markets/{market_id}/suspend",
    "POST /v1/markets/{market_id}/resume",
    "POST /v1/markets/{market_id}/close",
    "POST /v1/markets/{market_id}/settle",
    "POST /v1/admin/accounts",
    "GET /v1/admin/accounts",
]


def app_settings(redis_url: str | None, data_dir: Path = Path("data")) -> Settings:
    return Settings(
        redis_url=redis_url,
        admin_token=ADMIN_TOKEN,
        durability=Durability.EVERYSEC,
        outcome_timeout=2.0,
        data_dir=data_dir,
    )


# the schema needs no Redis: an app that is never started describes it
schema = schemathesis.openapi.from_dict(create_app(app_settings(None)).openapi())


class Exchange:
    """A private Valkey, an engine leader thread and the app, for the module."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.server = EmbeddedValkey(folder, fsync="everysec")
        self.stop = threading.Event()
        self.leader: EngineLeader | None = None
        self.thread: threading.Thread | None = None
        self.app = create_app(app_settings(None))
        self.generated: dict[str, str] = {}  # the key of the account the generated requests act for
        self.keys: dict[str, dict[str, str]] = {}  # the hand-written cases' accounts: maker, taker

    def start(self) -> None:
        url = self.server.start().url
        accounts = AccountStore(Bus.connect(url).client)
        self.generated["Authorization"] = f"Bearer {accounts.create('generated').api_key}"
        for name in ("maker", "taker"):
            self.keys[name] = {"Authorization": f"Bearer {accounts.create(name).api_key}"}
        self.leader = EngineLeader(Bus.connect(url), LeaderConfig(lock_ttl_ms=1000, name="schema"), self.stop)
        self.thread = threading.Thread(target=self.leader.run, name="engine-leader", daemon=True)
        self.thread.start()
        self.app = create_app(app_settings(url, self.folder / "data"))

    def close(self) -> None:
        try:
            asgi.shutdown_lifespans()  # the app's lifespan, which the first request started
        finally:
            self.stop.set()
            if self.thread is not None:
                self.thread.join(10)
            if self.leader is not None:
                self.leader.bus.close()
            self.server.stop()

    def market(self, market_id: str) -> str:
        """A binary market of one test's own: no generated order rests there."""
        body = {"market_id": market_id, "scheme": "binary"}
        _case, response = self.call("POST /v1/markets", body=body, headers=ADMIN)
        assert response.status_code == 201, response.text
        return market_id

    def call(self, label: str, by: str = "maker", **parts: Any) -> Any:
        """A hand-made case of the operation ``label`` ("POST /v1/orders"), sent to the app with the
        key of the account ``by`` unless the parts name their own headers."""
        parts.setdefault("headers", self.keys[by])
        method, path = label.split(" ")
        case = schema[path][method].Case(**parts)
        return case, case.call(app=self.app)


@pytest.fixture(scope="module")
def exchange(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exchange]:
    running = Exchange(tmp_path_factory.mktemp("valkey"))
    try:
        running.start()
        yield running
    finally:
        running.close()
    assert running.thread is not None
    assert not running.thread.is_alive(), "the engine leader did not stop"


def checks_for(case: OpenApiCase) -> list[schemathesis.CheckFunction]:
    return CHECKS


# --------------------------------------------------------------------------- generated


@schema.parametrize()
@EXAMPLES
def test_api_conforms_to_its_schema(case: OpenApiCase, exchange: Exchange) -> None:
    case.call_and_validate(app=exchange.app, checks=checks_for(case))


@schema.include(path_regex="^/v1/(markets|admin)").parametrize()
@EXAMPLES
def test_admin_operations_with_the_token_conform(case: OpenApiCase, exchange: Exchange) -> None:
    if (case.path_parameters or {}).get("market_id") == "default":  # the other tests trade there
        case.path_parameters = {"market_id": "not-default"}
    case.call_and_validate(app=exchange.app, headers=ADMIN, checks=CHECKS)


@schema.include(path_regex="^/v1/(orders|account)").parametrize()
@EXAMPLES
def test_operations_with_a_key_conform(case: OpenApiCase, exchange: Exchange) -> None:
    case.call_and_validate(app=exchange.app, headers=exchange.generated, checks=CHECKS)


# --------------------------------------------------------------------------- by hand


def test_limit_order_answers_conform(exchange: Exchange) -> None:
    """What the generated runs leave out on the order routes, checked on orders that are not affected."""
    market = exchange.market("limits")
    case, response = exchange.call(
        "POST /v1/orders", body={"market_id": market, "side": "sell", "price": 70, "qty": 10}
    )
    assert (response.status_code, response.json()["status"]) == (201, "open")
    case.validate_response(response, checks=CHECKS)
    resting = response.json()["order_id"]
    case, response = exchange.call(
        "POST /v1/orders", by="taker", body={"market_id": market, "side": "buy", "price": 70, "qty": 4}
    )
    assert (response.status_code, response.json()["status"]) == (201, "filled")
    case.validate_response(response, checks=CHECKS)
    for order_id, by in ((resting, "maker"), (response.json()["order_id"], "taker")):
        case, response = exchange.call("GET /v1/orders/{order_id}", by=by, path_parameters={"order_id": order_id})
        assert response.status_code == 200
        case.validate_response(response, checks=CHECKS)
    path = {"order_id": resting}
    case, response = exchange.call("PATCH /v1/orders/{order_id}", path_parameters=path, body={"reduce_by": 1})
    assert (response.status_code, response.json()["remaining"]) == (200, 5)
    case.validate_response(response, checks=CHECKS)
    case, response = exchange.call("DELETE /v1/orders/{order_id}", path_parameters=path)
    assert (response.status_code, response.json()["status"]) == (200, "cancelled")
    case.validate_response(response, checks=CHECKS)


@pytest.mark.parametrize("label", ADMIN_OPERATIONS)
def test_admin_refusal_is_documented(exchange: Exchange, label: str) -> None:
    parts: dict[str, Any] = {"path_parameters": {"market_id": "default"}} if "{market_id}" in label else {}
    if label == "POST /v1/markets":
        parts["body"] = {"market_id": "refused", "scheme": "binary"}
    elif label == "POST /v1/admin/accounts":
        parts["body"] = {"account": "refused"}
    case, response = exchange.call(label, **parts)  # an account's key, not the admin token
    assert response.status_code == 403
    case.validate_response(response, checks=[schemathesis.checks.status_code_conformance])


def test_market_order_answer_conforms(exchange: Exchange) -> None:
    market = exchange.market("market-orders")
    _case, response = exchange.call("POST /v1/orders", body={"market_id": market, "side": "buy", "price": 40, "qty": 1})
    assert response.status_code == 201
    case, response = exchange.call(
        "POST /v1/orders", by="taker", body={"market_id": market, "side": "sell", "qty": 1, "type": "market"}
    )
    assert (response.status_code, response.json()["status"], response.json()["type"]) == (201, "filled", "market")
    case.validate_response(response, checks=[schemathesis.checks.response_schema_conformance])


def test_rejected_order_state_conforms(exchange: Exchange) -> None:
    market = exchange.market("rejections")
    _case, response = exchange.call(
        "POST /v1/orders", body={"market_id": market, "side": "sell", "price": 60, "qty": 1}
    )
    assert response.status_code == 201
    taking = {"market_id": market, "side": "buy", "price": 60, "qty": 1, "post_only": True}
    _case, response = exchange.call("POST /v1/orders", by="taker", body=taking)
    assert (response.status_code, response.json()["error"]["code"]) == (422, "POST_ONLY_WOULD_TAKE")
    path = {"order_id": response.json()["error"]["order_id"]}
    case, response = exchange.call("GET /v1/orders/{order_id}", by="taker", path_parameters=path)
    assert (response.status_code, response.json()["status"]) == (200, "rejected")
    case.validate_response(response, checks=[schemathesis.checks.response_schema_conformance])
