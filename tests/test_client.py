"""matchbox.client against a running ``matchbox up``: typed results and errors, an order retried
after its answer was lost placed once, a feed that resumes across a cut connection with no gap
and no duplicate and keeps the book REST has, the dead-man helper, and examples/market_maker.py
quoting, re-quoting after a trade, and its quotes gone once it is killed.

Faults are real: a TCP proxy in front of the API swallows an answer or cuts every connection."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import fresh, wait_until
from matchbox.bus.server import free_port
from matchbox.client import (
    AsyncClient,
    Client,
    FeesIn,
    InsufficientFunds,
    InvalidRequest,
    NotFound,
    Stream,
    Unauthenticated,
    every_item,
)
from stack import Up, up

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "market_maker.py"


class Proxy:
    """A TCP proxy to the API on a port of its own, in a thread: real sockets, with faults on
    demand (``swallow``: that many next connections get no answer, only a close; ``cut()``: every
    live connection closes)."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.swallow = 0
        self.connections = 0
        self.loop = asyncio.new_event_loop()
        self.writers: set[asyncio.StreamWriter] = set()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self, ready: threading.Event) -> None:
        async def start() -> None:
            self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
            ready.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        swallow, self.swallow = self.swallow > 0, max(0, self.swallow - 1)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        self.writers |= {writer, up_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter, drop: bool) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while chunk := await source.read(65536):
                    if drop:  # the server answered: the client never hears it
                        break
                    sink.write(chunk)
                    await sink.drain()
            for end in (writer, up_writer):
                end.close()

        await asyncio.gather(pipe(reader, up_writer, False), pipe(up_reader, writer, swallow))
        self.writers -= {writer, up_writer}

    def cut(self) -> None:
        """Close every live connection, as a network fault would."""

        def close_all() -> None:
            for live in tuple(self.writers):
                live.close()

        self.loop.call_soon_threadsafe(close_all)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()  # its self-pipe too: nothing is left for the garbage collector to warn about


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    with up(tmp_path_factory.mktemp("client")) as exchange:
        exchange.start()
        yield exchange


@pytest.fixture(scope="module")
def proxy(stack: Up) -> Iterator[Proxy]:
    running = Proxy(stack.port)
    yield running
    running.close()


def admin_client(stack: Up) -> Client:
    return Client(stack.url, admin_token=(stack.data_dir / "admin_token").read_text().strip())


def funded_account(stack: Up, cents: int = 100_000) -> str:
    """A new account with ``cents``; its API key."""
    with admin_client(stack) as admin:
        made = admin.create_account(fresh("bot"))
        admin.deposit(made.account, cents)
    return made.api_key


def new_market(stack: Up) -> str:
    with admin_client(stack) as admin:
        return admin.create_market(fresh("cm"), "binary", collateral=True).market_id


@pytest.mark.e2e
def test_results_are_typed_and_errors_are_their_codes(stack: Up) -> None:
    market = new_market(stack)
    with Client(stack.url, funded_account(stack, 1_000)) as client:
        order = client.place_order(market, "buy", price=40, qty=10)
        assert (order.status, order.remaining, order.client_order_id is not None) == ("open", 10, True)
        assert (client.balance().reserved, client.order(order.order_id).price) == (400, 40)
        with pytest.raises(InsufficientFunds) as refused:
            client.place_order(market, "buy", price=90, qty=100)
        assert (refused.value.status, refused.value.code, refused.value.field) == (422, "INSUFFICIENT_FUNDS", "qty")
        assert client.order(refused.value.order_id or 0).status == "rejected"
        with pytest.raises(NotFound) as missing:
            client.order(order.order_id + 1_000_000)
        assert missing.value.code == "UNKNOWN_ORDER"
        with pytest.raises(InvalidRequest) as misspelt:
            client.wait(client.inner.call("GET", "/markets", params={"sheme": "binary"}))
        assert (misspelt.value.code, misspelt.value.field) == ("UNKNOWN_FIELD", "sheme")
        for price in (41, 42, 43):
            client.place_order(market, "buy", price=price, qty=1)

        async def every_open() -> list[int]:
            return [o.order_id async for o in every_item(client.inner.orders, state="open", market_id=market, limit=1)]

        listed = client.wait(every_open())
        assert len(listed) == 4  # page by page, each once
        assert listed == sorted(listed, reverse=True)  # newest first
        # a collateral market: the cancel releases the reserve, each order has its own answer
        cancelled = client.cancel_orders([listed[0], order.order_id, order.order_id])
        assert [(item.order_id, item.status) for item in cancelled.items] == [
            (listed[0], 200),
            (order.order_id, 200),
            (order.order_id, 200),  # named twice: answered twice, cancelled once
        ]
        assert client.balance().reserved == 41 + 42
        moved = client.amend_order(listed[1], price=45, qty=3)  # the 42 bid, now 3@45: reserves 135
        assert (moved.price, moved.remaining) == (45, 3)
        assert client.balance().reserved == 41 + 135
        reduced = client.reduce_order(listed[1], 1)  # by one: it keeps its place
        assert (reduced.remaining, reduced.qty, client.balance().reserved) == (2, 2, 41 + 90)
    with Client(stack.url, "mbk_nope_nope") as stranger, pytest.raises(Unauthenticated):
        stranger.balance()


@pytest.mark.e2e
def test_a_market_made_through_the_client_says_what_it_is_and_charges_its_fees(stack: Up) -> None:
    with admin_client(stack) as admin:
        made = admin.create_market(
            fresh("cm"),
            "binary",
            collateral=True,
            title="Rain",
            question="Will it rain tomorrow?",
            outcomes=["Rain", "Dry"],
            fees=FeesIn(taker_bps=100, maker_per_contract=1),
        )
    assert (made.title, made.outcomes, made.fees and made.fees.taker_bps) == ("Rain", ["Rain", "Dry"], 100)
    with admin_client(stack) as admin:
        listed = admin.markets(category="", sort="closes_at", limit=1000)  # made without a category
    assert made.market_id in [m.market_id for m in listed.items]
    with Client(stack.url, funded_account(stack)) as maker, Client(stack.url, funded_account(stack)) as taker:
        resting = maker.place_order(made.market_id, "sell", price=70, qty=10)
        taken = taker.place_order(made.market_id, "buy", price=70, qty=10)
        assert [(f.role, f.fee) for f in taken.fills] == [("taker", 7)]  # 1 % of 70 a contract
        assert [(f.role, f.fee) for f in maker.order(resting.order_id).fills] == [("maker", 10)]  # 1 a contract
        assert taker.balance().total == 100_000 - 700 - 7


@pytest.mark.e2e
def test_an_order_whose_answer_was_lost_is_retried_and_placed_once(stack: Up, proxy: Proxy) -> None:
    market = new_market(stack)
    key = funded_account(stack)
    with Client(proxy.url, key) as client:
        before = proxy.connections
        proxy.swallow = 1  # the first placement reaches the exchange; its answer never comes back
        order = client.place_order(market, "sell", price=70, qty=3)
        assert proxy.connections - before >= 2  # it was sent again
        assert order.status == "open"
        listed = client.orders("open", market_id=market)
        assert [o.order_id for o in listed.items] == [order.order_id]  # placed once


@pytest.mark.e2e
def test_the_feed_resumes_across_a_cut_with_no_gap_or_duplicate_and_keeps_the_book(stack: Up, proxy: Proxy) -> None:
    market = new_market(stack)
    maker_key, taker_key = funded_account(stack), funded_account(stack)
    with Client(stack.url, maker_key) as maker, Client(stack.url, taker_key) as taker:
        feed_client = Client(proxy.url, maker_key)
        with feed_client, feed_client.stream([f"book:{market}", f"trades:{market}", "orders"]) as feed:

            def trade(price: int) -> None:
                maker.place_order(market, "sell", price=price, qty=2)
                taker.place_order(market, "buy", price=price, qty=1)

            seen: list[dict[str, Any]] = []

            def until(predicate: Any) -> None:
                while not predicate():
                    seen.append(feed.next(timeout=10))

            trade(60)
            until(lambda: any(m["type"] == "trade" for m in seen))
            proxy.cut()  # every connection closes; three trades happen while the feed is away
            for price in (61, 62, 63):
                trade(price)
            rest = [t.trade_id for t in maker.trades(market).items]
            until(lambda: {m["trade_id"] for m in seen if m["type"] in ("trade", "TradeExecuted")} >= set(rest))
            until(lambda: len({m["trade_id"] for m in seen if m["type"] == "TradeExecuted"}) >= len(rest))
            assert feed.inner.reconnects >= 1
            streamed = [m["trade_id"] for m in seen if m["type"] == "trade"]
            assert sorted(streamed) == sorted(rest)  # no gap
            assert len(streamed) == len(set(streamed))  # no repeat
            own = [m for m in seen if m["type"] == "TradeExecuted"]
            assert {m["role"] for m in own} == {"maker"}
            assert len(own) == len(rest)
            book = maker.book(market, depth=100)

            def same_book() -> bool:
                local = feed.books.get(market)
                if local is None or local.sequence < book.sequence:
                    seen.append(feed.next(timeout=10))
                    return False
                return local.levels("ask") == [(a.price, a.qty) for a in book.asks]

            wait_until(same_book, message="the local book to be REST's")
            assert feed.books[market].levels("ask") == [(62, 2), (63, 2)]  # each buy took the lowest ask


def test_a_gap_in_a_subscription_subscribes_again_and_drops_the_book_until_its_snapshot() -> None:
    stream = Stream(AsyncClient("http://127.0.0.1:1"), ["book:m"])
    snapshot = {"type": "snapshot", "channel": "book:m", "seq": 1, "id": "1-1", "market_id": "m", "sequence": 5}
    delta = {"type": "delta", "channel": "book:m", "id": "1-2", "market_id": "m", "side": "ask", "price": 51}
    assert stream._take({"type": "subscribed", "channel": "book:m", "seq": 0}) == []
    assert stream._take({**snapshot, "bids": [], "asks": [{"price": 50, "qty": 1, "orders": 1}]}) != []
    assert stream._take({**delta, "seq": 2, "sequence": 5, "qty": 9, "orders": 1}) == []  # in the snapshot already
    assert stream._take({**delta, "seq": 3, "sequence": 6, "qty": 2, "orders": 1}) != []
    assert stream.books["m"].levels("ask") == [(50, 1), (51, 2)]
    assert stream._take({**delta, "seq": 5, "sequence": 8, "qty": 3, "orders": 1}) == []  # seq 4 never came
    assert "m" not in stream.books
    assert stream._pending == [{"type": "subscribe", "channel": "book", "market_id": "m"}]


@pytest.mark.e2e
def test_the_dead_man_helper_heartbeats_and_cancels_on_leaving(stack: Up) -> None:
    market = new_market(stack)
    with Client(stack.url, funded_account(stack)) as client:
        with client.deadman(timeout_ms=600, every=0.1, markets=[market]):
            order = client.place_order(market, "buy", price=30, qty=1)
            threading.Event().wait(1.5)  # well past the timeout: the heartbeats keep it alive
            assert client.order(order.order_id).status == "open"
        assert client.order(order.order_id).status == "cancelled"
        assert client.heartbeat(0).deadline_ms is None  # and disarmed


@pytest.mark.e2e
def test_the_example_market_maker_quotes_requotes_and_its_quotes_go_when_it_dies(stack: Up) -> None:
    market = new_market(stack)
    you = stack.your_key()
    argv = [sys.executable, str(EXAMPLE), "--url", stack.url, "--key-file", str(stack.data_dir / "you.key")]
    bot = subprocess.Popen([*argv, "--market", market, "--spread", "5", "--size", "10"])
    try:
        with Client(stack.url, you) as own, Client(stack.url, funded_account(stack)) as taker:

            def quotes() -> tuple[list[tuple[float | int, int]], list[tuple[float | int, int]]]:
                book = taker.book(market)
                return [(b.price, b.qty) for b in book.bids], [(a.price, a.qty) for a in book.asks]

            wait_until(lambda: quotes() == ([(45, 10)], [(55, 10)]), timeout=20, message="quotes around 50")
            taker.place_order(market, "buy", price=55, qty=2)
            wait_until(lambda: quotes() == ([(50, 10)], [(60, 10)]), timeout=20, message="quotes around 55")
            assert bot.poll() is None
            bot.send_signal(signal.SIGKILL)
            bot.wait(10)
            wait_until(lambda: quotes() == ([], []), timeout=15, message="the dead bot's quotes to go")
            wait_until(
                lambda: any(o.cancel_reason == "DEADMAN" for o in own.orders("all", market_id=market).items),
                message="the DEADMAN cancels in the database",
            )
    finally:
        if bot.poll() is None:
            bot.kill()
            bot.wait(10)
