"""The dashboard in a real browser: Debian's Chromium, driven by Playwright, against real processes.

``matchbox up`` (Valkey, engine, API, consumers) runs on free ports in a temporary folder, with
API keys, and makes the account ``you`` with $1,000. The page is opened headless with the login
link ``up`` prints (``#key=…``): the account panel shows the balance. A sell goes in through the
order ticket and its reserve shows; another account's crossing buy (over HTTP, with its own key)
fills part of it: the trade must show on the tape, the book must change, a candle must appear on
the chart, the order its state (from the WebSocket's orders channel, after ``auth``), and the
account panel the money moved and the position. The same on an odds market (back/lay, odds and
stake). An order beyond the free balance is refused in words. The feed is then dropped and must
resume with ``last_id``. The page, with a book and a few seconds of trading on it, is saved to
``docs/img/dashboard.png`` for the README; last, logging out brings back the login box. With
``--open`` the page shows a red badge instead of a login box and trades as the account it names.

Chromium is ``/usr/bin/chromium`` (``make test`` installs it with apt); Playwright never downloads
a browser here. Without it the test is skipped, and with ``CI=true`` it fails instead.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from conftest import ADMIN_TOKEN, wait_until
from matchbox.bus.server import free_port, free_ports
from matchbox.client import Client, order_body

pytestmark = pytest.mark.e2e  # the browser test: a real system driven by chromium

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "img" / "dashboard.png"
STARTUP_TIMEOUT_S = 60.0
UI_TIMEOUT_MS = 15_000
CANDLES_IN_PICTURE = 8


def require_chromium() -> None:
    if CHROMIUM.exists():
        return
    reason = f"{CHROMIUM} is missing: `make chromium` installs Debian's chromium (apt-get install chromium)"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


class System:
    """``python -m matchbox up`` on free ports in a temporary folder: its own Valkey, the engine,
    the API and the consumers (analytics makes the candles and stats), as a user runs it."""

    def __init__(self, folder: Path, *options: str, command: tuple[str, ...] = ("up",), valkey_port: int = 0) -> None:
        self.folder = folder
        self.options = options
        self.command = command
        self.valkey_port = valkey_port or free_port()
        self.data_dir = folder / "data"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder / "up.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {key: value for key, value in os.environ.items() if key not in ("REDIS_URL", "DATABASE_URL")}
        env["MATCHBOX_ADMIN_TOKEN"] = ADMIN_TOKEN
        env["MATCHBOX_RATE_LIMIT"] = "0"  # walk() trades as fast as the exchange answers, on two keys
        argv = [sys.executable, "-m", "matchbox", *self.command, "--data-dir", str(self.data_dir)]
        argv += ["--port", str(self.port), "--valkey-port", str(self.valkey_port), *self.options]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        with httpx.Client(timeout=2.0) as client:
            wait_until(lambda: self.ready(client), STARTUP_TIMEOUT_S, f"{self.url} to be ready")
        banner_end = "OPEN MODE" if "--open" in self.options else "Dashboard as you: "
        wait_until(lambda: banner_end in self.output(), STARTUP_TIMEOUT_S, "the banner")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def login_link(self) -> str:
        """The banner's dashboard link, which logs in as ``you``."""
        line = next(line for line in self.output().splitlines() if line.startswith("Dashboard as you: "))
        return line.removeprefix("Dashboard as you: ").strip()

    def ready(self, client: httpx.Client) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            pytest.fail(f"matchbox up exited with {self.process.returncode}\n{self.report()}")
        try:
            return client.get(f"{self.url}/ready").status_code == 200
        except httpx.TransportError:
            return False

    def close(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)  # stops its children in order
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def report(self) -> str:
        parts = [f"--- matchbox up:\n{self.log.read_text(errors='replace')}"]
        for log in sorted((self.data_dir / "logs").glob("*.log")):
            lines = log.read_text(errors="replace").splitlines()
            parts.append(f"--- {log.name}, last lines of {len(lines)}:")
            parts += lines[-15:]
        return "\n".join(parts)


@pytest.fixture
def browser() -> Iterator[Browser]:
    """Headless Debian Chromium (checked first, so a machine without it starts nothing)."""
    require_chromium()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield launched
        finally:
            launched.close()


@contextmanager
def running_system(folder: Path, *options: str, **kind: Any) -> Iterator[System]:
    running = System(folder, *options, **kind)
    try:
        running.start()
        yield running
    finally:
        running.close()
        print(running.report())  # shown with the captured output of a failing test


@pytest.fixture
def system(tmp_path: Path) -> Iterator[System]:
    with running_system(tmp_path) as running:
        yield running


class Desk:
    """matchbox.client for the test's own trading: the admin's client, and one per trader."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.admin = Client(url, admin_token=ADMIN_TOKEN)
        self.clients = [self.admin]

    def create_market(self, market_id: str, scheme: Literal["binary", "odds"], shard: int | None = None) -> None:
        self.admin.create_market(market_id, scheme, collateral=True, shard=shard)

    def trader(self, account: str, cents: int = 10_000_000, shards: int = 1) -> Client:
        """A new account with ``cents`` deposited (on each of ``shards``), and a client with its key."""
        issued = self.admin.create_account(account)
        for shard in range(shards):
            self.admin.deposit(account, cents, shard)
        return self.client(issued.api_key)

    def client(self, key: str) -> Client:
        made = Client(self.url, key)
        self.clients.append(made)
        return made

    def close(self) -> None:
        for client in self.clients:
            client.close()


@contextmanager
def desk_of(system: System) -> Iterator[Desk]:
    desk = Desk(system.url)
    try:
        yield desk
    finally:
        desk.close()


@pytest.fixture
def desk(system: System) -> Iterator[Desk]:
    with desk_of(system) as running:
        yield running


def walk(desk: Desk, page: Page, candles: int) -> None:
    """Trade at a random walk of prices strictly inside the spread (51..55 cents: each sell rests,
    the buy takes it, the book is as before) until the chart shows ``candles`` one-second bars."""
    rng = random.Random(7)
    seller, buyer = desk.trader("walker-a"), desk.trader("walker-b")
    price = 53
    deadline = time.monotonic() + 30
    while page.evaluate("window.matchbox.bars()") < candles:
        assert time.monotonic() < deadline, f"the chart did not reach {candles} candles"
        price = min(55, max(51, price + rng.choice((-1, 0, 1))))
        qty = rng.randint(1, 9)
        seller.place_order("rain", "sell", price=price, qty=qty)
        buyer.place_order("rain", "buy", price=price, qty=qty)


def ticket(page: Page, side: str, price: str, qty: str) -> None:
    """Fill in the order ticket and place the order (as the logged-in account)."""
    page.locator(f"#ticket-side-{side}").check()
    page.locator("#ticket-price").fill(price)
    page.locator("#ticket-qty").fill(qty)
    page.locator("#ticket-submit").click()


def order_row(page: Page, status: str) -> Locator:
    return page.locator(f'#orders tr[data-account="you"][data-status="{status}"]')


def money(page: Page, field: str) -> Locator:
    """The account panel's total, reserved or free (text in dollars, ``data-cents`` in cents)."""
    return page.locator(f'#account [data-money="{field}"]')


def expect_money(page: Page, total: str, reserved: str, free: str) -> None:
    for field, shown in (("total", total), ("reserved", reserved), ("free", free)):
        expect(money(page, field).locator("dd")).to_have_text(shown)


def new_page(browser: Browser) -> tuple[Page, list[str]]:
    """A page with the test's timeouts, and the list its script errors go to."""
    page = browser.new_page(viewport={"width": 1440, "height": 960})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.set_default_timeout(UI_TIMEOUT_MS)
    expect.set_options(timeout=UI_TIMEOUT_MS)
    return page, errors


def test_dashboard_trades_through_the_ticket(browser: Browser, system: System, desk: Desk) -> None:
    desk.create_market("rain", "binary")
    desk.create_market("derby", "odds")
    bob, cat = desk.trader("bob"), desk.trader("cat")
    page, errors = new_page(browser)
    sockets: list[str] = []
    page.on("websocket", lambda socket: sockets.append(socket.url))

    # the banner's link logs in; the key goes to localStorage and out of the address bar
    link = system.login_link()
    key = link.partition("#key=")[2]
    page.goto(f"{link}&market=rain")
    expect(page.locator("#account-name")).to_have_text("you")
    expect_money(page, "$1,000.00", "$0.00", "$1,000.00")
    assert page.evaluate("location.hash") == "#market=rain"
    assert page.evaluate("localStorage.getItem('matchbox.key')") == key
    expect(page.locator("#login")).to_be_hidden()
    expect(page.locator("#auth-badge")).to_be_hidden()
    expect(page.locator("#ticket-account-field")).to_be_hidden()  # the key names the account

    # a binary market: cents and contracts, buy/sell; a sell of 10 at 52 reserves 10 x 48 cents
    expect(page.locator('[data-market-id="rain"]')).to_have_class("market selected")
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    expect(page.locator("#ticket-price-label")).to_have_text("Price (¢)")
    ticket(page, "sell", "52", "10")
    expect(order_row(page, "open")).to_have_count(1)
    ask = page.locator('#book .level.ask[data-price="52"]')
    expect(ask).to_have_attribute("data-qty", "10")
    expect_money(page, "$1,000.00", "$4.80", "$995.20")

    # bob takes 4: you pay 48 cents a contract into the market and hold 4 NO contracts
    bob.place_order(market_id="rain", side="buy", price=55, qty=4)
    expect(page.locator('#tape tr[data-price="52"][data-qty="4"]')).to_have_count(1)
    expect(ask).to_have_attribute("data-qty", "6")  # the book updated from the feed
    expect(order_row(page, "partially_filled")).to_have_count(1)  # the orders channel, after auth
    expect_money(page, "$998.08", "$2.88", "$995.20")
    position = page.locator('#positions tr[data-position="rain"]')
    expect(position).to_have_attribute("data-no", "4")
    expect(position).to_contain_text("NO 4")
    expect(page.locator("#chart")).not_to_have_attribute("data-bars", "0")
    expect(page.locator("#chart")).to_have_attribute("data-last-close", "52")
    assert page.evaluate("window.matchbox.bars()") >= 1  # the chart's series holds the candle
    expect(page.locator('#stats [data-stat="last"] .value')).to_have_text("52¢")

    # cancel from the orders table: the reserve comes back
    order_row(page, "partially_filled").locator("button.cancel").click()
    expect(order_row(page, "cancelled")).to_have_count(1)
    expect(ask).to_have_count(0)
    expect_money(page, "$998.08", "$0.00", "$998.08")

    # more than the free balance: refused, and said so
    ticket(page, "buy", "99", "5000")
    expect(page.locator("#ticket-message")).to_contain_text("Insufficient funds")
    expect(order_row(page, "open")).to_have_count(0)

    # an odds market: decimal odds, back/lay, a stake in cents; the feed speaks odds too (as REST)
    page.locator('[data-market-id="derby"]').click()
    expect(page.locator("#ticket-price-label")).to_have_text("Odds (decimal)")
    expect(page.locator("#ticket-qty-label")).to_have_text("Stake (¢)")
    ticket(page, "back", "2.5", "2000")
    expect(page.locator('#book .level.ask[data-price="2.5"]')).to_have_attribute("data-qty", "2000")
    expect_money(page, "$998.08", "$20.00", "$978.08")
    bob.place_order(market_id="derby", side="lay", odds="2.5", stake=500)
    expect(page.locator('#tape tr.lay[data-price="2.5"][data-qty="500"]')).to_have_count(1)
    expect(page.locator('#book .level.ask[data-price="2.5"]')).to_have_attribute("data-qty", "1500")
    expect(page.locator("#chart")).to_have_attribute("data-last-close", "2.5")
    expect(page.locator('#positions tr[data-position="derby"]')).to_have_attribute("data-stake", "500")
    expect_money(page, "$993.08", "$15.00", "$978.08")

    # the feed drops; it comes back with last_id, and a trade made meanwhile shows
    page.locator('[data-market-id="rain"]').click()
    expect(page.locator('#tape tr[data-price="52"]')).to_have_count(1)
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    page.evaluate("window.matchbox.feed.socket.close()")
    cat.place_order(market_id="rain", side="sell", price=60, qty=3)
    bob.place_order(market_id="rain", side="buy", price=60, qty=3)
    expect(page.locator('#tape tr[data-price="60"][data-qty="3"]')).to_have_count(1)
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    assert any("last_id=" in url for url in sockets), sockets

    # a livelier market for the picture: a book, and trades until the chart has some candles
    maker = desk.trader("maker")
    for price, qty in ((56, 25), (58, 40), (63, 15), (66, 30)):
        maker.place_order(market_id="rain", side="sell", price=price, qty=qty)
    for price, qty in ((50, 20), (48, 35), (45, 50), (41, 12)):
        maker.place_order(market_id="rain", side="buy", price=price, qty=qty)
    walk(desk, page, CANDLES_IN_PICTURE)
    expect(page.locator('#book .level.ask[data-price="56"]')).to_have_attribute("data-qty", "25")
    expect(page.locator('#book .level.bid[data-price="41"]')).to_have_count(1)
    ticket(page, "buy", "47", "10")
    expect(order_row(page, "open")).to_have_count(1)
    expect(money(page, "reserved").locator("dd")).to_have_text("$19.70")  # 47 x 10 cents, and the back's 1500
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    # logging out forgets the key and brings the login box back
    page.locator("#logout").click()
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#account")).to_be_hidden()
    expect(page.locator("#orders tr.order")).to_have_count(0)
    assert page.evaluate("localStorage.getItem('matchbox.key')") is None
    assert not errors, errors


def test_dashboard_in_open_mode(browser: Browser, tmp_path: Path) -> None:
    """``matchbox up --open``: a red badge, no login, the ticket names its account, whose balance
    the account panel shows."""
    with running_system(tmp_path, "--open") as system, desk_of(system) as desk:
        desk.create_market("rain", "binary")
        desk.admin.deposit("ann", 50_000)
        page, errors = new_page(browser)
        page.goto(f"{system.url}/#market=rain")
        expect(page.locator("#auth-badge")).to_have_text("OPEN MODE — no authentication")
        expect(page.locator("#login")).to_be_hidden()
        page.locator("#ticket-account").fill("ann")
        ticket(page, "buy", "40", "10")
        expect(page.locator('#orders tr[data-account="ann"][data-status="open"]')).to_have_count(1)
        expect(page.locator("#account-name")).to_have_text("ann")
        expect_money(page, "$500.00", "$4.00", "$496.00")
        assert not errors, errors


def test_dashboard_on_a_cluster_trades_on_shards_whose_ids_pass_2_to_the_53(browser: Browser, tmp_path: Path) -> None:
    """``matchbox cluster up`` (three shards): a binary market on shard 2, whose order and trade ids
    are above 2**53 (a JavaScript number is not exact there), and an odds market on shard 1. The
    ticket places, the feed fills, the orders table cancels by the exact id, the feed resumes with
    its one cursor over three shards, and the account shows the cash of all three."""
    base = free_ports(12)  # six nodes, each with its cluster bus port
    with (
        running_system(tmp_path, command=("cluster", "up"), valkey_port=base) as system,
        desk_of(system) as desk,
    ):
        desk.create_market("rain", "binary", shard=2)
        desk.create_market("derby", "odds", shard=1)
        bob = desk.trader("bob", shards=3)
        page, errors = new_page(browser)
        page.goto(f"{system.login_link()}&market=rain")
        expect(page.locator("#account-name")).to_have_text("you")
        expect_money(page, "$3,000.00", "$0.00", "$3,000.00")  # $1,000 on each shard
        expect(page.locator("#connection")).to_have_attribute("data-state", "live")

        # two orders in one batch: consecutive ids, so one is odd, and no double above 2**53 holds it
        you = desk.client(system.login_link().partition("#key=")[2])
        sells = [order_body("rain", "sell", price=price, qty=qty) for price, qty in ((52, 10), (53, 1))]
        ids = [item.order.order_id for item in you.place_orders(sells).items if item.order is not None]
        assert (ids[1] - ids[0], ids[0] > 2**53) == (1, True)  # shard 2's, in its high bits
        expect(order_row(page, "open")).to_have_count(2)
        shown = page.locator("#orders tr.order").evaluate_all("rows => rows.map((row) => row.dataset.orderId)")
        assert sorted(shown) == sorted(str(i) for i in ids)  # exact, as the API wrote them
        bob.place_order(market_id="rain", side="buy", price=55, qty=4)
        expect(page.locator('#tape tr[data-price="52"][data-qty="4"]')).to_have_count(1)
        expect(order_row(page, "partially_filled")).to_have_count(1)
        page.locator(f'#orders tr[data-order-id="{ids[1]}"] button.cancel').click()  # by the odd id
        expect(page.locator(f'#orders tr[data-order-id="{ids[1]}"]')).to_have_attribute("data-status", "cancelled")
        assert you.order(ids[1]).status == "cancelled"
        expect_money(page, "$2,998.08", "$2.88", "$2,995.20")  # 4 x 48 paid; 6 x 48 still reserved

        page.locator('[data-market-id="derby"]').click()
        ticket(page, "back", "2.5", "2000")
        expect(page.locator('#book .level.ask[data-price="2.5"]')).to_have_attribute("data-qty", "2000")
        page.evaluate("window.matchbox.feed.socket.close()")
        bob.place_order(market_id="derby", side="lay", odds="2.5", stake=500)
        expect(page.locator('#tape tr.lay[data-price="2.5"][data-qty="500"]')).to_have_count(1)
        expect(page.locator("#connection")).to_have_attribute("data-state", "live")
        expect(page.locator('#book .level.ask[data-price="2.5"]')).to_have_attribute("data-qty", "1500")
        assert not errors, errors
