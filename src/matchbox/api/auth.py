"""Who is calling: API keys (``Authorization: Bearer <key>``), per-key rate limits, open mode.

Every trading and account request names its caller by key; the account is the key's, never the
request's. A key is looked up by its SHA-256 in Redis (:mod:`matchbox.bus.accounts`) and the
answer kept for ``key_cache_seconds``, so a busy key costs one dictionary lookup and a revoked
key stops working on every instance within that time. A missing, malformed, unknown or revoked
key gets the same 401, so a guess learns nothing about which accounts exist.

Rate limits are a token bucket per key and per API instance (``rate_limit`` requests a second,
``rate_burst`` at once): over it, a 429 with ``Retry-After``. Behind a load balancer that spreads
one key over N instances, a key gets up to N times the limit; set it with that in mind.

Open mode (``--open``, ``MATCHBOX_OPEN``) turns keys off for local demos: requests name their
account, anyone may act as anyone. It is never silent: the API logs a warning at start,
``/health`` says ``"auth": "open"``, and every response carries ``X-Matchbox-Auth: open``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from matchbox.api.errors import ApiError
from matchbox.api.services import Services, services_of

AdminToken = Annotated[str | None, Header(alias="Authorization", description="Bearer <admin token>")]


def require_admin(services: Services, token: str | None) -> None:
    expected = services.settings.admin_token
    if not expected:
        raise ApiError(403, "admin operations are disabled: set MATCHBOX_ADMIN_TOKEN")
    if token not in (f"Bearer {expected}", expected):
        raise ApiError(403, "admin token missing or wrong (Authorization: Bearer <MATCHBOX_ADMIN_TOKEN>)")


async def caller(services: Services, authorization: str | None) -> str | None:
    """The key's account, or None in open mode (the request names its account itself)."""
    if services.settings.open_access:
        return None
    return await services.gate.account(authorization)


def acting_as(caller_account: str | None, named: str | None, field: str = "account") -> str:
    """The account a request acts for: the key's (a different ``named`` one is refused), or in
    open mode the one the request names."""
    if caller_account is None:
        if not named:
            raise ApiError(400, f"{field} is required (open mode: requests name their account)", field)
        return named
    if named and named != caller_account:
        raise ApiError(403, f"{field}: a key acts for its own account ({caller_account!r}) only", field)
    return caller_account


async def _caller_dependency(
    request: Request,
    authorization: Annotated[str | None, Header(description="Bearer <API key> (not needed in open mode)")] = None,
) -> str | None:
    return await caller(services_of(request), authorization)


Caller = Annotated[str | None, Depends(_caller_dependency)]
"""A route parameter: the calling key's account (None in open mode)."""
