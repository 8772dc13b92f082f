"""``matchbox demo``: bots that keep a few markets trading, so the dashboard has something to show.

Over the public HTTP API, like any client: it creates (admin) a binary prediction market and an
odds market with collateral if they are missing (an older one without collateral is used as it
is), gives each bot an account of its own, and runs two bots per market:

- a **market maker** (account ``demo-mm``) that every second or so cancels its quotes and posts a
  fresh ladder, three levels a side, around a fair value that drifts at random;
- a **taker** (accounts ``demo-taker-<n>``) that every half second or so sends an IOC order
  through the spread, on a random side, so trades print and candles form.

Accounts and money: at start each bot's account is made (admin), with an API key it trades with
(``Authorization: Bearer``); an account that exists from an earlier run gets a new key and its
older keys are revoked. Every ``FUNDS_CHECK_EVERY_S`` (and at once after an order is refused for
insufficient funds, which is logged at debug level only) a bot reads ``GET /account`` and tops
its free balance back up to its target by an admin deposit when it is below half of it: money
locked in positions never runs out, so the bots trade for as long as they run. When the API runs
in open mode (``/health`` says ``"auth": "open"``) the bots have no keys and name their account
in each request instead; they are funded the same way.

It runs until SIGINT/SIGTERM. Errors (the API restarting, say) are logged and retried.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from matchbox.engine.schemes import ODDS_MAX_TICK, tick_to_odds

log = logging.getLogger(__name__)

MAKER = "demo-mm"
TAKERS = tuple(f"demo-taker-{n}" for n in range(1, 6))
LEVELS = 3
QUOTE_EVERY_S = 1.0
TAKE_EVERY_S = 0.5
# Free balance each bot is kept at, in cents. The maker quotes both markets (a lay at long odds
# reserves several times its stake) and odds positions stay locked until settlement, so it gets
# the most; top-ups restore these whenever the free balance falls below half.
MAKER_FUNDS_CENTS = 100_000_000  # $1,000,000
TAKER_FUNDS_CENTS = 10_000_000  # $100,000 each
FUNDS_CHECK_EVERY_S = 15.0


@dataclass(slots=True)
class DemoMarket:
    market_id: str
    scheme: str  # "binary" or "odds"
    fair: int  # ticks: cents on a binary market, ladder ticks on an odds market
    low: int
    high: int
    unit: int = 1  # quantity per demo lot: a contract, or on odds markets a stake of one dollar in cents

    def drift(self, rng: random.Random) -> None:
        self.fair = min(self.high, max(self.low, self.fair + rng.choice((-1, 0, 0, 1))))

    def order(self, side: str, tick: int, lots: int, tif: str = "GTC") -> dict[str, Any]:
        """An order body in the market's own words: cents and buy/sell, or odds and back/lay."""
        body: dict[str, Any] = {"market_id": self.market_id, "tif": tif}
        qty = lots * self.unit
        if self.scheme == "odds":  # a lay is a buy of the outcome, a back a sell (see prices.py)
            body |= {"side": "lay" if side == "buy" else "back", "odds": str(tick_to_odds(tick)), "stake": qty}
        else:
            body |= {"side": side, "price": tick, "qty": qty}
        return body


MARKETS = (
    DemoMarket("will-it-rain-tomorrow", "binary", fair=55, low=8, high=92),
    DemoMarket("cup-final-home-win", "odds", fair=110, low=60, high=min(200, ODDS_MAX_TICK - LEVELS - 2), unit=100),
)


@dataclass(slots=True)
class Bot:
    """One account the bots trade as: its key (None in open mode) and the money it is kept at."""

    account: str
    key: str | None
    funds_cents: int
    checked_at: float = float("-inf")  # monotonic time of the last balance check

    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.key}"} if self.key else {}

    def signed(self, order: dict[str, Any]) -> dict[str, Any]:
        """The order as this bot sends it: with a key the account is implied; open, it is named."""
        return order if self.key else {**order, "account": self.account}

    def params(self, **extra: str) -> dict[str, str]:
        return extra if self.key else {**extra, "account": self.account}


class Exchange:
    """The API as the bots use it: admin calls with the token, the rest as a bot."""

    def __init__(self, session: aiohttp.ClientSession, url: str, token: str | None) -> None:
        self.session = session
        self.url = url
        self.admin = {"authorization": f"Bearer {token}"} if token else {}

    async def call(
        self, method: str, path: str, bot: Bot | None = None, *, admin: bool = False, **kwargs: Any
    ) -> tuple[int, Any]:
        """The status and the decoded JSON body (None if there is none)."""
        headers = self.admin if admin else bot.headers() if bot else {}
        async with self.session.request(method, f"{self.url}{path}", headers=headers, **kwargs) as response:
            body = await response.json(content_type=None) if response.status != 204 else None
            if response.status == 429:  # over the key's rate limit: a moment's pause
                await asyncio.sleep(float(response.headers.get("retry-after", "1")))
            return response.status, body

    async def open_mode(self) -> bool:
        status, body = await self.call("GET", "/health")
        if status != 200:
            raise RuntimeError(f"GET /health: {status} {body}")
        return isinstance(body, dict) and body.get("auth") == "open"


async def create_markets(exchange: Exchange) -> None:
    for market in MARKETS:
        body = {"market_id": market.market_id, "scheme": market.scheme, "collateral": True}
        status, answer = await exchange.call("POST", "/v1/markets", admin=True, json=body)
        if status == 409:  # there already, as after a restart; an old data folder's has no collateral
            continue
        if status != 201:
            raise RuntimeError(f"creating {market.market_id}: {status} {answer}")


async def enlist(exchange: Exchange, account: str, funds_cents: int, open_mode: bool) -> Bot:
    """A bot for ``account``: in open mode no key; otherwise the account is made with a key, or
    an existing one gets a new key and loses its older ones (those of earlier runs)."""
    if open_mode:
        return Bot(account, None, funds_cents)
    status, issued = await exchange.call("POST", "/v1/admin/accounts", admin=True, json={"account": account})
    if status == 409:
        status, issued = await exchange.call("POST", f"/v1/admin/accounts/{account}/keys", admin=True)
        if status == 201:
            await revoke_other_keys(exchange, account, issued["key_id"])
    if status != 201:
        raise RuntimeError(f"an API key for {account}: {status} {issued}")
    return Bot(account, issued["api_key"], funds_cents)


async def revoke_other_keys(exchange: Exchange, account: str, kept_key_id: str) -> None:
    status, found = await exchange.call("GET", f"/v1/admin/accounts/{account}", admin=True)
    if status != 200:
        raise RuntimeError(f"looking up {account}: {status} {found}")
    for key_id in found["key_ids"]:
        if key_id != kept_key_id:
            await exchange.call("DELETE", f"/v1/admin/accounts/{account}/keys/{key_id}", admin=True)


async def keep_funded(exchange: Exchange, bot: Bot) -> None:
    """Every ``FUNDS_CHECK_EVERY_S`` (sooner after a refusal): the free balance back to the bot's
    target when it is below half of it, on each shard."""
    now = time.monotonic()
    if now - bot.checked_at < FUNDS_CHECK_EVERY_S:
        return
    status, balance = await exchange.call("GET", "/v1/account", bot, params=bot.params())
    if status != 200:
        raise RuntimeError(f"GET /account for {bot.account}: {status} {balance}")
    bot.checked_at = now
    # cash lives per shard (an order spends its market's shard's): each part is kept funded
    for part in balance.get("shards") or [{"free": balance["free"]}]:
        if part["free"] >= bot.funds_cents // 2:
            continue
        amount = bot.funds_cents - part["free"]
        body = {"amount": amount, **({"shard": part["shard"]} if "shard" in part else {})}
        path = f"/v1/admin/accounts/{bot.account}/deposit"
        status, answer = await exchange.call("POST", path, admin=True, json=body)
        if status != 200:
            raise RuntimeError(f"depositing for {bot.account}: {status} {answer}")
        log.info("topped up", extra={"account": bot.account, "amount_cents": amount, "shard": part.get("shard", 0)})


def note_refusal(bot: Bot, status: int, answer: Any) -> None:
    """An order refused for insufficient funds is logged at debug, and the bot's balance is
    checked before its next order. A refused key is an error: the bot pauses, says so, retries."""
    if status in (401, 403):
        raise RuntimeError(f"{bot.account}'s key was refused: {status} {answer}")
    error = answer.get("error", answer) if isinstance(answer, dict) else None  # a batch item's is unwrapped
    if status == 422 and isinstance(error, dict) and error.get("code") == "INSUFFICIENT_FUNDS":
        log.debug("insufficient funds", extra={"account": bot.account})
        bot.checked_at = float("-inf")


async def make_market(exchange: Exchange, market: DemoMarket, bot: Bot, rng: random.Random) -> None:
    while True:
        await keep_funded(exchange, bot)
        market.drift(rng)
        status, answer = await exchange.call("DELETE", "/v1/orders", bot, params=bot.params(market_id=market.market_id))
        note_refusal(bot, status, answer)
        orders = []
        for level in range(LEVELS):
            lots = rng.randint(5, 40)
            orders.append(bot.signed(market.order("buy", market.fair - 1 - level, lots)))
            orders.append(bot.signed(market.order("sell", market.fair + 1 + level, lots)))
        status, answer = await exchange.call("POST", "/v1/orders/batch", bot, json={"orders": orders})
        note_refusal(bot, status, answer)
        for item in answer["items"] if status == 200 and isinstance(answer, dict) else []:
            note_refusal(bot, item["status"], item.get("error"))
        await asyncio.sleep(QUOTE_EVERY_S * rng.uniform(0.7, 1.3))


async def take(exchange: Exchange, market: DemoMarket, bots: list[Bot], rng: random.Random) -> None:
    while True:
        bot = rng.choice(bots)
        await keep_funded(exchange, bot)
        side = rng.choice(("buy", "sell"))
        through = 2 + rng.randint(0, LEVELS - 1)
        tick = market.fair + through if side == "buy" else market.fair - through
        body = bot.signed(market.order(side, tick, rng.randint(1, 15), tif="IOC"))
        status, answer = await exchange.call("POST", "/v1/orders", bot, json=body)
        note_refusal(bot, status, answer)
        await asyncio.sleep(TAKE_EVERY_S * rng.uniform(0.3, 1.7))


async def _retried(name: str, work: Callable[[], Awaitable[None]]) -> None:
    """``work()`` until it returns (a bot never does); when the API is away (restarting), log and retry."""
    while True:
        try:
            await work()
            return
        except (aiohttp.ClientError, TimeoutError, RuntimeError, ValueError, KeyError, TypeError) as exc:
            log.warning("paused: %s", exc, extra={"bot": name})
            await asyncio.sleep(2.0)


async def setup(exchange: Exchange) -> tuple[Bot, list[Bot]]:
    """The markets, and the maker and the takers with their keys and their first deposits."""
    open_mode = await exchange.open_mode()
    await create_markets(exchange)
    maker = await enlist(exchange, MAKER, MAKER_FUNDS_CENTS, open_mode)
    takers = [await enlist(exchange, account, TAKER_FUNDS_CENTS, open_mode) for account in TAKERS]
    for bot in (maker, *takers):
        await keep_funded(exchange, bot)
    return maker, takers


async def main(url: str, token: str | None, seed: int) -> None:
    rng = random.Random(seed)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        exchange = Exchange(session, url, token)
        ready: list[tuple[Bot, list[Bot]]] = []

        async def prepare() -> None:
            ready.append(await setup(exchange))

        await _retried("setup", prepare)
        maker, takers = ready[0]
        log.info("demo markets ready", extra={"markets": ",".join(m.market_id for m in MARKETS)})
        bots = []
        for market in MARKETS:
            quote = functools.partial(make_market, exchange, market, maker, rng)
            bots.append(_retried(f"maker {market.market_id}", quote))
            bots.append(_retried(f"taker {market.market_id}", functools.partial(take, exchange, market, takers, rng)))
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
