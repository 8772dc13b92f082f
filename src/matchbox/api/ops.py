"""Operations: liveness, readiness, Prometheus metrics, and the engine's identity and state hash."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import redis
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from matchbox.api.errors import ERRORS
from matchbox.api.models import (
    EngineOut,
)
from matchbox.api.services import Services, services_of
from matchbox.bus.durability import durability_problem
from matchbox.consumers.runner import GroupLag, group_lag

router = APIRouter(tags=["operations"])


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
        for check in READY_CHECKS:
            reason = await check(services)
            if reason is not None:
                return JSONResponse({"status": "unavailable", "error": reason}, status_code=503)
        holder = await services.bus.leader_holder()
    except redis.RedisError:
        return JSONResponse({"status": "unavailable", "error": "Redis does not answer"}, status_code=503)
    return JSONResponse({"status": "ready", "leader": holder.rsplit(":", 1)[0] if holder else None})


async def _alarm(services: Services) -> str | None:
    alarm = await services.bus.alarm()
    return None if alarm is None else f"the exchange is halted by the rollback alarm: {alarm}"


async def _durability(services: Services) -> str | None:
    return durability_problem(services.bus.durability, await services.bus.persistence())


async def _certified(services: Services) -> str | None:
    if await services.bus.certified():
        return None
    return "Redis restarted or took over and no engine leader has checked it yet: orders wait for one"


async def _leader(services: Services) -> str | None:
    await services.bus.client.ping()
    return None if await services.bus.leader_holder() else "no engine leader holds the lock"


async def _tail(services: Services) -> str | None:
    offset = await services.bus.offset()
    return services.tail.trouble(offset.last_event if offset else "", time.monotonic())


# Each gives the reason the instance is not ready, or None; a RedisError means Redis does not answer.
READY_CHECKS: list[Callable[[Services], Awaitable[str | None]]] = [_alarm, _durability, _leader, _certified, _tail]


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus metrics."""
    services = services_of(request)
    with contextlib.suppress(redis.RedisError):
        offset = await services.bus.offset()
        length = await services.bus.client.xlen(services.bus.keys.input)
        services.metrics.engine_lag.set(max(0, int(length) - (offset.inputs if offset else 0)))
    services.metrics.ws_clients.set(len(services.hub.clients))
    with contextlib.suppress(redis.RedisError):
        for group in await asyncio.to_thread(_group_lag, services):
            services.metrics.group_lag.labels(group.name).set(group.lag)
            services.metrics.group_pending.labels(group.name).set(group.pending)
    return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _group_lag(services: Services) -> list[GroupLag]:
    bus = services.sync_bus()
    return [] if bus is None else group_lag(bus, bus.keys.events)


@router.get("/engine", response_model=EngineOut)
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
