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

Who is calling is known before the body is read: routes on :class:`matchbox.api.routing.EdgeRoute`
run the checks in ``CHECKS_BEFORE_BODY`` (headers only) first, so a request without a valid key
or admin token gets its 401 or 403 without its body being read or validated.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, Request
from starlette.types import Scope

from matchbox.api.codes import Code
from matchbox.api.errors import ApiError
from matchbox.api.services import Services, services_of

_CALLER = "matchbox.caller"  # the scope key that keeps a request's caller once looked up


def require_admin(services: Services, authorization: str | None) -> None:
    expected = services.settings.admin_token
    if not expected:
        raise ApiError(403, Code.FORBIDDEN, "admin operations are disabled: set MATCHBOX_ADMIN_TOKEN", "authorization")
    # one header form, compared in constant time: how long a refusal takes tells nothing of the token
    if not hmac.compare_digest((authorization or "").encode(), f"Bearer {expected}".encode()):
        raise ApiError(
            403,
            Code.FORBIDDEN,
            "admin token missing or wrong: send Authorization: Bearer <MATCHBOX_ADMIN_TOKEN>",
            "authorization",
        )


async def caller(services: Services, authorization: str | None) -> str | None:
    """The key's account, or None in open mode (the request names its account itself)."""
    if services.settings.open_access:
        return None
    return await services.gate.account(authorization)


async def caller_of(scope: Scope, authorization: str | None) -> str | None:
    """``caller``, once per request: the check made before the body is read and the route's own
    share one key lookup and one rate-limit token."""
    if _CALLER not in scope:
        scope[_CALLER] = await caller(scope["app"].state.services, authorization)
    found: str | None = scope[_CALLER]
    return found


def acting_as(caller_account: str | None, named: str | None, field: str = "account") -> str:
    """The account a request acts for: the key's (a different ``named`` one is refused), or in
    open mode the one the request names."""
    if caller_account is None:
        if not named:
            raise ApiError(
                400, Code.MISSING_FIELD, f"{field} is required (open mode: requests name their account)", field
            )
        return named
    if named and named != caller_account:
        raise ApiError(403, Code.FORBIDDEN, f"{field}: a key acts for its own account ({caller_account!r}) only", field)
    return caller_account


async def _caller_dependency(
    request: Request,
    authorization: Annotated[str | None, Header(description="Bearer <API key> (not needed in open mode)")] = None,
) -> str | None:
    return await caller_of(request.scope, authorization)


async def _admin_dependency(
    request: Request, authorization: Annotated[str | None, Header(description="Bearer <admin token>")] = None
) -> None:
    require_admin(services_of(request), authorization)


Caller = Annotated[str | None, Depends(_caller_dependency)]
"""A route parameter: the calling key's account (None in open mode)."""

Admin = Depends(_admin_dependency)
"""A route dependency (``dependencies=[Admin]``): the caller holds the admin token."""

CHECKS_BEFORE_BODY = (_caller_dependency, _admin_dependency)
"""The dependencies that read headers only, run by EdgeRoute before the body (and again, at no
cost, where FastAPI solves them: the caller is looked up once per request)."""
