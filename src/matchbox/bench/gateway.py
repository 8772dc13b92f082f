"""The baseline of ``matchbox bench latency``: the least an HTTP gateway in front of a matching
engine can do for ``POST /v1/orders``, on the same server stack as the API.

The same body is parsed by the same model (``OrderIn``) in FastAPI under uvicorn; the order is
matched by ``Engine.apply`` in this process; the command is written to a local file and
fsynced (one write and one fsync per order, as a write-ahead log must); then the answer. No
Redis, no second process, no tail: what an order costs when nothing is between the parts.

With ``--trivial``, the least any server can do instead: the same answers, fixed, from a bare
asyncio protocol (httptools to read the requests); what the load generator costs, measured
against it, is its own.

Run as ``python -m matchbox.bench.gateway --port P --wal FILE [--trivial]`` (the benchmark starts it).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import time
from pathlib import Path
from typing import Any

import httptools
import uvicorn
from fastapi import FastAPI

from matchbox.api.models import MarketOut, OrderIn
from matchbox.bus.codec import encode_command
from matchbox.engine import Engine
from matchbox.engine.types import CreateMarket, OrderKind, OrderStatus, PlaceOrder, Side, TickScheme, TimeInForce
from matchbox.loadgen import event_loop_runner

MARKET = "default"


def gateway(wal: Path) -> FastAPI:
    engine = Engine()
    engine.apply(CreateMarket(seq=1, ts=time.time_ns(), market_id=MARKET, scheme=TickScheme.TICKS, max_tick=100_000))
    log = os.open(wal, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    numbers = itertools.count(2)
    app = FastAPI()

    @app.post("/v1/orders", status_code=201)
    async def place(body: OrderIn) -> dict[str, Any]:
        seq = next(numbers)
        command = PlaceOrder(
            seq=seq,
            ts=time.time_ns(),
            market_id=body.market_id or MARKET,
            order_id=seq,
            account=body.account or "anon",
            side=Side.BUY if body.side == "buy" else Side.SELL,
            price=body.price or 0,
            qty=body.qty or 0,
            tif=TimeInForce.GTC,
            kind=OrderKind.LIMIT,
        )
        events = engine.apply(command)
        os.write(log, encode_command(command) + b"\n")
        os.fsync(log)
        filled = sum(getattr(e, "qty", 0) for e in events if type(e).__name__ == "TradeExecuted")
        status = OrderStatus.FILLED if filled >= command.qty else OrderStatus.OPEN
        return {"order_id": command.order_id, "status": status, "filled": filled}

    @app.get("/v1/markets/{market_id}")
    async def market(market_id: str) -> MarketOut:  # what the load generator asks before it starts
        return market_out(market_id)

    @app.get("/v1/health")
    async def health() -> dict[str, str]:
        return HEALTH

    return app


HEALTH = {"status": "ok", "auth": "open"}


def market_out(market_id: str) -> MarketOut:
    return MarketOut(
        market_id=market_id,
        scheme="ticks",
        state="open",
        min_tick=1,
        max_tick=100_000,
        max_qty=1_000_000_000,
        self_trade="cancel_taker",
        outcome="",
        collateral=False,
        shard=0,
        best_bid=None,
        best_ask=None,
    )


def _answer(status: bytes, body: bytes) -> bytes:
    return b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (status, len(body), body)


class _Trivial(asyncio.Protocol):
    """Every POST answered with the same new order, a GET of a market with the market, any other
    GET with the health; keep-alive, requests read by httptools."""

    PLACED = _answer(b"201 Created", b'{"order_id":1,"status":"open","filled":0}')
    MARKET = _answer(b"200 OK", market_out(MARKET).model_dump_json().encode())
    HEALTHY = _answer(b"200 OK", b'{"status":"ok","auth":"open"}')

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_message_complete(self) -> None:
        if self.transport is None:
            return
        if self.parser.get_method() == b"POST":
            self.transport.write(self.PLACED)
        else:
            self.transport.write(self.MARKET if self.url.startswith(b"/v1/markets/") else self.HEALTHY)


async def _serve_trivial(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(_Trivial, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description="The baseline gateway of matchbox bench latency.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--wal", type=Path, required=True)
    parser.add_argument("--trivial", action="store_true", help="fixed answers from a bare protocol, nothing else")
    args = parser.parse_args()
    if args.trivial:
        with event_loop_runner() as runner:
            runner.run(_serve_trivial(args.port))
        return
    uvicorn.run(gateway(args.wal), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
