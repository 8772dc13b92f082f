"""The route class of the API's routers: the edge where a request is checked before it is trusted.

FastAPI reads and validates a body before it solves a route's dependencies, so on a plain route
an anonymous request with a bad body learns the schema (a 422) and an unauthenticated one makes
the API read its body. :class:`EdgeRoute` runs the header-only checks of
:data:`matchbox.api.auth.CHECKS_BEFORE_BODY` first, refuses a query parameter the route does not
take (a 400 naming it: a misspelt filter must never be ignored silently), then hands FastAPI a
request whose JSON numbers are bounded before they are converted.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from fastapi import Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from matchbox.api.auth import CHECKS_BEFORE_BODY
from matchbox.api.codes import Code
from matchbox.api.errors import ApiError

Handler = Callable[[Request], Coroutine[Any, Any, Response]]

# A 64-bit integer has at most 19 digits and a sign: a longer JSON integer fits no field.
MAX_INT_CHARS = 20


class EdgeRoute(APIRoute):
    """A route that checks who is calling before its body is read (see the module docstring)."""

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()
        checks = [d.call for d in self.dependant.dependencies if d.call in CHECKS_BEFORE_BODY]
        known = frozenset(query_names(self.dependant))

        async def checked_first(request: Request) -> Response:
            authorization = request.headers.get("authorization")
            for check in checks:
                await check(request, authorization)
            unknown = sorted(set(request.query_params) - known)
            if unknown:
                raise ApiError(400, Code.UNKNOWN_FIELD, f"unknown query parameter {unknown[0][:64]!r}", unknown[0][:64])
            return await handler(BoundedJsonRequest(request.scope, request.receive))

        return checked_first


def query_names(dependant: Dependant) -> Iterator[str]:
    """The query parameters a route takes, its dependencies' included (by the name a client sends)."""
    for param in dependant.query_params:
        yield param.alias
    for sub in dependant.dependencies:
        yield from query_names(sub)


class BoundedJsonRequest(Request):
    """A request whose JSON body is parsed with every integer bounded before it is converted."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = json.loads(await self.body(), parse_int=_bounded_int)
        return self._json


def _bounded_int(text: str) -> int | float:
    """A JSON integer. One too long for any field is read as the float it is near, in time linear
    in its length (``int`` of thousands of digits is not), and every numeric field then refuses
    it by name: out of range, or not finite."""
    return int(text) if len(text) <= MAX_INT_CHARS else float(text)
