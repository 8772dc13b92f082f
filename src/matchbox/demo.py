"""``matchbox demo``: bots that keep a few markets trading, so the dashboard has something to show.

Over the public HTTP API, like any client: it creates (admin) a binary prediction market and an
odds market if they are missing, then runs two bots per market:

- a **market maker** (account ``demo-mm``) that every second or so cancels its quotes and posts a
  fresh ladder, three levels a side, around a fair value that drifts at random;
- a **taker** (accounts ``demo-taker-<n>``) that every half second or so sends an IOC order
  through the spread, on a random side, so trades print and candles form.

It runs until SIGINT/SIGTERM. Errors (the API restarting, say) are logged and retried.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from matchbox.engine.schemes import ODDS_MAX_TICK, tick_to_odds

log = logging.getLogger(__name__)

MAKER = "demo-mm"
LEVELS = 3
QUOTE_EVERY_S = 1.0
TAKE_EVERY_S = 0.5


@dataclass(slots=True)
class DemoMarket:
    market_id: str
    scheme: str  # "binary" or "odds"
    fair: int  # ticks: cents on a binary market, ladder ticks on an odds market
    low: int
    high: int

    def drift(self, rng: random.Random) -> None:
        self.fair = min(self.high, max(self.low, self.fair + rng.choice((-1, 0, 0, 1))))

    def order(self, side: str, tick: int, qty: int, account: str, tif: str = "GTC") -> dict[str, Any]:
        """An order body in the market's own words: cents and buy/sell, or odds and back/lay."""
        body: dict[str, Any] = {"market_id": self.market_id, "account": account, "tif": tif}
        if self.scheme == "odds":  # a lay is a buy of the outcome, a back a sell (see prices.py)
            body |= {"side": "lay" if side == "buy" else "back", "odds": str(tick_to_odds(tick)), "stake": qty}
        else:
            body |= {"side": side, "price": tick, "qty": qty}
        return body


MARKETS = (
    DemoMarket("will-it-rain-tomorrow", "binary", fair=55, low=8, high=92),
    DemoMarket("cup-final-home-win", "odds", fair=110, low=60, high=min(200, ODDS_MAX_TICK - LEVELS - 2)),
)


async def create_markets(session: aiohttp.ClientSession, url: str, token: str | None) -> None:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    for market in MARKETS:
        body = {"market_id": market.market_id, "scheme": market.scheme}
        async with session.post(f"{url}/markets", json=body, headers=headers) as response:
            if response.status not in (201, 409):  # 409: there already, as after a restart
                raise RuntimeError(f"creating {market.market_id}: {response.status} {await response.text()}")


async def make_market(session: aiohttp.ClientSession, url: str, market: DemoMarket, rng: random.Random) -> None:
    while True:
        market.drift(rng)
        params = {"market_id": market.market_id, "account": MAKER}
        async with session.delete(f"{url}/orders", params=params) as response:
            await response.read()
        orders = []
        for level in range(LEVELS):
            qty = rng.randint(5, 40)
            orders.append(market.order("buy", market.fair - 1 - level, qty, MAKER))
            orders.append(market.order("sell", market.fair + 1 + level, qty, MAKER))
        async with session.post(f"{url}/orders/batch", json={"orders": orders}) as response:
            await response.read()
        await asyncio.sleep(QUOTE_EVERY_S * rng.uniform(0.7, 1.3))


async def take(session: aiohttp.ClientSession, url: str, market: DemoMarket, rng: random.Random) -> None:
    while True:
        side = rng.choice(("buy", "sell"))
        through = 2 + rng.randint(0, LEVELS - 1)
        tick = market.fair + through if side == "buy" else market.fair - through
        body = market.order(side, tick, rng.randint(1, 15), f"demo-taker-{rng.randint(1, 5)}", tif="IOC")
        async with session.post(f"{url}/orders", json=body) as response:
            await response.read()
        await asyncio.sleep(TAKE_EVERY_S * rng.uniform(0.3, 1.7))


async def _retried(name: str, work: Callable[[], Awaitable[None]]) -> None:
    """``work()`` until it returns (a bot never does); when the API is away (restarting), log and retry."""
    while True:
        try:
            await work()
            return
        except (aiohttp.ClientError, TimeoutError, RuntimeError) as exc:
            log.warning("paused: %s", exc, extra={"bot": name})
            await asyncio.sleep(2.0)


async def main(url: str, token: str | None, seed: int) -> None:
    rng = random.Random(seed)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await _retried("setup", lambda: create_markets(session, url, token))
        log.info("demo markets ready", extra={"markets": ",".join(m.market_id for m in MARKETS)})
        bots = []
        for market in MARKETS:
            bots.append(
                _retried(f"maker {market.market_id}", functools.partial(make_market, session, url, market, rng))
            )
            bots.append(_retried(f"taker {market.market_id}", functools.partial(take, session, url, market, rng)))
        await asyncio.gather(*bots)


def run(url: str, token: str | None, seed: int = 1) -> None:
    """Until SIGINT/SIGTERM."""

    async def supervised() -> None:
        task = asyncio.create_task(main(url, token, seed))
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            log.info("demo stopped")

    asyncio.run(supervised())
