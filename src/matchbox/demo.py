"""``matchbox demo``: bots that keep a few markets trading, so the dashboard has something to show.

Over the public HTTP API, with :mod:`matchbox.client` like any bot: it creates (admin) a binary prediction market and an
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
import contextlib
import functools
import logging
import random
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp

from matchbox.api.models import ErrorDetail
from matchbox.client import AsyncClient, Conflict, FeesIn, MatchboxError, Rejected, order_body
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
    scheme: Literal["binary", "odds"]
    fair: int  # ticks: cents on a binary market, ladder ticks on an odds market
    low: int
    high: int
    unit: int = 1  # quantity per demo lot: a contract, or on odds markets a stake of one dollar in cents
    terms: dict[str, Any] = field(default_factory=dict)  # what it is about and what it charges (create_market)

    def drift(self, rng: random.Random) -> None:
        self.fair = min(self.high, max(self.low, self.fair + rng.choice((-1, 0, 0, 1))))

    def order(self, side: str, tick: int, lots: int, tif: str = "GTC") -> dict[str, Any]:
        """An order in the market's own words (cents and buy/sell, or odds and back/lay), as
        :func:`matchbox.client.order_body` takes it."""
        qty = lots * self.unit
        if self.scheme == "odds":  # a lay is a buy of the outcome, a back a sell (see prices.py)
            side = "lay" if side == "buy" else "back"
            return {"market_id": self.market_id, "side": side, "odds": tick_to_odds(tick), "stake": qty, "tif": tif}
        return {"market_id": self.market_id, "side": side, "price": tick, "qty": qty, "tif": tif}


MARKETS = (
    DemoMarket(
        "will-it-rain-tomorrow",
        "binary",
        fair=55,
        low=8,
        high=92,
        terms={
            "title": "Rain tomorrow",
            "question": "Will it rain tomorrow in the demo's city?",
            "rules": "YES if the weather service records more than 0.2 mm of rain tomorrow; NO otherwise.",
            "category": "weather",
            "fees": FeesIn(taker_bps=100),
        },
    ),
    DemoMarket(
        "cup-final-home-win",
        "odds",
        fair=110,
        low=60,
        high=min(200, ODDS_MAX_TICK - LEVELS - 2),
        unit=100,
        terms={
            "title": "Cup final",
            "question": "Will the home side win the cup final?",
            "rules": "Win if the home side wins after extra time and penalties; lose otherwise.",
            "category": "football",
            "outcomes": ["Home win"],
            "fees": FeesIn(commission_bps=500),
        },
    ),
)


@dataclass(slots=True)
class Bot:
    """One account the bots trade as: its client (its key, or in open mode its name) and the
    money it is kept at."""

    account: str
    client: AsyncClient
    funds_cents: int
    checked_at: float = float("-inf")  # monotonic time of the last balance check


async def create_markets(admin: AsyncClient) -> None:
    for market in MARKETS:
        with contextlib.suppress(Conflict):  # there already, as after a restart; an old folder's has no collateral
            await admin.create_market(market.market_id, market.scheme, collateral=True, **market.terms)


async def enlist(admin: AsyncClient, account: str, funds_cents: int, open_mode: bool) -> Bot:
    """A bot for ``account``: in open mode no key; otherwise the account is made with a key, or
    an existing one gets a new key and loses its older ones (those of earlier runs)."""
    if open_mode:
        return Bot(account, AsyncClient(admin.base_url, account=account), funds_cents)
    try:
        issued = await admin.create_account(account)
    except Conflict:
        issued = await admin.issue_key(account)
        for key_id in (await admin.account_info(account)).key_ids:
            if key_id != issued.key_id:
                await admin.revoke_key(account, key_id)
    return Bot(account, AsyncClient(admin.base_url, issued.api_key), funds_cents)


async def keep_funded(admin: AsyncClient, bot: Bot) -> None:
    """Every ``FUNDS_CHECK_EVERY_S`` (sooner after a refusal): the free balance back to the bot's
    target when it is below half of it, on each shard."""
    now = time.monotonic()
    if now - bot.checked_at < FUNDS_CHECK_EVERY_S:
        return
    balance = await bot.client.balance()
    bot.checked_at = now
    # cash lives per shard (an order spends its market's shard's): each part is kept funded
    parts: list[tuple[int | None, int]] = [(part.shard, part.free) for part in balance.shards or []]
    for shard, free in parts or [(None, balance.free)]:
        if free >= bot.funds_cents // 2:
            continue
        amount = bot.funds_cents - free
        await admin.deposit(bot.account, amount, shard)
        log.info("topped up", extra={"account": bot.account, "amount_cents": amount, "shard": shard or 0})


def note_refusal(bot: Bot, error: MatchboxError | ErrorDetail | None) -> None:
    """An order refused for insufficient funds is logged at debug, and the bot's balance is
    checked before its next order."""
    if error is not None and error.code == "INSUFFICIENT_FUNDS":
        log.debug("insufficient funds", extra={"account": bot.account})
        bot.checked_at = float("-inf")


async def make_market(admin: AsyncClient, market: DemoMarket, bot: Bot, rng: random.Random) -> None:
    while True:
        await keep_funded(admin, bot)
        market.drift(rng)
        await bot.client.cancel_all(market.market_id)
        orders = []
        for level in range(LEVELS):
            lots = rng.randint(5, 40)
            orders.append(order_body(**market.order("buy", market.fair - 1 - level, lots)))
            orders.append(order_body(**market.order("sell", market.fair + 1 + level, lots)))
        for item in (await bot.client.place_orders(orders)).items:
            note_refusal(bot, item.error)
        await asyncio.sleep(QUOTE_EVERY_S * rng.uniform(0.7, 1.3))


async def take(admin: AsyncClient, market: DemoMarket, bots: list[Bot], rng: random.Random) -> None:
    while True:
        bot = rng.choice(bots)
        await keep_funded(admin, bot)
        side = rng.choice(("buy", "sell"))
        through = 2 + rng.randint(0, LEVELS - 1)
        tick = market.fair + through if side == "buy" else market.fair - through
        try:
            await bot.client.place_order(**market.order(side, tick, rng.randint(1, 15), tif="IOC"))
        except Rejected as refused:
            note_refusal(bot, refused)
        await asyncio.sleep(TAKE_EVERY_S * rng.uniform(0.3, 1.7))


async def _retried(name: str, work: Callable[[], Awaitable[None]]) -> None:
    """``work()`` until it returns (a bot never does); when the API is away (restarting) or
    refuses (a key revoked), log and retry."""
    while True:
        try:
            await work()
            return
        except (MatchboxError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("paused: %s", exc, extra={"bot": name})
            await asyncio.sleep(2.0)


async def setup(admin: AsyncClient) -> tuple[Bot, list[Bot]]:
    """The markets, and the maker and the takers with their keys and their first deposits."""
    open_mode = (await admin.health()).get("auth") == "open"
    await create_markets(admin)
    maker = await enlist(admin, MAKER, MAKER_FUNDS_CENTS, open_mode)
    takers = [await enlist(admin, account, TAKER_FUNDS_CENTS, open_mode) for account in TAKERS]
    for bot in (maker, *takers):
        await keep_funded(admin, bot)
    return maker, takers


async def main(url: str, token: str | None, seed: int) -> None:
    rng = random.Random(seed)
    async with AsyncClient(url, admin_token=token) as admin:
        ready: list[tuple[Bot, list[Bot]]] = []

        async def prepare() -> None:
            ready.append(await setup(admin))

        await _retried("setup", prepare)
        maker, takers = ready[0]
        log.info("demo markets ready", extra={"markets": ",".join(m.market_id for m in MARKETS)})
        bots = []
        for market in MARKETS:
            quote = functools.partial(make_market, admin, market, maker, rng)
            bots.append(_retried(f"maker {market.market_id}", quote))
            bots.append(_retried(f"taker {market.market_id}", functools.partial(take, admin, market, takers, rng)))
        try:
            await asyncio.gather(*bots)
        finally:
            for bot in (maker, *takers):
                await bot.client.close()


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
