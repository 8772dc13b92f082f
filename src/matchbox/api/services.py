"""What a running API instance holds (bus, projection, tail, hub, metrics) and the helpers every
route uses to reach the engine: submit a command, wait for its outcome."""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from fastapi import Request, WebSocket
from fastapi.responses import Response
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from pydantic import BaseModel

from matchbox.api.codes import Code
from matchbox.api.errors import ApiError, rejected_by_engine
from matchbox.api.gate import Gate
from matchbox.api.hub import Hub
from matchbox.api.projection import MarketView, Projection
from matchbox.api.tail import EventTail
from matchbox.bus.accounts import AccountStore
from matchbox.bus.aio import AsyncBus
from matchbox.bus.cluster import connect_bus
from matchbox.bus.codec import CodecError, decode_event
from matchbox.bus.commit import EngineTooOld, RollbackAlarm, Uncertified
from matchbox.bus.connection import Bus, id_order
from matchbox.bus.durability import DurabilityError
from matchbox.bus.journal import Request as JournalRequest
from matchbox.bus.journal import Submission
from matchbox.bus.keys import MARKET_DIRECTORY
from matchbox.consumers.db import open_database
from matchbox.engine.ids import shard_of
from matchbox.engine.types import (
    Command,
    Event,
    PlaceOrder,
    Rejected,
    RejectReason,
)
from matchbox.settings import Settings

ORDER_STAGES = ("journal", "to_engine", "match", "commit", "answer", "total")  # matchbox_order_stage_seconds


class Metrics:
    """The API's Prometheus metrics. The children the hot path counts into are looked up once:
    ``labels()`` takes a lock and builds a key on every call."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # the process's CPU, memory, open files and start time, and Python's GC, as every process has them
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.requests = Counter(
            "matchbox_http_requests", "HTTP requests", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "matchbox_http_request_seconds",
            "HTTP request latency",
            ["method", "route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self.orders = Counter(
            "matchbox_orders", "Order outcomes seen by this instance", ["outcome"], registry=self.registry
        )
        self.order_stages = Histogram(
            "matchbox_order_stage_seconds",
            "Where a placed order's time goes: journal (the API's submission, its fsync included), to_engine "
            "(until the leader read it), match, commit (until this API's tail saw the outcome), answer, total",
            ["stage"],
            buckets=(
                *(n / 1e6 for n in (50, 100, 200, 300, 500, 750)),
                *(n / 1e3 for n in (1, 1.5, 2, 3, 5, 7.5, 10, 25, 50, 100, 250, 1000)),
            ),
            registry=self.registry,
        )
        self.stages = {stage: self.order_stages.labels(stage) for stage in ORDER_STAGES}
        self.outcomes = {outcome: self.orders.labels(outcome) for outcome in ("accepted", "rejected")}
        self._requests: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self.ws_clients = Gauge("matchbox_ws_clients", "Connected WebSocket clients", registry=self.registry)
        self.engine_lag = Gauge(
            "matchbox_engine_lag_entries", "Input entries not yet committed by the engine", registry=self.registry
        )
        self.group_lag = Gauge(
            "matchbox_consumer_lag_entries",
            "Output-stream entries not yet delivered to a consumer group",
            ["group"],
            registry=self.registry,
        )
        self.group_pending = Gauge(
            "matchbox_consumer_pending_entries",
            "Entries delivered to a consumer group and not yet acknowledged",
            ["group"],
            registry=self.registry,
        )

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        """One HTTP request answered: counted, and its latency observed."""
        key = (method, route, status)
        children = self._requests.get(key)
        if children is None:
            if len(self._requests) > 10_000:  # methods are a client's to choose: never an unbounded cache
                self._requests.clear()
            children = self._requests[key] = (
                self.requests.labels(method, route, str(status)),
                self.latency.labels(method, route),
            )
        children[0].inc()
        children[1].observe(seconds)


@dataclass(eq=False)
class ShardLink:
    """One shard as an API instance reaches it: its bus, and the tail that reads its events."""

    number: int
    bus: AsyncBus
    tail: EventTail


class Services:
    """What a running API instance holds: a link to each shard it serves, and one projection of them all.

    ``bus`` is the first shard's, which serves the shards' common keys too (accounts, the market
    directory). A command goes to the shard :meth:`route` names."""

    def __init__(self, settings: Settings, bus: AsyncBus) -> None:
        self.settings = settings
        self.bus = bus
        self.projection = Projection()
        numbers = [bus.keys.shard] if settings.shards == 1 else list(range(settings.shards))
        self.hub = Hub(self.projection, numbers)
        self.shards: dict[int, ShardLink] = {}
        for number in numbers:
            shard_bus = bus if number == bus.keys.shard else bus.sibling(number)
            tail = EventTail(shard_bus, self.projection)
            tail.listeners.append(self.hub.publish)
            self.shards[number] = ShardLink(number, shard_bus, tail)
        self.first = self.shards[numbers[0]]
        self.metrics = Metrics()
        self.gate = Gate(settings, bus)
        self._database: sa.Engine | None = None
        self._database_lock = threading.Lock()
        self._sync_bus: Bus | None = None
        self._accounts: AccountStore | None = None

    def shard(self, number: int, field: str = "shard") -> ShardLink:
        """The link to a shard this instance serves; a 404 naming ``field`` for any other."""
        link = self.shards.get(number)
        if link is None:
            raise ApiError(
                404, Code.UNKNOWN_SHARD, f"shard {number} is not served here (shards: {list(self.shards)})", field
            )
        return link

    def route(self, command: Command) -> ShardLink:
        """The shard a command goes to: an order's (by its id), else its market's; account-wide
        commands (deposits, heartbeats) name theirs and are sent with :func:`submit_one`'s ``shard``."""
        order_id = getattr(command, "order_id", 0)
        if order_id and not isinstance(command, PlaceOrder):
            return self.shard(shard_of(order_id), "order_id")
        market_id = getattr(command, "market_id", "")
        market = self.projection.markets.get(market_id)
        if market is not None:
            return self.shard(market.shard, "market_id")
        return self.first

    async def caught_up(self) -> None:
        """Until every tail has first reached the end of its shard's stream."""
        for link in self.shards.values():
            await link.tail.caught_up.wait()

    def all_caught_up(self) -> bool:
        return all(link.tail.caught_up.is_set() for link in self.shards.values())

    async def place_market(self, market_id: str, wanted: int | None) -> ShardLink:
        """The shard ``market_id`` is placed on, in the directory: where it is already, else
        ``wanted``, else the shard with the fewest markets (a 409 if it is already elsewhere than
        ``wanted``). Placing is once for good (HSETNX): two instances never place one market twice."""
        choice = wanted
        if choice is None:
            counts = collections.Counter(market.shard for market in self.projection.markets.values())
            choice = min(self.shards, key=lambda number: (counts[number], number))
        self.shard(choice)
        directory = self.bus.routed
        await directory.hsetnx(MARKET_DIRECTORY, market_id, str(choice))
        placed = int(await directory.hget(MARKET_DIRECTORY, market_id) or choice)  # set once: no race after
        if wanted is not None and placed != wanted:
            raise ApiError(
                409, Code.MARKET_ON_OTHER_SHARD, f"market {market_id!r} is placed on shard {placed}", "shard"
            )
        return self.shard(placed)

    def database(self) -> sa.Engine:
        """The consumers' SQL database (candles, stats), opened on first use; call from a worker thread."""
        with self._database_lock:
            if self._database is None:
                try:
                    self._database = open_database(self.settings.database_url, self.settings.data_dir)
                except sa.exc.SQLAlchemyError as exc:
                    raise ApiError(
                        503, Code.UNAVAILABLE, f"the database is unavailable: {type(exc).__name__}"
                    ) from None
            return self._database

    def sync_bus(self) -> Bus | None:
        """A blocking client for the consumer-group figures in /metrics and the account store
        (None without a REDIS_URL); call from a worker thread."""
        if self._sync_bus is None and self.settings.redis_url:
            self._sync_bus = connect_bus(self.settings.redis_url, self.first.number, cluster=self.settings.cluster)
        return self._sync_bus

    def accounts(self) -> AccountStore:
        """Accounts and their keys, on the blocking client; call from a worker thread."""
        if self._accounts is None:
            bus = self.sync_bus()
            if bus is None:
                raise ApiError(503, Code.UNAVAILABLE, "accounts need the exchange's Redis (REDIS_URL)")
            self._accounts = AccountStore(bus.routed)
        return self._accounts

    async def close_buses(self) -> None:
        for link in self.shards.values():
            await link.bus.close()

    def close(self) -> None:
        if self._database is not None:
            self._database.dispose()
        if self._sync_bus is not None:
            self._sync_bus.close()


def services_of(request: Request | WebSocket) -> Services:
    services: Services = request.app.state.services
    return services


def market_of(services: Services, market_id: str) -> MarketView:
    market = services.projection.markets.get(market_id)
    if market is None:
        raise ApiError(404, RejectReason.UNKNOWN_MARKET, f"unknown market {market_id!r}", "market_id")
    return market


def json_response(status: int, model: BaseModel) -> Response:
    """A model as JSON, serialized by pydantic-core in one step (no dict, no stdlib json)."""
    return Response(model.model_dump_json(exclude_none=True), status_code=status, media_type="application/json")


async def submit_one(
    services: Services, command: Command, client_order_id: str | None = None, shard: ShardLink | None = None
) -> Submission:
    """Append ``command`` to the journal of ``shard``, or of the shard it routes to."""
    link = shard or services.route(command)
    with refusals_as_errors():
        return await link.bus.submit(JournalRequest(command, client_order_id))


async def submit_many(services: Services, requests: Sequence[JournalRequest]) -> list[Submission]:
    """Append commands, each to its shard's journal: one round trip per shard, all at once."""
    by_shard: dict[int, list[int]] = {}
    for i, request in enumerate(requests):
        by_shard.setdefault(services.route(request.command).number, []).append(i)
    with refusals_as_errors():
        answers = await asyncio.gather(
            *(services.shards[n].bus.submit_many([requests[i] for i in at]) for n, at in by_shard.items())
        )
    submissions: list[Submission | None] = [None] * len(requests)
    for at, answer in zip(by_shard.values(), answers, strict=True):
        for i, submission in zip(at, answer, strict=True):
            submissions[i] = submission
    return [s for s in submissions if s is not None]


@contextmanager
def refusals_as_errors() -> Iterator[None]:
    """The journal's refusals as 503s that say why: the rollback alarm (halted until an operator
    acts) or a restarted Redis that no leader has checked yet (a second or so: retry)."""
    try:
        yield
    except RollbackAlarm as exc:
        raise ApiError(503, Code.HALTED, f"the exchange is halted: {exc}") from None
    except Uncertified as exc:
        raise ApiError(503, Code.UNCERTIFIED, f"{exc}; retry in a second", headers={"Retry-After": "1"}) from None
    except DurabilityError as exc:  # the AOF is off, or did not confirm the fsync in time
        raise ApiError(503, Code.NOT_DURABLE, str(exc)) from None
    except EngineTooOld as exc:  # a rolling upgrade half done: the engines go first
        raise ApiError(503, Code.ENGINE_TOO_OLD, str(exc)) from None


async def engine_events(services: Services, command: Command, shard: ShardLink | None = None) -> list[Event]:
    """The events of a command, submitted and answered; a 503 if the engine has not answered in time."""
    submission = await submit_one(services, command, shard=shard)
    events = await outcome_or_nothing(services, submission)
    if events is None:
        raise ApiError(
            503, Code.NOT_ANSWERED, "the engine has not answered yet (failing over?); the outcome will be on the feed"
        )
    return events


async def engine_outcome(
    services: Services,
    command: Command,
    shard: ShardLink | None = None,
    fields: Mapping[RejectReason, str] | None = None,
) -> list[Event]:
    """As :func:`engine_events`, with the engine's refusal of the command as its error, naming the
    request field that ``fields`` gives for its reason."""
    events = await engine_events(services, command, shard)
    rejected = next((e for e in events if isinstance(e, Rejected)), None)
    if rejected is not None:
        field = None if fields is None else fields.get(rejected.reason)
        raise rejected_by_engine(refusal_status(rejected.reason), rejected.reason, field)
    return events


def refusal_status(reason: RejectReason) -> int:
    """The HTTP status of the engine's refusal of a command on something that exists: 404 when
    what it names does not (for this caller), else 409 (it is not in a state to take it)."""
    return 404 if reason in (RejectReason.UNKNOWN_ORDER, RejectReason.UNKNOWN_MARKET) else 409


COMMITTED_PAGE = 1000  # events read back per XRANGE


async def outcome_or_nothing(services: Services, submission: Submission) -> list[Event] | None:
    """The submitted entry's events; ``[]`` if the engine committed past it with none (a
    cancel-all of nothing); None if the engine has not got that far within the timeout."""
    link, entry_id = services.shards[submission.shard], submission.entry_id
    deadline = time.monotonic() + services.settings.outcome_timeout
    while True:
        events = await link.tail.outcome(entry_id, min(0.05, max(0.0, deadline - time.monotonic())))
        if events is not None:
            return events
        offset = await link.bus.offset()
        if offset is not None and id_order(offset.id) >= id_order(entry_id):
            # its events, if any, are committed: the tail has them, unless they left its window
            return await link.tail.outcome(entry_id, 0.2) or await committed_events(link.bus, entry_id)
        if time.monotonic() >= deadline:
            return None


async def committed_events(bus: AsyncBus, entry_id: str) -> list[Event]:
    """The events of an input entry the engine has committed, read back from the output stream.
    An event caused by entry ``<ms>-<k>`` has the id ``<ms>-<n>`` (docs/events.md), so it is
    among that millisecond's events, which come in entry order: the read stops at a later entry's."""
    ms = entry_id.partition("-")[0]
    low, found = ms, []
    while True:
        page = await bus.range(bus.keys.events, low, ms, count=COMMITTED_PAGE)
        for _, fields in page:
            try:
                decoded = decode_event(fields.get(b"event", b""))
            except CodecError:  # skipped as the tail skipped it (and logged it) when it came
                continue
            if decoded.in_id == entry_id:
                found.append(decoded.event)
            elif id_order(decoded.in_id) > id_order(entry_id):
                return found
        if len(page) < COMMITTED_PAGE:
            return found
        low = "(" + page[-1][0].decode()  # exclusive: the page after the last one read
