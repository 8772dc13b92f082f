"""The dashboard in a real browser: Debian's Chromium, driven by Playwright, against real processes.

``matchbox up`` (Valkey, engine, API, consumers) runs on free ports in a temporary folder. The
page is opened headless; a sell and a crossing buy go in through its order ticket, and the trade
must show on the tape, the book must change, a candle must appear on the chart and the orders
must show their states. The same on an odds market (back/lay, odds and stake). The feed is then
dropped and must resume with ``last_id``. The page, with a book and a few seconds of trading on
it, is saved to ``docs/img/dashboard.png`` for the README.

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
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from conftest import wait_until
from matchbox.bus.server import free_port

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "img" / "dashboard.png"
ADMIN_TOKEN = "dashboard-admin"
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

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.data_dir = folder / "data"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder / "up.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {key: value for key, value in os.environ.items() if key not in ("REDIS_URL", "DATABASE_URL")}
        env["MATCHBOX_ADMIN_TOKEN"] = ADMIN_TOKEN
        argv = [sys.executable, "-m", "matchbox", "up", "--data-dir", str(self.data_dir)]
        argv += ["--port", str(self.port), "--valkey-port", str(free_port())]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        with httpx.Client(timeout=2.0) as client:
            wait_until(lambda: self.ready(client), STARTUP_TIMEOUT_S, f"{self.url} to be ready")

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


@pytest.fixture
def system(tmp_path: Path) -> Iterator[System]:
    running = System(tmp_path)
    try:
        running.start()
        yield running
    finally:
        running.close()
        print(running.report())  # shown with the captured output of a failing test


@pytest.fixture
def http(system: System) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=system.url, timeout=10.0) as client:
        yield client


def create_market(http: httpx.Client, market_id: str, scheme: str) -> None:
    answer = http.post("/markets", json={"market_id": market_id, "scheme": scheme}, headers=_admin())
    assert answer.status_code == 201, answer.text


def _admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def place(http: httpx.Client, **body: Any) -> dict[str, Any]:
    answer = http.post("/orders", json=body)
    assert answer.status_code == 201, answer.text
    order: dict[str, Any] = answer.json()
    return order


def walk(http: httpx.Client, page: Page, candles: int) -> None:
    """Trade at a random walk of prices strictly inside the spread (51..55 cents: each sell rests,
    the buy takes it, the book is as before) until the chart shows ``candles`` one-second bars."""
    rng = random.Random(7)
    price = 53
    deadline = time.monotonic() + 30
    while page.evaluate("window.matchbox.bars()") < candles:
        assert time.monotonic() < deadline, f"the chart did not reach {candles} candles"
        price = min(55, max(51, price + rng.choice((-1, 0, 1))))
        qty = rng.randint(1, 9)
        place(http, market_id="rain", side="sell", price=price, qty=qty, account="walker-a")
        place(http, market_id="rain", side="buy", price=price, qty=qty, account="walker-b")


def ticket(page: Page, side: str, price: str, qty: str, account: str) -> None:
    """Fill in the order ticket and place the order."""
    page.locator(f"#ticket-side-{side}").check()
    page.locator("#ticket-price").fill(price)
    page.locator("#ticket-qty").fill(qty)
    page.locator("#ticket-account").fill(account)
    page.locator("#ticket-submit").click()


def order_row(page: Page, account: str, status: str) -> Locator:
    return page.locator(f'#orders tr[data-account="{account}"][data-status="{status}"]')


def test_dashboard_trades_through_the_ticket(browser: Browser, system: System, http: httpx.Client) -> None:
    create_market(http, "rain", "binary")
    create_market(http, "derby", "odds")
    page = browser.new_page(viewport={"width": 1440, "height": 960})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    sockets: list[str] = []
    page.on("websocket", lambda socket: sockets.append(socket.url))
    page.set_default_timeout(UI_TIMEOUT_MS)
    expect.set_options(timeout=UI_TIMEOUT_MS)
    page.goto(system.url)

    # a binary market: cents and contracts, buy/sell
    page.locator('[data-market-id="rain"]').click()
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    expect(page.locator("#ticket-price-label")).to_have_text("Price (¢)")
    ticket(page, "sell", "52", "10", "ann")
    expect(order_row(page, "ann", "open")).to_have_count(1)
    ask = page.locator('#book .level.ask[data-price="52"]')
    expect(ask).to_have_attribute("data-qty", "10")

    ticket(page, "buy", "55", "4", "bob")
    expect(page.locator('#tape tr[data-price="52"][data-qty="4"]')).to_have_count(1)
    expect(ask).to_have_attribute("data-qty", "6")  # the book updated from the feed
    expect(order_row(page, "bob", "filled")).to_have_count(1)
    expect(order_row(page, "ann", "partially_filled")).to_have_count(1)
    expect(page.locator("#chart")).not_to_have_attribute("data-bars", "0")
    expect(page.locator("#chart")).to_have_attribute("data-last-close", "52")
    assert page.evaluate("window.matchbox.bars()") >= 1  # the chart's series holds the candle
    expect(page.locator('#stats [data-stat="last"] .value')).to_have_text("52¢")

    # cancel from the orders table
    order_row(page, "ann", "partially_filled").locator("button.cancel").click()
    expect(order_row(page, "ann", "cancelled")).to_have_count(1)
    expect(ask).to_have_count(0)

    # an odds market: decimal odds, back/lay and stake; the feed's ticks shown as odds
    page.locator('[data-market-id="derby"]').click()
    expect(page.locator("#ticket-price-label")).to_have_text("Odds (decimal)")
    expect(page.locator("#ticket-qty-label")).to_have_text("Stake")
    ticket(page, "back", "2.5", "20", "cat")
    expect(page.locator('#book .level.ask[data-price="2.5"]')).to_have_attribute("data-qty", "20")
    ticket(page, "lay", "2.5", "5", "dan")
    expect(page.locator('#tape tr.lay[data-price="2.5"][data-qty="5"]')).to_have_count(1)
    expect(page.locator('#book .level.ask[data-price="2.5"]')).to_have_attribute("data-qty", "15")
    expect(page.locator("#chart")).to_have_attribute("data-last-close", "2.5")

    # the feed drops; it comes back with last_id, and a trade made meanwhile shows
    page.locator('[data-market-id="rain"]').click()
    expect(page.locator('#tape tr[data-price="52"]')).to_have_count(1)
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    page.evaluate("window.matchbox.feed.socket.close()")
    place(http, market_id="rain", side="sell", price=60, qty=3, account="eve")
    place(http, market_id="rain", side="buy", price=60, qty=3, account="fay")
    expect(page.locator('#tape tr[data-price="60"][data-qty="3"]')).to_have_count(1)
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    assert any("last_id=" in url for url in sockets), sockets

    # a livelier market for the picture: a book, and trades until the chart has some candles
    for price, qty in ((56, 25), (58, 40), (63, 15), (66, 30)):
        place(http, market_id="rain", side="sell", price=price, qty=qty, account="maker")
    for price, qty in ((50, 20), (48, 35), (45, 50), (41, 12)):
        place(http, market_id="rain", side="buy", price=price, qty=qty, account="maker")
    walk(http, page, CANDLES_IN_PICTURE)
    expect(page.locator('#book .level.ask[data-price="56"]')).to_have_attribute("data-qty", "25")
    expect(page.locator('#book .level.bid[data-price="41"]')).to_have_count(1)
    ticket(page, "buy", "47", "10", "bob")
    expect(order_row(page, "bob", "open")).to_have_count(1)
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert not errors, errors
