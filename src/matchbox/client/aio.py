"""``AsyncClient``: API v1 over asyncio (aiohttp), with typed results and typed errors.

Every answer is parsed into the API's own response models (:mod:`matchbox.api.models`, the ones
its OpenAPI document is made from), and every error raised as the exception of its code
(:mod:`matchbox.client.errors`). Reads, and orders, are retried after a dropped connection, a
timeout or a 503: an order always carries a ``client_order_id`` (one is made if none is given),
so a retry is answered with the first placement and never places twice. Other writes (cancels,
deposits) are sent once: their outcome is read back, not guessed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from decimal import Decimal
from typing import Any, Literal, TypeVar

import aiohttp
from pydantic import BaseModel

from matchbox.api.models import (
    AccountInfoOut,
    AccountsPage,
    AccountTradesPage,
    BalanceOut,
    BatchOut,
    BookOut,
    CancelAllOut,
    CancelManyOut,
    CandlesPage,
    FeesIn,
    HeartbeatOut,
    HistoryPage,
    KeyOut,
    MarketOut,
    MarketsPage,
    OrderOut,
    OrdersPage,
    Page,
    PositionsPage,
    SelfTrade,
    StatsOut,
    TickerOut,
    TradesPage,
    TransferOut,
)
from matchbox.client.errors import MatchboxError, RateLimited, Unavailable, error_from

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
V1 = "/v1"
RETRY_CODES = {"NOT_ANSWERED", "UNAVAILABLE", "UNCERTIFIED", "RATE_LIMITED"}  # safe to send again, later


class AsyncClient:
    """API v1 for one account (its ``api_key``), and for admin work with the ``admin_token``.

    In open mode (a local demo run with ``--open``) give ``account`` instead of a key: every
    request of the account's is made for it. Use it as ``async with AsyncClient(url, ...) as c``,
    or call :meth:`close` when done.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        admin_token: str | None = None,
        account: str | None = None,
        timeout: float = 10.0,
        retries: int = 4,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.admin_token = admin_token
        self.account = account
        self.timeout = timeout
        self.retries = retries
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("this client is closed")
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    # ------------------------------------------------------------------ the one way a request is made

    async def request(
        self,
        method: str,
        path: str,
        model: type[M],
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        admin: bool = False,
        retry: bool = False,
    ) -> M:
        """``method path`` (under /v1), parsed as ``model``; an error is raised as its exception.
        ``retry``: safe to send again after a dropped connection, a timeout or a retryable 503/429."""
        _, body = await self.call(method, path, params=params, json=json, admin=admin, retry=retry)
        return model.model_validate(body)

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        admin: bool = False,
        retry: bool = False,
    ) -> tuple[int, Any]:
        """(status, parsed JSON body) of a 2xx answer; else its exception."""
        headers = {}
        token = self.admin_token if admin else self.api_key
        if token:
            headers["Authorization"] = f"Bearer {token}"
        query = {k: _query_value(v) for k, v in (params or {}).items() if v is not None}
        attempts = self.retries + 1 if retry else 1
        for attempt in range(attempts):
            try:
                async with self.session.request(
                    method, f"{self.base_url}{V1}{path}", params=query, json=json, headers=headers
                ) as response:
                    body = _parsed(await response.text())
                    if response.status < 400:
                        return response.status, body
                    error = error_from(response.status, body, response.headers.get("Retry-After"))
            except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                error = Unavailable(503, "UNAVAILABLE", f"{method} {path}: {type(exc).__name__}: {exc}")
            if attempt + 1 >= attempts or not _retryable(error):
                raise error
            delay = error.retry_after if isinstance(error, RateLimited) and error.retry_after else 0.2 * 2**attempt
            log.info("%s %s: %s; trying again in %.1f s", method, path, error.code, delay)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    @property
    def _identified(self) -> bool:
        """Whether requests act for one account (a key's, or the one named in open mode)."""
        return bool(self.api_key or self.account)

    def _own(self, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """A request's query, with the account named in open mode."""
        return {**(params or {}), **({"account": self.account} if self.account and not self.api_key else {})}

    # ------------------------------------------------------------------ operations

    async def health(self) -> dict[str, Any]:
        _, body = await self.call("GET", "/health", retry=True)
        return dict(body)

    async def ready(self) -> bool:
        """Whether this instance is ready for traffic (every shard has a leader, the tail keeps up)."""
        try:
            await self.call("GET", "/ready")
        except MatchboxError:
            return False
        return True

    # ------------------------------------------------------------------ orders

    async def place_order(
        self,
        market_id: str,
        side: Literal["buy", "sell", "back", "lay"],
        price: int | None = None,
        qty: int | None = None,
        *,
        odds: Decimal | float | str | None = None,
        stake: int | None = None,
        type: Literal["limit", "market"] = "limit",
        tif: Literal["GTC", "GTD", "IOC", "FOK"] | None = None,
        post_only: bool = False,
        expires_at_ms: int | None = None,
        client_order_id: str | None = None,
        self_trade: SelfTrade | None = None,
        on_suspend: Literal["persist", "lapse"] | None = None,
    ) -> OrderOut:
        """Place an order; its state and fills once the engine matched it (``status`` pending if
        the engine was slow: follow it on the feed or with :meth:`order`). Retried under its
        ``client_order_id`` (made here if not given), so it is placed once whatever happens.
        ``self_trade``: what happens if it meets an order of its own account (default: the market's
        rule); ``on_suspend``: ``lapse`` cancels it if its market is suspended (default: it persists)."""
        body = order_body(
            market_id,
            side,
            price,
            qty,
            odds,
            stake,
            type,
            tif,
            post_only,
            expires_at_ms,
            client_order_id,
            self_trade,
            on_suspend,
        )
        if self.account and not self.api_key:
            body["account"] = self.account
        # open mode with no account names a new one for each request: a retry would place again
        return await self.request("POST", "/orders", OrderOut, json=body, retry=self._identified)

    async def place_orders(self, orders: Sequence[dict[str, Any]]) -> BatchOut:
        """Up to 100 orders (bodies as :func:`order_body` makes them) in one request; each item
        has its own status, and order or error. Retried as a whole: every order has its id."""
        bodies = [{"client_order_id": new_client_order_id(), **order} for order in orders]
        if self.account and not self.api_key:
            bodies = [{"account": self.account, **body} for body in bodies]
        return await self.request("POST", "/orders/batch", BatchOut, json={"orders": bodies}, retry=self._identified)

    async def order(self, order_id: int) -> OrderOut:
        return await self.request("GET", f"/orders/{order_id}", OrderOut, retry=True)

    async def cancel_order(self, order_id: int) -> OrderOut:
        return await self.request("DELETE", f"/orders/{order_id}", OrderOut, params=self._own())

    async def reduce_order(self, order_id: int, reduce_by: int) -> OrderOut:
        """Lower a resting order's remaining quantity by ``reduce_by``; it keeps its place (all of
        it cancels the order). To set its quantity instead, counting what has filled, use
        :meth:`amend_order` with ``qty``."""
        body: dict[str, Any] = {"reduce_by": reduce_by}
        if self.account and not self.api_key:
            body["account"] = self.account
        return await self.request("PATCH", f"/orders/{order_id}", OrderOut, json=body)

    async def amend_order(
        self,
        order_id: int,
        *,
        price: int | None = None,
        odds: Decimal | float | str | None = None,
        qty: int | None = None,
        post_only: bool | None = None,
        self_trade: SelfTrade | None = None,
    ) -> OrderOut:
        """Move a resting order to a new ``price`` (or ``odds``) and/or give it a new ``qty``,
        counting what has filled (FIX's OrderQty: the remaining becomes ``qty`` minus filled, so a
        fill that lands first is never traded twice; at or below filled the rest is cancelled).
        More quantity or a new price re-queues it as a new arrival (it may trade at once); a lower
        ``qty`` alone keeps its place. A refused amend leaves the order as it was."""
        fields = {"price": price, "odds": None if odds is None else str(odds), "qty": qty}
        fields |= {"post_only": post_only, "self_trade": self_trade}
        body: dict[str, Any] = {k: v for k, v in fields.items() if v is not None}
        if self.account and not self.api_key:
            body["account"] = self.account
        return await self.request("PATCH", f"/orders/{order_id}", OrderOut, json=body)

    async def cancel_orders(self, order_ids: Sequence[int]) -> CancelManyOut:
        """Cancel up to 100 orders at once; each item has its own status, and order or error.
        Retried as a whole: a second cancel of an order already cancelled is its 409, nothing more."""
        body: dict[str, Any] = {"order_ids": list(order_ids)}
        if self.account and not self.api_key:
            body["account"] = self.account
        return await self.request("POST", "/orders/cancel", CancelManyOut, json=body, retry=True)

    async def cancel_all(self, market_id: str) -> CancelAllOut:
        return await self.request("DELETE", "/orders", CancelAllOut, params=self._own({"market_id": market_id}))

    # ------------------------------------------------------------------ the account

    async def balance(self) -> BalanceOut:
        return await self.request("GET", "/account", BalanceOut, params=self._own(), retry=True)

    async def positions(self, *, limit: int | None = None, cursor: str | None = None) -> PositionsPage:
        params = self._own({"limit": limit, "cursor": cursor})
        return await self.request("GET", "/account/positions", PositionsPage, params=params, retry=True)

    async def orders(
        self,
        state: Literal["open", "closed", "all"] = "open",
        *,
        market_id: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> OrdersPage:
        params = self._own({"state": state, "market_id": market_id, "limit": limit, "cursor": cursor})
        return await self.request("GET", "/account/orders", OrdersPage, params=params, retry=True)

    async def my_trades(
        self,
        *,
        market_id: str | None = None,
        from_ms: int | None = None,
        to_ms: int | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> AccountTradesPage:
        params = self._own(
            {"market_id": market_id, "from_ms": from_ms, "to_ms": to_ms, "limit": limit, "cursor": cursor}
        )
        return await self.request("GET", "/account/trades", AccountTradesPage, params=params, retry=True)

    async def history(self, *, limit: int | None = None, cursor: str | None = None) -> HistoryPage:
        params = self._own({"limit": limit, "cursor": cursor})
        return await self.request("GET", "/account/history", HistoryPage, params=params, retry=True)

    async def heartbeat(self, timeout_ms: int) -> HeartbeatOut:
        """Arm the dead-man switch: your resting orders go unless another comes within ``timeout_ms`` (0 disarms)."""
        params = self._own()
        return await self.request(
            "POST", "/account/heartbeat", HeartbeatOut, json={"timeout_ms": timeout_ms}, params=params
        )

    async def transfer(
        self, amount: int, from_shard: int, to_shard: int, transfer_id: str | None = None
    ) -> TransferOut:
        """Move cash between shards, once (retried under its ``transfer_id``)."""
        body = {
            "amount": amount,
            "from_shard": from_shard,
            "to_shard": to_shard,
            "transfer_id": transfer_id or secrets.token_hex(8),
        }
        return await self.request("POST", "/account/transfers", TransferOut, json=body, params=self._own(), retry=True)

    async def transfer_status(self, transfer_id: str) -> TransferOut:
        return await self.request(
            "GET", f"/account/transfers/{transfer_id}", TransferOut, params=self._own(), retry=True
        )

    @contextlib.asynccontextmanager
    async def deadman(
        self, timeout_ms: int = 5000, *, every: float | None = None, markets: Sequence[str] = ()
    ) -> AsyncIterator[None]:
        """The dead-man switch for the length of a block: armed at once and kept armed by a
        heartbeat every ``every`` seconds (a third of the timeout by default), so if this process
        hangs or dies every resting order goes within ``timeout_ms``; on leaving the block the
        orders in ``markets`` are cancelled and the switch disarmed."""
        await self.heartbeat(timeout_ms)
        interval = every if every is not None else timeout_ms / 3000

        async def beat() -> None:
            while True:
                await asyncio.sleep(interval)
                try:
                    await self.heartbeat(timeout_ms)
                except MatchboxError as exc:  # the next one may pass; the switch fires if none does
                    log.warning("dead-man heartbeat failed: %s", exc)

        task = asyncio.create_task(beat(), name="deadman-heartbeat")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            for market_id in markets:
                await self.cancel_all(market_id)
            await self.heartbeat(0)

    # ------------------------------------------------------------------ market data

    async def markets(
        self,
        *,
        state: Literal["open", "suspended", "closed", "settled"] | None = None,
        scheme: Literal["binary", "odds", "ticks"] | None = None,
        category: str | None = None,
        closes_before_ms: int | None = None,
        sort: Literal["market_id", "closes_at"] | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> MarketsPage:
        """Markets, by id or by close time (``sort="closes_at"``: soonest first), filtered as asked."""
        params = {"state": state, "scheme": scheme, "category": category, "closes_before_ms": closes_before_ms}
        params |= {"sort": sort, "limit": limit, "cursor": cursor}
        return await self.request("GET", "/markets", MarketsPage, params=params, retry=True)

    async def market(self, market_id: str) -> MarketOut:
        return await self.request("GET", f"/markets/{market_id}", MarketOut, retry=True)

    async def book(self, market_id: str, depth: int = 10) -> BookOut:
        return await self.request("GET", f"/markets/{market_id}/book", BookOut, params={"depth": depth}, retry=True)

    async def trades(
        self,
        market_id: str,
        *,
        from_ms: int | None = None,
        to_ms: int | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> TradesPage:
        params = {"from_ms": from_ms, "to_ms": to_ms, "limit": limit, "cursor": cursor}
        return await self.request("GET", f"/markets/{market_id}/trades", TradesPage, params=params, retry=True)

    async def ticker(self, market_id: str) -> TickerOut:
        return await self.request("GET", f"/markets/{market_id}/ticker", TickerOut, retry=True)

    async def candles(
        self,
        market_id: str,
        interval: Literal["1s", "1m", "1h", "1d"] = "1m",
        *,
        from_ms: int | None = None,
        to_ms: int | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> CandlesPage:
        params = {"interval": interval, "from_ms": from_ms, "to_ms": to_ms, "limit": limit, "cursor": cursor}
        return await self.request("GET", f"/markets/{market_id}/candles", CandlesPage, params=params, retry=True)

    async def stats(self, market_id: str) -> StatsOut:
        return await self.request("GET", f"/markets/{market_id}/stats", StatsOut, retry=True)

    # ------------------------------------------------------------------ admin (the admin token)

    async def create_market(
        self,
        market_id: str,
        scheme: Literal["binary", "odds", "ticks"],
        *,
        max_tick: int | None = None,
        collateral: bool = False,
        shard: int | None = None,
        max_qty: int | None = None,
        self_trade: SelfTrade | None = None,
        title: str | None = None,
        question: str | None = None,
        rules: str | None = None,
        category: str | None = None,
        outcomes: Sequence[str] | None = None,
        opens_at_ms: int | None = None,
        closes_at_ms: int | None = None,
        fees: FeesIn | None = None,
    ) -> MarketOut:
        """Create a market (admin): what it is about, when it trades and what it charges are optional
        (see ``POST /v1/markets``)."""
        body: dict[str, Any] = {"market_id": market_id, "scheme": scheme, "collateral": collateral}
        optional: dict[str, Any] = {"max_tick": max_tick, "shard": shard, "max_qty": max_qty, "self_trade": self_trade}
        optional |= {"title": title, "question": question, "rules": rules, "category": category}
        optional |= {"outcomes": None if outcomes is None else list(outcomes), "opens_at_ms": opens_at_ms}
        optional |= {"closes_at_ms": closes_at_ms, "fees": None if fees is None else fees.model_dump()}
        body |= {k: v for k, v in optional.items() if v is not None}
        return await self.request("POST", "/markets", MarketOut, json=body, admin=True)

    async def market_action(
        self, market_id: str, action: Literal["suspend", "resume", "close", "settle"], outcome: str | None = None
    ) -> MarketOut:
        body = None if outcome is None else {"outcome": outcome}
        return await self.request("POST", f"/markets/{market_id}/{action}", MarketOut, json=body, admin=True)

    async def create_account(self, account: str | None = None, name: str = "") -> KeyOut:
        body = {"name": name, **({"account": account} if account else {})}
        return await self.request("POST", "/admin/accounts", KeyOut, json=body, admin=True)

    async def account_info(self, account: str) -> AccountInfoOut:
        return await self.request("GET", f"/admin/accounts/{account}", AccountInfoOut, admin=True, retry=True)

    async def accounts(self, *, limit: int | None = None, cursor: str | None = None) -> AccountsPage:
        params = {"limit": limit, "cursor": cursor}
        return await self.request("GET", "/admin/accounts", AccountsPage, params=params, admin=True, retry=True)

    async def issue_key(self, account: str) -> KeyOut:
        return await self.request("POST", f"/admin/accounts/{account}/keys", KeyOut, admin=True)

    async def revoke_key(self, account: str, key_id: str) -> None:
        await self.call("DELETE", f"/admin/accounts/{account}/keys/{key_id}", admin=True)

    async def deposit(self, account: str, amount: int, shard: int | None = None) -> BalanceOut:
        body = {"amount": amount, **({"shard": shard} if shard is not None else {})}
        return await self.request("POST", f"/admin/accounts/{account}/deposit", BalanceOut, json=body, admin=True)

    async def withdraw(self, account: str, amount: int, shard: int | None = None) -> BalanceOut:
        body = {"amount": amount, **({"shard": shard} if shard is not None else {})}
        return await self.request("POST", f"/admin/accounts/{account}/withdraw", BalanceOut, json=body, admin=True)


async def every_item(fetch: Callable[..., Awaitable[Page[T]]], **params: Any) -> AsyncIterator[T]:
    """Every item of a list, page after page: ``async for order in every_item(client.orders, state="all")``."""
    cursor = None
    while True:
        page = await fetch(**params, cursor=cursor)
        for item in page.items:
            yield item
        if page.next is None:
            return
        cursor = page.next


def order_body(
    market_id: str,
    side: str,
    price: int | None = None,
    qty: int | None = None,
    odds: Decimal | float | str | None = None,
    stake: int | None = None,
    type: str = "limit",
    tif: str | None = None,
    post_only: bool = False,
    expires_at_ms: int | None = None,
    client_order_id: str | None = None,
    self_trade: SelfTrade | None = None,
    on_suspend: Literal["persist", "lapse"] | None = None,
) -> dict[str, Any]:
    """The body of ``POST /v1/orders``, with a ``client_order_id`` always (a new one if not given)."""
    body: dict[str, Any] = {
        "market_id": market_id,
        "side": side,
        "type": type,
        "client_order_id": client_order_id or new_client_order_id(),
    }
    optional = {
        "price": price,
        "qty": qty,
        "odds": None if odds is None else str(odds),
        "stake": stake,
        "tif": tif,
        "expires_at_ms": expires_at_ms,
        "self_trade": self_trade,
        "on_suspend": on_suspend,
    }
    body |= {k: v for k, v in optional.items() if v is not None}
    if post_only:
        body["post_only"] = True
    return body


def new_client_order_id() -> str:
    return f"c-{secrets.token_hex(12)}"


def _parsed(text: str) -> Any:
    """A body as JSON; an empty one as None, and one that is not JSON (a proxy's page) as its text."""
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _retryable(error: MatchboxError) -> bool:
    return error.code in RETRY_CODES


def _query_value(value: Any) -> Any:
    return ("true" if value else "false") if isinstance(value, bool) else value
