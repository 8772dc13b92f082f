"""The HTTP and WebSocket API: ``create_app(settings)`` (FastAPI), served by ``matchbox api``.

Writes go to the input journal (``submit.lua``, one round trip) and wait, bounded, for their
outcome on the output stream, which this instance's tail reads like every other instance's.
Reads come from the tail's projection. Nothing here matches or decides: the engine does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import msgspec
import redis
from fastapi import FastAPI, Header, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from matchbox.api.feed import channel_messages
from matchbox.api.hub import Client, Hub
from matchbox.api.models import (
    BatchIn,
    BatchItemOut,
    BookOut,
    CancelAllOut,
    EngineOut,
    ErrorBody,
    FillOut,
    LevelOut,
    MarketIn,
    MarketOut,
    OrderIn,
    OrderOut,
    ReduceIn,
    SettleIn,
    TickerOut,
    TradeOut,
)
from matchbox.api.prices import PriceError, price_out, side_of, side_word, tick_of
from matchbox.api.projection import MarketView, OrderView, Projection
from matchbox.api.tail import EventTail
from matchbox.bus.aio import AsyncBus
from matchbox.bus.codec import CodecError, decode_event
from matchbox.bus.journal import Request as JournalRequest
from matchbox.bus.journal import Submission
from matchbox.engine.types import (
    CancelAll,
    CancelOrder,
    CloseMarket,
    Command,
    CreateMarket,
    Event,
    MarketCreated,
    MarketState,
    OrderCancelled,
    OrderKind,
    PlaceOrder,
    ReduceOrder,
    Rejected,
    RejectReason,
    ResumeMarket,
    SelfTradePrevention,
    SettleMarket,
    Side,
    SuspendMarket,
    TickScheme,
    TimeInForce,
)
from matchbox.settings import Settings

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
SCHEMES = {"binary": TickScheme.BINARY, "odds": TickScheme.ODDS, "ticks": TickScheme.TICKS}
STP = {"cancel_taker": SelfTradePrevention.CANCEL_TAKER, "cancel_resting": SelfTradePrevention.CANCEL_RESTING}
_BUY, _SELL = Side.BUY, Side.SELL
AdminToken = Annotated[str | None, Header(alias="Authorization", description="Bearer <admin token>")]
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody},
    404: {"model": ErrorBody},
    409: {"model": ErrorBody},
    422: {"model": ErrorBody},
    503: {"model": ErrorBody},
}
ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {**ERRORS, 403: {"model": ErrorBody}}


class ApiError(Exception):
    def __init__(self, status: int, error: str, field: str | None = None, **extra: Any) -> None:
        super().__init__(error)
        self.status = status
        self.body = ErrorBody(error=error, field=field, **extra)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
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
        self.ws_clients = Gauge("matchbox_ws_clients", "Connected WebSocket clients", registry=self.registry)
        self.engine_lag = Gauge(
            "matchbox_engine_lag_entries", "Input entries not yet committed by the engine", registry=self.registry
        )


class Services:
    """What a running API instance holds."""

    def __init__(self, settings: Settings, bus: AsyncBus) -> None:
        self.settings = settings
        self.bus = bus
        self.projection = Projection()
        self.tail = EventTail(bus, self.projection)
        self.hub = Hub(self.projection)
        self.tail.listeners.append(self.hub.publish)
        self.metrics = Metrics()


def create_app(settings: Settings | None = None, bus: AsyncBus | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = settings.redis_url
        if bus is None and not url:
            raise RuntimeError("set REDIS_URL to the Redis/Valkey of the exchange")
        services = Services(settings, bus or AsyncBus.connect(url or "", settings.shard, settings.durability))
        app.state.services = services
        tail = asyncio.create_task(services.tail.run(), name="event-tail")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(services.tail.caught_up.wait(), settings.startup_catch_up_seconds)
        await _ensure_default_market(services)
        try:
            yield
        finally:
            tail.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await tail
            await services.bus.close()

    app = FastAPI(
        title="Matchbox",
        version="0.1.0",
        description="An exchange core for prediction markets and betting exchanges.",
        lifespan=lifespan,
    )
    _install_errors(app)
    _install_middleware(app)
    _routes(app)
    return app


async def _ensure_default_market(services: Services) -> None:
    """The seed's body names no market: it trades on a ``ticks`` market named by the settings."""
    market_id = services.settings.default_market
    if not market_id or market_id in services.projection.markets:
        return
    command = CreateMarket(seq=0, ts=0, market_id=market_id, scheme=TickScheme.TICKS, max_tick=100_000)
    try:
        submission = await _submit_one(services, command)
        await services.tail.outcome(submission.entry_id, services.settings.outcome_timeout)
    except redis.RedisError as exc:  # the API still starts; the market comes when Redis does
        log.warning("could not create the default market: %s", exc)


def services_of(request: Request | WebSocket) -> Services:
    services: Services = request.app.state.services
    return services


# --------------------------------------------------------------------------- errors, limits, metrics


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body.model_dump(exclude_none=True), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request", "type": ""}
        if first.get("type") == "json_invalid":
            return JSONResponse({"error": "the body is not valid JSON", "field": "body"}, status_code=400)
        loc = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")]
        field = ".".join(loc) or "body"
        status = 400 if first.get("type") in ("greater_than", "greater_than_equal") else 422
        return JSONResponse({"error": f"{field}: {first.get('msg')}", "field": field}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(redis.RedisError)
    async def redis_down(request: Request, exc: redis.RedisError) -> JSONResponse:
        log.warning("redis error on %s: %s", request.url.path, exc)
        return JSONResponse({"error": "the exchange's Redis is unavailable; retry shortly"}, status_code=503)


def _install_middleware(app: FastAPI) -> None:
    app.add_middleware(LimitAndMeasure)


class LimitAndMeasure:
    """Refuses bodies over 64 KiB (by their Content-Length) and counts requests and latencies.

    A plain ASGI middleware: Starlette's ``@app.middleware("http")`` wraps every request in a
    task group and a streamed response, which was the API's largest single cost under load.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            status = 413
            body = {"error": f"the body is over {MAX_BODY // 1024} KiB", "field": "body"}
            await JSONResponse(body, status_code=413)(scope, receive, send)
        else:

            async def send_and_see(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            await self.app(scope, receive, send_and_see)
        services: Services | None = getattr(scope["app"].state, "services", None)
        if services is not None:
            path = getattr(scope.get("route"), "path", "other")
            method = scope["method"]
            services.metrics.requests.labels(method, path, str(status)).inc()
            services.metrics.latency.labels(method, path).observe(time.perf_counter() - started)


# --------------------------------------------------------------------------- helpers


def _market(services: Services, market_id: str) -> MarketView:
    market = services.projection.markets.get(market_id)
    if market is None:
        raise ApiError(404, f"unknown market {market_id!r}", "market_id")
    return market


def _admin(services: Services, token: str | None) -> None:
    expected = services.settings.admin_token
    if not expected:
        raise ApiError(403, "admin operations are disabled: set MATCHBOX_ADMIN_TOKEN")
    if token not in (f"Bearer {expected}", expected):
        raise ApiError(403, "admin token missing or wrong (Authorization: Bearer <MATCHBOX_ADMIN_TOKEN>)")


def _order_out(services: Services, order: OrderView, client_order_id: str | None = None) -> OrderOut:
    market = services.projection.markets.get(order.market_id)
    scheme = market.scheme if market else TickScheme.TICKS
    rejected = order.status == "rejected"
    return OrderOut(
        order_id=order.order_id,
        market_id=order.market_id,
        account=order.account,
        side=None if rejected else side_word(scheme, order.side),
        price=None if rejected or order.kind is OrderKind.MARKET else price_out(scheme, order.price),
        qty=None if rejected else order.qty,
        remaining=order.remaining,
        filled=order.filled,
        status=order.status,
        tif=None if rejected else order.tif.name,
        type=None if rejected else order.kind.name.lower(),
        post_only=order.post_only,
        fills=[
            FillOut(trade_id=f.trade_id, price=price_out(scheme, f.price), qty=f.qty, role=f.role, timestamp=f.ts)
            for f in order.fills
        ],
        reject_reason=order.reject_reason.name if order.reject_reason is not None else None,
        cancel_reason=order.cancel_reason.name if order.cancel_reason is not None else None,
        client_order_id=client_order_id,
        entry_id=order.entry_id,
    )


def _pending(submission: Submission, body: OrderIn, market_id: str) -> OrderOut:
    qty = body.qty if body.qty is not None else (body.stake or 0)
    return OrderOut(
        order_id=submission.order_id,
        market_id=market_id,
        account=body.account or "",
        side=body.side,
        price=body.price if body.odds is None else float(body.odds),
        qty=qty,
        remaining=qty,
        filled=0,
        status="pending",
        client_order_id=body.client_order_id,
        entry_id=submission.entry_id,
    )


def _place_command(services: Services, body: OrderIn) -> tuple[PlaceOrder, str]:
    """The engine command for an order request, or an ApiError naming the field at fault."""
    market_id = body.market_id or services.settings.default_market
    market = _market(services, market_id)
    try:
        side = side_of(market.scheme, body.side)
        if body.qty is not None and body.stake is not None:
            raise PriceError("stake", "give qty or stake, not both")
        qty = body.qty if body.qty is not None else body.stake
        field = "stake" if body.qty is None and market.scheme is TickScheme.ODDS else "qty"
        if qty is None:
            raise PriceError(field, f"{field} is required")
        if qty <= 0:
            raise PriceError(field, f"{field} must be > 0")
        if qty > market.max_qty:
            raise PriceError(field, f"{field} {qty} is over this market's maximum of {market.max_qty}")
        kind = OrderKind.MARKET if body.type == "market" else OrderKind.LIMIT
        tif = TimeInForce[body.tif]
        if kind is OrderKind.MARKET:
            if tif not in (TimeInForce.IOC, TimeInForce.FOK):
                tif = TimeInForce.IOC
            if body.post_only:
                raise PriceError("post_only", "a market order cannot be post-only")
            price = 0
        else:
            price = tick_of(market.scheme, market.max_tick, body.price, body.odds)
        if body.post_only and tif not in (TimeInForce.GTC, TimeInForce.GTD):
            raise PriceError("post_only", "post-only needs GTC or GTD")
        expires_at = 0
        if tif is TimeInForce.GTD:
            if body.expires_at is None or body.expires_at <= time.time() * 1000:
                raise PriceError("expires_at", "GTD needs expires_at, a future unix time in milliseconds")
            expires_at = body.expires_at * 1_000_000
        elif body.expires_at is not None:
            raise PriceError("expires_at", "expires_at is for GTD orders only")
    except PriceError as exc:
        raise ApiError(400, exc.message, exc.field) from None
    if market.state is not MarketState.OPEN:
        raise ApiError(409, f"market {market_id!r} is {market.state.name.lower()}: it takes no orders", "market_id")
    command = PlaceOrder(
        seq=0,
        ts=0,
        market_id=market_id,
        order_id=0,
        account=body.account or f"anon-{secrets.token_hex(6)}",
        side=side,
        price=price,
        qty=qty,
        tif=tif,
        kind=kind,
        post_only=body.post_only,
        expires_at=expires_at,
    )
    return command, market_id


async def _order_result(
    services: Services, submission: Submission, body: OrderIn, market_id: str
) -> tuple[int, OrderOut | None, ErrorBody | None]:
    """(status, order, error) once the engine has spoken, or 202 pending after the timeout."""
    if submission.status == "conflict":
        return (
            409,
            None,
            ErrorBody(
                error="this client_order_id was used with different content",
                field="client_order_id",
                order_id=submission.order_id,
            ),
        )
    known = services.projection.orders.get(submission.order_id)
    if submission.status == "dup" and known is not None and known.status not in ("accepted", "rejected"):
        return 200, _order_out(services, known, body.client_order_id), None  # a retry: the first outcome
    events = await services.tail.outcome(submission.entry_id, services.settings.outcome_timeout)
    if events is None:
        return 202, _pending(submission, body, market_id), None
    order = services.projection.orders.get(submission.order_id)
    rejected = next((e for e in events if isinstance(e, Rejected)), None)
    if rejected is not None:
        services.metrics.orders.labels("rejected").inc()
        return (
            422,
            None,
            ErrorBody(
                error=f"rejected by the engine: {rejected.reason.name.lower().replace('_', ' ')}",
                reason=rejected.reason.name,
                code=int(rejected.reason),
                order_id=submission.order_id,
                field=_REJECT_FIELDS.get(rejected.reason),
            ),
        )
    services.metrics.orders.labels("accepted").inc()
    if order is None:  # folded and already dropped from the projection: cannot happen within the timeout
        return 202, _pending(submission, body, market_id), None
    status = 200 if submission.status == "dup" else 201
    return status, _order_out(services, order, body.client_order_id), None


_REJECT_FIELDS = {
    RejectReason.UNKNOWN_MARKET: "market_id",
    RejectReason.MARKET_NOT_OPEN: "market_id",
    RejectReason.INVALID_PRICE: "price",
    RejectReason.INVALID_QUANTITY: "qty",
    RejectReason.QUANTITY_OVER_MAX: "qty",
    RejectReason.INVALID_EXPIRY: "expires_at",
    RejectReason.INVALID_ORDER_TYPE: "type",
    RejectReason.POST_ONLY_WOULD_TAKE: "post_only",
    RejectReason.FOK_CANNOT_FILL: "tif",
    RejectReason.SELF_TRADE: "account",
}


def _json(status: int, model: Any) -> JSONResponse:
    return JSONResponse(model.model_dump(mode="json", exclude_none=True), status_code=status)


async def _submit_one(services: Services, command: Command, client_order_id: str | None = None) -> Submission:
    return await services.bus.submit(JournalRequest(command, client_order_id))


async def _engine_outcome(services: Services, command: Command) -> list[Event]:
    submission = await _submit_one(services, command)
    events = await _outcome_or_nothing(services, submission.entry_id)
    if events is None:
        raise ApiError(503, "the engine has not answered yet (failing over?); the outcome will be on the feed")
    rejected = next((e for e in events if isinstance(e, Rejected)), None)
    if rejected is not None:
        status = 404 if rejected.reason in (RejectReason.UNKNOWN_ORDER, RejectReason.UNKNOWN_MARKET) else 409
        raise ApiError(
            status,
            f"rejected by the engine: {rejected.reason.name.lower().replace('_', ' ')}",
            reason=rejected.reason.name,
            code=int(rejected.reason),
        )
    return events


async def _outcome_or_nothing(services: Services, entry_id: str) -> list[Event] | None:
    """The entry's events; ``[]`` if the engine committed past it with none (a cancel-all of
    nothing); None if the engine has not got that far within the timeout."""
    deadline = time.monotonic() + services.settings.outcome_timeout
    while True:
        events = await services.tail.outcome(entry_id, min(0.05, max(0.0, deadline - time.monotonic())))
        if events is not None:
            return events
        offset = await services.bus.offset()
        if offset is not None and _stream_key(offset.id) >= _stream_key(entry_id):
            return await services.tail.outcome(entry_id, 0.2) or []  # its events, if any, are committed
        if time.monotonic() >= deadline:
            return None


def _stream_key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms or 0), int(seq or 0)


def _market_out(services: Services, market: MarketView) -> MarketOut:
    book = services.projection.books[market.market_id]
    bid, ask = book.best(_BUY), book.best(_SELL)
    return MarketOut(
        market_id=market.market_id,
        scheme=market.scheme.name.lower(),
        state=market.state.name.lower(),
        min_tick=market.min_tick,
        max_tick=market.max_tick,
        max_qty=market.max_qty,
        self_trade=market.stp.name.lower(),
        outcome=market.outcome,
        best_bid=None if bid is None else price_out(market.scheme, bid),
        best_ask=None if ask is None else price_out(market.scheme, ask),
    )


def _book_out(services: Services, market: MarketView, depth: int | None, with_orders: bool = True) -> BookOut:
    book = services.projection.books[market.market_id]

    def levels(side: Any) -> list[LevelOut]:
        return [
            LevelOut(price=price_out(market.scheme, p), qty=q, orders=o if with_orders else None)
            for p, q, o in book.levels(side, depth)
        ]

    return BookOut(
        market_id=market.market_id, bids=levels(_BUY), asks=levels(_SELL), sequence=services.projection.last_n
    )


# --------------------------------------------------------------------------- routes


def _routes(app: FastAPI) -> None:
    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/ready", responses=ERRORS)
    async def ready(request: Request) -> JSONResponse:
        """Readiness: Redis answers and a leader holds the lock."""
        services = services_of(request)
        try:
            await services.bus.client.ping()
            holder = await services.bus.leader_holder()
        except redis.RedisError:
            return JSONResponse({"status": "unavailable", "error": "Redis does not answer"}, status_code=503)
        if holder is None:
            return JSONResponse({"status": "unavailable", "error": "no engine leader holds the lock"}, status_code=503)
        return JSONResponse({"status": "ready", "leader": holder.rsplit(":", 1)[0]})

    @app.get("/metrics", response_class=Response)
    async def metrics(request: Request) -> Response:
        """Prometheus metrics."""
        services = services_of(request)
        with contextlib.suppress(redis.RedisError):
            offset = await services.bus.offset()
            length = await services.bus.client.xlen(services.bus.keys.input)
            services.metrics.engine_lag.set(max(0, int(length) - (offset.inputs if offset else 0)))
        services.metrics.ws_clients.set(len(services.hub.clients))
        return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/engine", response_model=EngineOut)
    async def engine(request: Request) -> EngineOut:
        """The leader, its fencing epoch, the committed offset and state hash (two replays agree iff hashes do)."""
        services = services_of(request)
        offset = await services.bus.offset()
        holder = await services.bus.leader_holder()
        return EngineOut(
            leader=holder.rsplit(":", 1)[0] if holder else None,
            epoch=offset.epoch if offset else None,
            committed_offset=offset.id if offset else None,
            inputs=offset.inputs if offset else 0,
            events=offset.events if offset else 0,
            state_hash=offset.hash if offset else None,
            state_hash_at=offset.hash_at if offset else None,
            tail_position=services.tail.position,
        )

    # ------------------------------------------------------------------ markets

    @app.post("/markets", status_code=201, response_model=MarketOut, responses=ADMIN_ERRORS)
    async def create_market(request: Request, body: MarketIn, authorization: AdminToken = None) -> MarketOut:
        """Create a market (admin)."""
        services = services_of(request)
        _admin(services, authorization)
        scheme = SCHEMES[body.scheme]
        if scheme is TickScheme.TICKS and body.max_tick is None:
            raise ApiError(400, "a ticks market needs max_tick", "max_tick")
        if scheme is not TickScheme.TICKS and body.max_tick is not None:
            raise ApiError(400, "max_tick is for ticks markets only", "max_tick")
        if body.market_id in services.projection.markets:
            raise ApiError(409, f"market {body.market_id!r} exists", "market_id")
        command = CreateMarket(
            seq=0,
            ts=0,
            market_id=body.market_id,
            scheme=scheme,
            max_tick=body.max_tick or 0,
            max_qty=body.max_qty,
            stp=STP[body.self_trade],
        )
        events = await _engine_outcome(services, command)
        assert any(isinstance(e, MarketCreated) for e in events)
        return _market_out(services, services.projection.markets[body.market_id])

    @app.get("/markets", response_model=list[MarketOut])
    async def list_markets(request: Request) -> list[MarketOut]:
        services = services_of(request)
        return [_market_out(services, m) for m in services.projection.markets.values()]

    @app.get("/markets/{market_id}", response_model=MarketOut, responses=ERRORS)
    async def get_market(request: Request, market_id: str) -> MarketOut:
        services = services_of(request)
        return _market_out(services, _market(services, market_id))

    async def transition(request: Request, market_id: str, token: str | None, command: Command) -> MarketOut:
        services = services_of(request)
        _admin(services, token)
        _market(services, market_id)
        await _engine_outcome(services, command)
        return _market_out(services, services.projection.markets[market_id])

    @app.post("/markets/{market_id}/suspend", response_model=MarketOut, responses=ADMIN_ERRORS)
    async def suspend(request: Request, market_id: str, authorization: AdminToken = None) -> MarketOut:
        """Suspend trading (admin): new orders are refused, the book stays, cancels still work."""
        return await transition(request, market_id, authorization, SuspendMarket(seq=0, ts=0, market_id=market_id))

    @app.post("/markets/{market_id}/resume", response_model=MarketOut, responses=ADMIN_ERRORS)
    async def resume(request: Request, market_id: str, authorization: AdminToken = None) -> MarketOut:
        """Resume trading (admin)."""
        return await transition(request, market_id, authorization, ResumeMarket(seq=0, ts=0, market_id=market_id))

    @app.post("/markets/{market_id}/close", response_model=MarketOut, responses=ADMIN_ERRORS)
    async def close(request: Request, market_id: str, authorization: AdminToken = None) -> MarketOut:
        """Close the market (admin): every resting order is cancelled."""
        return await transition(request, market_id, authorization, CloseMarket(seq=0, ts=0, market_id=market_id))

    @app.post("/markets/{market_id}/settle", response_model=MarketOut, responses=ADMIN_ERRORS)
    async def settle(
        request: Request, market_id: str, body: SettleIn | None = None, authorization: AdminToken = None
    ) -> MarketOut:
        """Settle the market with its outcome (admin)."""
        outcome = body.outcome if body else ""
        command = SettleMarket(seq=0, ts=0, market_id=market_id, outcome=outcome)
        return await transition(request, market_id, authorization, command)

    # ------------------------------------------------------------------ orders

    @app.post("/orders", status_code=201, response_model=OrderOut, responses={**ERRORS, 202: {"model": OrderOut}})
    async def place_order(request: Request, body: OrderIn) -> JSONResponse:
        """Place an order; answers with its state and fills once the engine has matched it (202 if it is slow)."""
        services = services_of(request)
        command, market_id = _place_command(services, body)
        submission = await _submit_one(services, command, body.client_order_id)
        status, order, error = await _order_result(services, submission, body, market_id)
        return _json(status, error if error is not None else order)

    @app.post("/orders/batch", response_model=list[BatchItemOut], responses=ERRORS)
    async def place_batch(request: Request, body: BatchIn) -> list[BatchItemOut]:
        """Up to 100 orders in one request and one round trip to Redis; each has its own outcome."""
        services = services_of(request)
        prepared: list[tuple[OrderIn, PlaceOrder, str] | ApiError] = []
        for item in body.orders:
            try:
                command, market_id = _place_command(services, item)
                prepared.append((item, command, market_id))
            except ApiError as exc:
                prepared.append(exc)
        valid = [p for p in prepared if not isinstance(p, ApiError)]
        submissions = iter(await services.bus.submit_many([JournalRequest(c, i.client_order_id) for i, c, _ in valid]))
        pending: list[asyncio.Task[tuple[int, OrderOut | None, ErrorBody | None]] | ApiError] = []
        for p in prepared:
            if isinstance(p, ApiError):
                pending.append(p)
            else:
                item, _command, market_id = p
                pending.append(asyncio.create_task(_order_result(services, next(submissions), item, market_id)))
        results = []
        for outcome in pending:
            if isinstance(outcome, ApiError):
                results.append(BatchItemOut(status=outcome.status, error=outcome.body))
            else:
                status, order, error = await outcome
                results.append(BatchItemOut(status=status, order=order, error=error))
        return results

    @app.get("/orders/{order_id}", response_model=OrderOut, response_model_exclude_none=True, responses=ERRORS)
    async def get_order(request: Request, order_id: int) -> OrderOut:
        """An order's state, remaining quantity and fills."""
        services = services_of(request)
        order = services.projection.orders.get(order_id)
        if order is None:
            raise ApiError(404, f"unknown order {order_id}", "order_id")
        return _order_out(services, order)

    @app.delete("/orders/{order_id}", response_model=OrderOut, response_model_exclude_none=True, responses=ERRORS)
    async def cancel_order(
        request: Request, order_id: int, account: str | None = Query(default=None, max_length=64)
    ) -> OrderOut:
        """Cancel a resting order."""
        services = services_of(request)
        order = services.projection.orders.get(order_id)
        if order is None or (account and order.account != account):
            raise ApiError(404, f"unknown order {order_id}", "order_id")
        if order.status not in ("open", "partially_filled"):
            raise ApiError(409, f"order {order_id} is {order.status}: nothing to cancel", "order_id")
        await _engine_outcome(services, CancelOrder(seq=0, ts=0, order_id=order_id, account=account or ""))
        return _order_out(services, services.projection.orders[order_id])

    @app.patch("/orders/{order_id}", response_model=OrderOut, response_model_exclude_none=True, responses=ERRORS)
    async def reduce_order(request: Request, order_id: int, body: ReduceIn) -> OrderOut:
        """Reduce a resting order's quantity, keeping its place in the queue (raising it is a new order)."""
        services = services_of(request)
        order = services.projection.orders.get(order_id)
        if order is None or (body.account and order.account != body.account):
            raise ApiError(404, f"unknown order {order_id}", "order_id")
        if (body.reduce_by is None) == (body.qty is None):
            raise ApiError(400, "give reduce_by or qty (the new remaining quantity)", "reduce_by")
        reduce_by = body.reduce_by if body.reduce_by is not None else order.remaining - (body.qty or 0)
        field = "reduce_by" if body.reduce_by is not None else "qty"
        if reduce_by <= 0:
            raise ApiError(400, "an order can only be reduced; to raise it, cancel and place a new one", field)
        if order.status not in ("open", "partially_filled"):
            raise ApiError(409, f"order {order_id} is {order.status}: nothing to reduce", "order_id")
        command = ReduceOrder(seq=0, ts=0, order_id=order_id, reduce_by=reduce_by, account=body.account or "")
        await _engine_outcome(services, command)
        return _order_out(services, services.projection.orders[order_id])

    @app.delete("/orders", response_model=CancelAllOut, responses=ERRORS)
    async def cancel_all(
        request: Request,
        market_id: Annotated[str, Query(max_length=64)],
        account: Annotated[str, Query(min_length=1, max_length=64)],
    ) -> CancelAllOut:
        """Cancel every resting order of an account in a market."""
        services = services_of(request)
        _market(services, market_id)
        events = await _engine_outcome(services, CancelAll(seq=0, ts=0, market_id=market_id, account=account))
        cancelled = [e.order_id for e in events if isinstance(e, OrderCancelled)]
        return CancelAllOut(market_id=market_id, account=account, cancelled=cancelled)

    # ------------------------------------------------------------------ market data

    @app.get("/orderbook", response_model=BookOut, response_model_exclude_none=True, responses=ERRORS)
    async def orderbook(request: Request, market_id: str | None = Query(default=None, max_length=64)) -> BookOut:
        """The seed's book: bids highest first, asks lowest first, and the sequence."""
        services = services_of(request)
        market = _market(services, market_id or services.settings.default_market)
        return _book_out(services, market, None, with_orders=False)

    @app.get("/markets/{market_id}/book", response_model=BookOut, response_model_exclude_none=True, responses=ERRORS)
    async def book(request: Request, market_id: str, depth: int = Query(default=10, ge=1, le=1000)) -> BookOut:
        services = services_of(request)
        return _book_out(services, _market(services, market_id), depth)

    @app.get("/markets/{market_id}/trades", response_model=list[TradeOut], responses=ERRORS)
    async def trades(request: Request, market_id: str, limit: int = Query(default=50, ge=1, le=1000)) -> list[TradeOut]:
        """Recent trades, newest first."""
        services = services_of(request)
        market = _market(services, market_id)
        recent = list(services.projection.trades[market_id])[-limit:]
        return [
            TradeOut(
                trade_id=t.trade_id,
                price=price_out(market.scheme, t.price),
                qty=t.qty,
                taker_side=side_word(market.scheme, t.taker_side),
                maker_order_id=t.maker_order_id,
                taker_order_id=t.taker_order_id,
                timestamp=t.ts,
            )
            for t in reversed(recent)
        ]

    @app.get("/markets/{market_id}/ticker", response_model=TickerOut, responses=ERRORS)
    async def ticker(request: Request, market_id: str) -> TickerOut:
        services = services_of(request)
        market = _market(services, market_id)
        book = services.projection.books[market_id]
        bid, ask = book.best(_BUY), book.best(_SELL)
        last = services.projection.trades[market_id][-1] if services.projection.trades[market_id] else None
        bid_out = None if bid is None else price_out(market.scheme, bid)
        ask_out = None if ask is None else price_out(market.scheme, ask)
        both = bid_out is not None and ask_out is not None
        return TickerOut(
            market_id=market_id,
            best_bid=bid_out,
            best_ask=ask_out,
            mid=(float(bid_out) + float(ask_out)) / 2 if both else None,  # type: ignore[arg-type]
            spread=round(ask_out - bid_out, 2) if both else None,  # type: ignore[operator]
            last_price=None if last is None else price_out(market.scheme, last.price),
            last_qty=None if last is None else last.qty,
            sequence=services.projection.last_n,
        )

    # ------------------------------------------------------------------ WebSocket

    @app.websocket("/ws")
    async def ws(websocket: WebSocket, last_id: str | None = None, subscribe: str | None = None) -> None:
        """The feed. With no subscription: the seed's plain fills. Messages:
        {"op":"subscribe"|"unsubscribe","channel":"trades"|"book","market_id":..} or
        {"op":"subscribe","channel":"orders","account":..}; {"op":"ping"}.
        ``?subscribe=trades:m,orders:ann`` subscribes at once; ``?last_id=<event stream id>``
        first sends what was missed after that id (no gap, no duplicate), then live events.
        """
        services = services_of(websocket)
        hub = services.hub
        client = hub.register()  # before the handshake completes: nothing published meanwhile is lost
        for channel in (subscribe or "").split(","):
            if channel.partition(":")[0] in ("trades", "book", "orders") and channel.partition(":")[2]:
                hub.subscribe(client, channel)
        client.replaying = last_id is not None
        try:
            await websocket.accept()
            sender = asyncio.create_task(_send_loop(websocket, client))
            try:
                if last_id is not None:
                    await _resume(services, client, last_id)
                await _receive_loop(websocket, hub, client)
            finally:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await sender
        except WebSocketDisconnect:
            pass
        finally:
            hub.unregister(client)


async def _send_loop(websocket: WebSocket, client: Client) -> None:
    while True:
        message = await client.queue.get()
        if message is None:  # overflowed
            await websocket.close(code=1008, reason="slow consumer: the feed outran this client")
            return
        await websocket.send_text(msgspec.json.encode(message).decode())


async def _receive_loop(websocket: WebSocket, hub: Hub, client: Client) -> None:
    while True:
        text = await websocket.receive_text()
        try:
            message = msgspec.json.decode(text)
            op, kind = message.get("op"), message.get("channel")
        except (msgspec.DecodeError, AttributeError):
            client.offer({"op": "error", "error": "messages are JSON objects with an op"})
            continue
        if op == "ping":
            client.offer({"op": "pong"})
            continue
        if op not in ("subscribe", "unsubscribe") or kind not in ("trades", "book", "orders"):
            client.offer({"op": "error", "error": "op is subscribe|unsubscribe|ping; channel is trades|book|orders"})
            continue
        key = "account" if kind == "orders" else "market_id"
        target = message.get(key)
        if not isinstance(target, str) or not target:
            client.offer({"op": "error", "error": f"channel {kind} needs {key}"})
            continue
        channel = f"{kind}:{target}"
        if op == "subscribe":
            hub.subscribe(client, channel)
        else:
            hub.unsubscribe(client, channel)
        client.offer({"op": op + "d", "channel": channel})


async def _resume(services: Services, client: Client, last_id: str) -> None:
    """Send what the client missed after ``last_id``, then release the live messages held meanwhile."""
    keys = services.bus.keys
    cursor = last_id
    try:
        while True:
            entries = await services.bus.range(keys.events, f"({cursor}", "+", count=1000)
            for raw_id, fields in entries:
                stream_id = raw_id.decode()
                try:
                    decoded = decode_event(fields.get(b"event", b""))
                except CodecError:
                    continue
                for channel, message in channel_messages(decoded.event, stream_id, decoded.n):
                    if channel in client.channels:
                        client.offer(message)
                cursor = stream_id
            if len(entries) < 1000:
                break
    except redis.ResponseError:
        client.offer({"op": "error", "error": f"last_id {last_id!r} is not a stream id"})
    for stream_id, message in client.held:
        if _after(stream_id, cursor):
            client.offer(message)
    client.held.clear()
    client.replaying = False


def _after(a: str, b: str) -> bool:
    ams, _, aseq = a.partition("-")
    bms, _, bseq = b.partition("-")
    return (int(ams), int(aseq or 0)) > (int(bms), int(bseq or 0))
