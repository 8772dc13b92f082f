"""The HTTP and WebSocket API: ``create_app(settings)`` (FastAPI), served by ``matchbox api``.

Writes go to the input journal (``submit.lua``, one round trip) and wait, bounded, for their
outcome on the output stream, which this instance's tail reads like every other instance's.
Reads come from the tail's projection. Nothing here matches or decides: the engine does."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files
from types import SimpleNamespace
from typing import Any

import redis
from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from matchbox.api import accounts, history, markets, ops, orders, ws
from matchbox.api.errors import ERRORS, ApiError, install_errors
from matchbox.api.middleware import MEASURED, LimitAndMeasure
from matchbox.api.models import BookOut
from matchbox.api.routing import EdgeRoute
from matchbox.api.services import Services, submit_one
from matchbox.bus.aio import AsyncBus
from matchbox.bus.cluster import connect_async_bus
from matchbox.bus.durability import durability_problem
from matchbox.bus.outage import Backoff
from matchbox.engine.types import (
    CreateMarket,
    TickScheme,
)
from matchbox.settings import Settings

log = logging.getLogger(__name__)
# The dashboard's page and files, found as package data: matchbox.web is a client of the API and
# imports nothing of ours, so it is named here rather than imported.
WEB_STATIC = files("matchbox.web") / "static"


def create_app(settings: Settings | None = None, bus: AsyncBus | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = settings.redis_url
        if bus is None and not url:
            raise RuntimeError("set REDIS_URL to the Redis/Valkey of the exchange")
        shard_bus = connect_async_bus(url or "", settings.shard, settings.durability, cluster=settings.cluster)
        services = Services(settings, bus or shard_bus)
        app.state.services = services
        if settings.open_access:
            log.warning(
                "authentication is OFF (--open / MATCHBOX_OPEN): anyone can trade as any account; local demos only"
            )
        with contextlib.suppress(redis.RedisError):  # Redis may come later: /ready says it then too
            problem = durability_problem(settings.durability, await services.bus.persistence())
            if problem:
                log.error(problem)
        tails = [
            asyncio.create_task(link.tail.run(), name=f"event-tail-{number}")
            for number, link in services.shards.items()
        ]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(services.caught_up(), settings.startup_catch_up_seconds)
        market = asyncio.create_task(_ensure_default_market(services), name="default-market")
        if services.all_caught_up():  # else it comes once Redis does, while this instance serves
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(market), settings.outcome_timeout)
        try:
            yield
        finally:
            for task in (market, *tails):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await services.close_buses()
            services.close()

    app = Exchange(
        title="Matchbox",
        version="0.1.0",
        description="An exchange core for prediction markets and betting exchanges.",
        lifespan=lifespan,
        openapi_url=f"{V1}/openapi.json",
        docs_url=f"{V1}/docs",
        redoc_url=None,
    )
    app.state.open_access = settings.open_access
    install_errors(app)
    app.add_middleware(LimitAndMeasure)
    for router in (orders.router, accounts.router, markets.router, history.router, ops.router, ws.router):
        app.include_router(router, prefix=V1)
    app.include_router(aliases())
    app.mount("/static", StaticFiles(directory=str(WEB_STATIC)), name="static")

    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(str(WEB_STATIC / "index.html"))

    return app


V1 = "/v1"  # the contract's version: every path of the API is under it (docs/api.md)
HOT_PATHS = (f"{V1}/orders", "/orders")  # POST: placing an order


class Exchange(FastAPI):
    """The API's FastAPI application, with its hot path taken first: ``POST /orders`` (no query
    string) goes straight to :class:`~matchbox.api.orders.PlaceOrderFast`, inside only the body
    limit and the request metrics (:class:`~matchbox.api.middleware.LimitAndMeasure`), before
    the framework's own layers; everything else, and a body that fails validation, goes through
    FastAPI as usual."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.routes_by_path = {path: SimpleNamespace(path=path) for path in HOT_PATHS}  # what metrics label them
        self.hot = LimitAndMeasure(orders.PlaceOrderFast(self.framework))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.routes_by_path.get(scope["path"]) if scope["type"] == "http" else None
        if route is None or scope["method"] != "POST" or scope["query_string"]:  # a query: FastAPI refuses it
            await super().__call__(scope, receive, send)
            return
        scope["app"], scope["route"] = self, route
        await self.hot(scope, receive, send)

    async def framework(self, scope: Scope, receive: Receive, send: Send) -> None:
        """FastAPI's whole stack, for a hot request it must answer (its body failed validation);
        the metrics already count it."""
        scope[MEASURED] = True
        await super().__call__(scope, receive, send)


def aliases() -> APIRouter:
    """The seed's paths, kept working beside v1: ``POST /orders``, ``GET /orderbook``,
    ``GET /health`` and the plain fills of ``WS /ws``; and the operator's probes ``/ready`` and
    ``/metrics``, where health checks and scrapers are configured by path."""
    router = APIRouter(tags=["seed and probe aliases"], route_class=EdgeRoute)
    v1 = {route.name: route for route in (*orders.router.routes, *ops.router.routes) if isinstance(route, APIRoute)}
    for name in ("place_order", "health", "ready", "metrics"):
        route = v1[name]
        router.add_api_route(
            route.path,
            route.endpoint,
            methods=sorted(route.methods or ()),
            status_code=route.status_code,
            response_model=route.response_model,
            response_class=route.response_class,
            responses=route.responses,
            summary=f"{route.summary or route.name.replace('_', ' ').capitalize()} (alias of {V1}{route.path})",
            description=route.description,
        )
    router.add_api_route(
        "/orderbook",
        markets.orderbook,
        methods=["GET"],
        response_model=BookOut,
        response_model_exclude_none=True,
        responses=ERRORS,
    )
    router.add_api_websocket_route("/ws", ws.ws)
    return router


async def _ensure_default_market(services: Services) -> None:
    """The original README's order body names no market: it trades on a ``ticks`` market named by the settings.

    Submitted to the first shard once the tails have caught up and found no such market. A submission Redis does not
    take (down, or refusing until a leader has checked it) is tried again with a backoff, so an
    instance started before Redis still makes the market when Redis comes; once in the journal it
    is the engine's, whenever it comes."""
    market_id = services.settings.default_market
    command = CreateMarket(seq=0, ts=0, market_id=market_id, scheme=TickScheme.TICKS, max_tick=100_000)
    backoff = Backoff()
    while market_id:
        await services.caught_up()
        if market_id in services.projection.markets:
            return
        try:
            shard = await services.place_market(market_id, services.first.number)
            submission = await submit_one(services, command, shard=shard)
        except (redis.RedisError, ApiError) as exc:
            delay = backoff.next()
            log.warning("could not create the default market (%s); retrying in %.1f s", exc, delay)
            await asyncio.sleep(delay)
            continue
        await shard.tail.outcome(submission.entry_id, services.settings.outcome_timeout)
        return
