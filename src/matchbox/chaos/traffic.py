"""Seeded traffic through the API with keys: markets, funded accounts, and traders.

Three markets: a collateral binary market, a collateral odds market and a plain ticks market.
Each trader is an account with its own API key and its own ``random.Random`` (seeded from the
run's seed), and sends, to an instance it picks, one of: an order of any type (limit or market;
GTC, GTD, IOC or FOK; post-only), a batch of orders, a cancel, a reduce (PATCH), a cancel-all,
a deposit or a withdrawal (through the admin token), or a read. Prices stay near a fixed mid, so
orders cross often. Orders with a client order id are retried after a lost or 503 answer, as a
careful client would; the retry must get the first order's id.

What matters for the checks is recorded: every order acknowledged with an id
(:class:`~matchbox.chaos.records.Ack`) and every deposit and withdrawal by how it was answered.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from matchbox.chaos.clock import pause
from matchbox.chaos.http import Http, Instance, Reply
from matchbox.chaos.records import Ack, Records
from matchbox.engine.schemes import tick_to_odds
from matchbox.engine.types import TickScheme

TRADERS = 8
OPENING_DEPOSIT = 2_000_000  # cents each trader starts with
PAUSE_S = (0.05, 0.3)  # between a trader's requests: about 6 a second each, far below the rate limit
RETRIES = 4  # more tries of an order with a client order id whose answer was lost
GTD_MAX_MS = 4000  # the latest a GTD order expires after it is sent: quiet waits this long
SETUP_TIMEOUT_S = 60.0


class SetupError(RuntimeError):
    """The markets or accounts could not be made: the run cannot start."""


@dataclass(frozen=True, slots=True)
class Market:
    market_id: str
    scheme: TickScheme
    collateral: bool
    mid: int  # the tick orders gather around
    max_tick: int = 0

    def spec(self) -> dict[str, Any]:
        body: dict[str, Any] = {"market_id": self.market_id, "scheme": self.scheme.name.lower()}
        if self.collateral:
            body["collateral"] = True
        if self.max_tick:
            body["max_tick"] = self.max_tick
        return body


MARKETS = (
    Market("chaos-bin", TickScheme.BINARY, collateral=True, mid=50),
    Market("chaos-odds", TickScheme.ODDS, collateral=True, mid=100),  # odds 2.0
    Market("chaos-ticks", TickScheme.TICKS, collateral=False, mid=500, max_tick=1000),
)


# --------------------------------------------------------------------------- setup


async def until_answered(
    call: Callable[[], Awaitable[Reply]], ok: tuple[int, ...], what: str, timeout_s: float = SETUP_TIMEOUT_S
) -> Reply:
    """``call()`` again until it answers one of ``ok`` (the exchange may still be starting)."""
    deadline = time.monotonic() + timeout_s
    while True:
        reply = await call()
        if reply.status in ok:
            return reply
        if time.monotonic() > deadline:
            raise SetupError(f"{what}: {reply.status or reply.error} {reply.body}")
        await asyncio.sleep(0.2)


async def make_markets(http: Http) -> None:
    for market in MARKETS:
        await _create(http, market)
    for instance in http.instances:  # every instance must know them before orders go there
        for market in MARKETS:
            await _known(http, instance, market)


async def _create(http: Http, market: Market) -> None:
    first, spec = http.instances[0], market.spec()
    await until_answered(
        lambda: http.call(first, "POST", "/v1/markets", admin=True, body=spec), (201, 409), f"market {market.market_id}"
    )


async def _known(http: Http, instance: Instance, market: Market) -> None:
    path = f"/v1/markets/{market.market_id}"
    await until_answered(lambda: http.call(instance, "GET", path), (200,), f"{instance.name} GET {path}")


async def make_account(http: Http, records: Records, account: str, deposit: int) -> str:
    """A new account's API key; ``deposit`` cents paid in first (recorded as a deposit)."""
    first = http.instances[0]
    made = await until_answered(
        lambda: http.call(first, "POST", "/v1/admin/accounts", admin=True, body={"account": account}),
        (201, 409),
        f"creating account {account}",
    )
    if made.status == 409:  # an earlier try made it, and its answer was lost: another key
        path = f"/v1/admin/accounts/{account}/keys"
        made = await until_answered(lambda: http.call(first, "POST", path, admin=True), (201,), f"a key for {account}")
    key = str(made.field("api_key"))
    records.keys[account] = key
    if deposit:
        await _fund(http, records, account, deposit)
    return key


async def _fund(http: Http, records: Records, account: str, amount: int) -> None:
    """Deposit until one is acknowledged; one that got no clear answer may have gone in too."""
    cash, path = records.cash_of(account), f"/v1/admin/accounts/{account}/deposit"
    deadline = time.monotonic() + SETUP_TIMEOUT_S
    while True:
        reply = await http.call(http.instances[0], "POST", path, admin=True, body={"amount": amount})
        cash.answered("deposit", amount, reply.status)
        if reply.status == 200:
            return
        if reply.status is not None and reply.status < 500:
            raise SetupError(f"funding {account}: {reply.status} {reply.body}")
        if time.monotonic() > deadline:
            raise SetupError(f"funding {account}: {reply.status or reply.error} {reply.body}")
        await asyncio.sleep(0.2)


# --------------------------------------------------------------------------- orders


def order_body(rng: random.Random, market: Market, account: str, serial: int) -> dict[str, Any]:
    """One order of any type on ``market``, near its mid."""
    body: dict[str, Any] = {"market_id": market.market_id}
    odds = market.scheme is TickScheme.ODDS
    buy = rng.random() < 0.5
    body["side"] = ("lay" if buy else "back") if odds else ("buy" if buy else "sell")
    body["stake" if odds else "qty"] = rng.randint(100, 2000) if odds else rng.randint(1, 12)
    if rng.random() < 0.12:
        body["type"] = "market"
        body["tif"] = rng.choice(("IOC", "FOK"))
    else:
        tick = max(1, market.mid + rng.randint(-8, 8))
        if odds:
            body["odds"] = str(tick_to_odds(tick))
        else:
            body["price"] = tick
        tif = rng.choices(("GTC", "IOC", "FOK", "GTD"), weights=(55, 15, 10, 20))[0]
        body["tif"] = tif
        if tif == "GTD":
            body["expires_at_ms"] = int(time.time() * 1000) + rng.randint(1500, GTD_MAX_MS)
        if tif in ("GTC", "GTD") and rng.random() < 0.15:
            body["post_only"] = True
    if rng.random() < 0.4:
        body["client_order_id"] = f"{account}-{serial}"
    return body


def canonical(body: dict[str, Any]) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


def ack_of(status: int | None, answer: Any, account: str, body: dict[str, Any]) -> Ack | None:
    """The acknowledgement in an answer (an order, or a rejection naming its id), if it has one."""
    if status not in (200, 201, 202, 422) or not isinstance(answer, dict):
        return None
    if isinstance(answer.get("error"), dict):  # a rejection: its error names the order
        answer = answer["error"]
    order_id = answer.get("order_id")
    if not isinstance(order_id, int) or order_id <= 0:
        return None
    entry_id = answer.get("entry_id")
    return Ack(
        order_id=order_id,
        account=account,
        market_id=str(body.get("market_id")),
        status=status,
        entry_id=entry_id if isinstance(entry_id, str) else None,
        body=canonical(body),
    )


# --------------------------------------------------------------------------- a trader


@dataclass(slots=True)
class Trader:
    account: str
    key: str
    rng: random.Random
    http: Http
    records: Records
    open_orders: list[tuple[int, str]] = field(default_factory=list)  # (order id, market) it may still cancel
    serial: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        actions: list[Callable[[], Awaitable[None]]] = [
            self.place,
            self.batch,
            self.cancel,
            self.reduce,
            self.cancel_all,
            self.deposit,
            self.withdraw,
            self.read,
        ]
        weights = (58, 6, 12, 8, 3, 5, 4, 4)
        while not stop.is_set():
            await self.rng.choices(actions, weights=weights)[0]()
            await pause(stop, self.rng.uniform(*PAUSE_S))

    def instance(self) -> Instance:
        return self.rng.choice(self.http.instances)

    def _remember(self, reply_order: Any, market_id: str) -> None:
        if isinstance(reply_order, dict) and reply_order.get("status") in ("open", "partially_filled", "pending"):
            self.open_orders.append((int(reply_order["order_id"]), market_id))
            del self.open_orders[:-50]

    async def place(self) -> None:
        self.serial += 1
        market = self.rng.choice(MARKETS)
        body = order_body(self.rng, market, self.account, self.serial)
        tries = 1 + (RETRIES if "client_order_id" in body else 0)
        for attempt in range(tries):
            reply = await self.http.call(self.instance(), "POST", "/v1/orders", key=self.key, body=body)
            ack = ack_of(reply.status, reply.body, self.account, body)
            if ack is not None:
                self.records.acks.append(ack)
                self._remember(reply.body, market.market_id)
                return
            if reply.status not in (None, 503) or attempt == tries - 1:
                return
            await asyncio.sleep(0.3 * (attempt + 1))  # the same client order id again: it must get the same id

    async def batch(self) -> None:
        bodies = []
        for _ in range(self.rng.randint(2, 6)):
            self.serial += 1
            bodies.append(order_body(self.rng, self.rng.choice(MARKETS), self.account, self.serial))
        reply = await self.http.call(self.instance(), "POST", "/v1/orders/batch", key=self.key, body={"orders": bodies})
        if reply.status != 200 or not isinstance(reply.body, dict) or not isinstance(reply.body.get("items"), list):
            return
        for body, item in zip(bodies, reply.body["items"], strict=False):
            if not isinstance(item, dict):
                continue
            answer = item.get("order") or item.get("error")
            ack = ack_of(item.get("status"), answer, self.account, body)
            if ack is not None:
                self.records.acks.append(ack)
                self._remember(item.get("order"), str(body["market_id"]))

    async def cancel(self) -> None:
        if self.open_orders:
            order_id, _ = self.open_orders.pop(self.rng.randrange(len(self.open_orders)))
            await self.http.call(self.instance(), "DELETE", f"/v1/orders/{order_id}", key=self.key)

    async def reduce(self) -> None:
        if self.open_orders:
            order_id, _ = self.rng.choice(self.open_orders)
            body = {"reduce_by": 1} if self.rng.random() < 0.5 else {"qty": 1}
            await self.http.call(self.instance(), "PATCH", f"/v1/orders/{order_id}", key=self.key, body=body)

    async def cancel_all(self) -> None:
        market = self.rng.choice(MARKETS).market_id
        await self.http.call(self.instance(), "DELETE", f"/v1/orders?market_id={market}", key=self.key)
        self.open_orders = [(o, m) for o, m in self.open_orders if m != market]

    async def deposit(self) -> None:
        await self._cash("deposit", self.rng.randint(1_000, 50_000))

    async def withdraw(self) -> None:
        await self._cash("withdraw", self.rng.randint(100, 20_000))

    async def _cash(self, what: Literal["deposit", "withdraw"], amount: int) -> None:
        path = f"/v1/admin/accounts/{self.account}/{what}"
        reply = await self.http.call(self.instance(), "POST", path, admin=True, body={"amount": amount})
        self.records.cash_of(self.account).answered(what, amount, reply.status)

    async def read(self) -> None:
        if self.open_orders and self.rng.random() < 0.5:
            order_id, _ = self.rng.choice(self.open_orders)
            await self.http.call(self.instance(), "GET", f"/v1/orders/{order_id}", key=self.key)
        else:
            await self.http.call(self.instance(), "GET", "/v1/account", key=self.key)


async def make_traders(http: Http, records: Records, seed: int) -> list[Trader]:
    traders = []
    for i in range(TRADERS):
        account = f"chaos-t{i:02d}"
        key = await make_account(http, records, account, OPENING_DEPOSIT)
        traders.append(Trader(account, key, random.Random(seed * 1_000 + i), http, records))
    return traders
