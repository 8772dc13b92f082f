"""The route class of the API's routers: the edge where a request is checked before it is trusted.

FastAPI reads and validates a body before it solves a route's dependencies, so on a plain route
an anonymous request with a bad body learns the schema (a 422) and an unauthenticated one makes
the API read its body. :class:`EdgeRoute` runs the header-only checks of
:data:`matchbox.api.auth.CHECKS_BEFORE_BODY` first, then hands FastAPI a request whose JSON
numbers are bounded before they are converted.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from matchbox.api.auth import CHECKS_BEFORE_BODY

Handler = Callable[[Request], Coroutine[Any, Any, Response]]

# A 64-bit integer has at most 19 digits and a sign: a longer JSON integer fits no field.
MAX_INT_CHARS = 20


class EdgeRoute(APIRoute):
    """A route that checks who is calling before its body is read (see the module docstring)."""

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()
        checks = [d.call for d in self.dependant.dependencies if d.call in CHECKS_BEFORE_BODY]

        async def checked_first(request: Request) -> Response:
            authorization = request.headers.get("authorization")
            for check in checks:
                await check(request, authorization)
            return await handler(BoundedJsonRequest(request.scope, request.receive))

        return checked_first


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
