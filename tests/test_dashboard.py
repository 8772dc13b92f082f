"""The dashboard in a real browser: Debian's Chromium, driven by Playwright, against real processes.

``matchbox up`` (Valkey, engine, API, consumers) runs on free ports in a temporary folder, with
API keys, and makes the account ``you`` with $1,000. The page is opened headless with the login
link ``up`` prints (``#key=…``): the account panel shows the balance. A sell goes in through the
order ticket and its reserve shows; another account's crossing buy (over HTTP, with its own key)
fills part of it: the trade must show on the tape, the book must change, a candle must appear on
the chart, the order its state (from the WebSocket's orders channel, after ``auth``), and the
account panel the money moved and the position; the market's title and question head the page.
The same on an odds market (back/lay, odds and stake), made with no terms: the page shows none. An
order beyond the free balance is refused in words. The feed is then dropped and must
resume with ``last_id``. Then what traders use every day: "buy NO" through the ticket places the
sell of YES it is, the ticket saying its cost and payout first; the positions show their P&L
(realised and marked to the last trade) from the fills table's fills; on a market with fees the
panel says them, the ticket the most an order could pay in them, the fills table each fill's fee,
and the realised P&L is net of them; the YES and NO prices stand
side by side; post-only and GTD orders go in (a crossing post-only is refused, a GTD one expires);
cancel-all empties the market of the account's orders. The page, with a book and a few seconds of
trading on it, is saved to ``docs/img/dashboard.png`` for the README; last, logging out brings
back the login box. With ``--open`` the page shows a red badge instead of a login box, trades as
the account it names and cancels all of that account's; and a market's title, question, category,
open and close times and rules show. The page's arithmetic (NO as YES, cost and payout, fees,
P&L) is checked on its own, in the browser.

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
from playwright.sync_api import Browser, Locator, Page, Route, expect, sync_playwright

from conftest import ADMIN_TOKEN, wait_until
from matchbox.bus.server import free_port, free_ports
from matchbox.client import Client, order_body

pytestmark = pytest.mark.e2e  # the browser test: a real system driven by chromium

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "img" / "dashboard.png"
STATIC = Path(__file__).resolve().parents[1] / "src" / "matchbox" / "web" / "static"
STATIC_ORIGIN = "http://dashboard.test/"  # served by the test itself (static_files), never looked up
STARTUP_TIMEOUT_S = 60.0
UI_TIMEOUT_MS = 15_000
CANDLES_IN_PICTURE = 8
Terms = dict[str, str | int | list[str] | None]  # a market's terms, as POST /v1/markets takes them
RAIN_TERMS: dict[str, str] = {
    "title": "Rain in Lisbon",
    "question": "Will it rain in Lisbon on Friday?",
    "rules": "YES if the IPMA station at Lisbon records any rain on Friday, local time; NO otherwise.",
    "category": "weather",
}


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

    def create_market(
        self,
        market_id: str,
        scheme: Literal["binary", "odds"],
        shard: int | None = None,
        terms: Terms | None = None,
        fees: dict[str, int] | None = None,
    ) -> None:
        """A collateral market; ``terms``: its title, question, rules, category, outcomes,
        opens_at_ms and closes_at_ms, and ``fees`` its fee schedule, as POST /v1/markets takes them."""
        if not terms and not fees:
            self.admin.create_market(market_id, scheme, collateral=True, shard=shard)
            return
        body: dict[str, object] = {"market_id": market_id, "scheme": scheme, "collateral": True, "shard": shard}
        body |= terms or {}
        if fees:
            body["fees"] = fees
        self.admin.wait(self.admin.inner.call("POST", "/markets", json=body, admin=True))

    def trader(self, account: str, cents: int = 10_000_000, shards: int = 1) -> Client:
        """A new account with ``cents`` deposited (on each of ``shards``), and a client with its key."""
        issued = self.admin.create_account(account)
        for shard in range(shards):
            self.admin.deposit(account, cents, shard)
        return self.client(issued.api_key)

    def client(self, key: str | None = None, account: str | None = None) -> Client:
        """A client with ``key``, or in open mode one acting for ``account``."""
        made = Client(self.url, key, account=account)
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


def fill_ticket(page: Page, side: str, price: str, qty: str) -> None:
    """Fill in the order ticket (side: buy, sell, buy-no, sell-no, back or lay)."""
    page.locator(f"#ticket-side-{side}").check()
    page.locator("#ticket-price").fill(price)
    page.locator("#ticket-qty").fill(qty)


def ticket(page: Page, side: str, price: str, qty: str) -> None:
    """Fill in the order ticket and place the order (as the logged-in account)."""
    fill_ticket(page, side, price, qty)
    page.locator("#ticket-submit").click()


def order_row(page: Page, status: str) -> Locator:
    return page.locator(f'#orders tr[data-account="you"][data-status="{status}"]')


def position(page: Page, market_id: str) -> Locator:
    """A row of the account's positions: ``data-yes``/``data-no``, and once the fills account for
    it, ``data-realised`` and ``data-marked`` (P&L in cents)."""
    return page.locator(f'#positions tr[data-position="{market_id}"]')


def fill_row(page: Page, side: str, price: int, qty: int, market_id: str = "rain") -> Locator:
    """A row of the account's fills table (``data-fee``: the fee it paid, in cents)."""
    return page.locator(
        f'#fills tr.fill[data-market="{market_id}"][data-side="{side}"][data-price="{price}"][data-qty="{qty}"]'
    )


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
    closes_at_ms = int(time.time() * 1000) + 3 * 86_400_000  # in 3 days: it trades all through the test
    desk.create_market("rain", "binary", terms={**RAIN_TERMS, "closes_at_ms": closes_at_ms})
    desk.create_market("derby", "odds")  # no terms: the page shows none
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
    expect(page.locator("#market-heading")).to_have_text("derby")  # a market made with no terms
    for absent in ("#market-question", "#market-clock", "#market-rules", "#yes-no"):
        expect(page.locator(absent)).to_be_hidden()
    expect(page.locator("#ticket-price-label")).to_have_text("Odds (decimal)")
    expect(page.locator("#ticket-qty-label")).to_have_text("Stake (¢)")
    fill_ticket(page, "back", "2.5", "2000")
    expect(page.locator("#ticket-cost")).to_have_text("Cost $20.00 · pays $50.00 if it wins (profit $30.00)")
    page.locator("#ticket-submit").click()
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

    # the market's terms (the open-mode test looks at them closer)
    expect(page.locator("#market-heading")).to_have_text(RAIN_TERMS["title"])
    expect(page.locator("#market-question")).to_have_text(RAIN_TERMS["question"])
    expect(page.locator("#market-clock")).to_contain_text("Closes ")

    you = desk.client(key)
    trade_no_and_yes(page, you, bob, cat)
    trade_with_fees(page, desk, you, bob, cat)

    # a livelier market for the picture: a book, and trades until the chart has some candles
    maker = desk.trader("maker")
    for price, qty in ((56, 25), (58, 40), (63, 15), (66, 30)):
        maker.place_order(market_id="rain", side="sell", price=price, qty=qty)
    for price, qty in ((50, 20), (48, 35), (45, 50), (41, 12)):
        maker.place_order(market_id="rain", side="buy", price=price, qty=qty)
    # YES and NO side by side: NO's bid is 100 - YES's ask, its ask 100 - YES's bid; its button
    # fills the ticket with a buy of NO at its ask
    quotes = {"yes": ("50¢", "56¢"), "no": ("44¢", "50¢")}
    for outcome, prices in quotes.items():
        for which, shown in zip(("bid", "ask"), prices, strict=True):
            expect(page.locator(f'#yes-no [data-outcome="{outcome}"] [data-quote="{which}"]')).to_have_text(shown)
    page.locator('#yes-no [data-outcome="no"] button').click()
    expect(page.locator("#ticket-side-buy-no")).to_be_checked()
    expect(page.locator("#ticket-price")).to_have_value("50")
    walk(desk, page, CANDLES_IN_PICTURE)
    expect(page.locator('#book .level.ask[data-price="56"]')).to_have_attribute("data-qty", "25")
    expect(page.locator('#book .level.bid[data-price="41"]')).to_have_count(1)
    post_only_gtd_and_cancel_all(page, you)
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


def trade_no_and_yes(page: Page, you: Client, bob: Client, cat: Client) -> None:
    """On ``rain``, where ``you`` hold NO 4 sold at 52: buy NO at 40 for 4 through the ticket (it
    is a sell of YES at 60), bob takes it, then buy YES 3 at 50 from cat; the ticket says each
    order's cost and payout before it goes, and the position its P&L from the fills."""
    fill_ticket(page, "buy-no", "40", "4")
    expect(page.locator("#ticket-price-label")).to_have_text("NO price (¢)")
    expect(page.locator("#ticket-cost")).to_have_text("Cost $1.60 · pays $4.00 if NO (profit $2.40)")
    page.locator("#ticket-submit").click()
    expect(order_row(page, "open")).to_have_count(1)
    assert [(o.side, o.price, o.qty) for o in you.orders(market_id="rain").items] == [("sell", 60, 4)]

    # NO 8 at an average of 56 (in YES: (4 x 52 + 4 x 60) / 8), marked at 60: 8 x -4 cents
    bob.place_order(market_id="rain", side="buy", price=60, qty=4)
    expect(position(page, "rain")).to_have_attribute("data-no", "8")
    expect(fill_row(page, "sell", 60, 4)).to_have_count(1)
    expect(fill_row(page, "sell", 52, 4)).to_have_count(1)
    expect(position(page, "rain")).to_have_attribute("data-marked", "-32")
    expect(position(page, "rain")).to_have_attribute("data-realised", "0")
    expect(position(page, "rain")).to_contain_text("NO 8 @ 44¢")
    expect(position(page, "rain").locator(".pnl").nth(1)).to_have_text("-$0.32")

    # buying 3 YES at 50 closes 3 NO sold at 56: 18 cents realised; the 5 left, marked at 50, +30
    cat.place_order(market_id="rain", side="sell", price=50, qty=3)
    expect(page.locator('#book .level.ask[data-price="50"]')).to_have_attribute("data-qty", "3")
    fill_ticket(page, "buy", "50", "3")
    expect(page.locator("#ticket-cost")).to_have_text("Cost $1.50 · pays $3.00 if YES (profit $1.50)")
    page.locator("#ticket-submit").click()
    expect(fill_row(page, "buy", 50, 3)).to_have_count(1)
    expect(position(page, "rain")).to_have_attribute("data-no", "5")
    expect(position(page, "rain")).to_have_attribute("data-realised", "18")
    expect(position(page, "rain")).to_have_attribute("data-marked", "30")
    expect(position(page, "rain").locator(".pnl")).to_have_text(["+$0.18", "+$0.30"])


HAIL_FEES = {"maker_bps": 50, "taker_bps": 100, "taker_per_contract": 1}  # maker 0.5 %, taker 1 % + 1¢


def trade_with_fees(page: Page, desk: Desk, you: Client, bob: Client, cat: Client) -> None:
    """On ``hail``, a binary market with fees: the panel says the schedule; the ticket says the
    most a buy of 10 YES at 47 could cost in fees before it goes (each contract a fill at the
    taker's rate: ceil(1 % of 47) + 1 = 2 cents, x 10); bob's resting sell fills it as one fill,
    which costs ceil(1 % x 470) + 10 = 15 cents, and the fills table says so; selling 4 back at 55
    to cat costs ceil(1 % x 4 x 45) + 4 = 6, and realises 4 x 8 = 32 less the 21 paid: 11. On
    ``sleet``, an odds market with a commission, the panel and the ticket say it. Back to ``rain``."""
    desk.create_market("hail", "binary", fees=HAIL_FEES)
    desk.create_market("sleet", "odds", fees={"commission_bps": 500})
    total = you.balance().total
    bob.place_order(market_id="hail", side="sell", price=47, qty=10)
    page.locator('[data-market-id="hail"]').click()
    expect(page.locator("#market-fees")).to_have_text("Fees: maker 0.5 %, taker 1 % + 1¢/contract")
    expect(page.locator('#book .level.ask[data-price="47"]')).to_have_attribute("data-qty", "10")
    fill_ticket(page, "buy", "47", "10")
    cost = page.locator("#ticket-cost")
    expect(cost).to_have_text("Cost $4.70 + fees up to $0.20 · pays $10.00 if YES (profit at least $5.10)")
    expect(cost).to_have_attribute("data-fee", "20")
    page.locator("#ticket-submit").click()
    bought = fill_row(page, "buy", 47, 10, "hail")
    expect(bought).to_have_attribute("data-fee", "15")
    expect(bought.locator(".fee")).to_have_text("$0.15")
    expect(position(page, "hail")).to_have_attribute("data-yes", "10")
    expect(position(page, "hail")).to_have_attribute("data-realised", "-15")  # the fee, nothing closed yet

    cat.place_order(market_id="hail", side="buy", price=55, qty=4)
    expect(page.locator('#book .level.bid[data-price="55"]')).to_have_attribute("data-qty", "4")
    fill_ticket(page, "sell", "55", "4")
    expect(cost).to_have_text("Cost $1.80 + fees up to $0.08 · pays $4.00 if NO (profit at least $2.12)")
    page.locator("#ticket-submit").click()
    sold = fill_row(page, "sell", 55, 4, "hail")
    expect(sold).to_have_attribute("data-fee", "6")
    expect(sold.locator(".fee")).to_have_text("$0.06")
    expect(position(page, "hail")).to_have_attribute("data-yes", "6")
    expect(position(page, "hail")).to_have_attribute("data-realised", "11")  # 32 made, 21 paid in fees
    expect(position(page, "hail")).to_have_attribute("data-marked", "48")  # 6 x (55 - 47): fees not in it
    expect(position(page, "hail").locator(".pnl")).to_have_text(["+$0.11", "+$0.48"])
    expect(position(page, "hail")).to_contain_text("YES 6 @ 47¢")
    expect(money(page, "total")).to_have_attribute("data-cents", str(total - 470 - 15 + 220 - 6))

    page.locator('[data-market-id="sleet"]').click()
    expect(page.locator("#market-fees")).to_have_text("Commission 5 % on net winnings")
    fill_ticket(page, "back", "2.5", "2000")
    expect(cost).to_have_text("Cost $20.00 · pays $50.00 if it wins (profit $30.00) · commission 5 % of net winnings")
    page.locator('[data-market-id="rain"]').click()
    expect(page.locator("#market-fees")).to_be_hidden()  # rain charges nothing


def post_only_gtd_and_cancel_all(page: Page, you: Client) -> None:
    """On ``rain`` (asks from 56): a post-only buy at the ask is refused in words; a post-only GTD
    buy rests, as the API shows, and expires by itself; cancel-all takes the market's resting
    orders of the account, and only that market's."""
    page.locator("#ticket-post-only").check()
    ticket(page, "buy", "56", "1")
    expect(page.locator("#ticket-message")).to_contain_text("Post only: this order would trade at once")
    expect(order_row(page, "open")).to_have_count(0)

    page.locator("#ticket-tif").select_option("GTD")
    expect(page.locator("#ticket-expires")).to_be_visible()
    soon = page.evaluate(  # 4 s ahead, as a datetime-local input reads it (the browser's local time)
        "() => { const at = new Date(Date.now() + 4000);"
        " return new Date(at - at.getTimezoneOffset() * 60000).toISOString().slice(0, 19); }"
    )
    page.locator("#ticket-expires").fill(soon)
    ticket(page, "buy", "30", "1")
    expect(order_row(page, "open")).to_have_count(1)
    order_id = int(order_row(page, "open").get_attribute("data-order-id") or 0)
    placed = you.order(order_id)
    assert (placed.tif, placed.post_only, placed.price) == ("GTD", True, 30)
    expired = page.locator(f'#orders tr[data-order-id="{order_id}"]')
    expect(expired).to_have_attribute("data-status", "cancelled")
    expect(expired.locator(".status")).to_have_attribute("title", "EXPIRED")
    page.locator("#ticket-post-only").uncheck()
    page.locator("#ticket-tif").select_option("GTC")
    expect(page.locator("#ticket-expires")).to_be_hidden()

    ticket(page, "buy", "45", "2")
    expect(order_row(page, "open")).to_have_count(1)
    ticket(page, "buy", "44", "2")
    expect(order_row(page, "open")).to_have_count(2)
    page.locator("#cancel-all").click()
    expect(page.locator("#ticket-message")).to_have_text("Cancelled 2 orders in rain.")
    expect(order_row(page, "open")).to_have_count(0)
    expect(order_row(page, "partially_filled")).to_have_count(1)  # derby's back stays
    assert you.orders(market_id="rain").items == []


def test_dashboard_in_open_mode(browser: Browser, tmp_path: Path) -> None:
    """``matchbox up --open``: a red badge, no login, the ticket names its account, whose balance
    the account panel shows and whose orders cancel-all cancels (it names the account, as open
    mode asks). A market's title, question, category, outcomes, close time (a local date-time and
    a countdown) and rules (folded) show; one not open yet says when it opens."""
    with running_system(tmp_path, "--open") as system, desk_of(system) as desk:
        now_ms = int(time.time() * 1000)
        closes_at_ms = now_ms + 3 * 86_400_000 + 90 * 60_000  # in 3 days and 1.5 hours
        desk.create_market("rain", "binary", terms={**RAIN_TERMS, "closes_at_ms": closes_at_ms})
        opens_at_ms = now_ms + 2 * 86_400_000 + 30 * 60_000  # in 2 days and half an hour
        desk.create_market("snow", "binary", terms={"title": "Snow in Lisbon", "opens_at_ms": opens_at_ms})
        desk.admin.deposit("ann", 50_000)
        page, errors = new_page(browser)
        page.goto(f"{system.url}/#market=rain")
        expect(page.locator("#auth-badge")).to_have_text("OPEN MODE — no authentication")
        expect(page.locator("#login")).to_be_hidden()

        expect(page.locator("#market-heading")).to_have_text(RAIN_TERMS["title"])
        expect(page.locator("#market-question")).to_have_text(RAIN_TERMS["question"])
        expect(page.locator("#market-facts .tag")).to_have_text("weather")
        expect(page.locator("#market-facts .outcomes")).to_have_text("YES / NO")
        clock = page.locator("#market-clock")
        expect(clock).to_have_attribute("data-closes-at-ms", str(closes_at_ms))
        expect(clock).to_contain_text("in 3d 01h")
        local = page.evaluate(
            "(ms) => new Date(ms).toLocaleString([], {dateStyle: 'medium', timeStyle: 'short', hour12: false})",
            closes_at_ms,
        )
        expect(clock).to_contain_text(f"Closes {local}")
        expect(page.locator("#market-rules .rules-text")).to_be_hidden()  # folded
        page.locator("#market-rules summary").click()
        expect(page.locator("#market-rules .rules-text")).to_have_text(RAIN_TERMS["rules"])
        expect(page.locator("#yes-no")).to_be_visible()

        page.locator("#ticket-account").fill("ann")
        ticket(page, "buy", "40", "10")
        ann_open = page.locator('#orders tr[data-account="ann"][data-status="open"]')
        expect(ann_open).to_have_count(1)
        expect(page.locator("#account-name")).to_have_text("ann")
        expect_money(page, "$500.00", "$4.00", "$496.00")
        ticket(page, "buy", "39", "5")
        expect(ann_open).to_have_count(2)
        page.locator("#cancel-all").click()
        expect(page.locator("#ticket-message")).to_have_text("Cancelled 2 orders in rain.")
        expect(ann_open).to_have_count(0)
        expect_money(page, "$500.00", "$0.00", "$500.00")
        assert desk.client(account="ann").orders(market_id="rain").items == []

        page.locator('[data-market-id="snow"]').click()
        expect(page.locator("#market-heading")).to_have_text("Snow in Lisbon")
        expect(page.locator("#market-clock")).to_contain_text("Opens ")
        expect(page.locator("#market-clock")).to_contain_text("in 2d 00h")
        expect(page.locator("#market-question")).to_be_hidden()
        expect(page.locator("#market-rules")).to_be_hidden()
        expect(page.locator("#ticket-note")).to_have_text("This market is suspended: it takes no orders.")
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


def static_files(route: Route) -> None:
    """The dashboard's static files from the source tree, for a page at ``STATIC_ORIGIN`` (modules
    load from an origin, not from file:), and a blank page at its root."""
    name = route.request.url.removeprefix(STATIC_ORIGIN)
    if name:
        route.fulfill(path=STATIC / name)
    else:
        route.fulfill(content_type="text/html", body="<!doctype html><title>the dashboard's modules</title>")


def call(page: Page, module: str, function: str, *args: object) -> Any:
    """``function(...args)`` of one of the page's modules, run in the browser."""
    script = "async ([module, name, args]) => (await import(module))[name](...args)"
    return page.evaluate(script, [module, function, list(args)])


def fill(side: str, price: float, qty: int, fee: int | None = None) -> dict[str, Any]:
    """One of the account's fills as GET /account/trades gives it (what the P&L reads of it)."""
    return {"side": side, "price": price, "qty": qty, "fee": fee}


def test_dashboard_arithmetic(browser: Browser) -> None:
    """The page's own arithmetic, in the browser that runs it: a NO order is the YES order it is,
    NO's prices mirror YES's, what a ticket costs and pays, the fees of a fill (rounded up per
    fill, as the engine does) and the most an order could pay in them, a fee schedule in words,
    and the P&L of a position, net of the fees its fills paid."""
    page, errors = new_page(browser)
    page.route(f"{STATIC_ORIGIN}**", static_files)
    page.goto(STATIC_ORIGIN)
    contracts = "./contracts.js"
    assert call(page, contracts, "asYesOrder", "buy", 40, 3) == {"side": "sell", "price": 60, "qty": 3}
    assert call(page, contracts, "asYesOrder", "sell", 30, 2) == {"side": "buy", "price": 70, "qty": 2}
    assert call(page, contracts, "asYesOrder", "buy", None, 5) == {"side": "sell", "price": None, "qty": 5}
    assert call(page, contracts, "noQuote", 50, 56) == {"bid": 44, "ask": 50}
    assert call(page, contracts, "noQuote", None, 56) == {"bid": 44, "ask": None}

    def cost(scheme: str, side: str, price: object, qty: int) -> Any:
        return call(page, contracts, "orderCost", scheme, side, price, qty)

    assert cost("binary", "buy", 40, 3) == {"cost": 120, "payout": 300, "when": "YES"}
    assert cost("binary", "sell", 60, 3) == {"cost": 120, "payout": 300, "when": "NO"}  # buy NO at 40
    assert cost("odds", "back", "2.5", 2000) == {"cost": 2000, "payout": 5000, "when": "it wins"}
    assert cost("odds", "lay", "2.5", 500) == {"cost": 750, "payout": 1250, "when": "it loses"}
    assert cost("odds", "lay", "1.33", 10) == {"cost": 4, "payout": 14, "when": "it loses"}  # 3.3 up
    assert cost("odds", "back", "1.33", 10) == {"cost": 10, "payout": 13, "when": "it wins"}  # 3.3 down
    assert cost("binary", "buy", None, 3) is None  # a market order: the book decides
    assert cost("ticks", "buy", 40, 3) is None

    schedule = {"maker_bps": 50, "taker_bps": 100, "maker_per_contract": 0, "taker_per_contract": 1}

    def fee(fees: dict[str, int] | None, role: str, side: str, price: int, qty: int) -> Any:
        return call(page, contracts, "fillFee", fees, role, side, price, qty)

    assert fee(schedule, "taker", "buy", 47, 10) == 15  # ceil(1 % of 470) = 5, + 10 x 1
    assert fee(schedule, "maker", "sell", 47, 10) == 3  # on 53 a contract: ceil(0.5 % of 530)
    assert fee(schedule, "taker", "sell", 55, 4) == 6  # on 45: ceil(1.8) + 4
    assert fee(schedule, "maker", "buy", 55, 4) == 2  # ceil(0.5 % of 220) = ceil(1.1)
    assert fee(schedule, "taker", "buy", 50, 100) == 150  # 1 % of 5000 is 50 exactly: no rounding up
    assert fee(schedule, "taker", "buy", 47, 1) == 2  # ceil(0.47) + 1: a fill per contract rounds each up
    assert fee({**schedule, "taker_bps": 10_000}, "taker", "buy", 99, 10**9) == 99 * 10**9 + 10**9  # past 2**53
    assert fee(None, "taker", "buy", 47, 10) == 0

    def fees_of(fees: dict[str, int] | None, scheme: str, side: str, price: int | None, qty: float) -> Any:
        return call(page, contracts, "orderFees", fees, scheme, side, price, qty)

    # at most ceil(1 % of 47) + 1 = 2 cents a contract (the maker's would be 1): 10 fills of one
    assert fees_of(schedule, "binary", "buy", 47, 10) == {"fee": 20, "upTo": True}
    assert fees_of(schedule, "binary", "sell", 55, 4) == {"fee": 8, "upTo": True}  # on 45 a contract
    flat = {"maker_bps": 0, "taker_bps": 0, "maker_per_contract": 2, "taker_per_contract": 2}
    assert fees_of(flat, "binary", "sell", 60, 5) == {"fee": 10, "upTo": False}  # exact: 2 cents a contract
    maker_dearer = {**flat, "maker_per_contract": 3}  # the higher rate: what the order reserves
    assert fees_of(maker_dearer, "binary", "buy", 60, 5) == {"fee": 15, "upTo": True}
    assert fees_of(schedule, "binary", "buy", None, 10) is None  # a market order
    assert fees_of(schedule, "binary", "buy", 47, 1.5) is None
    assert fees_of(None, "binary", "buy", 47, 10) is None
    commission = {"maker_bps": 0, "taker_bps": 0, "maker_per_contract": 0, "taker_per_contract": 0}
    commission |= {"commission_bps": 500}
    assert fees_of(commission, "binary", "buy", 47, 10) is None  # nothing charged on fills
    assert call(page, "./format.js", "feeSchedule", schedule) == "Fees: maker 0.5 %, taker 1 % + 1¢/contract"
    assert call(page, "./format.js", "feeSchedule", flat) == "Fees: maker 2¢/contract, taker 2¢/contract"
    assert call(page, "./format.js", "feeSchedule", {**flat, "maker_per_contract": 0}) == (
        "Fees: maker free, taker 2¢/contract"
    )
    assert call(page, "./format.js", "feeSchedule", commission) == "Commission 5 % on net winnings"
    assert call(page, "./format.js", "feeSchedule", None) == ""

    def pnl(scheme: str, held: dict[str, int], fills: list[dict[str, Any]], last: float | None) -> Any:
        position = {"scheme": scheme, "yes": 0, "no": 0, "stake": 0, "liability": 0, **held}
        return call(page, "./pnl.js", "positionPnl", position, fills, last)

    short = [fill("sell", 52, 4), fill("sell", 60, 4)]  # NO 8, at 56 on average (in YES)
    assert pnl("binary", {"no": 8}, short, 60) == {"held": -8, "average": 56, "realised": 0, "marked": -32}
    closing = [*short, fill("buy", 50, 3)]  # 3 of them bought back at 50: 6 cents each
    assert pnl("binary", {"no": 5}, closing, 50) == {"held": -5, "average": 56, "realised": 18, "marked": 30}
    flipped = [*short, fill("buy", 50, 10)]  # through zero: 8 closed, 2 YES at 50
    assert pnl("binary", {"yes": 2}, flipped, 53) == {"held": 2, "average": 50, "realised": 48, "marked": 6}
    long = [fill("buy", 40, 2), fill("buy", 46, 1), fill("sell", 50, 3)]  # closed flat
    assert pnl("binary", {}, long, 50) == {"held": 0, "average": 42, "realised": 24, "marked": 0}
    assert pnl("binary", {"no": 9}, short, 60) is None  # a fill not read yet: no P&L
    assert pnl("binary", {"no": 8}, short, None)["marked"] is None  # no last price: nothing to mark to
    with_fees = [fill("buy", 47, 10, 15), fill("sell", 55, 4, 6)]  # 32 made, 21 paid in fees
    assert pnl("binary", {"yes": 6}, with_fees, 55) == {"held": 6, "average": 47, "realised": 11, "marked": 48}
    assert pnl("binary", {"yes": 10}, with_fees[:1], 47)["realised"] == -15  # the opening fill's fee

    back = [fill("back", 2.5, 500)]  # laid off at 2.0 (625), it makes 125 whatever the result
    assert pnl("odds", {"stake": 500}, back, 2.0) == {"stake": 500, "liability": 0, "realised": 0, "marked": 125}
    lay = [fill("lay", 2.5, 500)]  # backed off at 2.0: 500 - 625
    assert pnl("odds", {"liability": 750}, lay, 2.0)["marked"] == -125
    assert pnl("odds", {"liability": 749}, lay, 2.0) is None  # 750 is what those fills make
    assert not errors, errors
