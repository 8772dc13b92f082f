"""WebSocket subscribers of the trades channels that drop their connection and resume.

Each subscriber follows one market's ``trades:<market>`` channel. Its first connection already
resumes, after the newest event in the stream when it starts, so it is owed every trade from
then on. While the run cycles, it closes its connection after a seeded few seconds and opens a
new one, to an instance it picks, with ``?last_id=`` the last trade it saw; a connection the
server closes or loses (an instance killed, a slow-consumer close) is resumed the same way.
Every trade message's stream id is kept in arrival order (:class:`~matchbox.chaos.records.FeedLog`),
for the check that it saw each trade once, in order, with no gap.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass

import aiohttp

from matchbox.chaos.clock import pause
from matchbox.chaos.http import Http
from matchbox.chaos.records import FeedLog

HOLD_S = (2.0, 8.0)  # how long a connection is kept while cycling
RECONNECT_S = 0.3


def ws_url(http_url: str, path: str) -> str:
    return http_url.replace("http://", "ws://", 1) + path


@dataclass(slots=True)
class Subscriber:
    log: FeedLog
    http: Http
    rng: random.Random
    cycling: bool = True  # drop and resume at random; False: stay connected (the end of the run)

    async def run(self, done: asyncio.Event) -> None:
        while not done.is_set():
            await self._connection(done)
            await pause(done, RECONNECT_S)

    async def _connection(self, done: asyncio.Event) -> None:
        instance = self.rng.choice(self.http.instances)
        query = f"subscribe=trades:{self.log.market_id}"
        if self.log.cursor:
            query += f"&last_id={self.log.cursor}"
        assert self.http.session is not None
        hold_until = time.monotonic() + self.rng.uniform(*HOLD_S)
        try:
            async with self.http.session.ws_connect(
                ws_url(instance.url, f"/v1/ws?{query}"), timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=2.0)
            ) as ws:
                self.log.connections += 1
                self.log.resumes += bool(self.log.cursor)
                while not done.is_set():
                    if self.cycling and time.monotonic() >= hold_until:
                        return
                    try:
                        message = await ws.receive(timeout=0.5)
                    except TimeoutError:
                        continue
                    if not self._take(instance.name, message):
                        return
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.log.errors.append(f"{instance.name}: connection failed: {type(exc).__name__}")

    def _take(self, instance: str, message: aiohttp.WSMessage) -> bool:
        """Keep a trade's id; False when the connection is over."""
        if message.type is not aiohttp.WSMsgType.TEXT:
            if message.type is aiohttp.WSMsgType.CLOSE and message.data not in (1000, 1001):
                self.log.errors.append(f"{instance}: closed {message.data} {message.extra or ''}".strip())
            return False
        try:
            data = json.loads(message.data)
        except ValueError:
            self.log.errors.append(f"{instance}: not JSON: {message.data[:80]!r}")
            return True
        if not isinstance(data, dict):
            return True
        if data.get("type") == "trade" and isinstance(data.get("id"), str):
            self.log.received.append(data["id"])
        elif data.get("type") == "error":
            self.log.errors.append(f"{instance}: {data.get('error')}")
        return True
