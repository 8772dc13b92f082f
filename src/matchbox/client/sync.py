"""``Client``: the same API, blocking, for scripts and bots that are not asyncio.

It runs an :class:`~matchbox.client.aio.AsyncClient` on an event loop of its own, in a daemon
thread, so both share every rule (retries, errors, parsing) and one HTTP stack: each method here
is the async one, waited for. The dead-man heartbeats and a stream's connection live on that
loop, beside whatever the calling thread does.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

from matchbox.client.aio import AsyncClient
from matchbox.client.stream import LocalBook, Stream

P = ParamSpec("P")
R = TypeVar("R")


def _blocking(method: Callable[Concatenate[AsyncClient, P], Awaitable[R]]) -> Callable[Concatenate[Client, P], R]:
    """The async method, as a blocking one of :class:`Client` (same parameters, same result)."""

    def call(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.wait(method(self.inner, *args, **kwargs))

    call.__name__, call.__doc__ = method.__name__, method.__doc__
    return call


class Client:
    """API v1, blocking: ``Client(url, api_key)``; see :class:`~matchbox.client.aio.AsyncClient`
    for every method. Use it as a context manager, or call :meth:`close`."""

    def __init__(self, base_url: str, api_key: str | None = None, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="matchbox-client", daemon=True)
        self._thread.start()
        self.inner = AsyncClient(base_url, api_key, **options)

    def wait(self, work: Awaitable[R]) -> R:
        """Run ``work`` on the client's loop and wait for its result."""

        if threading.current_thread() is self._thread:
            raise RuntimeError("a blocking Client's method called from its own loop: use its AsyncClient (inner)")

        async def run() -> R:
            return await work

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result()

    def close(self) -> None:
        if self._loop.is_running():
            self.wait(self.inner.close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    health = _blocking(AsyncClient.health)
    ready = _blocking(AsyncClient.ready)
    place_order = _blocking(AsyncClient.place_order)
    place_orders = _blocking(AsyncClient.place_orders)
    order = _blocking(AsyncClient.order)
    cancel_order = _blocking(AsyncClient.cancel_order)
    reduce_order = _blocking(AsyncClient.reduce_order)
    cancel_orders = _blocking(AsyncClient.cancel_orders)
    amend_order = _blocking(AsyncClient.amend_order)
    cancel_all = _blocking(AsyncClient.cancel_all)
    balance = _blocking(AsyncClient.balance)
    positions = _blocking(AsyncClient.positions)
    orders = _blocking(AsyncClient.orders)
    my_trades = _blocking(AsyncClient.my_trades)
    history = _blocking(AsyncClient.history)
    heartbeat = _blocking(AsyncClient.heartbeat)
    transfer = _blocking(AsyncClient.transfer)
    transfer_status = _blocking(AsyncClient.transfer_status)
    markets = _blocking(AsyncClient.markets)
    market = _blocking(AsyncClient.market)
    book = _blocking(AsyncClient.book)
    trades = _blocking(AsyncClient.trades)
    ticker = _blocking(AsyncClient.ticker)
    candles = _blocking(AsyncClient.candles)
    stats = _blocking(AsyncClient.stats)
    create_market = _blocking(AsyncClient.create_market)
    market_action = _blocking(AsyncClient.market_action)
    create_account = _blocking(AsyncClient.create_account)
    account_info = _blocking(AsyncClient.account_info)
    accounts = _blocking(AsyncClient.accounts)
    issue_key = _blocking(AsyncClient.issue_key)
    revoke_key = _blocking(AsyncClient.revoke_key)
    deposit = _blocking(AsyncClient.deposit)
    withdraw = _blocking(AsyncClient.withdraw)

    @contextlib.contextmanager
    def deadman(
        self, timeout_ms: int = 5000, *, every: float | None = None, markets: Sequence[str] = ()
    ) -> Iterator[None]:
        """As :meth:`AsyncClient.deadman`: the heartbeats run on the client's loop while the block runs."""
        manager = self.inner.deadman(timeout_ms, every=every, markets=markets)
        self.wait(manager.__aenter__())
        try:
            yield
        finally:
            self.wait(manager.__aexit__(None, None, None))

    @contextlib.contextmanager
    def stream(self, channels: Sequence[str], *, last_id: str | None = None) -> Iterator[SyncStream]:
        """The feed of ``channels``, blocking: iterate it for its messages (see :class:`Stream`)."""
        stream = SyncStream(self, Stream(self.inner, channels, last_id=last_id))
        try:
            self.wait(stream.inner.ready())
            yield stream
        finally:
            self.wait(stream.inner.close())


class SyncStream:
    """A :class:`Stream` read from a blocking thread; ``next(stream, timeout)`` waits at most that long."""

    def __init__(self, client: Client, inner: Stream) -> None:
        self.client = client
        self.inner = inner

    @property
    def books(self) -> dict[str, LocalBook]:
        return self.inner.books

    def next(self, timeout: float | None = None) -> dict[str, Any]:
        """The next message; TimeoutError if none comes within ``timeout`` seconds."""
        coroutine: Coroutine[Any, Any, dict[str, Any]] = asyncio.wait_for(anext(self.inner), timeout)
        return self.client.wait(coroutine)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while True:
            try:
                yield self.next()
            except StopAsyncIteration:
                return
