"""``matchbox loadgen``: an HTTP load generator for ``POST /orders`` on one or more API instances.

The flow is seeded, on one market: about 60 % passive limit orders one to five ticks either side
of a slowly drifting mid, and 40 % crossing limit orders three ticks through the mid, which take
what rests there. Buyers and sellers use disjoint accounts, so self-trade prevention never fires.
Orders go round robin to the ``--url`` instances over HTTP/1.1 keep-alive connections, from
``--concurrency`` workers with one connection each to every instance (a lean transport of its
own: see ``_Connection``).

Two ways to offer load:

- ``--rate 0`` (closed loop): each worker sends its next order as soon as the previous one is
  answered; this finds the maximum sustained throughput.
- ``--rate R`` (open loop): order ``i`` is due at ``start + i / R``, whether or not earlier orders
  were answered, and its latency is counted from that due time, not from when a worker got round to
  sending it. A server that stalls therefore shows its stall in every order queued behind it,
  instead of hiding it by slowing the client down (coordinated omission).

Reported: orders sent, their HTTP statuses, the order statuses in the answers, achieved orders/s,
the latency of ``POST /orders`` (p50/p90/p99/max) and the order-to-fill latency: from sending a
crossing order to its answer saying ``filled`` (the answer carries the fills).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import itertools
import os
import random
import ssl
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from urllib.parse import SplitResult, urlsplit

import aiohttp
import httptools
import msgspec
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from matchbox.client import AsyncClient, Conflict, MatchboxError, NotFound, Unavailable

MID_LOW, MID_HIGH = 10, 90  # the mid drifts within these, so the flow fits binary markets (1..99) too
CROSS_THROUGH = 3  # ticks a crossing order reaches past the mid
ACCOUNTS_PER_SIDE = 50


@dataclass(frozen=True, slots=True)
class Config:
    urls: tuple[str, ...]
    orders: int | None = None  # stop after this many orders ...
    seconds: float | None = None  # ... or after this long, whichever comes first
    rate: float = 0.0  # offered orders/s (open loop); 0 = closed loop, as fast as answers come
    concurrency: int = 64
    market: str = "default"
    crossing: float = 0.4  # share of crossing orders
    mid: int = 50
    seed: int = 7
    timeout: float = 10.0
    create_market: str | None = None
    admin_token: str | None = None
    progress: bool = True


@dataclass(frozen=True, slots=True)
class Order:
    body: bytes
    crossing: bool
    account: str


class Flow:
    """The seeded order flow, one order body at a time (the i-th call gives the i-th order)."""

    def __init__(self, market: str, *, crossing: float, mid: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.market = market
        self.crossing = crossing
        self.mid = min(MID_HIGH, max(MID_LOW, mid))
        tag = f"{seed:x}{os.getpid():x}{time.time_ns() % 1_000_000:x}"  # fresh accounts for every run
        self.buyers = [f"lg{tag}-b{i}" for i in range(ACCOUNTS_PER_SIDE)]
        self.sellers = [f"lg{tag}-s{i}" for i in range(ACCOUNTS_PER_SIDE)]

    def next(self) -> Order:
        rng = self.rng
        is_buy = rng.random() < 0.5
        crossing = rng.random() < self.crossing
        if crossing:
            price = self.mid + CROSS_THROUGH if is_buy else self.mid - CROSS_THROUGH
            qty = rng.randint(1, 5)
        else:
            self.mid = min(MID_HIGH, max(MID_LOW, self.mid + rng.choice((-1, 0, 0, 0, 0, 0, 0, 1))))
            offset = rng.randint(1, 5)
            price = self.mid - offset if is_buy else self.mid + offset
            qty = rng.randint(1, 10)
        account = rng.choice(self.buyers if is_buy else self.sellers)
        body = {
            "market_id": self.market,
            "side": "buy" if is_buy else "sell",
            "price": price,
            "qty": qty,
            "account": account,
        }
        return Order(msgspec.json.encode(body), crossing, account)


@dataclass(slots=True)
class Results:
    latencies: list[float] = field(default_factory=list)  # seconds, every answered POST
    fill_latencies: list[float] = field(default_factory=list)  # seconds, crossing orders answered "filled"
    http_statuses: Counter[str] = field(default_factory=Counter)  # "201", "422", or an exception's name
    order_statuses: Counter[str] = field(default_factory=Counter)  # "filled", "open", ... from the answers
    sent: int = 0
    late: int = 0  # open loop: orders sent more than 1 ms after they were due (all workers were busy)
    started: float = 0.0
    finished: float = 0.0


@dataclass(frozen=True, slots=True)
class Figures:
    urls: list[str]
    market: str
    concurrency: int
    offered_rate: float
    orders: int
    ok: int
    pending: int
    errors: int
    http_statuses: dict[str, int]
    order_statuses: dict[str, int]
    late: int
    seconds: float
    orders_per_s: float
    latency_p50_ms: float | None
    latency_p90_ms: float | None
    latency_p99_ms: float | None
    latency_max_ms: float | None
    fills: int
    fill_p50_ms: float | None
    fill_p99_ms: float | None


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted ``values`` (None when empty)."""
    if not values:
        return None
    rank = max(1, min(len(values), int(-(-q * len(values) // 100))))  # ceil(q/100 * n), at least 1
    return values[rank - 1]


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 3)


def summarize(config: Config, results: Results) -> Figures:
    latencies = sorted(results.latencies)
    fills = sorted(results.fill_latencies)
    statuses = dict(sorted(results.http_statuses.items()))
    ok = results.http_statuses["200"] + results.http_statuses["201"]
    pending = results.http_statuses["202"]
    elapsed = max(results.finished - results.started, 1e-9)
    return Figures(
        urls=list(config.urls),
        market=config.market,
        concurrency=config.concurrency,
        offered_rate=config.rate,
        orders=results.sent,
        ok=ok,
        pending=pending,
        errors=results.sent - ok - pending,
        http_statuses=statuses,
        order_statuses=dict(sorted(results.order_statuses.items())),
        late=results.late,
        seconds=round(elapsed, 3),
        orders_per_s=round(results.sent / elapsed, 1),
        latency_p50_ms=_ms(percentile(latencies, 50)),
        latency_p90_ms=_ms(percentile(latencies, 90)),
        latency_p99_ms=_ms(percentile(latencies, 99)),
        latency_max_ms=_ms(latencies[-1] if latencies else None),
        fills=len(fills),
        fill_p50_ms=_ms(percentile(fills, 50)),
        fill_p99_ms=_ms(percentile(fills, 99)),
    )


# --------------------------------------------------------------------------- the load


class SetupError(Exception):
    """The instances cannot take the load (unreachable, no such market, market creation refused)."""


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection that posts pre-encoded requests, one at a time, and
    reads each answer with httptools (llhttp, what uvicorn parses requests with).

    The load tool's own transport, rather than aiohttp's: it must cost well under a tenth of
    what it measures. Measured against the same server, aiohttp spent about 230 µs of CPU per
    order and this about 40 µs (docs/benchmarks.md); httpx spent 1.5 ms."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.answer: asyncio.Future[tuple[int, bytes]] | None = None
        self.body: list[bytes] = []
        self.closed = False

    @classmethod
    async def open(cls, url: SplitResult, tls: ssl.SSLContext) -> _Connection:
        loop = asyncio.get_running_loop()
        secure = url.scheme == "https"
        port = url.port or (443 if secure else 80)
        host = url.hostname or "127.0.0.1"
        _, connection = await loop.create_connection(cls, host, port, ssl=tls if secure else None)
        return connection

    async def post(self, request: bytes) -> tuple[int, bytes]:
        """Send a whole request; its answer's (status, body)."""
        assert self.transport is not None
        self.answer = asyncio.get_running_loop().create_future()
        self.body = []
        self.transport.write(request)
        return await self.answer

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(exc or ConnectionResetError("the server closed the connection"))

    # httptools callbacks
    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if not self.parser.should_keep_alive():
            self.close()
        if self.answer is not None and not self.answer.done():
            self.answer.set_result((self.parser.get_status_code(), b"".join(self.body)))

    def _fail(self, exc: BaseException) -> None:
        self.closed = True
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(exc)
        if self.transport is not None:
            self.transport.close()


def _request(url: SplitResult, body: bytes, headers: dict[str, str] | None) -> bytes:
    """A whole ``POST /v1/orders`` request, encoded once."""
    lines = [
        f"POST {url.path.rstrip('/')}/v1/orders HTTP/1.1",
        f"Host: {url.netloc}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def _setup(config: Config, flow: Flow) -> dict[str, dict[str, str]]:
    """Create the market if asked, wait (bounded) until every instance knows it, and, unless the
    API runs open (``--open``), create the flow's accounts: the headers that carry each one's key.
    Through :mod:`matchbox.client`; the orders themselves go out pre-encoded (``_drive``), so
    the load tool spends as little as it can of the CPU it measures."""
    if config.create_market and not config.admin_token:
        raise SetupError("--create-market needs the admin token: --admin-token or MATCHBOX_ADMIN_TOKEN")
    try:
        async with AsyncClient(config.urls[0], admin_token=config.admin_token, timeout=config.timeout) as admin:
            if config.create_market:
                with contextlib.suppress(Conflict):  # it exists already, which is as good
                    await admin.create_market(config.create_market, "binary")
            for url in config.urls:
                async with AsyncClient(url, timeout=config.timeout, retries=0) as instance:
                    await _known(instance, config.market)
            if (await admin.health()).get("auth") == "open":
                return {}
            if not config.admin_token:
                raise SetupError(
                    "the API wants API keys: give --admin-token (or MATCHBOX_ADMIN_TOKEN) to create accounts"
                )
            keys = [await admin.create_account(account) for account in [*flow.buyers, *flow.sellers]]
    except Unavailable as exc:
        raise SetupError(f"cannot reach the API: {exc.message}") from None
    except (MatchboxError, aiohttp.ClientError) as exc:
        raise SetupError(str(exc)) from None
    return {issued.account: {"authorization": f"Bearer {issued.api_key}"} for issued in keys}


async def _known(instance: AsyncClient, market: str) -> None:
    """Until the instance knows the market (one just created may take a moment to reach it)."""
    deadline = time.monotonic() + 10.0
    while True:
        try:
            await instance.market(market)
            return
        except NotFound:
            if time.monotonic() > deadline:
                raise SetupError(f"{instance.base_url} does not know market {market!r}") from None
        await asyncio.sleep(0.05)


async def _drive(
    tls: ssl.SSLContext,
    config: Config,
    flow: Flow,
    keys: dict[str, dict[str, str]],
    results: Results,
    progress: Progress | None,
) -> None:
    total = config.orders
    if config.rate > 0 and config.seconds is not None:
        by_time = max(1, int(config.rate * config.seconds))
        total = by_time if total is None else min(total, by_time)
    urls = [urlsplit(url) for url in config.urls]
    task = progress.add_task("orders", total=total, info="") if progress is not None else None
    counter = itertools.count()
    clock = time.perf_counter
    results.started = start = clock()
    deadline = start + config.seconds if config.seconds is not None else None
    rate = config.rate
    latencies, fill_latencies = results.latencies, results.fill_latencies
    http_statuses, order_statuses = results.http_statuses, results.order_statuses

    async def worker() -> None:
        connections: dict[int, _Connection] = {}  # one keep-alive connection per instance
        try:
            await orders(connections)
        finally:
            for connection in connections.values():
                connection.close()

    async def orders(connections: dict[int, _Connection]) -> None:
        while True:
            i = next(counter)
            if total is not None and i >= total:
                return
            order = flow.next()  # right after taking the index: bodies keep the flow's order
            if rate > 0:
                due = start + i / rate
                wait = due - clock()
                if wait > 0:
                    await asyncio.sleep(wait)
                elif wait < -0.001:
                    results.late += 1
            else:
                due = clock()
                if deadline is not None and due >= deadline:
                    return
            results.sent += 1
            target = i % len(urls)
            try:
                connection = connections.get(target)
                if connection is None or connection.closed:
                    connection = connections[target] = await _Connection.open(urls[target], tls)
                async with asyncio.timeout(config.timeout):
                    status_code, content = await connection.post(
                        _request(urls[target], order.body, keys.get(order.account))
                    )
            except (OSError, TimeoutError, httptools.HttpParserError) as exc:
                http_statuses[type(exc).__name__] += 1
                connections.pop(target, None)
            else:
                done = clock()
                latencies.append(done - due)
                http_statuses[str(status_code)] += 1
                if status_code < 300:
                    status = msgspec.json.decode(content).get("status", "?")
                    order_statuses[status] += 1
                    if order.crossing and status == "filled":
                        fill_latencies.append(done - due)
            if progress is not None and task is not None:
                progress.advance(task)

    workers = [asyncio.create_task(worker()) for _ in range(config.concurrency)]
    try:
        await asyncio.gather(*workers)
    finally:
        for pending in workers:
            pending.cancel()
        results.finished = clock()


async def _run(config: Config, results: Results, console: Console) -> None:
    tls = ssl.create_default_context()
    flow = Flow(config.market, crossing=config.crossing, mid=config.mid, seed=config.seed)
    keys = await _setup(config, flow)
    if not config.progress:
        await _drive(tls, config, flow, keys, results, None)
        return
    columns = (
        TextColumn("[bold]loadgen[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        refresher = asyncio.create_task(_refresh(progress, results))
        try:
            await _drive(tls, config, flow, keys, results, progress)
        finally:
            refresher.cancel()


async def _refresh(progress: Progress, results: Results) -> None:
    """Keep the progress line's figures current: orders/s so far and the errors."""
    while True:
        if not results.started:  # not sending yet
            await asyncio.sleep(0.05)
            continue
        elapsed = max(time.perf_counter() - results.started, 1e-9)
        errors = sum(n for status, n in results.http_statuses.items() if status not in ("200", "201", "202"))
        info = f"{results.sent / elapsed:,.0f} orders/s  errors {errors:,}"
        for task in progress.tasks:
            progress.update(task.id, info=info)
        await asyncio.sleep(0.25)


def event_loop_runner() -> asyncio.Runner:
    """On uvloop where there is one (uvicorn[standard] brings it, but not on Windows): less CPU per request."""
    if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
        # httpcore tries ``import sniffio`` for every lock it sets up; without sniffio installed each
        # failed attempt searches sys.path again. None in sys.modules makes the attempt fail at once
        # (and httpcore then assumes asyncio, which is what runs here).
        sys.modules["sniffio"] = None  # type: ignore[assignment]
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return asyncio.Runner()
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return asyncio.Runner(loop_factory=factory)


# --------------------------------------------------------------------------- output


def render(figures: Figures, console: Console) -> None:
    mode = f"{figures.offered_rate:,.0f} orders/s offered" if figures.offered_rate else "as fast as possible"
    table = Table(
        title=f"matchbox loadgen: {figures.orders:,} orders, {mode}, concurrency {figures.concurrency}, "
        f"{len(figures.urls)} instance(s)"
    )
    table.add_column("")
    table.add_column("", justify="right")

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:,.2f} ms"

    table.add_row("orders sent", f"{figures.orders:,}")
    table.add_row("ok (200/201)", f"{figures.ok:,}")
    table.add_row("pending (202)", f"{figures.pending:,}")
    table.add_row("errors", f"{figures.errors:,}")
    table.add_row("by HTTP status", ", ".join(f"{k}: {v:,}" for k, v in figures.http_statuses.items()) or "-")
    table.add_row("by order status", ", ".join(f"{k}: {v:,}" for k, v in figures.order_statuses.items()) or "-")
    table.add_row("achieved", f"{figures.orders_per_s:,.0f} orders/s over {figures.seconds:,.2f} s")
    if figures.offered_rate:
        table.add_row("sent late (> 1 ms)", f"{figures.late:,}")
    table.add_row("POST /orders p50", ms(figures.latency_p50_ms))
    table.add_row("POST /orders p90", ms(figures.latency_p90_ms))
    table.add_row("POST /orders p99", ms(figures.latency_p99_ms))
    table.add_row("POST /orders max", ms(figures.latency_max_ms))
    table.add_row(f"order-to-fill p50 ({figures.fills:,} filled crossing orders)", ms(figures.fill_p50_ms))
    table.add_row("order-to-fill p99", ms(figures.fill_p99_ms))
    console.print(table)


def measure(config: Config) -> Figures:
    """Offer the load and return its figures, printing nothing (``matchbox bench latency``)."""
    results = Results()
    with event_loop_runner() as runner:
        runner.run(_run(config, results, Console(stderr=True)))
    return summarize(config, results)


def run(config: Config, *, json_output: bool) -> int:
    """Offer the load, print the table (and the JSON line); 0 if any order went through, else 1; 2 on setup."""
    console = Console(stderr=json_output)
    results = Results()
    try:
        with event_loop_runner() as runner:
            runner.run(_run(config, results, console))
    except SetupError as exc:
        console.print(f"[red]error:[/] {exc}")
        return 2
    figures = summarize(config, results)
    render(figures, console)
    if json_output:
        sys.stdout.write(msgspec.json.encode(asdict(figures)).decode() + "\n")
    if figures.ok + figures.pending == 0:
        console.print("[red]no order was accepted[/]")
        return 1
    return 0
