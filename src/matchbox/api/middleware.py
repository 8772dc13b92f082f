"""Plain ASGI middleware: the body size limit and the request metrics."""

from __future__ import annotations

import time

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from matchbox.api.services import Services

OPEN_HEADER = (b"x-matchbox-auth", b"open")

MAX_BODY = 64 * 1024


class LimitAndMeasure:
    """Refuses bodies over 64 KiB (by their Content-Length) and counts requests and latencies.

    A plain ASGI middleware: Starlette's ``@app.middleware("http")`` wraps every request in a
    task group and a streamed response, which was the API's largest single cost under load.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            status = 413
            body = {"error": f"the body is over {MAX_BODY // 1024} KiB", "field": "body"}
            await JSONResponse(body, status_code=413)(scope, receive, send)
        else:
            open_access = scope["app"].state.open_access

            async def send_and_see(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    if open_access:  # never silent: every answer says no key was needed
                        message["headers"] = [*message.get("headers", ()), OPEN_HEADER]
                await send(message)

            await self.app(scope, receive, send_and_see)
        services: Services | None = getattr(scope["app"].state, "services", None)
        if services is not None:
            path = getattr(scope.get("route"), "path", "other")
            method = scope["method"]
            services.metrics.requests.labels(method, path, str(status)).inc()
            services.metrics.latency.labels(method, path).observe(time.perf_counter() - started)
