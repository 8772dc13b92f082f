"""Waiting out a Redis that is down: what counts as down, and the capped exponential backoff.

Every long-running process (the engine candidates, the API's event tail, the consumers) waits
out an unreachable Redis rather than exit, from its first connection on: a process started while
Redis restarts is there when Redis comes back, with or without a supervisor to restart it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

import redis
from redis._parsers.base import BaseParser
from redis.exceptions import ClusterDownError, MovedError, TryAgainError

log = logging.getLogger(__name__)
T = TypeVar("T")


class NoReplicasError(redis.ResponseError):
    """NOREPLICAS: a master set with ``min-replicas-to-write`` takes no write while fewer replicas
    follow it (one restarting, or cut off): its shard is out until one is back."""


# redis-py makes an error reply the exception its first word names, from its parser's table;
# NOREPLICAS has none of its own there, so it is given one (every parser reads the same table).
BaseParser.EXCEPTION_CLASSES.setdefault("NOREPLICAS", NoReplicasError)

# Unreachable or not answering, or (a cluster) a shard's slot failing over: no master serves it
# yet (CLUSTERDOWN, TRYAGAIN), a client still sends to the old master (MOVED), or the master
# waits for a replica to take writes again (NOREPLICAS). Wait, retry.
REDIS_DOWN = (
    redis.ConnectionError,
    redis.TimeoutError,
    ClusterDownError,
    TryAgainError,
    MovedError,
    NoReplicasError,
)


class Backoff:
    """Delays of ``first`` seconds, doubled after each failure, at most ``cap``; ``reset`` on success."""

    def __init__(self, first: float = 0.1, cap: float = 5.0) -> None:
        self.first = first
        self.cap = cap
        self.delay = first

    def next(self) -> float:
        """The delay to wait now; the following one doubles."""
        delay, self.delay = self.delay, min(self.delay * 2, self.cap)
        return delay

    def reset(self) -> None:
        self.delay = self.first


def wait_out(
    what: str,
    attempt: Callable[[], T],
    stop: threading.Event,
    down: tuple[type[Exception], ...] = REDIS_DOWN,
) -> T | None:
    """``attempt()``, tried again with a :class:`Backoff` while it raises one of ``down`` (each
    failure logged with ``what`` it waits for); None if ``stop`` is set first."""
    backoff = Backoff()
    while not stop.is_set():
        try:
            return attempt()
        except down as exc:
            delay = backoff.next()
            log.warning("waiting for %s (%s); retrying in %.1f s", what, exc, delay)
            stop.wait(delay)
    return None
