"""Plain ASGI middleware: the body size limit and the request metrics."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from matchbox.api.errors import BodyTooLarge, too_large
from matchbox.api.services import Services

OPEN_HEADER = (b"x-matchbox-auth", b"open")
MEASURED = "matchbox.measured"  # in a request's scope: an outer LimitAndMeasure has it in hand

MAX_BODY = 64 * 1024


class LimitAndMeasure:
    """Refuses bodies over 64 KiB and counts requests and latencies.

    The limit counts the body's bytes as they arrive, so a chunked body (no Content-Length) is
    cut off at the limit like any other: nothing past it is read, let alone buffered. A declared
    Content-Length over the limit is refused before a byte is read.

    A plain ASGI middleware: Starlette's ``@app.middleware("http")`` wraps every request in a
    task group and a streamed response, which was the API's largest single cost under load.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or MEASURED in scope:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        answered = False
        open_access = scope["app"].state.open_access

        async def send_and_see(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status, answered = message["status"], True
                if open_access:  # never silent: every answer says no key was needed
                    message["headers"] = [*message.get("headers", ()), OPEN_HEADER]
            await send(message)

        try:
            if _declared_too_large(scope):
                raise BodyTooLarge(MAX_BODY)
            await self.app(scope, _counted(receive), send_and_see)
        except BodyTooLarge as exc:  # raised past the routes (POST /orders reads its body here)
            if answered:
                raise
            await too_large(exc)(scope, receive, send_and_see)
        _measure(scope, status, started)


def _declared_too_large(scope: Scope) -> bool:
    length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
    return length is not None and (not length.isdigit() or len(length) > 12 or int(length) > MAX_BODY)


def _counted(receive: Receive) -> Receive:
    """``receive``, raising BodyTooLarge as soon as the body's bytes so far pass MAX_BODY."""
    seen = 0

    async def receive_counted() -> Message:
        nonlocal seen
        message = await receive()
        seen += len(message.get("body", b""))
        if seen > MAX_BODY:
            raise BodyTooLarge(MAX_BODY)
        return message

    return receive_counted


def _measure(scope: Scope, status: int, started: float) -> None:
    services: Services | None = getattr(scope["app"].state, "services", None)
    if services is not None:
        path = getattr(scope.get("route"), "path", "other")
        services.metrics.request(scope["method"], path, status, time.perf_counter() - started)
