"""Waiting for quiet after the faults: everything up, and every reader at the end of what it reads.

Quiet is, all at once and twice in a row with the same end of the output stream: Valkey answers,
every child runs, every API instance answers ``/ready`` 200 and its tail has read the whole
output stream, the engine has committed the whole journal, and both consumer groups have nothing
pending and nothing undelivered. Until a deadline; what was still behind then is reported.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import redis

from matchbox.bus.commit import read_offset
from matchbox.bus.connection import Bus
from matchbox.chaos.cluster import CONSUMERS, Cluster
from matchbox.chaos.http import Http
from matchbox.consumers.runner import group_lag

QUIET_TIMEOUT_S = 90.0
EVERY_S = 0.5


@dataclass(slots=True)
class Quiet:
    reached: bool = False
    seconds: float = 0.0
    behind: list[str] = field(default_factory=list)  # what was not at its end at the deadline


async def wait_for_quiet(cluster: Cluster, http: Http, timeout_s: float = QUIET_TIMEOUT_S) -> Quiet:
    started = time.monotonic()
    quiet = Quiet()
    previous_end = None
    while True:
        behind, end = await _behind(cluster, http)
        if not behind and end == previous_end:
            quiet.reached = True
            break
        previous_end = None if behind else end
        quiet.behind = behind
        if time.monotonic() - started > timeout_s:
            break
        await asyncio.sleep(EVERY_S)
    quiet.seconds = round(time.monotonic() - started, 1)
    return quiet


async def _behind(cluster: Cluster, http: Http) -> tuple[list[str], str]:
    """What is not yet at its end, and where the output stream ends."""
    try:
        behind, end = await asyncio.to_thread(_redis_behind, cluster.url)
    except redis.RedisError as exc:
        return [f"Valkey does not answer ({type(exc).__name__})"], ""
    behind += [f"{child.name} is not running" for child in cluster.supervisor.children if not cluster.pid(child.name)]
    for instance in http.instances:
        ready = await http.call(instance, "GET", "/ready")
        if ready.status != 200:
            behind.append(f"{instance.name} GET /ready: {ready.status or ready.error} {ready.body}")
        engine = await http.call(instance, "GET", "/v1/engine")
        position = engine.field("tail_position")
        if position != end:
            behind.append(f"{instance.name}'s tail is at {position}, the output stream ends at {end}")
    return behind, end


def _redis_behind(url: str) -> tuple[list[str], str]:
    bus = Bus.connect(url, socket_timeout=2.0)
    try:
        keys, behind = bus.keys, []
        offset = read_offset(bus)
        journal_end = bus.last_generated_id(keys.input)
        committed = offset.id if offset is not None else "0-0"
        if committed != journal_end:
            behind.append(f"the engine committed up to {committed}, the journal ends at {journal_end}")
        groups = {lag.name: lag for lag in group_lag(bus, keys.events)}
        for name in CONSUMERS:
            lag = groups.get(name)
            if lag is None:
                behind.append(f"consumer group {name} does not exist")
            elif lag.pending or lag.lag:
                behind.append(f"consumer group {name}: {lag.pending} pending, {lag.lag} undelivered")
        return behind, bus.last_generated_id(keys.events)
    finally:
        bus.close()
