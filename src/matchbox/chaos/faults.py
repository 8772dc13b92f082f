"""Faults at seeded times: kills and pauses of the leader and the standby, kills of an API instance
and of a consumer, Valkey restarts (one of them with a consumer started while Valkey is down),
and consumer groups lost (``XGROUP DESTROY``, under a running consumer or with a killed one's
entries pending).

The schedule spreads the faults over the run's middle (none in its first or last few seconds),
one every few seconds, every kind once before any comes twice. Each fault is recorded with when
it began and when its target was back (:class:`~matchbox.chaos.records.Fault`): the window in
which a 503 or a refused connection is its doing. A fault whose target cannot be found at its
time (no leader while Valkey restarts) is skipped and counted as such.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time

from matchbox.chaos.clock import pause
from matchbox.chaos.cluster import APIS, CONSUMERS, ENGINES, LOCK_TTL_MS, Cluster, ClusterError
from matchbox.chaos.records import Fault, Records

KINDS = (
    "kill-leader",
    "stop-leader",
    "kill-standby",
    "stop-standby",
    "kill-api",
    "kill-consumer",
    "restart-valkey",
    "consumer-while-valkey-down",
    "lose-group",
)
EVERY_S = 4.0  # one fault about this often
EDGE_S = 5.0  # no fault in the run's first or last this many seconds
STOP_S = (1.0, 2.5)  # SIGSTOP for this long: around the lock TTL, so a paused leader is sometimes fenced
VALKEY_DOWN_S = (0.5, 2.0)
# after a fault ends, how long its effects may last: a new leader within the TTL and its recovery,
# clients reconnecting to a restarted Valkey with their backoff
GRACE_S = {
    "restart-valkey": 8.0,
    "consumer-while-valkey-down": 8.0,
    "kill-leader": LOCK_TTL_MS / 1000 + 5.0,
    "stop-leader": LOCK_TTL_MS / 1000 + 5.0,
}
DEFAULT_GRACE_S = 3.0


def schedule(rng: random.Random, seconds: float) -> list[tuple[float, str]]:
    """(seconds from the start, kind): every kind once (in a seeded order), then seeded kinds."""
    edge = min(EDGE_S, seconds / 6)
    span = seconds - 2 * edge
    count = max(1, int(span / EVERY_S))
    kinds = rng.sample(KINDS, len(KINDS))[:count] + [rng.choice(KINDS) for _ in range(count - len(KINDS))]
    step = span / count
    return [(edge + i * step + rng.uniform(0, step / 2), kind) for i, kind in enumerate(kinds)]


def grace_of(kind: str) -> float:
    return GRACE_S.get(kind, DEFAULT_GRACE_S)


async def run_faults(
    cluster: Cluster, records: Records, rng: random.Random, seconds: float, stop: asyncio.Event
) -> None:
    """Inject the scheduled faults, one after another, until the schedule or ``stop`` ends."""
    started = time.monotonic()
    for at, kind in schedule(rng, seconds):
        if await pause(stop, started + at - time.monotonic()):
            return
        await inject(cluster, records, rng, kind)


async def inject(cluster: Cluster, records: Records, rng: random.Random, kind: str) -> None:
    target = await _target(cluster, rng, kind)
    if target is None:
        records.skipped_faults[kind] += 1
        return
    fault = Fault(kind, target, time.monotonic())
    records.faults.append(fault)
    try:
        if kind == "restart-valkey":
            hard = rng.random() < 0.5
            fault.detail = "SIGKILL of the server" if hard else "clean SHUTDOWN"
            await cluster.restart_valkey(hard, rng.uniform(*VALKEY_DOWN_S))
        elif kind == "consumer-while-valkey-down":
            fault.detail = f"clean SHUTDOWN of Valkey; {target} SIGKILLed and started while it is down"
            await cluster.restart_valkey(False, rng.uniform(*VALKEY_DOWN_S), restart_meanwhile=target)
        elif kind == "lose-group":
            running = rng.random() < 0.5
            how = "under the running consumer" if running else f"with {target} SIGKILLed, then started again"
            fault.detail = f"XGROUP DESTROY {target} {how}"
            await cluster.lose_group(target, kill_first=not running)
        elif kind.startswith("stop-"):
            paused = rng.uniform(*STOP_S)
            fault.detail = f"SIGSTOP for {paused:.1f} s"
            cluster.send(target, signal.SIGSTOP)
            try:
                await asyncio.sleep(paused)
            finally:
                cluster.send(target, signal.SIGCONT)
        else:
            fault.detail = "SIGKILL, then started again"
            await cluster.kill(target)
    except ClusterError as exc:  # it died on its own meanwhile: the supervisor has it
        fault.detail += f" (interrupted: {exc})"
    fault.ended = time.monotonic()


async def _target(cluster: Cluster, rng: random.Random, kind: str) -> str | None:
    if kind == "restart-valkey":
        return "valkey" if cluster.pid("valkey") else None
    if kind == "kill-api":
        return _running(cluster, rng.choice(APIS))
    if kind == "consumer-while-valkey-down" and cluster.pid("valkey") is None:
        return None
    if kind in ("kill-consumer", "consumer-while-valkey-down", "lose-group"):
        return _running(cluster, rng.choice(CONSUMERS))
    leader = await cluster.leader()
    if leader is None:
        return None
    if kind.endswith("-leader"):
        return _running(cluster, leader)
    return _running(cluster, next(name for name in ENGINES if name != leader))


def _running(cluster: Cluster, name: str) -> str | None:
    return name if cluster.pid(name) is not None else None
