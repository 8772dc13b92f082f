"""Operations: liveness, readiness, Prometheus metrics, and the engine's identity and state hash."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from matchbox.api import asyncapi
from matchbox.api.codes import Code
from matchbox.api.errors import ERRORS, error_body
from matchbox.api.models import (
    EngineOut,
)
from matchbox.api.routing import EdgeRoute
from matchbox.api.services import Services, ShardLink, services_of
from matchbox.bus.durability import durability_problem
from matchbox.consumers.runner import GroupLag, group_lag

router = APIRouter(tags=["operations"], route_class=EdgeRoute)


@router.get("/health")
async def health(request: Request) -> dict[str, str]:
    """Liveness: the process answers. ``auth`` is ``keys`` (API keys), or ``open`` (none: --open)."""
    return {"status": "ok", "auth": "open" if services_of(request).settings.open_access else "keys"}


@router.get("/ready", responses=ERRORS)
async def ready(request: Request) -> JSONResponse:
    """Readiness: every check of ``READY_CHECKS`` passes (Redis answers, a leader holds the lock,
    the event tail runs and keeps up); else 503 with the first failure's reason."""
    services = services_of(request)
    try:
        for link in services.shards.values():
            for check in READY_CHECKS:
                reason = await check(services, link)
                if reason is not None:
                    where = f"shard {link.number}: " if len(services.shards) > 1 else ""
                    return _not_ready(where + reason)
        holder = await services.first.bus.leader_holder()
    except redis.RedisError:
        return _not_ready("Redis does not answer")
    return JSONResponse({"status": "ready", "leader": holder.rsplit(":", 1)[0] if holder else None})


def _not_ready(reason: str) -> JSONResponse:
    body = error_body(Code.NOT_READY, reason).model_dump(exclude_none=True)
    return JSONResponse({"status": "unavailable", **body}, status_code=503)


async def _alarm(services: Services, shard: ShardLink) -> str | None:
    alarm = await shard.bus.alarm()
    return None if alarm is None else f"the exchange is halted by the rollback alarm: {alarm}"


async def _durability(services: Services, shard: ShardLink) -> str | None:
    return durability_problem(shard.bus.durability, await shard.bus.persistence())


async def _certified(services: Services, shard: ShardLink) -> str | None:
    if await shard.bus.certified():
        return None
    return "Redis restarted or took over and no engine leader has checked it yet: orders wait for one"


async def _leader(services: Services, shard: ShardLink) -> str | None:
    await shard.bus.client.ping()
    return None if await shard.bus.leader_holder() else "no engine leader holds the lock"


async def _tail(services: Services, shard: ShardLink) -> str | None:
    offset = await shard.bus.offset()
    return shard.tail.trouble(offset.last_event if offset else "", time.monotonic())


# Each gives the reason the instance is not ready on a shard, or None; a RedisError means Redis does not answer.
READY_CHECKS: list[Callable[[Services, ShardLink], Awaitable[str | None]]] = [
    _alarm,
    _durability,
    _leader,
    _certified,
    _tail,
]


@router.get("/asyncapi.json", include_in_schema=False)
async def asyncapi_document() -> dict[str, Any]:
    """The WebSocket feed's contract (AsyncAPI 3.0), as /v1/openapi.json is the REST API's."""
    return asyncapi.document()


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus metrics."""
    services = services_of(request)
    with contextlib.suppress(redis.RedisError):
        lag = 0
        for link in services.shards.values():
            offset = await link.bus.offset()
            length = await link.bus.client.xlen(link.bus.keys.input)
            lag += max(0, int(length) - (offset.inputs if offset else 0))
        services.metrics.engine_lag.set(lag)
    services.metrics.ws_clients.set(len(services.hub.clients))
    with contextlib.suppress(redis.RedisError):
        for group in await asyncio.to_thread(_group_lag, services):
            services.metrics.group_lag.labels(group.name).set(group.lag)
            services.metrics.group_pending.labels(group.name).set(group.pending)
    return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _group_lag(services: Services) -> list[GroupLag]:
    bus = services.sync_bus()
    return [] if bus is None else group_lag(bus, bus.keys.events)


@router.get("/engine", response_model=EngineOut, responses=ERRORS)
async def engine(
    request: Request, shard: int | None = Query(default=None, ge=0, description="which shard's (default: the first)")
) -> EngineOut:
    """A shard's leader, its fencing epoch, the committed offset and state hash (two replays agree iff hashes do)."""
    services = services_of(request)
    link = services.first if shard is None else services.shard(shard)
    offset = await link.bus.offset()
    holder = await link.bus.leader_holder()
    return EngineOut(
        shard=link.number,
        leader=holder.rsplit(":", 1)[0] if holder else None,
        epoch=offset.epoch if offset else None,
        committed_offset=offset.id if offset else None,
        inputs=offset.inputs if offset else 0,
        events=offset.events if offset else 0,
        state_hash=offset.hash if offset else None,
        state_hash_at=offset.hash_at if offset else None,
        tail_position=link.tail.position,
    )
