"""The API end to end, with real processes: one Valkey, two engines, two API instances.

The original README's walk-through (a sell on one instance, the crossing buy on the other, empty books on
both, the fill on both WebSockets), reads across instances, channel subscriptions, WebSocket
resume without gap or duplicate, and ``matchbox loadgen`` against both instances.

The processes are started once for the module (about two seconds); each test but the original walk-through
trades on a market of its own, so the tests do not see each other's orders.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from conftest import ADMIN, ADMIN_TOKEN, external_redis_url, wait_until, without_id
from matchbox.bus.codec import decode_event
from matchbox.bus.connection import Bus
from matchbox.bus.server import EmbeddedValkey, free_port
from matchbox.engine.types import OrderAccepted, TradeExecuted

pytestmark = pytest.mark.e2e  # multi-process: API instances, leaders and consumers as processes

STARTUP_TIMEOUT = 30.0
# the seed's fill (its timestamp in ns), with what every message of the feed has besides
SEED_FILL_KEYS = {"maker_order_id", "taker_order_id", "price", "qty", "timestamp", "market_id", "id", "n"}
FILL_KEYS = SEED_FILL_KEYS | {"type", "channel", "seq", "time_ms"}


# --------------------------------------------------------------------------- processes


class Cluster:
    """``python -m matchbox engine`` x2 and ``python -m matchbox api --port P`` x2 over one Redis."""

    def __init__(self, redis_url: str, folder: Path) -> None:
        self.redis_url = redis_url
        self.folder = folder
        self.env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "MATCHBOX_ADMIN_TOKEN": ADMIN_TOKEN,
            "MATCHBOX_OPEN": "1",  # these tests are about orders across instances; keys: test_accounts.py
            "MATCHBOX_DURABILITY": "everysec",
            "MATCHBOX_LOCK_TTL_MS": "1000",
            "MATCHBOX_LOG_FORMAT": "text",
            "MATCHBOX_LOG_LEVEL": "INFO",
        }
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: list[int] = []

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.ports]

    def spawn(self, name: str, *args: str) -> None:
        with (self.folder / f"{name}.log").open("wb") as log:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "matchbox", *args],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def start(self) -> None:
        for i in (1, 2):
            self.spawn(f"engine-{i}", "engine", "--name", f"engine-{i}")
        for i in (1, 2):
            port = free_port()
            self.ports.append(port)
            self.spawn(f"api-{i}", "api", "--port", str(port))

    def wait_ready(self) -> None:
        """Every instance answers /health and /ready (a leader holds the lock) and knows the default market."""

        def ready(client: httpx.Client, url: str) -> bool:
            self.check_alive()
            try:
                return all(
                    client.get(url + path).status_code == 200 for path in ("/health", "/ready", "/v1/markets/default")
                )
            except httpx.TransportError:
                return False

        with httpx.Client(timeout=2.0) as client:
            for url in self.urls:
                wait_until(partial(ready, client, url), STARTUP_TIMEOUT, f"{url} to be ready")

    def check_alive(self) -> None:
        dead = {name: p.returncode for name, p in self.processes.items() if p.poll() is not None}
        if dead:
            pytest.fail(f"processes exited: {dead}\n{self.report()}")

    def close(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for process in self.processes.values():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)

    def report(self) -> str:
        parts = []
        for name, process in self.processes.items():
            lines = (self.folder / f"{name}.log").read_text(errors="replace").splitlines()
            parts.append(f"--- {name} (exit {process.returncode}), last lines of {len(lines)}:")
            parts += lines[-15:]
        return "\n".join(parts)


@pytest.fixture(scope="module")
def cluster_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Like conftest's ``redis_url``, for the whole module: ``REDIS_URL`` (flushed) or a private Valkey."""
    external = external_redis_url()
    if external:
        yield external
        return
    with EmbeddedValkey(tmp_path_factory.mktemp("valkey"), fsync="everysec") as server:
        yield server.url


@pytest.fixture(scope="module")
def cluster(cluster_redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    fleet = Cluster(cluster_redis_url, tmp_path_factory.mktemp("processes"))
    try:
        fleet.start()
        fleet.wait_ready()
        yield fleet
    finally:
        fleet.close()
        print(fleet.report())  # shown with the captured output of a failing test


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0) as client:
        yield client


@pytest.fixture(scope="module")
def events_bus(cluster_redis_url: str) -> Iterator[Bus]:
    connection = Bus.connect(cluster_redis_url)
    yield connection
    connection.close()


# --------------------------------------------------------------------------- helpers


def ws_url(http_url: str, query: str = "") -> str:
    return http_url.replace("http://", "ws://") + "/v1/ws" + (f"?{query}" if query else "")


def open_ws(http_url: str, query: str = "") -> ClientConnection:
    return connect(ws_url(http_url, query), proxy=None, open_timeout=10, close_timeout=2)


def receive(ws: ClientConnection, timeout: float = 10.0) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(ws.recv(timeout=timeout))
    return message


def receive_until(
    ws: ClientConnection, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0
) -> dict[str, Any]:
    """The first message satisfying ``predicate``; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"no matching WebSocket message within {timeout:.0f} s")
        try:
            message = receive(ws, remaining)
        except TimeoutError:
            continue
        if predicate(message):
            return message


def create_market(http: httpx.Client, url: str, market_id: str, scheme: str = "binary") -> None:
    response = http.post(f"{url}/v1/markets", json={"market_id": market_id, "scheme": scheme}, headers=ADMIN)
    assert response.status_code == 201, response.text


def place(http: httpx.Client, url: str, **body: Any) -> dict[str, Any]:
    response = http.post(f"{url}/v1/orders", json=body)
    assert response.status_code == 201, response.text
    order: dict[str, Any] = response.json()
    return order


def wait_known_everywhere(http: httpx.Client, cluster: Cluster, market_id: str) -> None:
    for url in cluster.urls:

        def knows_it(url: str = url) -> bool:
            return http.get(f"{url}/v1/markets/{market_id}").status_code == 200

        wait_until(knows_it, 10, f"{url} to know market {market_id}")


def stream_trades(bus: Bus, market_id: str) -> dict[int, TradeExecuted]:
    """Every TradeExecuted of ``market_id`` in the output stream, by event number ``n``."""
    trades = {}
    for _raw_id, fields in bus.range(bus.keys.events):
        decoded = decode_event(fields[b"event"])
        if isinstance(decoded.event, TradeExecuted) and decoded.event.market_id == market_id:
            trades[decoded.n] = decoded.event
    return trades


# --------------------------------------------------------------------------- the original README's walk-through


def test_seed_walkthrough_across_two_instances(cluster: Cluster, http: httpx.Client) -> None:
    a, b = cluster.urls
    with open_ws(a) as ws_a, open_ws(b) as ws_b:  # plain feeds: no subscription
        sell = http.post(f"{a}/v1/orders", json={"side": "sell", "price": 50, "qty": 10})
        assert sell.status_code == 201, sell.text
        assert sell.json()["status"] == "open"
        assert sell.json()["market_id"] == "default"
        buy = http.post(f"{b}/v1/orders", json={"side": "buy", "price": 50, "qty": 10})
        assert buy.status_code == 201, buy.text
        order = buy.json()
        assert order["status"] == "filled"
        assert (order["filled"], order["remaining"]) == (10, 0)
        assert [(f["price"], f["qty"], f["role"]) for f in order["fills"]] == [(50, 10, "taker")]

        def books() -> tuple[dict[str, Any], dict[str, Any]]:
            return http.get(f"{a}/orderbook").json(), http.get(f"{b}/orderbook").json()

        # B answered the buy, so B has seen the trade; A's tail may be a moment behind
        wait_until(lambda: books()[0]["sequence"] == books()[1]["sequence"], 10, "both instances at one sequence")
        book_a, book_b = books()
        assert book_a == book_b
        assert (book_a["bids"], book_a["asks"]) == ([], [])
        assert book_a["sequence"] >= 5  # the market, two acceptances, a rest and a trade at the least

        for ws in (ws_a, ws_b):
            fill = receive(ws)
            assert set(fill) == FILL_KEYS, fill
            assert fill["maker_order_id"] == sell.json()["order_id"]
            assert fill["taker_order_id"] == order["order_id"]
            assert (fill["price"], fill["qty"], fill["market_id"]) == (50, 10, "default")
            assert fill["time_ms"] == order["fills"][0]["time_ms"] == fill["timestamp"] // 1_000_000
            assert fill["n"] == book_a["sequence"]  # the trade is the last event so far


def test_orders_and_trades_are_visible_across_instances(cluster: Cluster, http: httpx.Client) -> None:
    a, b = cluster.urls
    market = "across"
    create_market(http, a, market)
    wait_known_everywhere(http, cluster, market)

    resting = place(http, a, market_id=market, side="sell", price=40, qty=7, account="ann")
    assert resting["status"] == "open"
    seen_on_b: dict[str, Any] = {}

    def visible_on_b() -> bool:
        response = http.get(f"{b}/v1/orders/{resting['order_id']}")
        if response.status_code == 200:
            seen_on_b.update(response.json())
        return response.status_code == 200

    wait_until(visible_on_b, 10, "the order placed on A to be visible on B")
    assert seen_on_b == resting

    with open_ws(b) as by_message, open_ws(b, f"subscribe=trades:{market}") as by_query:
        by_message.send(json.dumps({"type": "subscribe", "channel": "trades", "market_id": market}))
        assert without_id(receive(by_message)) == {"type": "subscribed", "channel": f"trades:{market}", "seq": 0}
        taker = place(http, a, market_id=market, side="buy", price=45, qty=3, account="bob")
        assert taker["status"] == "filled"
        for ws in (by_message, by_query):
            trade = receive_until(ws, lambda m: m.get("type") == "trade")
            assert trade["market_id"] == market
            assert (trade["maker_order_id"], trade["taker_order_id"]) == (resting["order_id"], taker["order_id"])
            assert (trade["price"], trade["qty"], trade["taker_side"]) == (40, 3, "buy")
            assert trade["trade_id"] == taker["fills"][0]["trade_id"]

    # the maker's fill reaches B's projection too
    wait_until(
        lambda: http.get(f"{b}/v1/orders/{resting['order_id']}").json()["remaining"] == 4, 10, "the partial fill on B"
    )
    assert http.get(f"{b}/v1/orders/{resting['order_id']}").json()["status"] == "partially_filled"


def test_websocket_resume_after_a_disconnect_has_no_gap_and_no_duplicate(
    cluster: Cluster, http: httpx.Client, events_bus: Bus
) -> None:
    a, b = cluster.urls
    market = "resume"
    pairs = 30
    create_market(http, a, market)
    wait_known_everywhere(http, cluster, market)
    done = 0
    failure: list[BaseException] = []

    def trade_pairs() -> None:  # 30 crossing pairs, one trade each, through both instances
        nonlocal done
        try:
            with httpx.Client(timeout=10.0) as client:
                for i in range(pairs):
                    price = 30 + i % 40
                    sell = place(client, a if i % 2 else b, market_id=market, side="sell", price=price, qty=5)
                    buy = place(client, b if i % 2 else a, market_id=market, side="buy", price=price, qty=5)
                    assert (sell["status"], buy["status"]) == ("open", "filled")
                    done += 1
        except BaseException as exc:  # reported by the test, not lost in the thread
            failure.append(exc)

    first: list[dict[str, Any]] = []
    producer = threading.Thread(target=trade_pairs, name="trade-pairs", daemon=True)
    with open_ws(a) as ws:
        producer.start()
        while len(first) < 8:
            first.append(receive(ws))
    # disconnected: trades go on meanwhile; make sure some happen before the reconnection
    wait_until(lambda: done >= len(first) + 5 or failure or not producer.is_alive(), 20, "trades while away")
    second: list[dict[str, Any]] = []
    with open_ws(a, f"last_id={first[-1]['id']}") as ws:
        producer.join(30)
        assert not failure, f"trading failed: {failure[0]!r}"
        assert done == pairs
        expected = stream_trades(events_bus, market)
        assert len(expected) == pairs
        while len(first) + len(second) < len(expected):
            second.append(receive(ws))
        with pytest.raises(TimeoutError):  # and nothing more
            ws.recv(timeout=0.3)

    received = first + second
    assert all(set(m) == FILL_KEYS for m in received), received[:3]
    numbers = [m["n"] for m in received]
    assert len(numbers) == len(set(numbers)), "a fill was delivered twice"
    assert numbers == sorted(numbers), "fills out of order"
    assert set(numbers) == set(expected), "the feed and the output stream disagree"
    assert second[0]["n"] > first[-1]["n"]
    # some of the second connection's messages were sent from history (traded while disconnected)
    assert len(second) >= 5
    for message in received:
        trade = expected[message["n"]]
        assert (message["maker_order_id"], message["taker_order_id"]) == (trade.maker_order_id, trade.taker_order_id)
        assert (message["price"], message["qty"], message["timestamp"]) == (trade.price, trade.qty, trade.ts)
        assert message["id"].endswith(f"-{message['n']}")


# --------------------------------------------------------------------------- matchbox loadgen


def run_loadgen(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    urls = [arg for url in cluster.urls for arg in ("--url", url)]
    return subprocess.run(
        [sys.executable, "-m", "matchbox", "loadgen", *urls, "--json", "--no-progress", *args],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_loadgen_against_two_instances(cluster: Cluster, http: httpx.Client, events_bus: Bus) -> None:
    market = "loadgen"
    done = run_loadgen(cluster, "--orders", "300", "--concurrency", "16", "--create-market", market)
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["market"] == market
    assert (figures["orders"], figures["ok"], figures["pending"], figures["errors"]) == (300, 300, 0, 0)
    assert sum(figures["http_statuses"].values()) == 300
    assert sum(figures["order_statuses"].values()) == 300
    assert 0 < figures["latency_p50_ms"] <= figures["latency_p90_ms"] <= figures["latency_p99_ms"]
    assert figures["latency_p99_ms"] <= figures["latency_max_ms"]
    assert 0 < figures["fills"] <= figures["order_statuses"]["filled"]
    assert 0 < figures["fill_p50_ms"] <= figures["fill_p99_ms"] <= figures["latency_max_ms"]
    assert figures["orders_per_s"] == pytest.approx(300 / figures["seconds"], rel=0.01)
    # the orders really went through the engine, on both instances' market
    accepted = [
        decoded.event
        for decoded in (decode_event(fields[b"event"]) for _, fields in events_bus.range(events_bus.keys.events))
        if isinstance(decoded.event, OrderAccepted) and decoded.event.market_id == market
    ]
    assert len(accepted) == 300
    trades = stream_trades(events_bus, market)
    assert len(trades) >= figures["fills"]
    assert not [t for t in trades.values() if t.maker_account == t.taker_account], "self-trades in the flow"
    for url in cluster.urls:
        assert http.get(f"{url}/v1/markets/{market}/trades", params={"limit": 1}).json(), f"no trades on {url}"


def test_loadgen_open_loop_offers_the_rate(cluster: Cluster) -> None:
    done = run_loadgen(cluster, "--rate", "400", "--seconds", "0.75", "--concurrency", "8", "--market", "loadgen")
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert (figures["orders"], figures["ok"], figures["offered_rate"]) == (300, 300, 400)
    # the last order is due at 0.7475 s: an open loop cannot finish before, and should not take much longer
    assert 0.74 <= figures["seconds"] < 5, figures
    assert figures["latency_p50_ms"] <= figures["latency_p99_ms"] <= figures["latency_max_ms"]


def test_loadgen_reports_unreachable_instances() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "matchbox", "loadgen", "--url", f"http://127.0.0.1:{free_port()}", "--orders", "5"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "cannot reach" in done.stdout + done.stderr


def test_loadgen_makes_keyed_accounts_when_the_api_wants_keys(cluster: Cluster, http: httpx.Client) -> None:
    keyed = {k: v for k, v in cluster.env.items() if k != "MATCHBOX_OPEN"}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with (cluster.folder / "api-keyed.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "matchbox", "api", "--port", str(port)],
            env=keyed,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:

        def ready() -> bool:
            try:
                return http.get(f"{url}/ready").status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, STARTUP_TIMEOUT, "the keyed API")
        assert http.get(f"{url}/health").json()["auth"] == "keys"
        command = [sys.executable, "-m", "matchbox", "loadgen", "--url", url, "--json", "--no-progress"]
        without = {k: v for k, v in keyed.items() if k != "MATCHBOX_ADMIN_TOKEN"}
        refused = subprocess.run([*command, "--orders", "5"], env=without, capture_output=True, text=True, check=False)
        assert refused.returncode != 0
        assert "--admin-token" in refused.stderr
        done = subprocess.run(
            [*command, "--orders", "200", "--create-market", "loadgen"],
            env=keyed,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        assert (figures["orders"], figures["ok"], figures["errors"]) == (200, 200, 0)
        assert set(figures["http_statuses"]) == {"201"}
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(10)


def test_a_refused_query_parameter_closes_cleanly_whatever_its_characters(cluster: Cluster) -> None:
    """A close reason is at most 123 bytes: a refusal that named a long multi-byte parameter in
    its reason once made the server's close itself fail (no close code, an error logged)."""
    name = "\N{GRINNING FACE}" * 64
    with open_ws(cluster.urls[0], f"{name}=1") as ws:
        refusal = receive(ws)
        assert (refusal["type"], refusal["error"]["code"]) == ("error", "UNKNOWN_FIELD")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1008
