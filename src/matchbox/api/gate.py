"""The key cache and per-key rate limiter of one API instance (see :mod:`matchbox.api.auth`)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import cast

from matchbox.api.codes import Code
from matchbox.api.errors import ApiError
from matchbox.bus.accounts import HASHES, KEY_PREFIX, key_hash
from matchbox.bus.aio import AsyncBus
from matchbox.settings import Settings

UNAUTHORIZED = "missing or invalid API key: send Authorization: Bearer <your API key>"
CHALLENGE = {"WWW-Authenticate": "Bearer"}


@dataclass(slots=True)
class Bucket:
    """The rate limit's token bucket: ``rate_burst`` requests at once, then ``rate_limit`` a second."""

    tokens: float
    at: float  # monotonic seconds of the last refill

    def spend(self, settings: Settings, now: float, per: str = "key") -> None:
        """One request; ApiError 429 (with Retry-After) when the bucket is empty."""
        if settings.rate_limit <= 0:
            return
        if now > self.at:  # a request that waited on Redis may bring an earlier clock reading
            self.tokens = min(float(settings.rate_burst), self.tokens + (now - self.at) * settings.rate_limit)
            self.at = now
        if self.tokens < 1:
            wait = math.ceil((1 - self.tokens) / settings.rate_limit)
            raise ApiError(
                429,
                Code.RATE_LIMITED,
                f"rate limit: {settings.rate_limit:g} requests a second per {per} (bursts of {settings.rate_burst})",
                "authorization",
                headers={"Retry-After": str(wait)},
            )
        self.tokens -= 1


class Gate:
    """The key cache and the rate limiter of one API instance."""

    def __init__(self, settings: Settings, bus: AsyncBus) -> None:
        self.settings = settings
        self.bus = bus
        self._known: dict[str, tuple[str | None, float]] = {}  # key hash -> (account, trusted until)
        self._buckets: dict[str, Bucket] = {}

    async def account(self, authorization: str | None) -> str:
        """The caller's account; ApiError 401 for a bad key, 429 over the rate limit."""
        scheme, _, key = (authorization or "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key.startswith(KEY_PREFIX) or len(key) > 128:
            raise ApiError(401, Code.UNAUTHENTICATED, UNAUTHORIZED, "authorization", headers=CHALLENGE)
        digest = key_hash(key)
        now = time.monotonic()
        known = self._known.get(digest)
        if known is None or known[1] < now:
            found = await self.bus.routed.hget(HASHES, digest)
            account = None if found is None else cast("bytes", found).decode()
            if len(self._known) > 100_000:
                self._known.clear()
            self._known[digest] = known = (account, now + self.settings.key_cache_seconds)
        if known[0] is None:
            raise ApiError(401, Code.UNAUTHENTICATED, UNAUTHORIZED, "authorization", headers=CHALLENGE)
        self._spend(digest, now)
        return known[0]

    def _spend(self, digest: str, now: float) -> None:
        bucket = self._buckets.get(digest)
        if bucket is None:
            bucket = self._buckets[digest] = Bucket(float(self.settings.rate_burst), now)
        bucket.spend(self.settings, now)

    def forget_all(self) -> None:
        """Drop every cached answer (a key was revoked through this instance)."""
        self._known.clear()
